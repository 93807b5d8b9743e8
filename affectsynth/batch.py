"""Batch generation: many source photos x many targets -> rendered images and a manifest.

    run_batch(BatchOptions(input=Path("photos"), output=Path("out"), targets="expressions=all"))

The stages, each a function of its own:

* **Sources** (:func:`read_sources`): a folder of images (recursive, sorted, hidden files and the
  output folder left out; an image's label is the name of the folder it is in where that names an
  expression, as in the class folders of torchvision's ImageFolder: FER2013's ``train/angry/``, CK+48's
  ``happy/``) or a CSV with columns ``path[,label,valence,arousal,subject]`` (paths relative to the
  CSV's folder, inside it). With ``class_codes`` (:mod:`affectsynth.affect.classes`), numbered labels are
  read as that dataset's classes: RAF-DB's ``train/1/`` is surprise, a CSV's label ``3`` in FER2013's order
  happiness.
* **Targets** (:func:`parse_spec`, :func:`plan_items`): a SPEC of ``;``-joined parts:
  ``expressions=all`` (the 8 EMFACS categories: neutral, the six basic emotions and contempt) or
  ``expressions=happiness,fear@0.5,happiness+surprise``; ``va-grid=NxM`` (N valence by M arousal
  values evenly over [-1, 1], keeping the points inside the unit disc, where the circumplex is
  defined: 5x5 gives 13); ``va-random=K`` (K points uniform in the unit disc, drawn per source);
  ``balance=label`` (for every class of the sources' labels short of the largest class, sources
  of other classes are rendered as that class until the counts match). Every item (source, target)
  gets a seed derived from (the global seed, the source's name, the target's name), which draws its
  expression variants: results do not depend on the number of workers or their scheduling.
* **Rendering** (:class:`SourceRenderer`): per source, one decode and one fit (through the
  :class:`~affectsynth.cache.FitCache`) serve all its targets; outputs are written atomically to
  ``OUT/<source stem>/<target>.png``. A failure (unreadable file, no face, several faces, an
  unreliable fit, a render error) becomes a row with the reason and never stops the run.
* **Executors**: in this process (``workers=1``), a pool of spawned processes (a worker that dies
  costs only the source it was rendering), or Ray actors (``executor="ray"``); workers return rows
  and only this process writes the manifest.
* **Manifest** (:class:`Manifest`): ``OUT/manifest.csv``, one row per item (:data:`MANIFEST_COLUMNS`),
  appended and flushed as results come; rewritten in plan order at the end of a run. A rerun
  skips items with an ``ok`` row whose file exists, repairs a torn last line, and retries failures.
* **Webdataset** (``format="webdataset"``): at the end of a run the ``ok`` items are also packed,
  in manifest order, into ``OUT/shards/shard-NNNNNN.tar`` (``key.png`` + ``key.json``), each
  written atomically; the per-item files stay (they are what resuming reads).
"""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import csv
import fcntl
import hashlib
import io
import json
import math
import multiprocessing
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import torch

from .affect import classes
from .affect.classes import ClassCodes
from .affect.targets import canonical_emotion, parse_va_cell
from .errors import InputError

__all__ = ["BatchOptions", "BatchSummary", "Source", "Target", "Item", "SourceJob", "TargetSpec", "Manifest",
           "SourceRenderer", "RenderSettings", "MANIFEST_COLUMNS", "TIMING_COLUMNS", "IMAGE_SUFFIXES", "read_sources",
           "parse_spec", "plan_items", "item_seed", "manifest_row", "failed_rows", "run_batch", "write_shards"]

#: The files a folder input takes (case-insensitive), those :func:`affectsynth.io.load_image` reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MANIFEST_NAME = "manifest.csv"
SHARDS_DIR = "shards"
#: Samples per webdataset shard.
SHARD_SIZE = 1000
#: The manifest's columns. ``output`` is relative to OUT (empty when failed); ``soft_label`` and
#: ``au`` are JSON; ``seed`` is the item's own seed; ``source_*`` and ``subject`` are the CSV's.
MANIFEST_COLUMNS = ("source", "target", "spec", "output", "status", "reason", "category", "soft_label", "valence",
                    "arousal", "intensity", "au", "nme", "reliable", "model", "detector", "rasterizer", "seed",
                    "source_label", "source_valence", "source_arousal", "subject", "detect_fit_ms", "render_ms")
#: Columns that change from run to run (wall times); everything else is reproducible.
TIMING_COLUMNS = ("detect_fit_ms", "render_ms")
#: Source jobs in flight per worker: enough to keep each busy, few enough to bound memory.
_IN_FLIGHT_PER_WORKER = 2


# ------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class Source:
    """One source photo.

    Attributes:
        path: the file.
        name: its path relative to the input folder (or as the CSV writes it), with ``/``: the
            manifest's ``source``.
        stem: ``name`` without its suffix: the output folder of its renders, under OUT.
        label, valence, arousal, subject: the CSV's columns, or None; in a folder, ``label`` is the
            name of the image's own folder where that names an expression (an alias such as "happy"
            too), else None. A numbered label read with class codes is its class's name (None for a
            code outside them: a dataset's "none" or "uncertain").
    """

    path: Path
    name: str
    stem: str
    label: str | None = None
    valence: float | None = None
    arousal: float | None = None
    subject: str | None = None


def read_sources(input_path: Path, exclude: Path | None = None, class_codes: ClassCodes | None = None) -> list[Source]:
    """The sources of a folder (recursive, sorted by name; files under ``exclude`` and hidden ones
    left out) or of a CSV file (in its row order); numbered class folders and CSV labels are read by
    ``class_codes`` where given. InputError for a bad CSV, an empty input, or two sources with the
    same stem (their renders would share a folder)."""
    if input_path.is_dir():
        sources = _folder_sources(input_path, exclude, class_codes)
    elif input_path.is_file() and input_path.suffix.lower() == ".csv":
        sources = _csv_sources(input_path, class_codes)
    elif input_path.exists():
        raise InputError(f"{input_path}: give a folder of images or a .csv file of paths")
    else:
        raise InputError(f"{input_path}: no such folder or file")
    if not sources:
        raise InputError(f"{input_path}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    by_stem: dict[str, str] = {}
    for source in sources:
        if source.stem in by_stem:
            raise InputError(f"{by_stem[source.stem]} and {source.name} would write to the same output folder "
                             f"{source.stem}/; rename one")
        by_stem[source.stem] = source.name
    return sources


def _folder_sources(folder: Path, exclude: Path | None, class_codes: ClassCodes | None) -> list[Source]:
    excluded = None if exclude is None else exclude.resolve()
    sources = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (path.suffix.lower() not in IMAGE_SUFFIXES or any(part.startswith(".") for part in relative.parts)
                or not path.is_file()):
            continue
        if excluded is not None and path.resolve().is_relative_to(excluded):
            continue
        name = relative.as_posix()
        sources.append(Source(path=path, name=name, stem=str(PurePosixPath(name).with_suffix("")),
                              label=_class_folder(relative.parent.name, class_codes)))
    return sources


def _class_folder(name: str, class_codes: ClassCodes | None) -> str | None:
    """A folder's name as a class label where it names an expression (ImageFolder layouts) or, with
    ``class_codes``, is a class's number, else None."""
    if class_codes is not None and name.isdigit():
        return class_codes.read(name, name)
    try:
        canonical_emotion(name)
    except InputError:
        return None
    return name


def _csv_sources(csv_path: Path, class_codes: ClassCodes | None) -> list[Source]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{csv_path}: cannot read: {e}") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "path" not in reader.fieldnames:
        raise InputError(f"{csv_path}: needs a header with a 'path' column (and optionally label, valence, "
                         "arousal, subject)")
    sources, seen = [], set()
    for line, row in enumerate(reader, start=2):
        where = f"{csv_path}:{line}"
        name = (row.get("path") or "").strip()
        parts = PurePosixPath(name.replace("\\", "/"))
        if not name or parts.is_absolute() or ".." in parts.parts:
            raise InputError(f"{where}: path {name!r} must be a file relative to the CSV's folder, inside it")
        if name in seen:
            raise InputError(f"{where}: {name} is listed twice")
        seen.add(name)
        valence, arousal = (parse_va_cell(row.get(k), k, where) for k in ("valence", "arousal"))
        if (valence is None) != (arousal is None):
            raise InputError(f"{where}: give both valence and arousal or neither")
        label = (row.get("label") or "").strip() or None
        if label is not None and class_codes is not None:
            label = class_codes.read(label, where)
        sources.append(Source(path=csv_path.parent / parts, name=parts.as_posix(), stem=str(parts.with_suffix("")),
                              label=label, valence=valence, arousal=arousal,
                              subject=(row.get("subject") or "").strip() or None))
    return sources


# ------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    """A render target: ``name`` is the output's file stem, ``spec`` the :func:`~affectsynth.pipeline.parse_target`
    text (drawn with the item's seed)."""

    name: str
    spec: str


@dataclass(frozen=True)
class TargetSpec:
    """A parsed SPEC (module docstring): fixed targets for every source, ``va_random`` random VA
    points per source, and the CSV column to balance (or None)."""

    fixed: tuple[Target, ...] = ()
    va_random: int = 0
    balance: str | None = None


def parse_spec(text: str) -> TargetSpec:
    """``"expressions=all;va-grid=5x5;va-random=8;balance=label"`` -> :class:`TargetSpec`; InputError (one
    line) for anything else. Targets named twice are kept once."""
    from .affect.targets import emfacs_table

    fixed: list[Target] = []
    spec = TargetSpec()
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not sep or not value:
            raise InputError(f"--targets part {part!r}: write KEY=VALUE (expressions=..., va-grid=NxM, "
                             "va-random=K, balance=label)")
        if key == "expressions":
            names = emfacs_table().categories if value.lower() == "all" else value.split(",")
            fixed += [_expression_target(name) for name in names]
        elif key == "va-grid":
            fixed += _va_grid(value)
        elif key == "va-random":
            spec = replace(spec, va_random=spec.va_random + _count(value, "va-random"))
        elif key == "balance":
            if value.lower() != "label":
                raise InputError(f"--targets balance={value}: only balance=label (the CSV's label column) is known")
            spec = replace(spec, balance="label")
        else:
            raise InputError(f"--targets: unknown part {key!r} (known: expressions, va-grid, va-random, balance)")
    unique: dict[str, Target] = {}
    for target in fixed:
        unique.setdefault(target.name, target)
    spec = replace(spec, fixed=tuple(unique.values()))
    if not (spec.fixed or spec.va_random or spec.balance):
        raise InputError(f"--targets {text!r} names no targets")
    return spec


def _expression_target(text: str) -> Target:
    from .pipeline import parse_target

    text = text.strip()
    if ":" in text:
        raise InputError(f"expressions={text}: give expression names (happiness, fear@0.5, happiness+surprise); "
                         "VA points go in va-grid or va-random")
    code = parse_target(text)  # validates, and names it canonically (aliases resolved)
    name = "+".join(code.soft_label) + ("" if code.intensity == 1.0 else f"@{code.intensity:.2f}")
    return Target(name=name, spec=name)


def _va_target(valence: float, arousal: float, name: str | None = None) -> Target:
    # repr: the spec reads back as exactly these floats.
    return Target(name=name or f"va{valence:+.2f}{arousal:+.2f}", spec=f"va:{valence!r},{arousal!r}")


def _va_grid(value: str) -> list[Target]:
    sizes = value.lower().split("x")
    if len(sizes) != 2:
        raise InputError(f"va-grid={value}: write NxM (valence steps x arousal steps), e.g. 5x5")
    steps = [_count(s, "va-grid", minimum=2) for s in sizes]
    valences, arousals = (torch.linspace(-1.0, 1.0, n, dtype=torch.float64).tolist() for n in steps)
    return [_va_target(round(v, 6), round(a, 6)) for a in arousals for v in valences
            if math.hypot(v, a) <= 1.0 + 1e-9]


def _count(text: str, what: str, minimum: int = 1) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not minimum <= count <= 10_000:
        raise InputError(f"{what}={text}: give a whole number from {minimum} to 10000")
    return count


# ------------------------------------------------------------------------ items
@dataclass(frozen=True)
class Item:
    """One output: ``source`` rendered with ``target`` to ``output`` (relative to OUT), drawn with ``seed``."""

    source: Source
    target: Target
    output: str
    seed: int

    @property
    def key(self) -> tuple[str, str]:
        return self.source.name, self.target.name


@dataclass(frozen=True)
class SourceJob:
    """The items of one source still to do: one decode and one fit serve them all."""

    source: Source
    items: tuple[Item, ...]


def item_seed(seed: int, *parts: str) -> int:
    """A seed in [0, 2^63) from the global seed and names (sha256: stable across runs and machines)."""
    digest = hashlib.sha256("\0".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def plan_items(spec: TargetSpec, sources: list[Source], seed: int) -> list[Item]:
    """Every (source, target) of a job, grouped by source in source order; the same inputs and
    seed give the same plan."""
    balance = _balance_targets(sources, seed) if spec.balance else {}
    items = []
    for source in sources:
        targets = list(spec.fixed) + _random_va_targets(source, spec.va_random, seed) + balance.get(source.name, [])
        items += [Item(source, target, f"{source.stem}/{target.name}.png", item_seed(seed, source.name, target.name))
                  for target in targets]
    return items


def _random_va_targets(source: Source, count: int, seed: int) -> list[Target]:
    """``count`` VA points uniform in the unit disc (radius sqrt(u): uniform in area), drawn per source."""
    if count == 0:
        return []
    generator = torch.Generator().manual_seed(item_seed(seed, source.name, "va-random"))
    u = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    radius, angle = u[:, 0].sqrt(), 2 * math.pi * u[:, 1]
    width = len(str(count - 1))
    return [_va_target(float(r * math.cos(t)), float(r * math.sin(t)), f"va-random-{i:0{width}d}")
            for i, (r, t) in enumerate(zip(radius.tolist(), angle.tolist()))]


def _balance_targets(sources: list[Source], seed: int) -> dict[str, list[Target]]:
    """source name -> the "balance-CLASS" targets it renders: each class short of the largest gets
    (largest - its count) sources of other classes, drawn without replacement in a seeded order (the
    largest class alone has enough sources for any deficit, so none renders a class twice)."""
    from .affect.targets import parse_expression

    labelled = []
    for source in sources:
        if source.label is not None:
            try:
                labelled.append((source, parse_expression(source.label).category))
            except InputError as e:
                hint = " (numbered labels: say whose with --class-codes)" if source.label.isdigit() else ""
                raise InputError(f"balance=label: {source.name}: {e}{hint}") from None
    if not labelled:
        raise InputError("balance=label needs labels: a CSV input with a label column, or class folders named "
                         "after the expressions (angry/, happy/, ...) or numbered (with --class-codes)")
    if any(category is None for _, category in labelled):
        raise InputError("balance=label: labels must be single expressions, not compounds")
    counts: dict[str, int] = {}
    for _, category in labelled:
        counts[category] = counts.get(category, 0) + 1
    largest = max(counts.values())
    out: dict[str, list[Target]] = {}
    for category in sorted(counts):
        donors = [s for s, c in labelled if c != category]
        generator = torch.Generator().manual_seed(item_seed(seed, "balance", category))
        order = torch.randperm(len(donors), generator=generator).tolist()
        for index in order[:largest - counts[category]]:
            out.setdefault(donors[index].name, []).append(Target(f"balance-{category}", category))
    return out


# ------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class RenderSettings:
    """What a worker needs to build its renderer: the output folder, model (None: the default),
    detector, rasteriser, the fit cache folder, and the model's fingerprint and name (computed once,
    by the process that runs the batch)."""

    output: Path
    model_path: Path | None
    detector: str
    backend: str
    fit_cache: Path
    model_id: str
    model_name: str


class SourceRenderer:
    """Renders source jobs to files and manifest rows; one per worker (loads the model, detector and
    rasteriser once). ``SourceRenderer(settings).render(job) -> rows`` (dicts of :data:`MANIFEST_COLUMNS`)."""

    def __init__(self, settings: RenderSettings, threads: int | None = None):
        from .cache import FitCache
        from .model import FaceModel, load_default_model
        from .pipeline import Synthesizer

        if threads is not None:
            torch.set_num_threads(threads)  # the processes are the parallelism
        self.settings = settings
        model = load_default_model() if settings.model_path is None else FaceModel.load(settings.model_path)
        self.synthesizer = Synthesizer(model, detector=settings.detector, backend=settings.backend)
        self.cache = FitCache.for_fitter(settings.fit_cache, self.synthesizer.face_fitter, model_id=settings.model_id)

    def render(self, job: SourceJob) -> list[dict[str, str]]:
        from .io import load_image, save_image
        from .pipeline import parse_target

        start = time.perf_counter()
        try:  # a failure never stops the run: it becomes the rows' reason
            image = load_image(job.source.path)
            key = self.cache.key(image)
            fitted = self.cache.fit(image, self.synthesizer.face_fitter, name=job.source.name, key=key)
        except Exception as e:
            return failed_rows(job.items, self.settings, _reason(e))
        fit_columns = {"nme": f"{float(fitted.fit.nme.max()):.6f}", "reliable": str(bool(fitted.fit.reliable.all()))}
        if not bool(fitted.fit.reliable.all()):
            reason = "unreliable fit: " + "; ".join(r for reasons in fitted.fit.reasons for r in reasons)
            return failed_rows(job.items, self.settings, reason, **fit_columns)
        rows = []
        try:
            targets = [parse_target(item.target.spec, torch.Generator().manual_seed(item.seed)) for item in job.items]
            # the eyes and mouth measured once too, beside the fit (for reruns and the training hook)
            appearance = self.cache.appearance(key, image, fitted, self.synthesizer)
            results = self.synthesizer.render_many(image, targets, name=job.source.name, fitted=fitted,
                                                   appearance=appearance)
            detect_fit_ms = f"{1000 * (time.perf_counter() - start):.1f}"
            for item in job.items:
                result = next(results)
                save_image(self.settings.output / item.output, result.image)
                rows.append(manifest_row(
                    item, self.settings, status="ok", output=item.output, rasterizer=result.rasterizer,
                    **fit_columns, **_label_columns(result.labels[0]), detect_fit_ms=detect_fit_ms,
                    render_ms=f"{result.timings_ms['deform'] + result.timings_ms['render_composite']:.1f}"))
        except Exception as e:  # the lazy renders cannot go on after a failure: the rest fail with it
            return rows + failed_rows(job.items[len(rows):], self.settings, _reason(e), **fit_columns)
        return rows

    def close(self) -> None:
        self.synthesizer.close()



def manifest_row(item: Item, settings: RenderSettings, status: str, **columns: str) -> dict[str, str]:
    """The manifest row of ``item``: what the plan and settings say, and ``columns``."""
    source = item.source
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row.update(source=source.name, target=item.target.name, spec=item.target.spec, status=status,
               model=settings.model_name, detector=settings.detector, seed=str(item.seed),
               source_label=source.label or "", source_valence=_text(source.valence),
               source_arousal=_text(source.arousal), subject=source.subject or "", **columns)
    return row


def failed_rows(items: Iterable[Item], settings: RenderSettings, reason: str, **columns: str) -> list[dict[str, str]]:
    return [manifest_row(item, settings, status="failed", reason=reason, **columns) for item in items]


def _label_columns(labels: dict) -> dict[str, str]:
    return {"category": labels["category"] or "", "soft_label": json.dumps(labels["soft_label"]),
            "valence": _text(labels["valence"]), "arousal": _text(labels["arousal"]),
            "intensity": _text(labels["intensity"]), "au": json.dumps(labels["au"], sort_keys=True)}


def _text(value: float | None) -> str:
    return "" if value is None else repr(round(float(value), 6))


def _reason(error: Exception) -> str:
    """A failure as one line: an InputError's message; anything else is a bug, and says so."""
    text = " ".join(str(error).split())
    return text if isinstance(error, InputError) else f"internal error: {type(error).__name__}: {text}"


# ------------------------------------------------------------------------ executors
def _local_results(jobs: list[SourceJob], settings: RenderSettings, workers: int) -> Iterator[list[dict]]:
    """Rows per job, in this process (1 worker) or from ``workers`` spawned processes, as they finish."""
    if workers == 1:
        renderer = SourceRenderer(settings)
        try:
            yield from map(renderer.render, jobs)
        finally:
            renderer.close()
        return
    queue = collections.deque(jobs)
    while queue:
        in_flight: dict[concurrent.futures.Future, SourceJob] = {}
        try:
            with _worker_pool(settings, workers) as pool:
                while queue or in_flight:
                    while queue and len(in_flight) < _IN_FLIGHT_PER_WORKER * workers:
                        job = queue.popleft()
                        in_flight[pool.submit(_render_in_worker, job)] = job
                    finished, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in finished:
                        rows = future.result()
                        del in_flight[future]
                        yield rows
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (a native crash, or killed): which of the jobs in flight did it is unknown,
            # so each is tried alone; the one that kills its worker again gets failed rows.
            for job in in_flight.values():
                yield _render_alone(job, settings)


def _worker_pool(settings: RenderSettings, workers: int) -> concurrent.futures.ProcessPoolExecutor:
    # spawn: torch, numba and MediaPipe hold threads and native state that fork would copy half-made.
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_init_worker, initargs=(settings,))


def _render_alone(job: SourceJob, settings: RenderSettings) -> list[dict]:
    """``job`` in a worker process of its own: its rows, or failed rows if the process dies."""
    try:
        with _worker_pool(settings, 1) as pool:
            return pool.submit(_render_in_worker, job).result()
    except concurrent.futures.process.BrokenProcessPool:
        return failed_rows(job.items, settings, "the worker process died rendering this source (a native crash "
                                                "or out of memory)")


#: The renderer of a pool worker process (built once by its initializer; each process has its own).
_WORKER_RENDERER: SourceRenderer | None = None


def _init_worker(settings: RenderSettings) -> None:
    global _WORKER_RENDERER
    _WORKER_RENDERER = SourceRenderer(settings, threads=1)


def _render_in_worker(job: SourceJob) -> list[dict]:
    return _WORKER_RENDERER.render(job)


def _ray_results(jobs: list[SourceJob], settings: RenderSettings, workers: int) -> Iterator[list[dict]]:
    """Rows per job from ``workers`` Ray actors (one renderer each), as they finish. Connects to the
    cluster in RAY_ADDRESS, or starts a local one; the files go where the actors run, so on a
    cluster OUT and the inputs must be on a file system every node mounts at the same path."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'affectsynth[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1)(SourceRenderer)
        pool = ActorPool([actor.remote(settings, threads=1) for _ in range(workers)])
        yield from pool.map_unordered(lambda renderer, job: renderer.render.remote(job), jobs)
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[[list[SourceJob], RenderSettings, int], Iterator[list[dict]]]] = {
    "local": _local_results, "ray": _ray_results}


# ------------------------------------------------------------------------ manifest
class Manifest:
    """``OUT/manifest.csv``: rows appended and flushed one by one by the process that runs the batch.

    Opening an existing manifest reads its rows; a last line without its newline (the run was
    killed while writing it) is cut off, so only whole rows remain.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, str]] = []
        if path.exists():
            self._read()
        else:
            self._rewrite([])
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, MANIFEST_COLUMNS)

    def _read(self) -> None:
        data = self.path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if len(whole) != len(data):
            with open(self.path, "r+b") as file:
                file.truncate(len(whole))
        reader = csv.DictReader(io.StringIO(whole.decode("utf-8")))
        if reader.fieldnames is None:  # killed before the header was whole
            self._rewrite([])
            return
        if tuple(reader.fieldnames) != MANIFEST_COLUMNS:
            raise InputError(f"{self.path}: not a manifest of this version of affectsynth batch (other columns); "
                             "give another output folder")
        self.rows = [row for row in reader if None not in row and None not in row.values()]  # whole rows only

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        from .io import write_atomic

        text = io.StringIO()
        writer = csv.DictWriter(text, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, lambda file: file.write(text.getvalue().encode("utf-8")))
        self.rows = list(rows)

    def append(self, row: dict[str, str]) -> None:
        self._writer.writerow(row)
        self._file.flush()  # a killed run keeps every row written so far
        self.rows.append(row)

    def latest(self) -> dict[tuple[str, str], dict[str, str]]:
        """The last row of each (source, target)."""
        return {(row["source"], row["target"]): row for row in self.rows}

    def compact(self, order: list[tuple[str, str]]) -> None:
        """Rewrite atomically with the last row of each item: the items of ``order`` first, in that
        order, then rows of items not in it (from an earlier SPEC), as they were."""
        self._file.close()
        latest = self.latest()
        planned = set(order)
        self._rewrite([latest[key] for key in order if key in latest]
                      + [row for key, row in latest.items() if key not in planned])
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, MANIFEST_COLUMNS)

    def close(self) -> None:
        self._file.close()


def write_shards(output: Path, rows: list[dict[str, str]], shard_size: int = SHARD_SIZE) -> int:
    """Pack the ``ok`` rows' images into webdataset shards ``OUT/shards/shard-NNNNNN.tar``: per sample
    ``KEY.png`` and ``KEY.json`` (the row, JSON columns decoded, timings left out), KEY the output
    path without ``.png`` and with dots as ``_`` (webdataset splits names at the first dot). Each
    shard is written atomically; shards beyond the new count are removed. Returns the shard count."""
    from .io import write_atomic

    samples = [row for row in rows if row["status"] == "ok"]
    shard_dir = output / SHARDS_DIR
    count = math.ceil(len(samples) / shard_size)
    for index in range(count):
        chunk = samples[index * shard_size:(index + 1) * shard_size]
        write_atomic(shard_dir / f"shard-{index:06d}.tar", lambda file, chunk=chunk: _write_tar(file, output, chunk))
    for stale in shard_dir.glob("shard-*.tar"):
        if int(stale.stem.removeprefix("shard-")) >= count:
            stale.unlink()
    return count


def _write_tar(file, output: Path, rows: list[dict[str, str]]) -> None:
    with tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for row in rows:
            key = row["output"].removesuffix(".png").replace(".", "_")
            meta = {k: v for k, v in row.items() if k not in TIMING_COLUMNS}
            for column in ("soft_label", "au"):
                meta[column] = json.loads(meta[column])
            for name, data in ((f"{key}.png", (output / row["output"]).read_bytes()),
                               (f"{key}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0  # mtime 0: the same rows give the same bytes
                tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------ the run
@dataclass(frozen=True)
class BatchOptions:
    """A batch job (see the module docstring and ``affectsynth batch --help``)."""

    input: Path
    output: Path
    targets: str
    workers: int = 1
    executor: str = "local"
    format: str = "files"
    seed: int = 0
    model: Path | None = None
    detector: str = "mediapipe"
    backend: str = "auto"
    fit_cache: Path | None = None
    progress: bool = True
    class_codes: str | None = None


@dataclass
class BatchSummary:
    """What a run did: items planned, skipped as done before, rendered ok and failed in this run."""

    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    shards: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def run_batch(options: BatchOptions) -> BatchSummary:
    """Run (or resume) a batch job; InputError for bad options, inputs or SPEC, before anything is written."""
    from .cache import model_fingerprint
    from .detect import DETECTORS
    from .model import FaceModel, load_default_model
    from .render.raster import BACKENDS, available_backends

    start = time.perf_counter()
    if options.workers < 1:
        raise InputError(f"--workers {options.workers}: give at least 1")
    if options.executor not in EXECUTORS or options.format not in ("files", "webdataset"):
        raise InputError(f"unknown --executor {options.executor!r} or --format {options.format!r}")
    if options.detector not in DETECTORS:
        raise InputError(f"unknown detector {options.detector!r}; choose one of {', '.join(DETECTORS)}")
    spec = parse_spec(options.targets)
    sources = read_sources(options.input, exclude=options.output,
                           class_codes=None if options.class_codes is None else classes.class_codes(options.class_codes))
    items = plan_items(spec, sources, options.seed)
    model = load_default_model() if options.model is None else FaceModel.load(options.model)
    if options.backend != "auto" and options.backend not in available_backends(model.device):
        raise InputError(f"rasteriser {options.backend!r} cannot render here (usable: "
                         f"{', '.join(available_backends(model.device)) or 'none'}; known: {', '.join(BACKENDS)})")
    output = options.output
    settings = RenderSettings(output=output.resolve(), model_path=options.model, detector=options.detector,
                              backend=options.backend, model_id=model_fingerprint(model), model_name=model.name,
                              fit_cache=(options.fit_cache or output / ".fitcache").resolve())
    del model
    summary = BatchSummary(planned=len(items))
    with _exclusive(output):
        _remove_temporaries(output, keep=settings.fit_cache)
        manifest = Manifest(output / MANIFEST_NAME)
        try:
            latest = manifest.latest()
            pending = [item for item in items if not _done(latest.get(item.key), output)]
            summary.skipped = len(items) - len(pending)
            jobs = _jobs(pending)
            bar = _progress_bar(len(pending), options.progress)
            for rows in EXECUTORS[options.executor](jobs, settings, min(options.workers, max(len(jobs), 1))):
                for row in rows:
                    manifest.append(row)
                    if row["status"] == "ok":
                        summary.ok += 1
                    else:
                        summary.failed += 1
                        summary.reasons[row["reason"]] = summary.reasons.get(row["reason"], 0) + 1
                bar.update(len(rows))
            bar.close()
            manifest.compact([item.key for item in items])
            if options.format == "webdataset":
                summary.shards = write_shards(output, manifest.rows)
        finally:
            manifest.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _done(row: dict[str, str] | None, output: Path) -> bool:
    return row is not None and row["status"] == "ok" and (output / row["output"]).is_file()


def _jobs(items: Iterable[Item]) -> list[SourceJob]:
    """Items grouped by source (they come grouped), in order."""
    jobs: list[SourceJob] = []
    for item in items:
        if jobs and jobs[-1].source == item.source:
            jobs[-1] = SourceJob(item.source, jobs[-1].items + (item,))
        else:
            jobs.append(SourceJob(item.source, (item,)))
    return jobs


class _exclusive:
    """Holds an exclusive lock on ``OUT/.lock`` (released by the kernel if the run is killed), so two
    runs never write one output folder at once."""

    def __init__(self, output: Path):
        self.path = output / ".lock"

    def __enter__(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a")
        except OSError as e:
            raise InputError(f"{self.path.parent}: cannot write the output folder: {e.strerror or e}") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise InputError(f"{self.path.parent}: another affectsynth batch is writing there") from None

    def __exit__(self, *exc) -> None:
        self.file.close()


def _remove_temporaries(output: Path, keep: Path) -> None:
    """Remove the hidden temporaries (``.NAME.XXXXXXXX.tmp``) a killed run left behind, except in
    ``keep`` (a fit cache that other jobs may be writing)."""
    for path in output.rglob(".*.tmp"):
        if not path.resolve().is_relative_to(keep) and path.is_file():
            path.unlink()


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                desc="affectsynth batch")
