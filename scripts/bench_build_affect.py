"""Benchmark ``affectsynth model build-affect``: SYNTHETIC sequences of the ICT-FaceKit topology
(26,719 vertices; scripts/make_synthetic_4d.py) written as .npy to a temporary folder, then built
by the CLI in a subprocess, first over a quarter of them, then over all (the same peak memory for
both shows that memory does not grow with the number of frames).

    python scripts/bench_build_affect.py [--model ict.npz] [--sequences 100] [--frames 60] [--jobs 1]

Without --model the ICT model is imported from ../shared/models/ICT-FaceKit. Prints the peak RSS
of each build (resource.getrusage of the children) and frames per second; the last line is
key=value figures.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_synthetic_4d import make_synthetic_4d  # noqa: E402

from affectsynth.model import FaceModel  # noqa: E402

ICT_ARCHIVE = ROOT.parent / "shared" / "models" / "ICT-FaceKit" / "FaceXModel.tar.xz"


def _ict_model(path: Path | None, scratch: Path) -> Path:
    if path is not None:
        return path
    from affectsynth.model.importers import import_ict

    subprocess.run(["tar", "-xJf", str(ICT_ARCHIVE), "-C", str(scratch)], check=True)
    out = scratch / "ict.npz"
    import_ict(scratch).save(out)
    return out


def _build(meshes: Path, base: Path, output: Path, jobs: int) -> tuple[float, float]:
    """(seconds, peak RSS in MB of the largest child so far) of one CLI build."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "affectsynth.cli", "model", "build-affect", "--meshes", str(meshes),
                    "--labels", str(meshes / "labels.csv"), "--base", str(base), "-o", str(output),
                    "--jobs", str(jobs)], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: kB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="an imported ICT model .npz (default: import from ../shared)")
    ap.add_argument("--sequences", type=int, default=100)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_build_affect_") as tmp:
        scratch = Path(tmp)
        base = _ict_model(args.model, scratch)
        model = FaceModel.load(base)
        start = time.perf_counter()
        full, quarter = scratch / "full", scratch / "quarter"
        make_synthetic_4d(model, full, identities=-(-args.sequences // 6), frames=args.frames, seed=0,
                          max_sequences=args.sequences)
        make_synthetic_4d(model, quarter, identities=-(-args.sequences // 24), frames=args.frames, seed=1,
                          max_sequences=max(args.sequences // 4, 1))
        print(f"generated {args.sequences} + {max(args.sequences // 4, 1)} synthetic sequences of {args.frames} "
              f"frames ({model.num_vertices} vertices) in {time.perf_counter() - start:.0f} s")
        del model
        small_s, small_rss = _build(quarter, base, scratch / "quarter.npz", args.jobs)
        full_s, full_rss = _build(full, base, scratch / "full.npz", args.jobs)
        frames = args.sequences * args.frames
        fps = frames / full_s
        print(f"build of {max(args.sequences // 4, 1)} sequences: {small_s:.1f} s, peak RSS {small_rss:.0f} MB")
        print(f"build of {args.sequences} sequences x {args.frames} frames: {full_s:.1f} s ({fps:.1f} frames/s, "
              f"model load included), peak RSS {full_rss:.0f} MB")
        print(f"sequences={args.sequences} frames={frames} vertices=26719 jobs={args.jobs} seconds={full_s:.1f} "
              f"frames_per_s={fps:.1f} peak_rss_mb={full_rss:.0f} peak_rss_quarter_mb={small_rss:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
