"""Stages strung together: image -> landmarks -> fit (:class:`FaceFitter`), and on to
target -> deform -> render -> composite (:class:`Synthesizer`). The CLI (and later the batch
runner and the training hook) call these; none of them re-implements a stage."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .affect.targets import ExpressionCode
from .detect import Detector, create_detector
from .errors import InputError, NoFaceError
from .fit import FitConfig, FitResult, Fitter
from .landmarks import Landmarks
from .model import FaceModel

__all__ = ["FaceFit", "FaceFitter", "SynthesisResult", "Synthesizer", "select_faces", "target_labels"]

#: A second face at least this fraction of the largest face's box area makes "which face?"
#: ambiguous; a smaller one (a bystander in the background) is ignored.
AMBIGUOUS_AREA_RATIO = 0.5


def select_faces(landmarks: Landmarks, all_faces: bool, name: str = "image") -> Landmarks:
    """The faces to work on: every face, or the single dominant one.

    Raises NoFaceError when there is none, and InputError when several faces of similar
    size make the choice ambiguous and ``all_faces`` is False.
    """
    if landmarks.batch_size == 0:
        raise NoFaceError(f"{name}: no face found")
    if all_faces or landmarks.batch_size == 1:
        return landmarks
    area = (landmarks.box[:, 2] - landmarks.box[:, 0]) * (landmarks.box[:, 3] - landmarks.box[:, 1])
    similar = int((area >= AMBIGUOUS_AREA_RATIO * area[0]).sum())
    if similar > 1:
        raise InputError(f"{name}: {similar} faces of similar size found; pass --all-faces to use them all, "
                         f"or crop the image to one face")
    return landmarks[0]


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


@dataclass(frozen=True)
class SynthesisResult:
    """A photo re-rendered with a target expression.

    Attributes:
        image: [H, W, 3] uint8 RGB, the input with each selected face re-expressed.
        labels: per face, the labels of what was rendered (category, soft label, VA,
            intensity, the AU activations asked for and the model coefficients used).
        fit: the fit of the selected faces.
        landmarks: their landmarks.
        rasterizer: the rasteriser backend used.
        timings_ms: wall time per stage.
    """

    image: np.ndarray
    labels: list[dict]
    fit: FitResult
    landmarks: Landmarks
    rasterizer: str
    timings_ms: dict[str, float]


def target_labels(target: ExpressionCode, model: FaceModel, coeffs: torch.Tensor, report) -> dict:
    """The JSON-ready labels of a rendered target: what was asked and what the model did."""
    return {
        "category": target.category, "soft_label": target.soft_label, "valence": target.valence,
        "arousal": target.arousal, "intensity": target.intensity, "source": target.source,
        "au": target.au, "model_coeffs": dict(zip(model.exp_names, coeffs.tolist())),
        "au_missing_in_model": list(report.missing), "au_approximated": list(report.approximated),
    }


class Synthesizer:
    """Detect, fit, retarget, render and composite: ``Synthesizer(model)(image, target)``.

    Loads its detector once; the rasteriser backend is chosen once ("auto": see
    :mod:`affectsynth.render.raster`).
    """

    def __init__(self, model: FaceModel, detector: Detector | str = "mediapipe", backend: str = "auto",
                 config: FitConfig = FitConfig()):
        from .render.raster import resolve_backend

        self.model = model
        self.face_fitter = FaceFitter(model, detector, config)
        self.backend = resolve_backend(backend, model.device)

    def __call__(self, image: np.ndarray, target: ExpressionCode, all_faces: bool = False,
                 name: str = "image") -> SynthesisResult:
        """Render every selected face of an upright RGB uint8 image [H, W, 3] with ``target``."""
        from .deform import retarget
        from .render.retarget import render_retargeted

        clock = _Clock()
        fitted = self.face_fitter(image, all_faces=all_faces, name=name)
        clock.lap("detect_fit")
        coeffs, report = target.to_model_coeffs(self.model)
        with torch.no_grad():
            deformation = retarget(self.model, fitted.fit, coeffs[None].expand(fitted.fit.batch_size, -1))
            clock.lap("deform")
            photo = torch.from_numpy(image).to(self.model.device).permute(2, 0, 1)[None].float() / 255
            rendered = render_retargeted(photo, deformation, self.model, self.backend)
            out = (rendered.image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()
        clock.lap("render_composite")
        labels = [target_labels(target, self.model, coeffs, report)] * fitted.fit.batch_size
        return SynthesisResult(image=out, labels=labels, fit=fitted.fit, landmarks=fitted.landmarks,
                               rasterizer=rendered.backend, timings_ms=clock.laps)

    def close(self) -> None:
        self.face_fitter.close()


class _Clock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = 1000.0 * (now - self._last)
        self._last = now
