"""Kill a 2,000-image ``affectsynth batch`` midway with SIGKILL, resume it, and check the result.

    python scripts/batch_kill_resume.py [--count 2000] [--workers 2] [--kill-at 0.5] [--keep DIR]

The job: ``--count / 8`` source photos x ``expressions=all`` (8 targets) = ``--count`` outputs. The
sources are the bundled astronaut and the dev photos in ../shared/faces/dev when present, as random
variants (crop to 80-100 %, shift, mirror, brightness and contrast jitter, long side scaled to
``--side`` px) written to a temporary input folder. The batch runs in its own process group; once
``--kill-at`` of the items have manifest rows, the group (the batch and its workers) is killed
with SIGKILL, and the same command is run again to the end. Then: one manifest row per planned
item (no duplicates, no gaps), every ok output decodes, no temporary file is left. The last line
is key=value figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import cpu_name  # noqa: E402

from affectsynth.batch import parse_spec, plan_items, read_sources  # noqa: E402
from affectsynth.io import load_image  # noqa: E402

DEV_FACES = ROOT.parent / "shared" / "faces" / "dev"
TARGETS = "expressions=all"
TARGETS_PER_SOURCE = 8


def base_photos() -> list[np.ndarray]:
    from skimage import data

    photos = [data.astronaut()]
    if DEV_FACES.is_dir():
        photos += [load_image(p) for p in sorted(DEV_FACES.glob("*/*")) if p.suffix.lower() in (".jpg", ".png")]
    return photos


def variant(photo: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """A random crop (80-100 % of each side, anywhere), maybe mirrored, with brightness and
    contrast jitter (+-15 %), scaled so that its long side is ``side`` px."""
    height, width = photo.shape[:2]
    crop_h, crop_w = (int(n * rng.uniform(0.8, 1.0)) for n in (height, width))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    image = photo[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = (image.astype(np.float32) - 128) * rng.uniform(0.85, 1.15) + 128 * rng.uniform(0.85, 1.15)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    scale = side / max(pil.size)
    return np.asarray(pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.Resampling.LANCZOS))


def write_sources(folder: Path, count: int, side: int, seed: int) -> None:
    photos = base_photos()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(variant(photos[i % len(photos)], rng, side)).save(folder / f"src_{i:05d}.jpg", quality=92)


def manifest_rows(out: Path) -> list[dict[str, str]]:
    path = out / "manifest.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def verify(inputs: Path, out: Path) -> tuple[int, int]:
    """(ok, failed) after checking the manifest against the plan and decoding every output."""
    planned = {item.key for item in plan_items(parse_spec(TARGETS), read_sources(inputs, exclude=out), seed=0)}
    rows = manifest_rows(out)
    keys = [(r["source"], r["target"]) for r in rows]
    if len(keys) != len(set(keys)):
        raise SystemExit(f"FAIL: {len(keys) - len(set(keys))} duplicate manifest rows")
    if set(keys) != planned:
        raise SystemExit(f"FAIL: {len(planned - set(keys))} planned items have no row, {len(set(keys) - planned)} "
                         "rows are not planned")
    ok = [r for r in rows if r["status"] == "ok"]
    for row in ok:
        load_image(out / row["output"])  # raises on a torn or corrupt file
    leftovers = [p for p in out.rglob("*.tmp") if ".fitcache" not in p.parts]
    if leftovers:
        raise SystemExit(f"FAIL: {len(leftovers)} temporary files left, e.g. {leftovers[0]}")
    return len(ok), len(rows) - len(ok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000, help="outputs (sources x 8 targets; default 2000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-at", type=float, default=0.5, help="kill once this share of items has rows (default 0.5)")
    ap.add_argument("--side", type=int, default=384, help="long side of the source photos, px (default 384)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the source variants")
    ap.add_argument("--keep", type=Path, help="work in this new folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    sources = max(1, args.count // TARGETS_PER_SOURCE)
    with tempfile.TemporaryDirectory(prefix="batch_kill_") as scratch:
        work = args.keep or Path(scratch)
        inputs, out = work / "in", work / "out"
        write_sources(inputs, sources, args.side, args.seed)
        command = [sys.executable, "-m", "affectsynth.cli", "batch", str(inputs), "-o", str(out), "--targets", TARGETS,
                   "--workers", str(args.workers), "--no-progress"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
        kill_rows = int(args.kill_at * sources * TARGETS_PER_SOURCE)
        start = time.perf_counter()
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)  # its own group: the kill takes the workers too
        while first.poll() is None and len(manifest_rows(out)) < kill_rows:
            time.sleep(0.2)
        if first.poll() is not None:
            raise SystemExit(f"FAIL: the first run ended (exit {first.returncode}) before it was killed")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        seconds_first = time.perf_counter() - start
        rows_at_kill = len(manifest_rows(out))
        print(f"killed after {seconds_first:.1f} s with {rows_at_kill} manifest rows")
        start = time.perf_counter()
        resumed = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds_resume = time.perf_counter() - start
        print(resumed.stdout.strip())
        if resumed.returncode not in (0, 3):
            raise SystemExit(f"FAIL: the resumed run exited {resumed.returncode}: {resumed.stderr.strip()[-500:]}")
        ok, failed = verify(inputs, out)
    total = seconds_first + seconds_resume
    print(f"{ok + failed} items, {ok} ok, {failed} failed; manifest complete, no duplicates, every output decodes "
          f"({cpu_name()}, {os.cpu_count()} cores, --workers {args.workers})")
    print(f"images={ok} failed={failed} sources={sources} rows_at_kill={rows_at_kill} "
          f"seconds_first={seconds_first:.1f} seconds_resume={seconds_resume:.1f} img_per_s={ok / total:.2f}")


if __name__ == "__main__":
    main()
