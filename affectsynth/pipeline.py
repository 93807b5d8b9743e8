"""Stages strung together: image -> landmarks -> fit (:class:`FaceFitter`), and on to
target -> deform -> render -> composite (:class:`Synthesizer`, :func:`synthesize`). The CLI (and
later the batch runner and the training hook) call these; none of them re-implements a stage.

Targets as text (:func:`parse_target`, used by :func:`synthesize` and ``affectsynth sheet``):
``happiness``, ``fear@0.5`` (intensity), ``happiness+surprise`` (compound), ``va:0.5,0.7`` (a
valence-arousal point through the VA bank) and ``au:12:0.8,6:0.6`` (action units).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .affect.bank import VABank, default_bank, target_from_va
from .affect.targets import ExpressionCode, parse_au, parse_expression, parse_va, stack_model_coeffs, validate_va
from .deform import ResidualField, fitted_image_points, retarget
from .detect import Detector, create_detector
from .errors import InputError, NoFaceError, SeveralFacesError
from .fit import FitConfig, FitResult, Fitter
from .landmarks import Landmarks
from .model import FaceModel

if TYPE_CHECKING:  # (the render modules are imported where they are used, as below)
    from .render.retarget import RetargetRender

__all__ = ["FaceFit", "FaceFitter", "SynthesisResult", "Synthesizer", "synthesize", "parse_target",
           "va_path_points", "va_path_targets", "resolve_device", "select_faces", "target_labels"]

log = logging.getLogger("affectsynth")

#: A second face at least this fraction of the largest face's box area makes "which face?"
#: ambiguous; a smaller one (a bystander in the background) is ignored.
AMBIGUOUS_AREA_RATIO = 0.5


def select_faces(landmarks: Landmarks, all_faces: bool, name: str = "image") -> Landmarks:
    """The faces to work on: every face, or the single dominant one.

    Raises NoFaceError when there is none, and SeveralFacesError when several faces of similar
    size make the choice ambiguous and ``all_faces`` is False.
    """
    if landmarks.batch_size == 0:
        raise NoFaceError(f"{name}: no face found")
    if all_faces or landmarks.batch_size == 1:
        return landmarks
    area = (landmarks.box[:, 2] - landmarks.box[:, 0]) * (landmarks.box[:, 3] - landmarks.box[:, 1])
    similar = int((area >= AMBIGUOUS_AREA_RATIO * area[0]).sum())
    if similar > 1:
        raise SeveralFacesError(f"{name}: {similar} faces of similar size found; pass --all-faces to use them all, "
                         f"or crop the image to one face")
    return landmarks[0]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` -> a torch device; InputError when a named
    device is not there. "auto" is CUDA where it can render (CUDA and a rasteriser for CUDA tensors,
    :mod:`affectsynth.render.raster`), else the CPU, with the reason logged (at INFO, once per process)."""
    if device == "auto":
        return _auto_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r} (use cpu or cuda)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available here (this torch build or machine has "
                             "no usable GPU); use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif resolved.type != "cpu":
        raise InputError(f"unsupported device {device!r} (use cpu or cuda)")
    return resolved


def _auto_device() -> torch.device:
    from .render.raster import available_backends

    if not torch.cuda.is_available():
        reason = "CUDA is not available (this torch build or machine has no usable GPU)"
    elif not available_backends("cuda"):
        reason = "no rasteriser for CUDA tensors is installed (pip install affectsynth[gpu])"
    else:
        return torch.device("cuda")
    _log_cpu_fallback(reason)
    return torch.device("cpu")


@functools.cache
def _log_cpu_fallback(reason: str) -> None:
    """Log why device "auto" runs on the CPU, once per process and reason."""
    log.info("device auto: rendering on the CPU: %s", reason)


@dataclass(frozen=True)
class FaceFit:
    """Landmarks and the model fit of the selected faces of one image (same batch order)."""

    landmarks: Landmarks
    fit: FitResult
    faces_found: int


class FaceFitter:
    """Detect and fit: ``FaceFitter(model)(image) -> FaceFit``. Loads its detector once."""

    def __init__(self, model: FaceModel, detector: Detector | str = "mediapipe",
                 config: FitConfig = FitConfig()):
        self.model = model
        self.detector = create_detector(detector) if isinstance(detector, str) else detector
        self.fitter = Fitter(model, config)

    def __call__(self, image: np.ndarray, all_faces: bool = False, name: str = "image") -> FaceFit:
        """Fit the faces of an upright RGB uint8 image [H, W, 3]."""
        found = self.detector(image)
        chosen = select_faces(found, all_faces, name)
        with torch.no_grad():
            fit = self.fitter(chosen.to(self.model.device))
        return FaceFit(landmarks=chosen, fit=fit, faces_found=found.batch_size)

    def close(self) -> None:
        self.detector.close()


# ------------------------------------------------------------------------ targets
def parse_target(spec: str, generator: torch.Generator | None = None, bank: VABank | None = None) -> ExpressionCode:
    """A target written as text (case-insensitive prefixes):

    * ``NAME``, ``NAME+NAME``, ``NAME@I`` — an expression or compound (:func:`parse_expression`) at
      intensity I in [0, 1] (default 1): ``happiness``, ``fear@0.5``, ``happiness+surprise``;
    * ``va:V,A`` — a valence-arousal point through ``bank`` (default :meth:`VABank.default`);
    * ``au:SPEC`` — action units (:func:`parse_au`): ``au:12:0.8,6:0.6``.

    ``generator`` samples expression variants (None: the prototypes and the kernel-weighted VA mean).
    InputError (one line) for anything else.
    """
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower() if sep else ""
    if kind == "va":
        return target_from_va(*parse_va(rest), default_bank() if bank is None else bank, generator=generator)
    if kind == "au":
        return parse_au(rest)
    if sep:
        raise InputError(f"target {text!r}: unknown prefix {kind + ':'!r} (write an expression such as "
                         "happiness or fear@0.5, va:V,A, or au:12:0.8,6:0.6)")
    name, at, intensity = text.partition("@")
    return parse_expression(name, intensity if at else 1.0, generator=generator)


def va_path_points(points: Sequence[tuple[float, float]], frames: int) -> list[tuple[float, float]]:
    """``frames`` points at equal arc-length steps along the VA polyline through ``points``, from the
    first point to the last (constant speed, so a clip moves evenly whatever the segments' lengths).

    InputError unless there are at least two points, each with valence and arousal in [-1, 1], and
    ``frames`` >= 2.
    """
    if len(points) < 2:
        raise InputError(f"a VA path needs at least two points 'v,a;v,a;...' (got {len(points)})")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise InputError(f"a VA path needs at least 2 frames (got {frames})")
    vertices = torch.tensor([validate_va(float(v), float(a)) for v, a in points], dtype=torch.float64)  # [P, 2]
    along = torch.cat((vertices.new_zeros(1), (vertices[1:] - vertices[:-1]).norm(dim=1).cumsum(0)))  # [P]
    if float(along[-1]) == 0.0:
        return [tuple(vertices[0].tolist())] * frames
    wanted = torch.linspace(0.0, float(along[-1]), frames, dtype=torch.float64)
    segment = (torch.searchsorted(along, wanted, right=True) - 1).clamp(0, len(points) - 2)   # [F]
    length = (along[segment + 1] - along[segment]).clamp(min=1e-300)  # zero-length segments are never picked
    t = ((wanted - along[segment]) / length).clamp(0.0, 1.0)[:, None]
    sampled = vertices[segment] * (1 - t) + vertices[segment + 1] * t
    sampled[-1] = vertices[-1]  # exactly the last point, not its float sum
    return [(float(v), float(a)) for v, a in sampled.clamp(-1.0, 1.0).tolist()]


def va_path_targets(points: Sequence[tuple[float, float]], frames: int,
                    bank: VABank | None = None, seed: int | None = None) -> list[ExpressionCode]:
    """The targets of a VA path (:func:`va_path_points`), one per frame, from the bank's kernel-weighted
    mean, or with a ``seed`` from the weights and variants that seed draws, the same for every frame
    (:meth:`VABank.query`). Either way the AU vector is continuous in the VA point, so consecutive
    frames differ only as much as the path moves."""
    bank = default_bank() if bank is None else bank
    return [target_from_va(v, a, bank, generator=None if seed is None else torch.Generator().manual_seed(seed))
            for v, a in va_path_points(points, frames)]


def target_labels(target: ExpressionCode, model: FaceModel, coeffs: torch.Tensor, report) -> dict:
    """The JSON-ready labels of a rendered target: what was asked and what the model did."""
    return {
        "category": target.category, "soft_label": target.soft_label, "valence": target.valence,
        "arousal": target.arousal, "intensity": target.intensity, "source": target.source,
        "au": target.au, "model_coeffs": dict(zip(model.exp_names, coeffs.tolist())),
        "au_missing_in_model": list(report.missing), "au_approximated": list(report.approximated),
        "emotions_driven": list(report.emotions), "emotions_missing_in_model": list(report.emotions_missing),
    }


# ------------------------------------------------------------------------ synthesis
#: The most pixels (images x H x W) :meth:`Synthesizer.render_batch` renders in one batch on the CPU.
CPU_BATCH_PIXELS = 150_000


@dataclass(frozen=True)
class SynthesisResult:
    """A photo re-rendered with a target expression.

    Attributes:
        image: [H, W, 3] uint8 RGB, the input with each selected face re-expressed.
        mask: [H, W] float32 in [0, 1], where the faces were composited (the maximum of the faces'
            soft masks); where it is 0 ``image`` holds the input's own bytes.
        labels: per face, the labels of what was rendered (category, soft label, VA,
            intensity, the AU activations asked for and the model coefficients used).
        fit: the fit of the selected faces.
        landmarks: their landmarks.
        rasterizer: the rasteriser backend used.
        timings_ms: wall time per stage: ``detect_fit`` (shared by every result of one
            :meth:`Synthesizer.render_many` call; with a precomputed fit only the measuring of
            the photo's eye and mouth appearance), ``deform``, ``render_composite``.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: list[dict]
    fit: FitResult
    landmarks: Landmarks
    rasterizer: str
    timings_ms: dict[str, float]


class Synthesizer:
    """Detect, fit, retarget, render and composite: ``Synthesizer(model)(image, target)``.

    Loads its detector once and runs on ``model.device``; the rasteriser backend is chosen once
    ("auto": see :mod:`affectsynth.render.raster`). Hold one for many images (or use it as a
    context manager, which closes the detector); :func:`synthesize` builds one per call.
    """

    def __init__(self, model: FaceModel, detector: Detector | str = "mediapipe", backend: str = "auto",
                 config: FitConfig = FitConfig()):
        from .render.raster import BACKENDS, available_backends, resolve_backend
        from .render.retarget import model_parts

        if backend != "auto" and backend not in BACKENDS:
            raise InputError(f"unknown rasteriser backend {backend!r} (known: auto, {', '.join(BACKENDS)})")
        usable = available_backends(model.device)
        if not usable or backend not in ("auto", *usable):
            raise InputError(f"rasteriser {backend!r} cannot render on {model.device.type} here (usable there: "
                             f"{', '.join(usable) or 'none'}); use --device cpu")
        self.model = model
        self.backend = resolve_backend(backend, model.device)
        self.parts = model_parts(model)
        self.face_fitter = FaceFitter(model, detector, config)
        self._residual_fields: dict[str, ResidualField] = {}

    def residual_field(self, scheme: str) -> ResidualField:
        """The model's :class:`~affectsynth.deform.ResidualField` for fits of ``scheme`` landmarks
        (built on first use, then kept)."""
        if scheme not in self._residual_fields:
            self._residual_fields[scheme] = ResidualField.build(self.model, scheme)
        return self._residual_fields[scheme]

    def __call__(self, image: np.ndarray, target: ExpressionCode, all_faces: bool = False,
                 name: str = "image") -> SynthesisResult:
        """Render every selected face of an upright RGB uint8 image [H, W, 3] with ``target``."""
        return next(self.render_many(image, [target], all_faces, name))

    def render_many(self, image: np.ndarray, targets: Sequence[ExpressionCode], all_faces: bool = False,
                    name: str = "image", fitted: FaceFit | None = None,
                    appearance: dict | None = None) -> Iterator[SynthesisResult]:
        """One render per target of the same image [H, W, 3] uint8, sharing one detection and fit.

        The targets are mapped to model coefficients together and the faces are detected and
        fitted before this returns (so a bad target or a missing face raises here); the renders
        come lazily, one per ``next``, so a long sequence need not be held in memory.
        ``fitted``: a fit of this image by this model made earlier (e.g. from a
        :class:`~affectsynth.cache.FitCache`), used instead of detecting and fitting again
        (``all_faces`` then plays no part: the fit holds the faces it chose). ``appearance``:
        what :meth:`appearance` measured of this image and fit before, or None to measure it.
        """
        clock = _Clock()
        targets = list(targets)
        coeffs, reports = stack_model_coeffs(targets, self.model)                           # [T, E]
        if fitted is None:
            fitted = self.face_fitter(image, all_faces=all_faces, name=name)
        photo = _photo_tensor(image, self.model.device)
        appearance = self._appearance(photo, fitted) if appearance is None else appearance
        clock.lap("detect_fit")
        return (self._render(image, photo, fitted, appearance, target, coeffs[i], reports[i], clock.laps["detect_fit"])
                for i, target in enumerate(targets))

    def appearance(self, image: np.ndarray, fitted: FaceFit) -> dict:
        """What an image [H, W, 3] uint8 shows of the fitted faces' eyes and mouth (for the parts
        of them it hides), for :meth:`render_many` to reuse: a caller rendering one photo often
        (the training hook) measures it once."""
        return self._appearance(_photo_tensor(image, self.model.device), fitted)

    @staticmethod
    def appearance_version() -> str:
        """The version of the code behind :meth:`appearance`, for a stored appearance to be trusted
        only where the same code measured it (:meth:`.FitCache.appearance`): a sha256 of the
        package's source (any change misses: the eyes and mouth measurements draw on the fit, the
        camera, the model, the polygons and the kernels)."""
        return _source_digest()

    def _appearance(self, photo: torch.Tensor, fitted: FaceFit) -> dict:
        """What the photo shows of the eyes and the mouth, measured once per photo, for the
        parts of them it hides (keyword arguments of ``render_retargeted``)."""
        from .render.eyes import estimate_eye_appearance
        from .render.materials import estimate_mouth_appearance
        from .render.retarget import measure_grain

        appearance = {}
        with torch.no_grad():
            source_image = fitted_image_points(self.model, fitted.fit, self.residual_field(fitted.fit.scheme))
            if "eyeball" in self.model.materials:
                appearance["eyes"] = estimate_eye_appearance(photo, fitted.landmarks.to(self.model.device),
                                                             fitted.fit, self.model)
            if self.model.materials.keys() - {"eyeball"}:
                appearance["mouth"] = estimate_mouth_appearance(photo, source_image, self.model)
            appearance["grain"] = measure_grain(photo, source_image, self.model)
        return appearance

    def _render(self, image: np.ndarray, photo: torch.Tensor, fitted: FaceFit, appearance: dict,
                target: ExpressionCode, coeffs: torch.Tensor, report, detect_fit_ms: float) -> SynthesisResult:
        from .render.retarget import render_retargeted

        clock = _Clock()
        clock.laps["detect_fit"] = detect_fit_ms
        with torch.no_grad():
            deformation = retarget(self.model, fitted.fit, coeffs[None].expand(fitted.fit.batch_size, -1),
                                   self.residual_field(fitted.fit.scheme))
            clock.lap("deform")
            rendered = render_retargeted(photo, deformation, self.model, self.backend, parts=self.parts,
                                         **appearance)
            (out, mask), = _written([image], rendered)
        clock.lap("render_composite")
        labels = [target_labels(target, self.model, coeffs, report)] * fitted.fit.batch_size
        return SynthesisResult(image=out, mask=mask, labels=labels, fit=fitted.fit, landmarks=fitted.landmarks,
                               rasterizer=rendered.backend, timings_ms=clock.laps)

    def render_batch(self, images: Sequence[np.ndarray], fitted: Sequence[FaceFit], targets: Sequence[ExpressionCode],
                     appearances: Sequence[dict] | None = None) -> list[SynthesisResult]:
        """One render per image, the images rendered together: image i ([H, W, 3] uint8, one size for
        all) with its fit ``fitted[i]`` (one face: a fit made with ``all_faces=False``, e.g. from a
        :class:`~affectsynth.cache.FitCache`) re-expressed with ``targets[i]``. ``appearances[i]``:
        what :meth:`appearance` measured of image i, or None to measure them here.

        The faces are deformed and rendered in batches (:func:`~affectsynth.render.retarget.render_retargeted`
        with a batch of photos): per image the result :meth:`render_many` gives, to float rounding
        (a product over the batch rounds its sums differently, so an output value may differ by 1).
        That amortises the per-call work (on the CPU, 16 face crops at 112^2: 2.2 against 3.1 ms an
        image), and is the GPU's way to keep a device busy. On the CPU a batch holds at most
        :data:`CPU_BATCH_PIXELS` pixels (its z-buffers and samples then stay in the caches: at 224^2,
        batches of 16 took 5.5 ms an image, of 2 4.6, one at a time 4.8). ``timings_ms`` are those of
        the batch an image was rendered in.
        """
        if not len(images) == len(fitted) == len(targets):
            raise ValueError(f"render_batch needs one fit and one target per image, got {len(images)} images, "
                             f"{len(fitted)} fits and {len(targets)} targets")
        if not images:
            return []
        if len({image.shape for image in images}) > 1:
            raise ValueError(f"render_batch needs images of one size, got {sorted({image.shape for image in images})}")
        if any(f.fit.batch_size != 1 for f in fitted):
            raise ValueError("render_batch needs one face per image (fits made with all_faces=False)")
        appearances = [None] * len(images) if appearances is None else appearances
        step = len(images) if self.model.device.type != "cpu" else max(1, CPU_BATCH_PIXELS // images[0][..., 0].size)
        return [result for start in range(0, len(images), step)
                for result in self._render_batch(*(x[start:start + step] for x in (images, fitted, targets, appearances)))]

    def render_tensors(self, photo: torch.Tensor, fit: FitResult, coeffs: torch.Tensor, appearance: dict,
                       clock: _Clock | None = None) -> RetargetRender:
        """Re-express a batch of photos on the model's device, leaving the result there: what
        :meth:`render_batch` does between its images' upload and their download, for a training loop
        whose batch and cached fits are on a GPU already (no host round trip, no Python per image).

        Args:
            photo: [B, 3, H, W] float in [0, 1] on the model's device, one face per photo.
            fit: the B faces' fit (:meth:`.FitResult.cat` of one-face fits), on that device.
            coeffs: [B, E] the targets' model coefficients (:func:`~affectsynth.affect.targets.stack_model_coeffs`).
            appearance: what :meth:`appearance` measured of each photo, stacked
                (:func:`~affectsynth.render.retarget.stacked_rows` of each part: ``eyes``, ``mouth``,
                ``grain``).
            clock: laps ``deform`` when given (:class:`SynthesisResult.timings_ms`).
        Returns:
            :class:`~affectsynth.render.retarget.RetargetRender`: ``.image`` [B, 3, H, W] and ``.mask``
            [B, 1, H, W] (or ``.box``, ``.window`` and ``.window_mask``: the part that changed).
        """
        from .render.retarget import render_retargeted

        device, faces = self.model.device, fit.batch_size
        if photo.ndim != 4 or photo.shape[0] != faces or photo.shape[1] != 3:
            raise ValueError(f"render_tensors: photo must be [B, 3, H, W] with B = {faces} (the fit's faces), "
                             f"got {list(photo.shape)}")
        if coeffs.shape != (faces, self.model.num_expressions):
            raise ValueError(f"render_tensors: coeffs must be [{faces}, {self.model.num_expressions}], "
                             f"got {list(coeffs.shape)}")
        if photo.device != device or fit.scale.device != device:
            raise ValueError(f"render_tensors: photo and fit must be on the model's device {device}, got "
                             f"{photo.device} and {fit.scale.device}")
        with torch.no_grad():
            deformation = retarget(self.model, fit, coeffs, self.residual_field(fit.scheme))
            if clock is not None:
                clock.lap("deform")
            return render_retargeted(photo, deformation, self.model, self.backend, parts=self.parts, **appearance)

    def _render_batch(self, images: Sequence[np.ndarray], fitted: Sequence[FaceFit],
                      targets: Sequence[ExpressionCode], appearances: Sequence[dict | None]) -> list[SynthesisResult]:
        """:meth:`render_batch` of one batch (checked there; an appearance None is measured here)."""
        from .render.retarget import stacked_rows

        clock = _Clock()
        coeffs, reports = stack_model_coeffs(targets, self.model)                           # [B, E]
        photo = _photo_tensor(np.stack(images), self.model.device)                          # [B, 3, H, W]
        appearances = [self._appearance(photo[i:i + 1], f) if a is None else a
                       for i, (a, f) in enumerate(zip(appearances, fitted))]
        appearance = {name: stacked_rows([a[name] for a in appearances]) for name in appearances[0]}
        clock.lap("detect_fit")
        rendered = self.render_tensors(photo, FitResult.cat([f.fit for f in fitted]), coeffs, appearance, clock)
        written = _written(images, rendered)
        clock.lap("render_composite")
        return [SynthesisResult(image=out, mask=mask, labels=[target_labels(target, self.model, coeffs[i], reports[i])],
                                fit=f.fit, landmarks=f.landmarks, rasterizer=rendered.backend,
                                timings_ms=dict(clock.laps))
                for i, ((out, mask), target, f) in enumerate(zip(written, targets, fitted))]

    def close(self) -> None:
        self.face_fitter.close()

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _written(images: Sequence[np.ndarray], rendered) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each of the P images [H, W, 3] uint8 that a :class:`~affectsynth.render.retarget.RetargetRender`
    rendered into (one with all its faces, or one per face), with its window written in, and the
    mask [H, W] float32 of its faces (their soft masks' maximum). Outside the box the image's own
    pixels stay (photo = image / 255 gives them back exactly)."""
    from .render import kernels

    y0, y1, x0, x1 = rendered.box
    # numpy: torch.amax over dim 0 was ~100x slower (and one face needs none)
    masks = rendered.window_mask[:, 0].float().cpu().numpy()                                # [B, h, w]
    windows = rendered.window
    if not kernels.use_kernels(windows):  # (e.g. from a GPU: made bytes there, in one transfer for the batch)
        windows = (windows.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()   # [P, h, w, 3]
    out = []
    for p, image in enumerate(images):
        written = image.copy()
        if isinstance(windows, np.ndarray):
            written[y0:y1, x0:x1] = windows[p]
        else:
            kernels.to_uint8_hwc(windows[p], written[y0:y1, x0:x1])
        own = masks if len(images) == 1 else masks[p:p + 1]
        mask = np.zeros(image.shape[:2], np.float32)
        mask[y0:y1, x0:x1] = own[0] if len(own) == 1 else own.max(0)
        out.append((written, mask))
    return out


@functools.cache
def _source_digest() -> str:
    """sha256 (hex) of the package's Python source files, by path (read once a process)."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}:".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _photo_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """[B, 3, H, W] float32 in [0, 1] of B [B, H, W, 3] uint8 images (in one transfer), or [1, 3, H, W]
    of one [H, W, 3]."""
    pixels = torch.from_numpy(image).to(device)
    return (pixels if pixels.ndim == 4 else pixels[None]).permute(0, 3, 1, 2).float().div_(255)


def synthesize(image: np.ndarray | str | os.PathLike, target: ExpressionCode | str | Sequence[ExpressionCode | str],
               *, model: FaceModel | str | os.PathLike | None = None, detector: str = "mediapipe",
               backend: str = "auto", device: str | torch.device = "cpu", seed: int | None = None,
               all_faces: bool = False) -> SynthesisResult | list[SynthesisResult]:
    """Re-render the face in ``image`` with ``target``: the one-call Python API.

    Args:
        image: a file path (read as :func:`affectsynth.io.load_image` reads it: upright, RGB) or an
            upright [H, W, 3] uint8 RGB array.
        target: an :class:`ExpressionCode`, a target string (:func:`parse_target`: ``"happiness"``,
            ``"fear@0.5"``, ``"va:0.5,0.7"``, ``"au:12:0.8,6:0.6"``), or a list of them.
        model: a :class:`FaceModel`, a model ``.npz`` path, or None for the embedded default model.
        detector: "mediapipe" or "dlib". backend: rasteriser ("auto", "numba", "moderngl", "nvdiffrast").
        device: "cpu", "cuda" (InputError when it is not there) or "auto" (:func:`resolve_device`).
        seed: seeds the sampling of expression variants of string targets, drawn in list order
            (None: the prototypes and the kernel-weighted VA mean). Same inputs and seed, same bytes on CPU.
        all_faces: render every face (default: the single dominant face; similar-sized faces are an error).
    Returns:
        a :class:`SynthesisResult`, or for a list of targets a list of them in the same order
        (detection and fit run once for the whole list).

    This builds a :class:`Synthesizer` (model, detector) per call, about a second of set-up; for
    many images, hold a Synthesizer and call it (or its ``render_many``) instead.
    """
    from .io import load_image
    from .model import load_default_model

    device = resolve_device(device)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an [H, W, 3] uint8 RGB array, got {image.shape} {image.dtype}")
        name = "image"
    else:
        name, image = str(image), load_image(image)
    if isinstance(model, FaceModel):
        face_model = model.to(device)
    else:
        face_model = load_default_model(device) if model is None else FaceModel.load(model, device=device)
    single = isinstance(target, (ExpressionCode, str))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    targets = [t if isinstance(t, ExpressionCode) else parse_target(t, generator)
               for t in ([target] if single else target)]
    with Synthesizer(face_model, detector=detector, backend=backend) as synthesizer:
        results = list(synthesizer.render_many(np.ascontiguousarray(image), targets, all_faces=all_faces, name=name))
    return results[0] if single else results


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = 1000.0 * (now - self._last)
        self._last = now
