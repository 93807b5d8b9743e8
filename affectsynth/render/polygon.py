"""Pixels of a photo inside a 2-D polygon (image space, px; pixel centres at +0.5): the mouth and eye
openings as the fitted landmarks outline them."""

from __future__ import annotations

import torch

from . import kernels

__all__ = ["inside_polygon", "polygon_pixels"]


def inside_polygon(points: torch.Tensor, polygon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether points [N, 2] lie inside a closed polygon [M, 2] (even-odd rule), and their
    distance to its boundary [N]."""
    a, b = polygon, polygon.roll(-1, 0)                                                     # edges a -> b
    px, py = points[:, None, 0], points[:, None, 1]
    rise = b[:, 1] - a[:, 1]
    rise = torch.where(rise != 0, rise, torch.full_like(rise, 1e-12))  # horizontal edges never cross
    crosses = ((a[:, 1] > py) != (b[:, 1] > py)) & (px < a[:, 0] + (py - a[:, 1]) * (b[:, 0] - a[:, 0]) / rise)
    inside = crosses.sum(1) % 2 == 1
    ab = b - a
    t = (((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    distance = (points[:, None] - (a + t[..., None] * ab)).norm(dim=-1).min(1).values
    return inside, distance


def polygon_pixels(photo: torch.Tensor, polygon: torch.Tensor, margin_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours [N, 3] and pixel-centre positions [N, 2] of the photo's pixels inside the
    polygon [M, 2] (px) and at least ``margin_px`` from its edge; photo [C, H, W]."""
    height, width = photo.shape[-2:]
    x0, y0 = (int(max(0.0, float(v))) for v in polygon.amin(0).floor())
    x1, y1 = (int(min(float(lim), float(v))) for v, lim in zip(polygon.amax(0).ceil(), (width, height)))
    if x1 <= x0 or y1 <= y0:
        return photo.new_zeros(0, 3), photo.new_zeros(0, 2)
    if kernels.use_kernels(photo, polygon):   # these steps pixel by pixel: as [N, M] ops, ~0.5 ms an eye at 224^2
        return kernels.polygon_pixels(photo, polygon.to(photo.dtype), (x0, y0, x1, y1), margin_px)
    ys, xs = torch.meshgrid(torch.arange(y0, y1, device=photo.device, dtype=photo.dtype) + 0.5,
                            torch.arange(x0, x1, device=photo.device, dtype=photo.dtype) + 0.5, indexing="ij")
    centres = torch.stack((xs, ys), -1).reshape(-1, 2)
    inside, distance = inside_polygon(centres, polygon.to(photo.dtype))
    keep = inside & (distance >= margin_px)
    colours = photo[:3, y0:y1, x0:x1].permute(1, 2, 0).reshape(-1, 3)
    return colours[keep], centres[keep]
