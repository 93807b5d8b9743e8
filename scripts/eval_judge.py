"""Evaluation of synthesis against the external judge (issue 3, "What it must show").

    python scripts/eval_judge.py --judge JUDGE_DIR [--faces ../shared/faces/dev] [--out out/eval] [--jobs N]
                                 [--only expressions va neutral] [--subjects tw_07,tw_16] [--skip-render]
                                 [--model model.npz]

JUDGE_DIR is a writable copy of ../shared/tools/judge on which its ``bash setup.sh`` has run (shared/
is read-only, and the judge builds its own venv there): ``JUDGE_DIR/.venv/bin/python JUDGE_DIR/judge.py``.

Every subject folder of --faces with a ``neutral.*`` photo is one face. Rendering uses the library as a
user does (``affectsynth.io.load_image`` and one ``affectsynth.pipeline.Synthesizer`` per worker process,
full-resolution input); renders are written as PNG.

Parts (``--only`` picks some):
  expressions  the six basic expressions at intensity 1 (``parse_expression(name, 1.0)``) ->
               ``<out>/expr/<subject>/<label>.png`` beside ``reference.png`` (the decoded input), scored with
               ``judge.py score`` (``<out>/expr/summary.json``, its report in ``score.txt``): per-label
               top-1 hit rate, their macro mean over the six, identity distance to the input (mean, share
               under 0.6, max).
  va           sweeps valence -1..1 (9 steps) at arousal 0.3 and arousal -1..1 (9 steps) at valence 0, each
               point rendered as ``affectsynth render --va V,A --seed SEED`` does (``--seed none``: without
               --seed) -> ``<out>/va/<subject>/``;
               ``judge.py classify`` gives per-image valence/arousal proxies; Spearman rho of proxy vs target
               per subject and sweep, averaged over subjects (a subject whose rho is undefined, e.g. a
               constant proxy, counts as 0).
  neutral      ``--expression neutral`` -> ``<out>/neutral/<subject>/neutral.png``; PSNR (RGB, 8 bit) between
               input and output over the face box (the box of the fit's 478 landmarks).
  posed        no rendering: the subjects' own posed photos (``<subject>/<label>.*``, any of the six labels) scored
               like the renders, identity against their neutral photo (``<out>/posed/summary.json``, ``score.txt``):
               what real faces of the same people get from this judge, the reference for the renders' figures.
               Printed beside the renders' hit rate on the same subjects; figures ``posed_macro`` (over the labels
               with a posed photo), ``posed_<label>``, ``posed_id_mean``.

Contact sheets for looking: ``<out>/sheets/<subject>.png`` (reference | six expressions, each tile labelled
with the judge's top-1 class and probability, and the identity distance; with the posed part, the posed photos
below the renders) and ``<out>/sheets/va_sweeps.png``.
``<out>/renders.json`` records every render (timings, face box, PSNR) so that ``--skip-render`` re-scores
existing renders; ``<out>/eval.json`` holds the figures. The last line printed is ``key=value`` figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

EXPRESSIONS = ("happiness", "sadness", "surprise", "fear", "anger", "disgust")
#: Short names of the per-label figures on the last line.
SHORT = {"happiness": "hap", "surprise": "sur", "sadness": "sad", "anger": "ang", "fear": "fea", "disgust": "dis"}
PARTS = ("expressions", "va", "neutral", "posed")
SWEEP_STEPS = 9
VALENCE_SWEEP_AROUSAL = 0.3
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: PNG zlib level of the renders: level 1 writes a 10-megapixel render ~4x faster than PIL's default.
PNG_LEVEL = 1
TILE = 256
VA_TILE = 128


# ---------------------------------------------------------------------------- the plan
def find_subjects(faces: Path, only: list[str] | None) -> dict[str, Path]:
    """Subject name -> its neutral photo, sorted by name."""
    subjects = {}
    for folder in sorted(p for p in faces.iterdir() if p.is_dir()):
        photos = [p for p in folder.iterdir() if p.stem == "neutral" and p.suffix.lower() in PHOTO_SUFFIXES]
        if photos and (only is None or folder.name in only):
            subjects[folder.name] = photos[0]
    if only is not None and (unknown := sorted(set(only) - set(subjects))):
        raise SystemExit(f"no neutral photo for subject(s) {', '.join(unknown)} in {faces}")
    if not subjects:
        raise SystemExit(f"no <subject>/neutral.* photos in {faces}")
    return subjects


def sweep_points() -> list[tuple[str, float, float]]:
    """(sweep, valence, arousal) of both VA sweeps."""
    steps = np.linspace(-1.0, 1.0, SWEEP_STEPS).tolist()
    return [("valence", v, VALENCE_SWEEP_AROUSAL) for v in steps] + [("arousal", 0.0, a) for a in steps]


def va_name(valence: float, arousal: float) -> str:
    """The file stem `affectsynth render --va` uses."""
    return f"va{valence:+.2f}{arousal:+.2f}"


def plan_renders(subjects: dict[str, Path], parts: list[str], out: Path) -> list[dict]:
    """One task per render: subject, part, name, target spec, input photo and output path."""
    tasks = []
    for subject, photo in subjects.items():
        if "expressions" in parts:
            tasks += [{"part": "expressions", "name": label, "spec": ("expression", label)} | _where(
                subject, photo, out / "expr" / subject / f"{label}.png") for label in EXPRESSIONS]
        if "va" in parts:
            tasks += [{"part": "va", "name": va_name(v, a), "sweep": sweep, "valence": v, "arousal": a,
                       "spec": ("va", v, a)} | _where(subject, photo, out / "va" / subject / f"{va_name(v, a)}.png")
                      for sweep, v, a in sweep_points()]
        if "neutral" in parts:
            tasks.append({"part": "neutral", "name": "neutral", "spec": ("expression", "neutral")} | _where(
                subject, photo, out / "neutral" / subject / "neutral.png"))
    return tasks


def posed_rows(subjects: dict[str, Path]) -> list[dict]:
    """Judge input rows for each subject's posed photos (``<label>.*`` beside its neutral photo)."""
    rows = []
    for subject, neutral in subjects.items():
        for label in EXPRESSIONS:
            photo = next((p for p in sorted(neutral.parent.iterdir())
                          if p.stem == label and p.suffix.lower() in PHOTO_SUFFIXES), None)
            if photo is not None:
                rows.append({"path": str(photo), "label": label, "subject": subject, "reference_path": str(neutral),
                             "part": "posed", "name": label, "role": "posed", "pixels": photo_pixels(str(photo))})
    return rows


def _where(subject: str, photo: Path, output: Path) -> dict:
    return {"subject": subject, "photo": str(photo), "output": str(output)}


def photo_pixels(photo: str) -> int:
    from PIL import Image

    with Image.open(photo) as img:
        return img.width * img.height


# ---------------------------------------------------------------------------- rendering (worker side)
_WORKER: dict = {}


def init_worker(threads: int, model_path: str | None = None) -> None:
    """Load the model (``model_path``, or the default) and one Synthesizer for this process (``threads``
    for torch and numba), and render the bundled example photo once, so that JIT compilation and graph
    start-up stay out of the timings."""
    began = time.perf_counter()
    import numba
    import torch
    from skimage import data

    from affectsynth.affect.bank import VABank
    from affectsynth.affect.targets import parse_expression
    from affectsynth.model import FaceModel, load_default_model
    from affectsynth.pipeline import Synthesizer

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    synthesizer = Synthesizer(load_default_model() if model_path is None else FaceModel.load(model_path))
    synthesizer(cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA), parse_expression("surprise"))
    _WORKER.update(synthesizer=synthesizer, bank=VABank.default(), photo=(None, None))
    log(f"[render] worker {os.getpid()} ready in {time.perf_counter() - began:.1f} s (imports, model, "
        f"detector, warm-up render)")


def make_target(spec: tuple, seed: int | None):
    """The ExpressionCode the CLI makes for ``--expression NAME`` or ``--va V,A [--seed SEED]``."""
    import torch

    from affectsynth.affect.bank import target_from_va
    from affectsynth.affect.targets import parse_expression

    if spec[0] == "expression":
        return parse_expression(spec[1], 1.0)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return target_from_va(spec[1], spec[2], _WORKER["bank"], generator=generator)


def render_task(task: dict, seed: int | None) -> dict:
    """Render one task; the record gets timings (ms), the face box and (neutral part) the PSNR, or an error."""
    from affectsynth.io import load_image

    record = {k: v for k, v in task.items() if k != "spec"}
    began = time.perf_counter()
    try:
        cached_path, image = _WORKER["photo"]
        decode_ms = 0.0
        if cached_path != task["photo"]:  # consecutive tasks of one worker are often the same photo
            image = load_image(task["photo"])
            _WORKER["photo"] = (task["photo"], image)
            decode_ms = 1000.0 * (time.perf_counter() - began)
        result = _WORKER["synthesizer"](image, make_target(task["spec"], seed), name=task["photo"])
        written = time.perf_counter()
        write_png(Path(task["output"]), result.image)
        box = points_box(result.landmarks.xy[0].numpy(), image.shape[:2])
        record.update(height=image.shape[0], width=image.shape[1], box=box, rasterizer=result.rasterizer,
                      timings_ms={"decode": decode_ms, **result.timings_ms,
                                  "write": 1000.0 * (time.perf_counter() - written)})
        if task["part"] == "neutral":
            record["psnr_face_box"] = psnr(image, result.image, box)
    except Exception as e:  # the renderer is under development: record and go on
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=-3)
    record["wall_ms"] = 1000.0 * (time.perf_counter() - began)
    return record


def points_box(xy: np.ndarray, size_hw: tuple[int, int]) -> list[int]:
    """[x0, y0, x1, y1) integer pixel box holding every point of [N, 2] ``xy``, clipped to the image."""
    height, width = size_hw
    x0, y0 = np.floor(xy.min(0)).astype(int)
    x1, y1 = np.ceil(xy.max(0)).astype(int)
    return [max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))]


def psnr(a: np.ndarray, b: np.ndarray, box: list[int]) -> float:
    """PSNR in dB of two [H, W, 3] uint8 images over ``box`` (inf when identical there)."""
    x0, y0, x1, y1 = box
    diff = a[y0:y1, x0:x1].astype(np.float64) - b[y0:y1, x0:x1].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse)


def render_all(tasks: list[dict], jobs: int, seed: int | None, model_path: str | None = None) -> list[dict]:
    """Render every task in ``jobs`` worker processes (in this one when jobs == 1), largest photos first."""
    pixels = {photo: photo_pixels(photo) for photo in {t["photo"] for t in tasks}}
    # Longest tasks first balances the workers; photo order keeps one worker's tasks on one photo.
    tasks = sorted(tasks, key=lambda t: (-pixels[t["photo"]], t["photo"]))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    records = []
    if jobs == 1:
        init_worker(threads, model_path)
        for i, task in enumerate(tasks):
            records.append(_progress(render_task(task, seed), i, len(tasks)))
        return records
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=init_worker,
                             initargs=(threads, model_path)) as pool:
        futures = [pool.submit(render_task, task, seed) for task in tasks]
        for i, future in enumerate(as_completed(futures)):
            records.append(_progress(future.result(), i, len(tasks)))
    return records


def _progress(record: dict, i: int, n: int) -> dict:
    what = f"{record['subject']}/{record['name']}"
    if "error" in record:
        log(f"[render {i + 1}/{n}] {what} FAILED: {record['error']}")
    elif (i + 1) % 10 == 0 or i + 1 == n:
        log(f"[render {i + 1}/{n}] {what} {record['wall_ms']:.0f} ms")
    return record


def write_references(subjects: dict[str, Path], out: Path) -> None:
    """``<out>/expr/<subject>/reference.png``: the decoded input, so the judge compares against the same pixels."""
    from affectsynth.io import load_image

    for subject, photo in subjects.items():
        write_png(out / "expr" / subject / "reference.png", load_image(photo))


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an [H, W, 3] uint8 RGB image as PNG (zlib level :data:`PNG_LEVEL`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL]):
        raise OSError(f"cannot write {path}")


# ---------------------------------------------------------------------------- judging
def judge_rows(records: list[dict], out: Path) -> list[dict]:
    """Input rows of the judge (path, label, subject, reference_path + our own columns) for the renders,
    plus one row per input photo (role "input", for the reference tile of the sheets)."""
    rows = []
    for r in records:
        if "error" in r:
            continue
        reference = out / "expr" / r["subject"] / "reference.png"
        row = {"path": r["output"], "label": r["name"] if r["part"] != "va" else "va", "subject": r["subject"],
               "reference_path": str(reference) if r["part"] != "va" else "", "part": r["part"],
               "name": r["name"], "role": "render", "sweep": r.get("sweep", ""),
               "target_valence": r.get("valence", ""), "target_arousal": r.get("arousal", ""),
               "pixels": r["height"] * r["width"]}
        rows.append(row)
        if r["part"] == "neutral":
            rows.append(row | {"path": r["photo"], "reference_path": "", "role": "input"})
    return rows


def run_judge(rows: list[dict], work: Path, jobs: int, judge: list[str]) -> list[dict]:
    """Classify ``rows`` with ``judge.py classify`` in up to ``jobs`` parallel processes; identity only where a
    row has a reference. Returns the judge's result rows (our columns kept)."""
    work.mkdir(parents=True, exist_ok=True)
    groups = {"id": [r for r in rows if r["reference_path"]], "noid": [r for r in rows if not r["reference_path"]]}
    shards = []
    for group, members in groups.items():
        count = min(jobs, len(members))
        loads = [[] for _ in range(count)]
        for row in sorted(members, key=lambda r: -r["pixels"]):  # spread the large photos over the shards
            min(loads, key=lambda s: sum(r["pixels"] for r in s)).append(row)
        shards += [(f"{group}{i}", shard, group == "noid") for i, shard in enumerate(loads)]
    running, results = [], []
    for name, shard, no_id in shards:
        source, dest, logfile = work / f"{name}.csv", work / f"{name}_results.csv", work / f"{name}.log"
        write_csv(source, shard)
        command = [*judge, "classify", str(source), "-o", str(dest), "--progress", "0"] + (["--no-id"] if no_id else [])
        while len(running) >= jobs:
            results += _finish(running.pop(0))
        running.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(logfile, "w")),
                        dest, logfile))
    while running:
        results += _finish(running.pop(0))
    return results


def _finish(job: tuple) -> list[dict]:
    process, dest, logfile = job
    if process.wait() != 0:
        raise SystemExit(f"judge failed (exit {process.returncode}); its log {logfile}:\n"
                         + "".join(Path(logfile).read_text().splitlines(True)[-15:]))
    return read_csv(dest)


def score_expressions(rows: list[dict], folder: Path, judge: list[str]) -> dict:
    """``judge.py score`` on classified expression rows -> its summary JSON (``folder``: results.csv, summary.json,
    the report in score.txt)."""
    results, summary = folder / "results.csv", folder / "summary.json"
    write_csv(results, rows)
    report = subprocess.run([*judge, "score", str(results), "--json", str(summary)], capture_output=True, text=True)
    (folder / "score.txt").write_text(report.stdout + report.stderr)
    if report.returncode != 0:
        raise SystemExit(f"judge score failed (exit {report.returncode}):\n{report.stderr[-2000:]}")
    return json.loads(summary.read_text())


# ---------------------------------------------------------------------------- figures
def expression_figures(summary: dict) -> dict:
    """Per-label hit rates, their macro mean over the six expressions, identity figures."""
    per_label = summary.get("expr", {}).get("per_label", {})
    rates = {label: float(per_label[label]["hit_rate"]) if label in per_label else math.nan for label in EXPRESSIONS}
    identity = summary.get("id", {})
    return {"macro": statistics.fmean(rates.values()), **{SHORT[k]: v for k, v in rates.items()},
            "id_mean": float(identity.get("mean", math.nan)), "id_lt06": float(identity.get("frac_same", math.nan)),
            "id_max": float(identity.get("max", math.nan))}


def posed_figures(summary: dict) -> dict:
    """``posed_<label>`` hit rates of the posed photos (NaN for a label none has), their macro mean over the
    labels that have one, and the mean identity distance to the neutral photo."""
    figures = expression_figures(summary)
    rates = [figures[SHORT[label]] for label in EXPRESSIONS if math.isfinite(figures[SHORT[label]])]
    return {"posed_macro": statistics.fmean(rates) if rates else math.nan,
            **{f"posed_{SHORT[label]}": figures[SHORT[label]] for label in EXPRESSIONS},
            "posed_id_mean": figures["id_mean"]}


def va_figures(rows: list[dict]) -> tuple[dict, dict]:
    """Spearman rho of the judge's proxy vs the target along each sweep: mean over subjects, and per subject."""
    from scipy.stats import spearmanr

    per_subject: dict[str, dict[str, float]] = {}
    for subject in sorted({r["subject"] for r in rows}):
        for sweep, axis in (("valence", "valence"), ("arousal", "arousal")):
            points = sorted((float(r[f"target_{axis}"]), _float(r.get(axis))) for r in rows
                            if r["subject"] == subject and r["sweep"] == sweep)
            points = [(t, p) for t, p in points if math.isfinite(p)]
            rho = spearmanr(*zip(*points)).statistic if len(points) >= 3 and len({p for _, p in points}) > 1 \
                else math.nan
            per_subject.setdefault(subject, {})[sweep] = float(rho)
    means = {f"va_{s[0]}_rho": statistics.fmean(0.0 if math.isnan(d[s]) else d[s] for d in per_subject.values())
             if per_subject else math.nan for s in ("valence", "arousal")}
    return means, per_subject


def neutral_figures(records: list[dict]) -> dict:
    values = [r["psnr_face_box"] for r in records if r["part"] == "neutral" and "psnr_face_box" in r]
    return {"psnr_neutral_min": min(values) if values else math.nan,
            "psnr_neutral_mean": statistics.fmean(values) if values else math.nan}


# ---------------------------------------------------------------------------- contact sheets
def face_crop(box: list[int], size_hw: tuple[int, int], grow: float = 0.3) -> tuple[int, int, int, int]:
    """A square crop around a face box, grown by ``grow`` of its size on each side, inside the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * grow)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    height, width = size_hw
    side = min(side, width, height)
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + int(side), top + int(side)


def tile(path: str, crop: tuple[int, int, int, int], size: int, lines: list[tuple[str, tuple]]) -> np.ndarray:
    """[size + text, size, 3] BGR: the crop of the image at ``path``, with text lines (text, BGR colour) below."""
    image = cv2.imread(path)
    x0, y0, x1, y1 = crop
    face = np.full((size, size, 3), 128, np.uint8) if image is None else \
        cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
    scale = size / 256
    line_h = int(round(20 * scale)) + 2
    text = np.full((line_h * len(lines) + 4, size, 3), 255, np.uint8)
    for i, (words, colour) in enumerate(lines):
        cv2.putText(text, words, (4, line_h * (i + 1) - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, colour, 1,
                    cv2.LINE_AA)
    return np.vstack((face, text))


GREEN, RED, BLACK = (0, 140, 0), (0, 0, 200), (0, 0, 0)


def expression_sheets(records: list[dict], results: list[dict], out: Path) -> list[Path]:
    """One sheet per subject: reference | six expressions, labelled with the judge's verdict; below, where the
    posed part ran, the subject's posed photos under the renders of their labels (grey where there is none)."""
    by_key = {(r["subject"], r["part"], r["name"], r["role"]): r for r in results}
    written = []
    for subject in sorted({r["subject"] for r in records if r["part"] == "expressions" and "box" in r}):
        first = next(r for r in records if r["subject"] == subject and "box" in r)
        crop = face_crop(first["box"], (first["height"], first["width"]))
        judged = by_key.get((subject, "neutral", "neutral", "input"))
        tiles = [tile(str(out / "expr" / subject / "reference.png"), crop, TILE,
                      [("reference", BLACK), (_verdict(judged), BLACK), ("", BLACK)])]
        for label in EXPRESSIONS:
            judged = by_key.get((subject, "expressions", label, "render"))
            hit = judged is not None and judged.get("expr_hit") == "1"
            identity = _float(judged.get("id_distance")) if judged else math.nan
            tiles.append(tile(str(out / "expr" / subject / f"{label}.png"), crop, TILE,
                              [(label, BLACK), (_verdict(judged), GREEN if hit else RED),
                               (f"id {identity:.2f}", BLACK if identity < 0.6 else RED)]))
        rows = [np.hstack(tiles)]
        posed = {r["name"]: r for r in results if r["part"] == "posed" and r["subject"] == subject}
        if posed:
            blank = np.full_like(tiles[0], 255)
            cv2.putText(blank, "posed photos", (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BLACK, 1, cv2.LINE_AA)
            row = [blank]
            for label in EXPRESSIONS:
                judged = posed.get(label)
                if judged is None:
                    row.append(tile("", crop, TILE, [("no posed photo", BLACK), ("", BLACK), ("", BLACK)]))
                    continue
                identity = _float(judged.get("id_distance"))
                row.append(tile(judged["path"], face_crop(first["box"], (int(judged["height"]), int(judged["width"]))),
                                TILE, [(f"posed {label}", BLACK),
                                       (_verdict(judged), GREEN if judged.get("expr_hit") == "1" else RED),
                                       (f"id {identity:.2f}", BLACK if identity < 0.6 else RED)]))
            rows.append(np.hstack(row))
        path = out / "sheets" / f"{subject}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.vstack(rows))
        written.append(path)
    return written


def va_sheet(records: list[dict], results: list[dict], out: Path) -> Path | None:
    """One sheet: a row per subject and sweep, each tile labelled with its target and the judge's proxies."""
    by_key = {(r["subject"], r["name"]): r for r in results if r["part"] == "va"}
    rows = []
    for subject in sorted({r["subject"] for r in records if r["part"] == "va" and "box" in r}):
        first = next(r for r in records if r["subject"] == subject and "box" in r)
        crop = face_crop(first["box"], (first["height"], first["width"]))
        for sweep, points in (("valence", sweep_points()[:SWEEP_STEPS]), ("arousal", sweep_points()[SWEEP_STEPS:])):
            tiles = []
            for _, v, a in points:
                judged = by_key.get((subject, va_name(v, a)), {})
                tiles.append(tile(str(out / "va" / subject / f"{va_name(v, a)}.png"), crop, VA_TILE,
                                  [(f"V{v:+.2f} A{a:+.2f}", BLACK),
                                   (f"pV{_float(judged.get('valence')):+.2f} pA{_float(judged.get('arousal')):+.2f}",
                                    BLACK)]))
            header = np.full((tiles[0].shape[0], 120, 3), 255, np.uint8)
            cv2.putText(header, subject, (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BLACK, 1, cv2.LINE_AA)
            cv2.putText(header, f"{sweep} sweep", (4, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BLACK, 1, cv2.LINE_AA)
            rows.append(np.hstack([header, *tiles]))
    if not rows:
        return None
    path = out / "sheets" / "va_sweeps.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
    return path


def _verdict(judged: dict | None) -> str:
    if not judged or not judged.get("expr_top1"):
        return "judge: n/a"
    return f"judge: {judged['expr_top1']} {_float(judged.get('expr_conf')):.2f}"


# ---------------------------------------------------------------------------- report
def print_report(figures: dict, records: list[dict], results: list[dict], per_subject_va: dict,
                 summary: dict | None) -> None:
    if summary is not None:
        print("\n== expressions: judge top-1 per render (* = hit), identity distance to the input ==")
        expr_rows = {(r["subject"], r["name"]): r for r in results if r["part"] == "expressions"}
        print(f"{'subject':<16}" + "".join(f"{label:>16}" for label in EXPRESSIONS))
        for subject in sorted({s for s, _ in expr_rows}):
            cells = []
            for label in EXPRESSIONS:
                r = expr_rows.get((subject, label))
                cells.append("failed" if r is None else
                             f"{r['expr_top1'][:4]} {_float(r['expr_conf']):.2f}{'*' if r['expr_hit'] == '1' else ' '}"
                             f" {_float(r.get('id_distance')):.2f}")
            print(f"{subject:<16}" + "".join(f"{c:>16}" for c in cells))
        per_label = summary.get("expr", {}).get("per_label", {})
        print(f"\n{'label':<12}{'n':>4}{'hit_rate':>10}{'mean_p':>9}{'id_mean':>9}   predicted")
        for label in EXPRESSIONS:
            d = per_label.get(label, {})
            id_mean = summary.get("id", {}).get("per_label_mean", {}).get(label, math.nan)
            print(f"{label:<12}{d.get('n', 0):>4}{_float(d.get('hit_rate')):>10.3f}"
                  f"{_float(d.get('mean_p_target')):>9.3f}{_float(id_mean):>9.3f}   {d.get('pred', {})}")
        print(f"macro {figures['macro']:.3f} (target >= 0.45); happiness {figures['hap']:.3f} (>= 0.8); "
              f"surprise {figures['sur']:.3f} (>= 0.6)")
        print(f"identity: mean {figures['id_mean']:.3f} (<= 0.35), under 0.6 {100 * figures['id_lt06']:.1f}% "
              f"(100%), max {figures['id_max']:.3f}")
    posed = [r for r in results if r["part"] == "posed"]
    if posed:
        print("\n== posed photos of the same subjects (real faces): judge hit rate, against the renders ==")
        rendered = {(r["subject"], r["name"]): r for r in results if r["part"] == "expressions"}
        print(f"{'label':<12}{'n':>4}{'posed':>8}{'render, same subjects':>24}{'render, all':>13}   posed predicted")
        for label in EXPRESSIONS:
            group = [r for r in posed if r["name"] == label]
            same = [rendered[(r["subject"], label)] for r in group if (r["subject"], label) in rendered]
            every = [r for (_, name), r in rendered.items() if name == label]
            rate = lambda rows: _mean(float(r["expr_hit"] == "1") for r in rows) if rows else math.nan  # noqa: E731
            predicted = ", ".join(f"{r['subject']} {r['expr_top1'][:4]}" for r in group)
            print(f"{label:<12}{len(group):>4}{rate(group):>8.3f}{rate(same):>24.3f}{rate(every):>13.3f}   {predicted}")
        print(f"posed macro {figures['posed_macro']:.3f} (over the labels with a posed photo), identity to the "
              f"neutral photo: mean {figures['posed_id_mean']:.3f}")
    if per_subject_va:
        print("\n== VA sweeps: Spearman rho of the judge's proxy vs the target (9 points) ==")
        va_rows = [r for r in results if r["part"] == "va"]
        for subject, rhos in per_subject_va.items():
            for sweep in ("valence", "arousal"):
                proxies = [_float(r.get(sweep)) for r in sorted(
                    (r for r in va_rows if r["subject"] == subject and r["sweep"] == sweep),
                    key=lambda r: float(r[f"target_{sweep}"]))]
                print(f"{subject:<16}{sweep:<8} rho {rhos[sweep]:+.3f}   proxy "
                      + " ".join(f"{p:+.2f}" for p in proxies))
        print(f"mean rho: valence {figures['va_v_rho']:+.3f} (>= 0.9), arousal {figures['va_a_rho']:+.3f} (>= 0.7)")
    neutral = [r for r in records if r["part"] == "neutral" and "psnr_face_box" in r]
    if neutral:
        print("\n== --expression neutral: PSNR over the face box (>= 35 dB) ==")
        print("  ".join(f"{r['subject']} {r['psnr_face_box']:.2f}"
                        for r in sorted(neutral, key=lambda r: r["subject"])))
    print_timings(records, results)


def print_timings(records: list[dict], results: list[dict]) -> None:
    """Where the time goes: mean ms per render per stage, and per judge, by photo size."""
    done = [r for r in records if "timings_ms" in r]
    if done:
        print("\n== render time per photo size (mean ms per render; decode once per worker and photo) ==")
        stages = list(dict.fromkeys(k for r in done for k in r["timings_ms"]))
        print(f"{'size':>11}{'n':>5}" + "".join(f"{s:>18}" for s in stages) + f"{'wall':>10}")
        for size in sorted({(r["width"], r["height"]) for r in done}, key=lambda s: -s[0] * s[1]):
            group = [r for r in done if (r["width"], r["height"]) == size]
            print(f"{size[0]:>5}x{size[1]:<5}{len(group):>5}" + "".join(
                f"{statistics.fmean(r['timings_ms'].get(s, 0.0) for r in group):>18.0f}" for s in stages)
                + f"{statistics.fmean(r['wall_ms'] for r in group):>10.0f}")
    judged = [r for r in results if r.get("width")]
    if judged:
        print("judge time per photo size (mean ms per image: expression, blendshapes, identity):")
        for size in sorted({(r["width"], r["height"]) for r in judged}, key=lambda s: -int(s[0]) * int(s[1])):
            group = [r for r in judged if (r["width"], r["height"]) == size]
            print(f"{size[0]:>5}x{size[1]:<5}{len(group):>5} images " + ", ".join(
                f"{k} {_mean(_float(r.get(f't_{k}_ms')) for r in group):.0f}" for k in ("expr", "bs", "id")))


# ---------------------------------------------------------------------------- helpers
def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report_failures(failed: list[dict]) -> None:
    """Each distinct render error once, with its count, renders and traceback."""
    by_error: dict[str, list[dict]] = {}
    for r in failed:
        by_error.setdefault(r["error"], []).append(r)
    for error, group in by_error.items():
        names = ", ".join(f"{r['subject']}/{r['name']}" for r in group[:6]) + (", ..." if len(group) > 6 else "")
        log(f"{len(group)} render(s) failed with {error}: {names}\n{group[0]['traceback']}")


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """Earlier records with those re-rendered now replaced."""
    key = lambda r: (r["subject"], r["part"], r["name"])  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces" / "dev")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "eval")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="render and judge processes (default: the CPU count, %(default)s)")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    ap.add_argument("--subjects", help="comma-separated subject folders (default: every one with a neutral photo)")
    ap.add_argument("--skip-render", action="store_true", help="re-score the renders recorded in <out>/renders.json")
    ap.add_argument("--seed", type=lambda text: None if text.lower() == "none" else int(text), default=0,
                    help="seed of the VA targets (as `render --seed`; 'none': the kernel-weighted mean of the "
                         "prototypes, as `render --va` without --seed); default %(default)s")
    ap.add_argument("--model", type=Path, help="a converted model (.npz, `affectsynth model import`); default: "
                                               "the embedded default model")
    ap.add_argument("--judge", type=Path, required=True,
                    help="a copy of ../shared/tools/judge after its `bash setup.sh` (see above)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    judge = [args.judge / ".venv" / "bin" / "python", args.judge / "judge.py"]
    for path in judge:
        if not path.exists():
            ap.error(f"judge not found: {path} (run `bash setup.sh` in --judge)")
    judge = [str(path) for path in judge]
    out = args.out.resolve()
    subjects = find_subjects(args.faces, args.subjects.split(",") if args.subjects else None)
    records_file = out / "renders.json"
    old = json.loads(records_file.read_text()) if records_file.is_file() else []

    render_s = math.nan
    if args.skip_render:
        wanted = {(t["subject"], t["part"], t["name"]) for t in plan_renders(subjects, args.only, out)}
        records = [r for r in old if (r["subject"], r["part"], r["name"]) in wanted]
        if missing := len(wanted) - len(records):
            raise SystemExit(f"--skip-render: {missing} of {len(wanted)} renders are not recorded in {records_file}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        tasks = plan_renders(subjects, args.only, out)
        log(f"[render] {len(tasks)} renders of {len(subjects)} faces in {args.jobs} process(es)")
        records = render_all(tasks, args.jobs, args.seed, None if args.model is None else str(args.model))
        render_s = time.perf_counter() - began
        write_references(subjects, out)
        records_file.write_text(json.dumps(merge_records(old, records), indent=1))
    failed = [r for r in records if "error" in r]
    report_failures(failed)

    began = time.perf_counter()
    posed = posed_rows(subjects) if "posed" in args.only else []
    if "posed" in args.only and not posed:
        log(f"[posed] no posed photos (<subject>/<label>.*) in {args.faces}")
    results = run_judge(judge_rows(records, out) + posed, out / "judge", args.jobs, judge)
    summary = None
    figures = {k: math.nan for k in ("macro", *SHORT.values(), "id_mean", "id_lt06", "id_max", "va_v_rho",
                                     "va_a_rho", "psnr_neutral_min", "psnr_neutral_mean")}
    if "posed" in args.only:
        figures.update({k: math.nan for k in ("posed_macro", *(f"posed_{v}" for v in SHORT.values()), "posed_id_mean")})
    expression_rows = [r for r in results if r["part"] == "expressions"]
    if expression_rows:
        summary = score_expressions(expression_rows, out / "expr", judge)
        figures.update(expression_figures(summary))
    if posed:
        figures.update(posed_figures(score_expressions([r for r in results if r["part"] == "posed"], out / "posed",
                                                       judge)))
    per_subject_va = {}
    if any(r["part"] == "va" for r in results):
        va_means, per_subject_va = va_figures([r for r in results if r["part"] == "va"])
        figures.update(va_v_rho=va_means["va_v_rho"], va_a_rho=va_means["va_a_rho"])
    figures.update(neutral_figures(records) if "neutral" in args.only else {})
    judge_s = time.perf_counter() - began

    sheets = expression_sheets(records, results, out) + [p for p in [va_sheet(records, results, out)] if p]
    figures.update(n_faces=len(subjects), n_failed=len(failed), render_s=render_s, judge_s=judge_s)
    print_report(figures, records, results, per_subject_va, summary)
    print(f"\nsheets: {', '.join(str(p) for p in sheets)}\njudge report: {out / 'expr' / 'score.txt'}")
    (out / "eval.json").write_text(json.dumps(figures, indent=1))
    print(" ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
