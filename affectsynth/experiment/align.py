"""Face alignment for the experiment: every photo detected by our own detector and warped so that the eye
centres land on fixed points of a square crop.

    eyes = find_eyes(paths, detector="mediapipe")      # key -> [2, 2] (image-left eye, image-right eye) px
    crop = align_face(image, eyes[key], size=112)      # [size, size, 3] uint8

The renders of ``affectsynth batch`` keep the source photo's size and head pose, so they are aligned with
their source's eyes (the synthesized expression moves the lids, not the eye centres).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..detect import create_detector
from ..errors import InputError
from ..io import load_image

__all__ = ["find_eyes", "align_face", "eye_centres", "EYE_Y", "EYE_X"]

#: Where the eye centres go, as fractions of the crop side: the face then fills the crop from brow to chin,
#: as in the aligned crops FER datasets ship.
EYE_Y = 0.40
EYE_X = (0.32, 0.68)
#: Landmark indices of each eye per scheme: MediaPipe's two iris rings (468.., 473..), iBUG's eye contours.
_EYE_POINTS = {"mp478": (range(468, 473), range(473, 478)), "ibug68": (range(36, 42), range(42, 48))}


def eye_centres(xy: np.ndarray, scheme: str) -> np.ndarray:
    """[2, 2] eye centres (image-left first) from one face's landmarks ``xy`` [N, 2] of ``scheme``."""
    centres = np.stack([xy[list(points)].mean(0) for points in _EYE_POINTS[scheme]])
    return centres[np.argsort(centres[:, 0])]


def find_eyes(paths: dict[str, Path], detector: str = "mediapipe") -> dict[str, np.ndarray]:
    """Eye centres ([2, 2] px, image-left first) of the largest face of each image; images without a face
    are left out."""
    eyes = {}
    with create_detector(detector) as find_faces:
        for key, path in paths.items():
            landmarks = find_faces(load_image(path))
            if landmarks.batch_size:
                eyes[key] = eye_centres(landmarks.xy[0].double().numpy(), landmarks.scheme)
    return eyes


def align_face(image: np.ndarray, eyes: np.ndarray, size: int) -> np.ndarray:
    """``image`` [H, W, 3] uint8 warped by the similarity that takes ``eyes`` [2, 2] (image-left first, px,
    pixel centres at +0.5) to the crop's eye points: [size, size, 3] uint8."""
    if size < 16:
        raise InputError(f"--size {size}: give at least 16 px")
    source = np.asarray(eyes, dtype=np.float64)
    target = np.array([[EYE_X[0] * size, EYE_Y * size], [EYE_X[1] * size, EYE_Y * size]])
    scale = np.linalg.norm(target[1] - target[0]) / max(np.linalg.norm(source[1] - source[0]), 1e-6)
    if scale < 0.5:  # shrink with area averaging first: a bilinear warp alone would alias
        h, w = image.shape[:2]
        shrunk = (max(1, round(w * 2 * scale)), max(1, round(h * 2 * scale)))
        image = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
        source = source * (shrunk[0] / w, shrunk[1] / h)
        scale = np.linalg.norm(target[1] - target[0]) / np.linalg.norm(source[1] - source[0])
    d_source, d_target = source[1] - source[0], target[1] - target[0]
    angle = math.atan2(d_target[1], d_target[0]) - math.atan2(d_source[1], d_source[0])
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # OpenCV's warp works in pixel-index coordinates (centres at integers): shift by half a pixel each way.
    offset = (target[0] - 0.5) - rotation @ (source[0] - 0.5)
    matrix = np.concatenate([rotation, offset[:, None]], axis=1)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
