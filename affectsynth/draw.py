"""Drawings for looking at results (numpy + OpenCV): the fitted mesh and landmarks over the photo, and
contact sheets of renders."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .fit import FitResult
from .landmarks import Landmarks
from .model import FaceModel

__all__ = ["draw_fit_overlay", "contact_sheet"]

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


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str],
                  box: tuple[int, int, int, int] | None = None, tile: int = 256, columns: int = 4) -> np.ndarray:
    """Images in a grid, left to right then down, each with its caption in a strip below it.

    Args:
        images: [H, W, 3] uint8 RGB arrays of one size.
        captions: one line each (shrunk to fit the tile's width).
        box: (x0, y0, x1, y1) pixels to crop every image to (None: the whole image).
        tile: height in px each crop is scaled to (width keeps the aspect ratio).
        columns: tiles per row (at most the number of images).
    Returns:
        [H', W', 3] uint8 RGB, white between the tiles.
    """
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption per image and at least one image ({len(images)} / {len(captions)})")
    height, width = images[0].shape[:2]
    x0, y0, x1, y1 = (0, 0, width, height) if box is None else box
    tile_w = max(1, round(tile * (x1 - x0) / (y1 - y0)))
    strip, gap = max(16, tile // 9), max(2, tile // 64)
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (tile + strip + gap) + gap, columns * (tile_w + gap) + gap, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, (image, caption) in enumerate(zip(images, captions)):
        if image.shape[:2] != (height, width):
            raise ValueError(f"images must be of one size; image {i} is {image.shape[:2]}, not {(height, width)}")
        top, left = gap + (i // columns) * (tile + strip + gap), gap + (i % columns) * (tile_w + gap)
        sheet[top:top + tile, left:left + tile_w] = cv2.resize(image[y0:y1, x0:x1], (tile_w, tile),
                                                               interpolation=cv2.INTER_AREA)
        (text_w, text_h), _ = cv2.getTextSize(caption, font, 1.0, 1)
        scale = min(0.6 * strip / text_h, (tile_w - 4) / max(text_w, 1))
        (text_w, text_h), _ = cv2.getTextSize(caption, font, scale, 1)
        origin = (left + (tile_w - text_w) // 2, top + tile + (strip + text_h) // 2)
        cv2.putText(sheet, caption, origin, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet
