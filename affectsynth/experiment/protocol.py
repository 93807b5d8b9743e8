"""The augmentation experiment: does training with affectsynth's faces make an expression classifier better?

    report = run_experiment(ExperimentOptions(data=Path("faces"), work=Path("work"), folds=7, seeds=(1, 2)))
    print(report.text); print(report.key_values())

Protocol (README, "Augmentation experiment"):

1. The dataset's samples (:mod:`.datasets`) are written to ``WORK/inputs/`` as PNGs, downscaled to at most
   ``max_side`` px (the batch input; this also keeps synthesis fast), and every face is detected and
   aligned by the eye centres to a ``size``² crop (:mod:`.align`); photos without a face are dropped.
2. ``affectsynth batch`` (:func:`~affectsynth.batch.run_batch`) renders every photo as every class present,
   from a CSV ``path,label,subject``, with its fit cache in ``WORK/fitcache`` and its output in
   ``WORK/synth``: a rerun renders nothing again. Renders of a photo's own class are not used.
3. Subject-disjoint K-fold cross-validation (folds drawn once, with ``fold_seed``, the same for every
   condition and seed). Per fold and seed, the same :class:`~.cnn.SmallCNN` is trained for the same
   number of optimiser steps (``epochs`` passes over the fold's real training photos) under each condition:
   ``real``; ``classic`` (real + flip, crop, colour jitter); ``synth_aug`` (real + the renders of the
   training subjects' photos as their other classes); ``synth_only`` (the training subjects' real neutral
   photos + the renders of those neutral photos as the other classes: no real expression photo); the two
   synthetic conditions get the control's classic augmentation too, so that ``synth_aug`` against
   ``classic`` measures what the renders add to it;
   and, where the photos have valence-arousal labels, ``va`` (regression on the real photos, CCC).
   Every condition is tested on the held-out subjects' real photos.
4. Accuracy and macro-F1 per condition (mean ± sample std over folds x seeds), the confusion summed over
   folds and seeds, and the paired comparison of ``synth_aug`` against ``classic`` over folds (per-fold
   differences of the seed means; mean, paired t-test, exact two-sided sign test).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..affect.targets import emfacs_table
from ..errors import InputError
from ..io import load_image, save_image, write_atomic
from .align import align_face, find_eyes
from .cnn import TrainSettings, predict, train_network
from .datasets import FaceSample, read_dataset

__all__ = ["ExperimentOptions", "ExperimentReport", "RunResult", "FaceSet", "CONDITIONS", "run_experiment",
           "subject_folds", "confusion_matrix", "accuracy", "macro_f1", "ccc", "paired_comparison",
           "PairedComparison"]

#: The classification conditions, in report order.
CONDITIONS = ("real", "classic", "synth_aug", "synth_only")


@dataclass(frozen=True)
class ExperimentOptions:
    """An experiment run (module docstring). ``workers``: batch render processes; ``max_side``: the long
    side photos are downscaled to before detection and synthesis; ``intensities``: each photo is rendered
    as each other class once per intensity (each render its own seeded variant draw)."""

    data: Path
    work: Path
    folds: int = 5
    seeds: tuple[int, ...] = (1,)
    size: int = 112
    epochs: int = 30
    format: str = "auto"
    batch_size: int = 16
    workers: int = 2
    max_side: int = 600
    fold_seed: int = 0
    detector: str = "mediapipe"
    intensities: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class FaceSet:
    """Aligned faces: ``images`` [N, 3, S, S] uint8, ``labels`` [N] int64 (indices into the classes),
    ``subjects`` and ``source_labels`` (the label of the real photo each came from; a real photo's own)
    [N] lists, ``va`` [N, 2] float32 (NaN where unknown)."""

    images: torch.Tensor
    labels: torch.Tensor
    subjects: list[str]
    source_labels: list[str]
    va: torch.Tensor

    def select(self, mask: list[bool]) -> FaceSet:
        index = torch.tensor([i for i, keep in enumerate(mask) if keep], dtype=torch.int64)
        return FaceSet(self.images[index], self.labels[index], [self.subjects[i] for i in index],
                       [self.source_labels[i] for i in index], self.va[index])

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class RunResult:
    """One trained network's test figures: ``confusion`` [C, C] counts (rows true, columns predicted)."""

    condition: str
    fold: int
    seed: int
    accuracy: float
    macro_f1: float
    confusion: np.ndarray


@dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` over folds: per-fold differences (seed means of a minus b), their mean and sample
    std, the paired t statistic and two-sided p, and the sign test (wins, losses, ties, exact two-sided p)."""

    differences: tuple[float, ...]
    mean: float
    std: float
    t: float
    t_p: float
    wins: int
    losses: int
    ties: int
    sign_p: float


@dataclass
class ExperimentReport:
    """What a run measured: ``text`` (the printed report, without its last line) and ``figures`` (the last
    line's ``key=value`` figures)."""

    text: str
    figures: dict[str, float] = field(default_factory=dict)

    def key_values(self) -> str:
        return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.figures.items())


# ------------------------------------------------------------------------ metrics
def confusion_matrix(true: torch.Tensor, predicted: torch.Tensor, classes: int) -> np.ndarray:
    """[C, C] int64 counts, rows true class, columns predicted, from [N] int64 indices."""
    counts = torch.bincount(true * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes).numpy()


def accuracy(confusion: np.ndarray) -> float:
    return float(np.trace(confusion) / max(confusion.sum(), 1))


def macro_f1(confusion: np.ndarray) -> float:
    """F1 averaged over the classes that occur among the true or predicted labels (sklearn's default)."""
    true_positive = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * true_positive[present] / (support + predicted)[present]
    return float(f1.mean()) if present.any() else 0.0


def ccc(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Lin's concordance correlation coefficient of two [N] series: 2 cov / (var + var + (mean diff)²)."""
    p, t = predicted.double(), true.double()
    covariance = ((p - p.mean()) * (t - t.mean())).mean()
    denominator = p.var(unbiased=False) + t.var(unbiased=False) + (p.mean() - t.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else 0.0


def paired_comparison(a: list[float], b: list[float]) -> PairedComparison:
    """``a`` against ``b``, paired by position (one value per fold)."""
    from scipy.stats import t as student_t

    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(differences)
    mean = float(differences.mean())
    std = float(differences.std(ddof=1)) if n > 1 else 0.0
    if n > 1 and std > 0:
        t = mean / (std / math.sqrt(n))
        t_p = float(2 * student_t.sf(abs(t), df=n - 1))
    else:
        t, t_p = 0.0, 1.0
    wins, losses = int((differences > 1e-12).sum()), int((differences < -1e-12).sum())
    decided = wins + losses
    # Exact sign test: P(as few as min(wins, losses) of the decided folds going one way), both tails.
    tail = sum(math.comb(decided, i) for i in range(min(wins, losses) + 1)) / 2 ** decided if decided else 1.0
    return PairedComparison(tuple(differences.tolist()), mean, std, float(t), t_p, wins, losses,
                            n - decided, min(1.0, 2 * tail))


# ------------------------------------------------------------------------ folds
def subject_folds(subjects: list[str], folds: int, seed: int) -> list[set[str]]:
    """The test subjects of each of ``folds`` folds: the distinct subjects in a seeded random order, dealt
    round-robin (fold sizes differ by at most one subject)."""
    distinct = sorted(set(subjects))
    if not 2 <= folds <= len(distinct):
        raise InputError(f"--folds {folds}: give 2 to {len(distinct)} (the number of subjects)")
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    return [{distinct[j] for j in order[i::folds]} for i in range(folds)]


# ------------------------------------------------------------------------ data preparation
def _check_work(options: ExperimentOptions) -> None:
    """WORK belongs to one dataset: its inputs and renders are reused by name."""
    stamp = options.work / "dataset.json"
    wanted = {"data": str(options.data.resolve()), "format": options.format, "max_side": options.max_side}
    if stamp.is_file() and json.loads(stamp.read_text()) != wanted:
        raise InputError(f"{options.work} holds the work of another dataset or settings ({stamp}); give another --work")
    options.work.mkdir(parents=True, exist_ok=True)
    write_atomic(stamp, lambda file: file.write(json.dumps(wanted).encode()))


def _prepare_inputs(samples: list[FaceSample], folder: Path, max_side: int) -> dict[str, Path]:
    """Each sample as ``folder/<key>.png``, downscaled to at most ``max_side`` px (long side); files already
    there are kept (a rerun). Returns key -> file."""
    import cv2

    paths = {}
    for sample in samples:
        if sample.key in paths:
            raise InputError(f"two samples are named {sample.key}; rename one")
        path = folder / f"{sample.key}.png"
        paths[sample.key] = path
        if path.is_file():
            continue
        image = sample.image if isinstance(sample.image, np.ndarray) else load_image(sample.image)
        h, w = image.shape[:2]
        if max(h, w) > max_side:
            factor = max_side / max(h, w)
            image = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, image)
    return paths


def _cached_eyes(paths: dict[str, Path], cache: Path, detector: str) -> dict[str, np.ndarray]:
    """:func:`~.align.find_eyes`, remembered in ``cache`` (JSON; None for no face) across runs."""
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = {key: path for key, path in paths.items() if key not in known}
    if missing:
        found = find_eyes(missing, detector)
        known.update({key: found[key].tolist() if key in found else None for key in missing})
        write_atomic(cache, lambda file: file.write(json.dumps(known).encode()))
    return {key: np.asarray(known[key]) for key in paths if known[key] is not None}


def _synthesize(samples: list[FaceSample], paths: dict[str, Path], classes: list[str],
                options: ExperimentOptions) -> tuple[list[tuple[str, Path, str]], dict[str, int]]:
    """Render every sample as every class (at each of ``options.intensities``) through ``affectsynth batch``
    (fit cache under WORK).

    Returns (source key, render file, rendered class) for each ok render of a class other than the
    source's, and the batch's failure reasons with their counts."""
    from ..batch import BatchOptions, run_batch

    inputs = options.work / "inputs"
    table = inputs / "sources.csv"
    lines = ["path,label,subject"] + [f"{_csv_field(paths[s.key].relative_to(inputs).as_posix())},{s.label},"
                                      f"{_csv_field(s.subject)}" for s in samples]
    write_atomic(table, lambda file: file.write(("\n".join(lines) + "\n").encode()))
    output = options.work / "synth"
    targets = [c if c == "neutral" or i == 1.0 else f"{c}@{i:g}" for c in classes
               for i in (options.intensities if c != "neutral" else (1.0,))]
    summary = run_batch(BatchOptions(input=table, output=output, targets="expressions=" + ",".join(targets),
                                     workers=options.workers, fit_cache=options.work / "fitcache",
                                     detector=options.detector, progress=False))
    renders = []
    with open(output / "manifest.csv", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["status"] == "ok" and row["category"] != row["source_label"]:
                renders.append((row["source"].removesuffix(".png"), output / row["output"], row["category"]))
    return renders, summary.reasons


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _face_set(crops: list[np.ndarray], labels: list[int], subjects: list[str], source_labels: list[str],
              va: list[tuple[float, float]]) -> FaceSet:
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous() if crops else torch.zeros(0)
    return FaceSet(images, torch.tensor(labels, dtype=torch.int64), subjects, source_labels,
                   torch.tensor(va, dtype=torch.float32).reshape(-1, 2))


# ------------------------------------------------------------------------ the run
def run_experiment(options: ExperimentOptions, log: Callable[[str], None] = lambda message: None) -> ExperimentReport:
    """Run the experiment (module docstring); ``log`` gets a line per stage. InputError for bad options or data."""
    start = time.perf_counter()
    if options.epochs < 1 or not options.seeds:
        raise InputError(f"--epochs {options.epochs} / --seeds {options.seeds}: give at least 1 epoch and 1 seed")
    samples = read_dataset(options.data, options.format)
    subject_folds([s.subject for s in samples], options.folds, options.fold_seed)  # bad --folds: fail before any work
    _check_work(options)
    paths = _prepare_inputs(samples, options.work / "inputs", options.max_side)
    eyes = _cached_eyes(paths, options.work / "eyes.json", options.detector)
    no_face = [s.key for s in samples if s.key not in eyes]
    samples = [s for s in samples if s.key in eyes]
    classes = [c for c in emfacs_table().categories if any(s.label == c for s in samples)]
    if len(classes) < 2:
        raise InputError(f"{options.data}: needs faces of at least 2 classes, found {classes or 'none'}")
    log(f"{len(samples)} faces ({len(no_face)} photos without a face dropped), {len(classes)} classes; "
        f"synthesizing ({time.perf_counter() - start:.0f} s)")
    folds = subject_folds([s.subject for s in samples], options.folds, options.fold_seed)
    renders, failures = _synthesize(samples, paths, classes, options)
    log(f"{len(renders)} renders; aligning ({time.perf_counter() - start:.0f} s)")

    index = {c: i for i, c in enumerate(classes)}
    by_key = {s.key: s for s in samples}
    real = _face_set([align_face(load_image(paths[s.key]), eyes[s.key], options.size) for s in samples],
                     [index[s.label] for s in samples], [s.subject for s in samples], [s.label for s in samples],
                     [(s.valence, s.arousal) if s.valence is not None else (math.nan, math.nan) for s in samples])
    synth = _face_set([align_face(load_image(path), eyes[key], options.size) for key, path, _ in renders],
                      [index[label] for _, _, label in renders], [by_key[key].subject for key, _, _ in renders],
                      [by_key[key].label for key, _, _ in renders], [(math.nan, math.nan)] * len(renders))

    results: list[RunResult] = []
    va_results: list[tuple[float, float]] = []
    for fold, test_subjects in enumerate(folds):
        test = real.select([s in test_subjects for s in real.subjects])
        train = real.select([s not in test_subjects for s in real.subjects])
        train_synth = synth.select([s not in test_subjects for s in synth.subjects])
        neutral_only = [label == "neutral" for label in train.source_labels]
        training_sets = {
            "real": (train, False), "classic": (train, True),
            "synth_aug": (_concat(train, train_synth), True),
            "synth_only": (_concat(train.select(neutral_only),
                                   train_synth.select([label == "neutral" for label in train_synth.source_labels])),
                           True)}
        # The same optimiser steps for every condition: a larger augmented set is not also a longer training.
        steps = options.epochs * math.ceil(len(train) / options.batch_size)
        settings = TrainSettings(steps=steps, batch_size=options.batch_size)
        for seed in options.seeds:
            for condition in CONDITIONS:
                data, classic = training_sets[condition]
                if len(data) == 0:
                    raise InputError(f"fold {fold + 1}: condition {condition} has no training image (for "
                                     "synth_only: no neutral photo of a training subject rendered)")
                generator = torch.Generator().manual_seed(seed * 1_000_003 + fold)  # same draws for every condition
                net = train_network(data.images, data.labels, len(classes), settings, generator, classic)
                confusion = confusion_matrix(test.labels, predict(net, test.images).argmax(1), len(classes))
                results.append(RunResult(condition, fold, seed, accuracy(confusion), macro_f1(confusion), confusion))
            va_known = ~torch.isnan(train.va).any(1)
            va_test = ~torch.isnan(test.va).any(1)
            if va_known.sum() >= 2 and va_test.sum() >= 2:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + fold)
                net = train_network(train.images[va_known], train.va[va_known], 2, settings, generator)
                out = predict(net, test.images[va_test])
                va_results.append((ccc(out[:, 0], test.va[va_test, 0]), ccc(out[:, 1], test.va[va_test, 1])))
        log(f"fold {fold + 1}/{len(folds)} done ({time.perf_counter() - start:.0f} s)")
    return _report(options, classes, real, synth, no_face, failures, folds, results, va_results,
                   time.perf_counter() - start)


def _concat(a: FaceSet, b: FaceSet) -> FaceSet:
    if len(b) == 0:
        return a
    return FaceSet(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.subjects + b.subjects,
                   a.source_labels + b.source_labels, torch.cat([a.va, b.va]))


# ------------------------------------------------------------------------ the report
def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _per_fold(results: list[RunResult], condition: str, metric: str, folds: int) -> list[float]:
    """``metric`` ("accuracy" or "macro_f1") of ``condition`` per fold, the mean over seeds."""
    return [float(np.mean([getattr(r, metric) for r in results if r.condition == condition and r.fold == k]))
            for k in range(folds)]


def _report(options: ExperimentOptions, classes: list[str], real: FaceSet, synth: FaceSet, no_face: list[str],
            failures: dict[str, int], folds: list[set[str]], results: list[RunResult],
            va_results: list[tuple[float, float]], seconds: float) -> ExperimentReport:
    counts = torch.bincount(real.labels, minlength=len(classes)).tolist()
    lines = [f"affectsynth augmentation experiment: {options.data} ({options.format})",
             f"faces: {len(real)} real of {len(set(real.subjects))} subjects ("
             + ", ".join(f"{c} {n}" for c, n in zip(classes, counts)) + f"); {len(no_face)} photos without a face"
             + (f" ({', '.join(no_face[:5])}{', ...' if len(no_face) > 5 else ''})" if no_face else ""),
             f"synthesized: {len(synth)} renders of other classes"
             + ("; failed: " + "; ".join(f"{n} x {r}" for r, n in sorted(failures.items(), key=lambda x: -x[1]))
                if failures else ""),
             f"protocol: {len(folds)} subject-disjoint folds (fold seed {options.fold_seed}), seeds "
             f"{list(options.seeds)}, {options.size}² crops, {options.epochs} epochs of the real training photos "
             f"(the same optimiser steps for every condition), batch {options.batch_size}",
             f"chance 1/{len(classes)} = {1 / len(classes):.4f}; majority class {max(counts) / len(real):.4f}",
             "", f"{'condition':<12} {'accuracy (mean ± std)':>24} {'macro-F1 (mean ± std)':>24}  runs"]
    figures: dict[str, float] = {}
    for condition in CONDITIONS:
        runs = [r for r in results if r.condition == condition]
        acc, f1 = _mean_std([r.accuracy for r in runs]), _mean_std([r.macro_f1 for r in runs])
        lines.append(f"{condition:<12} {acc[0]:>15.4f} ± {acc[1]:.4f} {f1[0]:>15.4f} ± {f1[1]:.4f}  {len(runs)}")
        figures[f"acc_{condition}"], figures[f"acc_{condition}_std"] = acc
        figures[f"macro_f1_{condition}"], figures[f"macro_f1_{condition}_std"] = f1
    chance = 1 / len(classes)
    lines += ["", "accuracy per fold (mean over seeds), and against chance over the folds (one-sample t, sign test):"]
    for condition in CONDITIONS:
        per_fold = _per_fold(results, condition, "accuracy", len(folds))
        versus = paired_comparison(per_fold, [chance] * len(per_fold))
        lines.append(f"  {condition:<12} " + " ".join(f"{a:.3f}" for a in per_fold)
                     + f"  ({versus.wins}/{len(folds)} folds above chance; {versus.mean:+.4f}, "
                     f"t({len(folds) - 1}) = {versus.t:.3f}, p = {versus.t_p:.4f}; sign p = {versus.sign_p:.4f})")
        if condition == "synth_only":  # the question: does synthesis alone teach the classes?
            figures["p_t_synth_only_vs_chance"], figures["p_sign_synth_only_vs_chance"] = versus.t_p, versus.sign_p
    width = max(len(c) for c in classes)
    for condition in CONDITIONS:
        total = sum(r.confusion for r in results if r.condition == condition)
        lines += ["", f"confusion, {condition} (rows true, columns predicted; summed over folds and seeds):",
                  " " * (width + 1) + " ".join(f"{c[:5]:>5}" for c in classes)]
        lines += [f"{c:<{width}} " + " ".join(f"{n:>5d}" for n in row) for c, row in zip(classes, total)]
    lines += ["", "synth_aug against classic, paired over folds (per-fold mean over seeds):"]
    for metric in ("accuracy", "macro_f1"):
        per_fold = {c: _per_fold(results, c, metric, len(folds)) for c in ("synth_aug", "classic")}
        paired = paired_comparison(per_fold["synth_aug"], per_fold["classic"])
        lines.append(f"  {metric}: differences " + " ".join(f"{d:+.3f}" for d in paired.differences)
                     + f"; mean {paired.mean:+.4f} ± {paired.std:.4f}, paired t({len(folds) - 1}) = {paired.t:.3f}, "
                     f"p = {paired.t_p:.4f}; sign test {paired.wins} better / {paired.losses} worse / "
                     f"{paired.ties} tied, p = {paired.sign_p:.4f}")
        short = "acc" if metric == "accuracy" else "macro_f1"
        figures[f"diff_{short}_synth_aug_vs_classic"] = paired.mean
        figures[f"p_t_{short}"], figures[f"p_sign_{short}"] = paired.t_p, paired.sign_p
    if va_results:
        valence, arousal = _mean_std([v for v, _ in va_results]), _mean_std([a for _, a in va_results])
        lines += ["", f"va regression (real photos), CCC over folds x seeds ({len(va_results)} runs): valence "
                      f"{valence[0]:.4f} ± {valence[1]:.4f}, arousal {arousal[0]:.4f} ± {arousal[1]:.4f}"]
        figures["ccc_valence"], figures["ccc_valence_std"] = valence
        figures["ccc_arousal"], figures["ccc_arousal_std"] = arousal
    figures["chance"] = chance
    figures["folds"], figures["runs"] = len(folds), len(results)
    figures["seconds"] = seconds
    lines += ["", f"total {seconds:.0f} s"]
    return ExperimentReport("\n".join(lines), figures)
