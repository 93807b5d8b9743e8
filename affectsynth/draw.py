"""Diagnostic drawings over the photo: the fitted mesh and landmarks (numpy + OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .fit import FitResult
from .landmarks import Landmarks
from .model import FaceModel

__all__ = ["draw_fit_overlay"]

_MESH = (80, 255, 120)       # front-facing mesh edges
_DETECTED = (255, 60, 60)    # detected landmarks
_FITTED = (60, 160, 255)     # fitted model landmarks


def draw_fit_overlay(image: np.ndarray, model: FaceModel, fit: FitResult, landmarks: Landmarks) -> np.ndarray:
    """The photo with each fitted face's visible mesh wireframe, detected landmarks (red) and
    the fitted model's landmarks (blue).

    Args:
        image: [H, W, 3] uint8 RGB.
        model, fit, landmarks: a fit of B faces and the landmarks it was fitted to.
    Returns:
        [H, W, 3] uint8 RGB, a new array.
    """
    out = np.ascontiguousarray(image.copy())
    mesh_layer = out.copy()
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    # OpenCV puts integer coordinates at pixel centres; ours has centres at integer + 0.5.
    half = 0.5
    with torch.no_grad():
        verts = fit.image_points(fit.vertices(model))                          # [B, V, 3]
        fitted = model.landmarks(verts, fit.scheme)[..., :2]                    # [B, L, 2]
    tris = model.triangles.cpu().numpy()
    for i in range(fit.batch_size):
        v = verts[i].cpu().double().numpy()
        a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
        # Image y points down, so a triangle facing the camera is clockwise in image coordinates.
        facing = ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])) < 0
        polys = np.round((v[tris[facing]][..., :2] - half) * (1 << shift)).astype(np.int32)
        cv2.polylines(mesh_layer, list(polys), True, _MESH, 1, cv2.LINE_AA, shift)
    # The wireframe half-transparent, so that the face stays visible under it.
    out = cv2.addWeighted(mesh_layer, 0.5, out, 0.5, 0.0)
    for i in range(fit.batch_size):
        used = ~torch.isnan(fit.landmark_error[i]).cpu().numpy()
        box = landmarks.box[i].tolist()
        radius = max(1.0, (box[2] - box[0]) / 250)  # dots that stay apart on small and large faces
        for pts, colour in ((landmarks.xy[i].cpu().numpy(), _DETECTED), (fitted[i].cpu().numpy(), _FITTED)):
            for x, y in pts[used] - half:
                cv2.circle(out, (int(x * (1 << shift)), int(y * (1 << shift))), int(radius * (1 << shift)),
                           colour, -1, cv2.LINE_AA, shift)
    return out
