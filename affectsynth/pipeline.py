"""Stages strung together: image -> landmarks -> fit. The CLI, the batch runner and the
training hook all call this; none of them re-implements a stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .detect import Detector, create_detector
from .errors import InputError, NoFaceError
from .fit import FitConfig, FitResult, Fitter
from .landmarks import Landmarks
from .model import FaceModel

__all__ = ["FaceFit", "FaceFitter", "select_faces"]

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
