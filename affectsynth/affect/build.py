"""Build the affect model (:class:`~affectsynth.affect.affect_model.AffectModel`) from 4D expression
meshes: ``affectsynth model build-affect``.

Per sequence (:func:`fit_sequence`; inputs: :mod:`affectsynth.affect.sequences`):

1. remove the rigid head motion: the sequence's first (neutral) frame is aligned to the model mean,
   every frame to that neutral frame:
   Kabsch (rotation and translation, no scale: the meshes are in mm like the model) over the
   vertices the base model's blendshapes move least (:func:`stable_vertices`: aligning on vertices
   an expression moves would turn part of the expression into head motion; ICT's own ``rigid``
   vertex set moves up to 39 mm under surprise's shapes, so it is not used);
2. subtract the person's own neutral frame, which removes the identity: what is left is the
   expression displacement [F, V, 3];
3. fit the base model's expression coefficients to it by bounded least squares, 0 <= c <= 1
   (:class:`ExpressionFitter`), and record the residual (RMS over vertices, mm);
4. the apex: the frame whose coefficients are farthest (Euclidean) from the onset frame's.

Over all sequences (:class:`AffectAccumulator`, which holds no frames): per class the mean over
people of each person's mean apex coefficients, and its spread (standard deviation across people);
VA exemplars (valence, arousal, the frame's AU activations from ``model_coeffs_to_au``, its label)
pooled and thinned by VA binning (:meth:`VABank.thin`) whenever the pool outgrows
:attr:`BuildOptions.pool_limit`, and once more at the end (so memory stays flat in the number of
frames; the result is the same rule applied to the survivors of earlier thinning, not to all
frames at once); the coverage grid counts every exemplar before thinning.

Sequences are processed one at a time (:func:`iter_sequence_results`, a generator), in a pool of
``jobs`` processes when jobs > 1, with at most 2 x jobs sequences in flight, results taken in
order (so the build is deterministic). A bad sequence (corrupt mesh, wrong topology, labels for
frames it does not have) becomes a :class:`SequenceFailure`: reported in one line and skipped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

from ..errors import InputError
from ..model.face_model import FaceModel
from .affect_model import AffectModel
from .bank import VABank
from .sequences import (LAYOUT_UNITS_MM, SequenceLabels, SequenceSource, discover_sequences, load_sequence,
                        match_frames, read_labels, read_vertex_map)
from .targets import AU_KEYS, emfacs_table, model_coeffs_to_au

__all__ = ["BuildOptions", "stable_vertices", "ExpressionFitter", "SequenceResult", "SequenceFailure", "SequenceSummary", "BuildReport",
           "AffectAccumulator", "remove_rigid_motion", "fit_sequence", "iter_sequence_results", "build_affect"]

#: Label of VA exemplars whose frame and sequence have no category.
UNLABELLED = "unlabelled"
#: Share of the vertices rigid alignment uses: those the blendshapes move least.
STABLE_SHARE = 0.25
#: Upper edge (mm) of the residual histogram behind the percentiles (larger residuals count in the last bin).
RESIDUAL_HISTOGRAM_MM = 20.0


@dataclass(frozen=True)
class BuildOptions:
    """How to read and build.

    Attributes:
        layout: a key of :data:`~affectsynth.affect.sequences.LAYOUTS`.
        unit_mm: millimetres per mesh unit; None: the layout's default.
        vertex_map: a vertex map file for meshes in another topology, or None.
        bins: VA grid cells per axis for thinning and coverage (20: cells of 0.1 VA units).
        jobs: worker processes (1: in this process).
        pool_limit: VA exemplars pooled before the pool is thinned.
    """

    layout: str = "flat"
    unit_mm: float | None = None
    vertex_map: Path | None = None
    bins: int = 20
    jobs: int = 1
    pool_limit: int = 20_000


# ------------------------------------------------------------------------ per frame
def remove_rigid_motion(frames: np.ndarray, reference: np.ndarray, vertex_ids: np.ndarray | None = None) -> np.ndarray:
    """Frames moved rigidly onto ``reference`` (Kabsch: rotation + translation, no scale).

    Args:
        frames: [F, V, 3] vertices.
        reference: [V, 3] the vertices to align to.
        vertex_ids: the vertices the transform is estimated on (None: all).
    Returns:
        [F, V, 3] float64 aligned frames (every vertex moved by its frame's transform).
    """
    source = frames if vertex_ids is None else frames[:, vertex_ids]
    target = reference if vertex_ids is None else reference[vertex_ids]
    source_centre, target_centre = source.mean(1, keepdims=True), target.mean(0)
    covariance = np.einsum("fvi,vj->fij", source - source_centre, target - target_centre)  # [F, 3, 3]
    u, _, vt = np.linalg.svd(covariance)
    d = np.sign(np.linalg.det(u @ vt))  # -1 would be a reflection: flip the weakest axis instead
    u[:, :, 2] *= d[:, None]
    rotation = u @ vt  # [F, 3, 3], applied to row vectors: x @ R
    return (frames - source_centre) @ rotation + target_centre


def stable_vertices(model: FaceModel, share: float = STABLE_SHARE) -> np.ndarray:
    """[S] int64 ids of the ``share`` of vertices whose largest displacement under any one
    expression shape at full activation is smallest (ties by index): the skull and the back of the
    head on ICT (a quarter of its vertices no shape moves), the forehead and temples on a face mask."""
    largest = model.exp_basis.detach().cpu().norm(dim=2).amax(0).numpy() if model.num_expressions else \
        np.zeros(model.num_vertices)
    count = max(3, int(round(share * model.num_vertices)))
    return np.sort(np.argsort(largest, kind="stable")[:count])


class ExpressionFitter:
    """Bounded least squares of expression displacements on a model's blendshapes.

    min_c ||B c - d||^2 subject to 0 <= c <= 1, with B [3V, E] the model's ``exp_basis``. The normal
    matrix G = B^T B is factored once (G = L L^T), so each frame is a small E-variable problem
    ||L^T c - L^-1 B^T d||^2 (equal to the original up to a constant), solved exactly (NNLS, or
    ``scipy.optimize.lsq_linear``'s BVLS when an upper bound is active); the residual follows from G
    without rebuilding B c.
    """

    def __init__(self, model: FaceModel):
        self.num_vertices = model.num_vertices
        self.basis = model.exp_basis.detach().cpu().double().reshape(model.num_expressions, -1).numpy().T  # [3V, E]
        gram = self.basis.T @ self.basis
        # a relative ridge of 1e-10 keeps the factorisation defined if two shapes are (nearly) equal
        self.gram = gram + np.eye(len(gram)) * (1e-10 * np.trace(gram) / max(len(gram), 1))
        self.cholesky = np.linalg.cholesky(self.gram)  # lower L

    def fit(self, displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients and residuals of frames.

        Args:
            displacement: [F, V, 3] expression displacement (frame minus neutral), mm.
        Returns:
            (coeffs [F, E] float64 in [0, 1], residual_rms [F] float64: RMS over vertices of
            |B c - d|, mm).
        """
        d = displacement.reshape(len(displacement), -1)
        rhs = d @ self.basis  # [F, E]
        whitened = scipy.linalg.solve_triangular(self.cholesky, rhs.T, lower=True).T
        design = self.cholesky.T
        coeffs = np.stack([self._bounded(design, b) for b in whitened])
        squared = (d * d).sum(1) - 2 * (coeffs * rhs).sum(1) + np.einsum("fi,ij,fj->f", coeffs, self.gram, coeffs)
        return coeffs, np.sqrt(np.maximum(squared, 0.0) / self.num_vertices)

    @staticmethod
    def _bounded(design: np.ndarray, target: np.ndarray) -> np.ndarray:
        """argmin ||design c - target|| over 0 <= c <= 1: the non-negative solution (NNLS, ~20x faster
        than BVLS) when it stays below 1 (then it is also the box solution), else BVLS."""
        coeffs = scipy.optimize.nnls(design, target)[0]
        if coeffs.max(initial=0.0) <= 1.0:
            return coeffs
        return scipy.optimize.lsq_linear(design, target, bounds=(0.0, 1.0), method="bvls").x


# ------------------------------------------------------------------------ per sequence
@dataclass(frozen=True)
class SequenceResult:
    """What one sequence contributes (no frames: it is small).

    Attributes:
        name, person: the sequence and whose face it is.
        num_frames: F.
        category: its class (None: unlabelled, used for VA only).
        apex: index of the apex frame.
        apex_coeffs: [E] float32 the apex frame's coefficients.
        residual_rms_mm: [F] float32 the fitting residual per frame.
        exemplar_va: [N, 2] float32 valence-arousal of its labelled frames.
        exemplar_au: [N, A] float32 their AU activations over :data:`AU_KEYS`.
        exemplar_labels: N labels.
    """

    name: str
    person: str
    num_frames: int
    category: str | None
    apex: int
    apex_coeffs: np.ndarray
    residual_rms_mm: np.ndarray
    exemplar_va: np.ndarray
    exemplar_au: np.ndarray
    exemplar_labels: tuple[str, ...]


@dataclass(frozen=True)
class SequenceFailure:
    """A sequence that was skipped, and why (one line)."""

    name: str
    message: str


@dataclass(frozen=True)
class _FitContext:
    """What every sequence's fit needs: the base model, its fitter, the input's topology and unit."""

    model: FaceModel
    fitter: ExpressionFitter
    stable_ids: np.ndarray
    vertex_map: np.ndarray | None
    unit_mm: float

    @staticmethod
    def create(base: Path, vertex_map: Path | None, unit_mm: float) -> _FitContext:
        model = FaceModel.load(base)
        return _FitContext(model, ExpressionFitter(model), stable_vertices(model),
                           None if vertex_map is None else read_vertex_map(vertex_map, model.num_vertices), unit_mm)


def fit_sequence(source: SequenceSource, labels: SequenceLabels | None, context: _FitContext) -> SequenceResult:
    """Fit one sequence (module docstring); InputError (one line) for a bad one."""
    frames = load_sequence(source, context.model.num_vertices, vertex_map=context.vertex_map,
                           unit_mm=context.unit_mm)
    labels = labels or SequenceLabels()
    frame_labels = match_frames(labels, source.frame_names(len(frames)))
    # The neutral frame goes into the model's orientation first: the blendshapes' displacements are
    # in model axes, so a displacement measured in a head turned by 8 degrees would not fit them.
    neutral = remove_rigid_motion(frames[:1], context.model.mean.double().numpy(), context.stable_ids)[0]
    aligned = remove_rigid_motion(frames, neutral, context.stable_ids)
    del frames
    coeffs, residual = context.fitter.fit(aligned - aligned[0])
    apex = int(np.linalg.norm(coeffs - coeffs[0], axis=1).argmax())
    category = labels.sequence_category() or source.layout_category
    va = {i: label.va for i, label in frame_labels.items() if label.va is not None}
    if labels.va is not None:  # a sequence's valence-arousal describes its peak
        va.setdefault(apex, labels.va)
    order = sorted(va)
    exemplar_au = model_coeffs_to_au(torch.from_numpy(coeffs[order]), context.model).numpy() if order else \
        np.zeros((0, len(AU_KEYS)), np.float32)
    exemplar_labels = tuple((frame_labels[i].category if i in frame_labels else None) or category or UNLABELLED
                            for i in order)
    return SequenceResult(name=source.name, person=labels.person or source.person, num_frames=len(coeffs),
                          category=category, apex=apex, apex_coeffs=coeffs[apex].astype(np.float32),
                          residual_rms_mm=residual.astype(np.float32),
                          exemplar_va=np.array([va[i] for i in order], np.float32).reshape(-1, 2),
                          exemplar_au=exemplar_au, exemplar_labels=exemplar_labels)


_WORKER_CONTEXT: _FitContext | None = None


def _init_worker(base: Path, vertex_map: Path | None, unit_mm: float) -> None:
    global _WORKER_CONTEXT
    torch.set_num_threads(1)  # the processes are the parallelism
    _WORKER_CONTEXT = _FitContext.create(base, vertex_map, unit_mm)


def _fit_or_fail(source: SequenceSource, labels: SequenceLabels | None,
                 context: _FitContext | None = None) -> SequenceResult | SequenceFailure:
    try:
        return fit_sequence(source, labels, context or _WORKER_CONTEXT)
    except InputError as e:
        return SequenceFailure(source.name, " ".join(str(e).split()))
    except MemoryError:
        return SequenceFailure(source.name, "out of memory reading the sequence")


def iter_sequence_results(sources: list[SequenceSource], labels: dict[str, SequenceLabels], base: Path,
                          options: BuildOptions) -> Iterator[SequenceResult | SequenceFailure]:
    """One result per source, in order, fitted in this process (jobs 1) or a process pool."""
    unit_mm = LAYOUT_UNITS_MM[options.layout] if options.unit_mm is None else options.unit_mm
    if options.jobs <= 1:
        context = _FitContext.create(base, options.vertex_map, unit_mm)
        for source in sources:
            yield _fit_or_fail(source, labels.get(source.name), context)
        return
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=options.jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(base, options.vertex_map, unit_mm)) as pool:
        pending: collections.deque = collections.deque()
        queue = iter(sources)
        for source in queue:
            pending.append(pool.submit(_fit_or_fail, source, labels.get(source.name)))
            if len(pending) >= 2 * options.jobs:  # bounded in flight: memory does not grow with the data
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ------------------------------------------------------------------------ over sequences
@dataclass(frozen=True)
class SequenceSummary:
    """One built sequence in the provenance: its name, person, class, frame count, apex frame and
    mean residual (mm)."""

    name: str
    person: str
    category: str | None
    frames: int
    apex: int
    residual_mean_mm: float


@dataclass
class BuildReport:
    """Counts of a build (also in the affect model's provenance)."""

    sequences_found: int = 0
    sequences_built: int = 0
    frames: int = 0
    sequences: list[SequenceSummary] = field(default_factory=list)
    failures: list[SequenceFailure] = field(default_factory=list)
    unmatched_label_sequences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class AffectAccumulator:
    """Sums what the affect model needs from :class:`SequenceResult` s, holding no frames."""

    def __init__(self, bins: int, pool_limit: int):
        self.bins, self.pool_limit = bins, pool_limit
        self.apex_sums: dict[tuple[str, str], tuple[np.ndarray, int]] = {}  # (class, person) -> (sum [E], count)
        self.pool: VABank | None = None
        self.exemplars_seen = 0
        self.coverage = np.zeros((bins, bins), np.int64)
        self.residual_histogram = np.zeros(int(RESIDUAL_HISTOGRAM_MM * 100), np.int64)  # 0.01 mm bins
        self.residual_sum = self.residual_sum_sq = self.residual_max = 0.0
        self.residual_count = 0

    def add(self, result: SequenceResult) -> None:
        if result.category not in (None, "neutral"):
            key = (result.category, result.person)
            total, count = self.apex_sums.get(key, (0.0, 0))
            self.apex_sums[key] = (total + result.apex_coeffs.astype(np.float64), count + 1)
        residual = result.residual_rms_mm.astype(np.float64)
        bins = np.minimum((residual * 100).astype(np.int64), len(self.residual_histogram) - 1)
        self.residual_histogram += np.bincount(bins, minlength=len(self.residual_histogram))
        self.residual_sum += residual.sum()
        self.residual_sum_sq += (residual ** 2).sum()
        self.residual_max = max(self.residual_max, float(residual.max()))
        self.residual_count += len(residual)
        if len(result.exemplar_labels):
            exemplars = VABank(torch.from_numpy(result.exemplar_va), torch.from_numpy(result.exemplar_au),
                               result.exemplar_labels)
            self.coverage += exemplars.coverage(self.bins).numpy()
            self.exemplars_seen += len(exemplars)
            self.pool = exemplars if self.pool is None else _concatenate(self.pool, exemplars)
            if len(self.pool) > self.pool_limit:
                self.pool = self.pool.thin(self.bins)

    def residual_stats(self) -> dict[str, float]:
        """Mean, RMS, median, 95th percentile (to 0.01 mm) and maximum of the per-frame residuals, mm."""
        n = max(self.residual_count, 1)
        cumulative = np.cumsum(self.residual_histogram)
        percentile = {q: float((np.searchsorted(cumulative, q * self.residual_count) + 0.5) / 100) for q in (0.5, 0.95)}
        return {"mean_mm": self.residual_sum / n, "rms_mm": float(np.sqrt(self.residual_sum_sq / n)),
                "median_mm": percentile[0.5], "p95_mm": percentile[0.95], "max_mm": self.residual_max}

    def finish(self, base: FaceModel, provenance: dict) -> AffectModel:
        """The affect model; InputError when no sequence gave a class prototype or a VA exemplar."""
        if not self.apex_sums and self.pool is None:
            raise InputError("nothing usable: no sequence built gave a labelled apex or a valence-arousal exemplar")
        order = {name: i for i, name in enumerate(emfacs_table().categories)}
        classes = sorted({c for c, _ in self.apex_sums}, key=lambda c: (order.get(c, len(order)), c))
        means, spreads, people = [], [], []
        for name in classes:
            per_person = np.stack([total / count for (c, _), (total, count) in self.apex_sums.items() if c == name])
            means.append(per_person.mean(0))
            spreads.append(per_person.std(0))
            people.append(len(per_person))
        e = base.num_expressions
        coeffs = np.array(means, np.float32).reshape(-1, e)
        bank = None
        if self.pool is not None:
            bank = self.pool.thin(self.bins)
            bank = VABank(bank.va, bank.au, bank.labels, {
                "name": provenance.get("name", "affect-va"), "built_from": "4D expression meshes (build-affect)",
                "exemplars_seen": self.exemplars_seen, "thinned": bank.meta.get("thinned")})
        au = model_coeffs_to_au(torch.from_numpy(coeffs).double(), base).numpy() if len(classes) else \
            np.zeros((0, len(AU_KEYS)), np.float32)
        return AffectModel(classes=tuple(classes), exp_names=base.exp_names, prototype_coeffs=coeffs,
                           prototype_spread=np.array(spreads, np.float32).reshape(-1, e), prototype_au=au,
                           prototype_people=np.array(people, np.int64), bank=bank, coverage=self.coverage,
                           provenance={**provenance, "residual": self.residual_stats(),
                                       "va_exemplars_seen": self.exemplars_seen,
                                       "va_exemplars_kept": 0 if bank is None else len(bank)})


def _concatenate(a: VABank, b: VABank) -> VABank:
    return VABank(torch.cat((a.va, b.va)), torch.cat((a.au, b.au)), a.labels + b.labels, a.meta)


# ------------------------------------------------------------------------ the build
def build_affect(meshes: Path, labels_path: Path | None, base: Path, options: BuildOptions = BuildOptions(), *,
                 report_line: Callable[[str], None] | None = None,
                 progress: bool = True) -> tuple[AffectModel, BuildReport]:
    """Build the affect model from the sequences below ``meshes`` (module docstring).

    ``report_line`` receives one line per skipped sequence (default: stderr). InputError when the
    inputs cannot be read at all, or when nothing usable remains.
    """
    report_line = report_line or (lambda line: print(f"affectsynth: {line}", file=sys.stderr))
    start = time.perf_counter()
    model = FaceModel.load(base)
    if options.vertex_map is not None:
        read_vertex_map(options.vertex_map, model.num_vertices)  # a bad map is an input error here, not in a worker
    sources = discover_sequences(Path(meshes), options.layout)
    labels = read_labels(labels_path) if labels_path is not None else {}
    report = BuildReport(sequences_found=len(sources))
    known = {s.name for s in sources}
    report.unmatched_label_sequences = sorted(set(labels) - known)
    if report.unmatched_label_sequences:
        shown = ", ".join(report.unmatched_label_sequences[:3])
        report_line(f"labels name {len(report.unmatched_label_sequences)} sequence(s) not found under {meshes} "
                    f"({shown}{', ...' if len(report.unmatched_label_sequences) > 3 else ''}); ignored")
    accumulator = AffectAccumulator(options.bins, options.pool_limit)
    bar = _Progress(len(sources), enabled=progress)
    for result in iter_sequence_results(sources, labels, Path(base), options):
        if isinstance(result, SequenceFailure):
            report.failures.append(result)
            report_line(f"skipped sequence {result.name}: {result.message}")
        else:
            accumulator.add(result)
            report.sequences.append(SequenceSummary(result.name, result.person, result.category, result.num_frames,
                                                    result.apex, float(result.residual_rms_mm.mean())))
            report.sequences_built += 1
            report.frames += result.num_frames
        bar.update(report.frames)
    bar.close()
    report.seconds = time.perf_counter() - start
    provenance = {
        "name": f"affect model from {Path(meshes).name}", "source": str(meshes), "labels": str(labels_path),
        "base_model": {"path": str(base), "name": model.name, "vertices": model.num_vertices,
                       "expressions": model.num_expressions},
        "layout": options.layout, "bins": options.bins,
        "counts": {"sequences_found": report.sequences_found, "sequences_built": report.sequences_built,
                   "sequences_skipped": len(report.failures), "frames": report.frames},
        "skipped": [{"sequence": f.name, "reason": f.message} for f in report.failures],
        "sequences": [dataclasses.asdict(summary) for summary in report.sequences],
        "method": f"Kabsch rigid alignment to the first frame on the {STABLE_SHARE:.0%} of vertices the blendshapes "
                  "move least, neutral frame subtracted, "
                  "bounded least squares 0<=c<=1 on the base blendshapes; apex = farthest from onset in "
                  "coefficient space; prototypes = mean over people of per-person mean apex",
    }
    return accumulator.finish(model, provenance), report


class _Progress:
    """A progress bar on stderr: tqdm when installed, else one self-overwriting line (a line per
    tenth of the work when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.enabled, self.start = total, 0, enabled, time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="seq", file=sys.stderr)
            except ImportError:
                pass

    def update(self, frames: int) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            return
        tty = sys.stderr.isatty()
        if tty or self.done == self.total or self.done % max(self.total // 10, 1) == 0:
            rate = frames / max(time.perf_counter() - self.start, 1e-9)
            start = "\r" if tty else ""
            print(f"{start}build-affect: {self.done}/{self.total} sequences, {frames} frames, "
                  f"{rate:.0f} frames/s", end="" if tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and sys.stderr.isatty():
            print(file=sys.stderr)
