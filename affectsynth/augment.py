"""The training hook: affect synthesis as a data augmentation in PyTorch loaders.

:class:`AffectAugment` follows the conventions of ``torchvision.transforms.v2`` without needing
torchvision: an ``nn.Module`` whose ``forward`` takes ``(image, label)`` and returns the image
re-rendered with a new expression and the label of what was rendered, the way v2's MixUp and
CutMix return images with new (soft) labels. So it composes with v2 pipelines where torchvision is
installed, and works alone where it is not (PyPI's torchvision wheels do not import beside a
CPU-only torch). :class:`SynthesizedDataset` wraps a dataset instead, reproducibly per index.

Convention. Images are what v2 takes: a tensor [C, H, W] or a batch [B, C, H, W] (uint8 in
[0, 255], or float in [0, 1]; C = 3, RGB, or C = 1, greyscale), an [H, W, 3], [H, W, 1] or [H, W]
uint8 numpy array, or a PIL image; the output has the input's type, dtype, size and channels (a PIL
image in mode "L" stays "L", other modes come back "RGB"). Greyscale datasets (FER2013, CK+) go in as
they are: a grey face is rendered grey, as the luminance of the render of its RGB copy. Labels in: a
class index (int or integer tensor, [B] for a batch; numbered as in ``classes``) or a class-probability
vector [num_classes] ([B, num_classes]); the VA policies also take a (valence, arousal) tensor [2]
([B, 2]). Labels out depend on the policy's :attr:`Policy.label_kind`:

* "class": float32 [num_classes] (batched [B, num_classes]) probabilities: one-hot, or the
  target's soft label with ``soft_labels=True`` (an expression at intensity s is s of it and
  1 - s neutral, as :func:`~affectsynth.affect.bank.target_from_va` labels VA points);
* "va": float32 [2], the (valence, arousal) rendered.

An image that is not synthesized (the draw against ``p`` said no, or no face, several faces, an
unreliable fit) passes through unchanged, with its own label in the same output form, so batches
always collate; :attr:`AffectAugment.stats` counts what happened (per process: each DataLoader
worker has its own copy).

Fits come from a :class:`~affectsynth.cache.FitCache` (on disk when ``cache_dir`` is given,
shared with ``affectsynth batch`` runs of the same model and detector, with each photo's measured
eye and mouth appearance beside its fit) behind an in-memory LRU of ``memory_fits`` entries, so a
dataset's photos are detected and fitted once per process, and memory stays bounded however many
calls are made.

Randomness and workers. With ``generator=None`` draws use torch's global RNG, which DataLoader
seeds per worker (set ``torch.manual_seed`` for reproducible runs), as v2's transforms do. With a
``generator``, each process derives its own from it on first use: the main process uses it as
is, DataLoader worker k one seeded from a draw of (a copy of) it and k, so workers do not repeat
each other and a run is reproducible for a fixed generator, worker count and sampler. The
synthesizer (model, detector) is built lazily in each process and never pickled, so the hook
works with both ``fork`` and ``spawn`` workers. One limit of ``fork``: MediaPipe cannot start in a
fork of a process that already holds a MediaPipe graph (the child's heap is corrupted). A
training script whose hook runs only in the workers is fine; where the main process has used the
hook (or MediaPipe) first, a forked worker still renders the photos whose fits it inherited or
finds in the disk cache and raises a RuntimeError saying so for the others: use ``spawn`` or
``forkserver`` there. The rasteriser runs single-threaded in workers (torch's one thread there).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import xxhash
from PIL import Image
from torch import nn

from .affect.bank import VABank, default_bank, target_from_va
from .affect.classes import class_codes
from .affect.targets import ExpressionCode, canonical_emotion, emfacs_table, parse_expression
from .errors import InputError, NoFaceError, SeveralFacesError

if TYPE_CHECKING:  # annotations only (the hook imports the pipeline where it first runs, in _local)
    from .pipeline import FaceFit

__all__ = ["Policy", "RandomExpression", "VAJitter", "VAUniform", "BalanceClasses", "VaryIntensity",
           "AffectAugment", "SynthesizedDataset", "DEFAULT_CLASSES", "class_names", "albumentations_transform"]

#: The class order of labels when none is given: AffectNet's eight (Mollahosseini et al., 2017), as in emfacs.json.
DEFAULT_CLASSES: tuple[str, ...] = emfacs_table().categories


# ------------------------------------------------------------------------ policies
@dataclass(frozen=True)
class Policy:
    """What to render for a source image: :meth:`target` draws it from the source's label.

    Subclasses set :attr:`label_kind` ("class" or "va") and implement :meth:`target`.
    """

    label_kind = "class"

    def target(self, source_class: str | None, source_va: tuple[float, float] | None,
               generator: torch.Generator | None, classes: tuple[str, ...] = DEFAULT_CLASSES) -> ExpressionCode | None:
        """The target for a source of class ``source_class`` (a name of ``classes``, the hook's label
        set, or None when the label is a VA point) and VA ``source_va`` (or None); None: leave this
        image as it is."""
        raise NotImplementedError


def _uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _choice(options: Sequence[str], weights: Sequence[float] | None, generator: torch.Generator | None) -> str:
    """One of ``options``, drawn with probability proportional to ``weights`` (None: uniformly)
    from one uniform draw (inverting the cumulative weights: ``torch.multinomial`` took ~50 us a
    call for a handful of options)."""
    cumulative = list(itertools.accumulate([1.0] * len(options) if weights is None else weights))
    drawn = _uniform(generator, 0.0, cumulative[-1])
    return options[min(bisect.bisect_right(cumulative, drawn), len(options) - 1)]


@dataclass(frozen=True)
class RandomExpression(Policy):
    """A basic expression drawn uniformly from ``classes`` (default: the hook's classes but
    neutral), other than the source's own when ``exclude_source``; intensity uniform in
    ``intensity``; the emotion's EMFACS variant drawn too when ``variants``."""

    classes: tuple[str, ...] | None = None
    intensity: tuple[float, float] = (0.7, 1.0)
    exclude_source: bool = True
    variants: bool = True

    def target(self, source_class, source_va, generator, classes=DEFAULT_CLASSES):
        pool = self.classes or tuple(c for c in classes if c != "neutral")
        options = [c for c in pool if not (self.exclude_source and c == source_class)] or list(pool)
        name = _choice(options, None, generator)
        return parse_expression(name, _uniform(generator, *self.intensity),
                                generator=generator if self.variants else None)


@dataclass(frozen=True)
class VAJitter(Policy):
    """A VA point near the source's: (valence, arousal) + N(0, sigma^2) per axis, pulled back onto
    the unit disc; needs VA labels. Rendered through the VA exemplar bank (``bank``: the default one)."""

    sigma: float = 0.2
    bank: VABank | None = None
    label_kind = "va"

    def target(self, source_class, source_va, generator, classes=DEFAULT_CLASSES):
        if source_va is None:
            raise InputError("VAJitter needs (valence, arousal) labels")
        noise = torch.randn(2, generator=generator, dtype=torch.float64) * self.sigma
        point = torch.tensor(source_va, dtype=torch.float64) + noise
        point = point / max(1.0, float(point.norm()))
        return target_from_va(float(point[0]), float(point[1]), self.bank or default_bank(), generator=generator)


@dataclass(frozen=True)
class VAUniform(Policy):
    """A VA point drawn uniformly in the unit disc (the source's label is not used)."""

    bank: VABank | None = None
    label_kind = "va"

    def target(self, source_class, source_va, generator, classes=DEFAULT_CLASSES):
        radius = math.sqrt(_uniform(generator))
        angle = _uniform(generator, 0.0, 2 * math.pi)
        return target_from_va(radius * math.cos(angle), radius * math.sin(angle), self.bank or default_bank(), generator=generator)


@dataclass(frozen=True)
class BalanceClasses(Policy):
    """Fill the under-represented classes: the target class is drawn with probability proportional
    to how far its count falls short of the largest class's (``counts``: class name -> number of
    training images, e.g. from :meth:`from_labels`). A source of the largest class then goes to
    the rarer ones; with balanced counts every class is equally likely."""

    counts: Mapping[str, int] = field(default_factory=dict)
    intensity: tuple[float, float] = (0.7, 1.0)

    @staticmethod
    def from_labels(labels: Sequence[int], classes: Sequence[str] | str = DEFAULT_CLASSES, **kw) -> BalanceClasses:
        """From a dataset's class indices (numbered as ``classes``, as :class:`AffectAugment` takes them)."""
        counts = collections.Counter(int(i) for i in labels)
        return BalanceClasses(counts={c: counts.get(i, 0) for i, c in enumerate(class_names(classes))}, **kw)

    def target(self, source_class, source_va, generator, classes=DEFAULT_CLASSES):
        if not self.counts:
            raise InputError("BalanceClasses needs the class counts")
        names = list(self.counts)
        largest = max(self.counts.values())
        shortfall = [largest - self.counts[c] for c in names]
        weights = None if not any(shortfall) else shortfall
        name = _choice(names, weights, generator)
        return parse_expression(name, _uniform(generator, *self.intensity) if name != "neutral" else 1.0,
                                generator=generator)


@dataclass(frozen=True)
class VaryIntensity(Policy):
    """Keep the source's class and re-render it at an intensity uniform in ``intensity``, with a
    variant drawn; a neutral source is left as it is."""

    intensity: tuple[float, float] = (0.3, 1.0)

    def target(self, source_class, source_va, generator, classes=DEFAULT_CLASSES):
        if source_class is None:
            raise InputError("VaryIntensity needs class labels")
        if source_class == "neutral":
            return None
        return parse_expression(source_class, _uniform(generator, *self.intensity), generator=generator)


def class_names(classes: Sequence[str] | str) -> tuple[str, ...]:
    """The canonical EMFACS names of label indices 0, 1, ...: ``classes`` names them in order (aliases
    too) or names a dataset (:data:`~affectsynth.affect.classes.DATASET_CLASS_CODES`)."""
    return class_codes(classes).names if isinstance(classes, str) else tuple(canonical_emotion(c) for c in classes)


# ------------------------------------------------------------------------ the hook
class AffectAugment(nn.Module):
    """Re-render faces with a new expression, returning the new label (module docstring).

    Args:
        policy: what to render (:class:`RandomExpression`, :class:`VAJitter`, :class:`VAUniform`,
            :class:`BalanceClasses`, :class:`VaryIntensity`).
        p: probability of synthesizing each image.
        generator: a CPU ``torch.Generator`` for the draws, or None for torch's global RNG.
        classes: class names of the label indices, in order (names or aliases of the EMFACS
            emotions: ``("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")`` for FER2013),
            or a dataset whose order they follow: "affectnet", "fer2013", "rafdb" (its codes 1-7 as
            indices 0-6, as ImageFolder numbers its folders), "ckplus". Default: :data:`DEFAULT_CLASSES`.
        soft_labels: "class" labels out as the target's soft label instead of one-hot.
        model: a model .npz path, or None for the embedded default model.
        detector: "mediapipe" or "dlib". backend: rasteriser ("auto", "numba", "moderngl", "nvdiffrast").
        cache_dir: a fit cache folder shared across processes and runs, or None (memory only).
        memory_fits: fits kept in memory per process (an LRU).
    """

    def __init__(self, policy: Policy, p: float = 0.5, generator: torch.Generator | None = None, *,
                 classes: Sequence[str] | str = DEFAULT_CLASSES, soft_labels: bool = False,
                 model: str | os.PathLike | None = None, detector: str = "mediapipe", backend: str = "auto",
                 cache_dir: str | os.PathLike | None = None, memory_fits: int = 4096):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.policy, self.p, self.soft_labels = policy, float(p), soft_labels
        self.classes = class_names(classes)
        if len(set(self.classes)) < len(self.classes):
            raise ValueError(f"classes {tuple(classes)} name an emotion twice")
        self.model_path = None if model is None else Path(model)
        self.detector, self.backend = detector, backend
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.memory_fits = memory_fits
        self._generator_state = None if generator is None else generator.get_state()
        self.stats: collections.Counter = collections.Counter()
        self._process: dict = {}

    # the per-process parts (synthesizer, caches, generator) are rebuilt where the hook is used
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_process"] = {}
        state["stats"] = collections.Counter()
        return state

    def _local(self) -> dict:
        local = self._process
        if local.get("pid") == os.getpid():
            return local
        if "synthesizer" in local:
            # Forked from a process that used the hook: MediaPipe cannot run in a fork of a process
            # whose graph exists (a new graph corrupts the heap, tearing the old one down too), but
            # everything else can. Keep the inherited synthesizer and fits; a photo they and the
            # disk cache lack then raises (_fit).
            local.update(pid=os.getpid(), detector_usable=self.detector != "mediapipe",
                         generator=self._process_generator())
            return local
        from .cache import FitCache
        from .model import FaceModel, load_default_model
        from .pipeline import Synthesizer

        face_model = load_default_model() if self.model_path is None else FaceModel.load(self.model_path)
        synthesizer = Synthesizer(face_model, detector=self.detector, backend=self.backend)
        disk = None if self.cache_dir is None else FitCache.for_fitter(self.cache_dir, synthesizer.face_fitter)
        local.update(pid=os.getpid(), synthesizer=synthesizer, disk=disk, memory=collections.OrderedDict(),
                     detector_usable=True, generator=self._process_generator())
        return local

    def _process_generator(self) -> torch.Generator | None:
        if self._generator_state is None:
            return None
        base = torch.Generator().set_state(self._generator_state)
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            return base
        draw = int(torch.randint(0, 2 ** 62, (1,), generator=base))
        return torch.Generator().manual_seed((draw + 0x9E3779B97F4A7C15 * (worker.id + 1)) % 2 ** 63)

    def forward(self, image, label, generator: torch.Generator | None = None):
        """(image, label) -> (image, label): module docstring. ``generator`` overrides the hook's for
        this call (:class:`SynthesizedDataset` passes one per index). A batch's draws are made image
        by image, as for single images, and its faces rendered together
        (:meth:`~affectsynth.pipeline.Synthesizer.render_batch`: per image the single image's render,
        to float rounding, in less time)."""
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            labels = label if isinstance(label, torch.Tensor) else torch.as_tensor(label)
            pairs = self._synthesized([self._drawn(image[i], labels[i], generator) for i in range(image.shape[0])])
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        return self._synthesized([self._drawn(image, label, generator)])[0]

    def _drawn(self, image, label, generator) -> tuple | _Job:
        """What to do with one image: its (image, label) output when it passes through (the draw
        against ``p``, the policy, or a face that cannot be synthesized said so; counted), or the
        :class:`_Job` of rendering it."""
        local = self._local()
        generator = local["generator"] if generator is None else generator
        source_class, source_va = self._read_label(label)
        pixels = _to_uint8_hwc(image)
        if _uniform(generator) >= self.p:
            self.stats["not_drawn"] += 1
            return image, self._label_out(None, source_class, source_va)
        target = self.policy.target(source_class, source_va, generator, self.classes)
        if target is None:
            self.stats["kept:policy"] += 1
            return image, self._label_out(None, source_class, source_va)
        try:
            fitted, appearance = self._fit(local, pixels)
        except InputError as e:  # a photo that cannot be fitted passes through, counted
            reason = {NoFaceError: "no_face", SeveralFacesError: "several_faces"}.get(type(e), "other")
            self.stats["failed:" + reason] += 1
            return image, self._label_out(None, source_class, source_va)
        if not bool(fitted.fit.reliable.all()):
            self.stats["failed:unreliable_fit"] += 1
            return image, self._label_out(None, source_class, source_va)
        return _Job(image, pixels, target, fitted, appearance, source_class, source_va)

    def _synthesized(self, drawn: list) -> list[tuple]:
        """The (image, label) outputs of :meth:`_drawn`'s results, the jobs among them rendered (one
        alone, several as a batch)."""
        jobs = [job for job in drawn if isinstance(job, _Job)]
        if not jobs:
            return drawn
        synthesizer = self._local()["synthesizer"]
        if len(jobs) == 1:
            job = jobs[0]
            results = [next(synthesizer.render_many(job.pixels, [job.target], fitted=job.fitted,
                                                    appearance=job.appearance))]
        else:
            results = synthesizer.render_batch([j.pixels for j in jobs], [j.fitted for j in jobs],
                                               [j.target for j in jobs], [j.appearance for j in jobs])
        self.stats["synthesized"] += len(jobs)
        outputs = iter((_like(result.image, job.image), self._label_out(job.target, job.source_class, job.source_va))
                       for job, result in zip(jobs, results))
        return [next(outputs) if isinstance(job, _Job) else job for job in drawn]

    def _fit(self, local: dict, pixels: np.ndarray):
        """(the fit of ``pixels``, what the synthesizer measured of their eyes and mouth), from memory,
        or from the disk cache or a fresh fit (failures are remembered too)."""
        memory: collections.OrderedDict = local["memory"]
        key = _pixel_key(pixels)
        entry = memory.get(key)
        if entry is None:
            disk, face_fitter = local["disk"], local["synthesizer"].face_fitter

            def fitter(image, **options):  # counts the fits the disk cache could not spare
                if not local["detector_usable"]:
                    raise RuntimeError(
                        "AffectAugment: this DataLoader worker was forked from a process that had already run the "
                        "hook, and MediaPipe cannot detect faces in such a fork; use multiprocessing_context="
                        "'spawn' or 'forkserver', or create the workers (persistent_workers=True) before the "
                        "main process uses the hook")
                self.stats["fitted"] += 1
                return face_fitter(image, **options)
            try:
                if disk is None:
                    fitted = fitter(pixels)
                    entry = fitted, local["synthesizer"].appearance(pixels, fitted)
                else:  # the eyes and mouth measured once too, beside the fit
                    disk_key = disk.key(pixels)
                    fitted = disk.fit(pixels, fitter, key=disk_key)
                    entry = fitted, disk.appearance(disk_key, pixels, fitted, local["synthesizer"])
            except InputError as e:  # remembered as (type, message): re-raising one instance would grow its traceback
                entry = (type(e), str(e))
            memory[key] = entry
            if len(memory) > self.memory_fits:
                memory.popitem(last=False)
        else:
            memory.move_to_end(key)
        if isinstance(entry[0], type):
            raise entry[0](entry[1])
        return entry

    def _read_label(self, label) -> tuple[str | None, tuple[float, float] | None]:
        value = torch.as_tensor(label)
        if self.policy.label_kind == "va" and value.numel() == 2 and value.is_floating_point():
            return None, (float(value[0]), float(value[1]))
        if value.ndim == 0:
            index = int(value)
        elif value.ndim == 1 and value.numel() == len(self.classes):
            index = int(value.argmax())
        else:
            raise ValueError(f"label must be a class index, a [{len(self.classes)}] class vector or, for VA "
                             f"policies, a (valence, arousal) pair; got shape {list(value.shape)}")
        if not 0 <= index < len(self.classes):
            raise ValueError(f"class index {index} outside 0..{len(self.classes) - 1}")
        return self.classes[index], None

    def _label_out(self, target: ExpressionCode | None, source_class: str | None,
                   source_va: tuple[float, float] | None) -> torch.Tensor:
        if self.policy.label_kind == "va":
            va = source_va if target is None else (target.valence, target.arousal)
            if va is None:
                raise ValueError("a VA policy needs (valence, arousal) labels to pass an image through")
            return torch.tensor(va, dtype=torch.float32)
        out = torch.zeros(len(self.classes), dtype=torch.float32)
        if target is None:
            out[self.classes.index(source_class)] = 1.0
            return out
        if self.soft_labels and target.soft_label:
            soft = dict(target.soft_label)
            if "neutral" not in soft and target.intensity is not None:  # an expression at s: s of it, 1 - s neutral
                soft = {name: share * target.intensity for name, share in soft.items()}
                soft["neutral"] = 1.0 - target.intensity
            for name, share in soft.items():
                if name in self.classes:
                    out[self.classes.index(name)] += share
            return out / out.sum()  # classes the label set lacks (e.g. contempt in FER2013) are left out
        out[self.classes.index(target.category)] = 1.0
        return out

    def extra_repr(self) -> str:
        return f"policy={self.policy!r}, p={self.p}, classes={self.classes}"


@dataclass(frozen=True)
class _Job:
    """An image the hook re-renders: the input, its pixels [H, W, 3] uint8, the target, its fit and
    measured appearance, and the source's label (class, VA)."""

    image: object   # as given: a tensor, an array or a PIL image
    pixels: np.ndarray
    target: ExpressionCode
    fitted: FaceFit
    appearance: dict
    source_class: str | None
    source_va: tuple[float, float] | None


#: How far outside [0, 1] a float image's values may stray (resampling overshoot) before it is taken
#: for a normalised tensor and refused.
FLOAT_RANGE_SLACK = 0.05


def _pixel_key(pixels: np.ndarray) -> bytes:
    """The in-memory key of an image: a 128-bit hash of its shape and pixels (xxh3: ~5 us at 224^2,
    against sha256's ~90; a key only matches images within one process, so nothing needs a
    cryptographic hash, and 128 bits leave no chance of two images of a dataset colliding)."""
    digest = xxhash.xxh3_128(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.digest()


def _to_uint8_hwc(image) -> np.ndarray:
    """[H, W, 3] uint8 RGB of any accepted image form (a greyscale one as three equal channels)."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must be [3, H, W] or [1, H, W] (or a batch [B, C, H, W]), "
                             f"got {list(image.shape)}")
        if image.dtype != torch.uint8:
            image = image.detach().float()
            low, high = torch.aminmax(image)
            # A normalised tensor (the hook placed after Normalize) would be clamped into a different image.
            if low < -FLOAT_RANGE_SLACK or high > 1 + FLOAT_RANGE_SLACK:
                raise ValueError(f"a float image must be in [0, 1], got values in [{float(low):.3g}, {float(high):.3g}]"
                                 f" (apply AffectAugment before Normalize)")
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        # OpenCV interleaves the planes: numpy's copy of the transposed view took 20x as long (0.2 ms at 224^2)
        planes = list(image.cpu().numpy())
        return cv2.merge(planes * 3 if len(planes) == 1 else planes)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            raise ValueError(f"image array must be [H, W, 3], [H, W, 1] or [H, W] uint8, got {image.shape} {image.dtype}")
        if image.ndim == 2 or image.shape[2] == 1:
            return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
        return np.ascontiguousarray(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))  # a writable copy (torch.from_numpy warns on a read-only one)
    raise TypeError(f"unsupported image type {type(image).__name__}")


def _like(pixels: np.ndarray, reference):
    """``pixels`` [H, W, 3] uint8 RGB in the type, dtype and channels of ``reference`` (greyscale forms
    get the luminance)."""
    if isinstance(reference, torch.Tensor):
        if reference.shape[0] == 1:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[..., None]
        out = torch.from_numpy(pixels).permute(2, 0, 1).to(reference.device)
        return out if reference.dtype == torch.uint8 else (out.to(reference.dtype) / 255)
    if isinstance(reference, np.ndarray):
        if reference.ndim == 3 and reference.shape[2] == 3:
            return pixels
        grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        return grey if reference.ndim == 2 else grey[..., None]
    if reference.mode == "L":
        return Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))  # 2-D uint8: mode "L"
    return Image.fromarray(pixels)


# ------------------------------------------------------------------------ dataset wrapper
class SynthesizedDataset(torch.utils.data.Dataset):
    """``base_dataset`` with each item passed through ``augment``, reproducibly per index.

    Item i of epoch e is ``augment(*base_dataset[i], generator=g)`` with g seeded by (``seed``, e, i),
    so it is the same whichever worker loads it and in whatever order; call :meth:`set_epoch` to
    draw new targets each epoch (as with ``DistributedSampler``). Items of ``base_dataset`` are
    (image, label) pairs in the forms :class:`AffectAugment` accepts.
    """

    def __init__(self, base_dataset, augment: AffectAugment, seed: int = 0):
        self.base, self.augment, self.seed, self.epoch = base_dataset, augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        seed = np.random.SeedSequence((self.seed, self.epoch, int(index))).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed) % 2 ** 63)
        return self.augment(image, label, generator=generator)


# ------------------------------------------------------------------------ albumentations
def albumentations_transform(augment: AffectAugment, p: float = 1.0):
    """``augment`` as an albumentations transform (albumentations is optional: its newer fork is
    AGPL, and it pulls opencv-python-headless, which clashes with mediapipe's opencv and numpy<2).

    Call it as albumentations transforms are called, ``t(image=HWC uint8, label=index or VA)``: it
    returns the dict with the new ``image`` and ``label`` (this hook's output label form). In
    ``A.Compose`` pass ``strict=False``: a strict Compose (the default of albumentations 1.4.24, the
    version this was tested with) refuses the ``label`` key. ImportError without albumentations.
    """
    import albumentations as A

    class AffectAugmentAlbumentations(A.BasicTransform):
        def __init__(self):
            super().__init__(p=p)

        @property
        def targets(self):
            return {"image": lambda image, **params: image}

        def __call__(self, *args, force_apply: bool = False, **data):
            if args:
                raise KeyError("pass named arguments: t(image=..., label=...)")
            if force_apply or self.p >= 1.0 or _uniform(None) < self.p:
                data["image"], data["label"] = augment(data["image"], data["label"])
            return data

        def get_transform_init_args_names(self):
            return ()

    return AffectAugmentAlbumentations()
