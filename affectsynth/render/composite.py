"""Composite a rendered face layer back into its photo with a feathered mask (torch)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from . import kernels

__all__ = ["dilate", "erode", "feathered_mask", "fill_specks", "composite"]


def _gaussian_blur(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with replicate padding, by ``sigma`` px, or each
    image b by its own ``sigma[b]`` (0: left as it is).

    A ``conv2d`` per pass (one launch on a GPU; images of other sigmas as groups, each with its own
    taps padded with zeros to the widest: zeros add nothing). On the CPU without autograd, OpenCV's
    separable filter with the same taps (:func:`.kernels.separable_filter`).
    """
    sigmas = [float(sigma)] * x.shape[0] if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if max(sigmas) <= 0:
        return x
    if len(set(sigmas)) == 1:
        k = _gaussian_taps(sigmas[0], x)
        if kernels.use_kernels(x):
            return kernels.separable_filter(x, k)
        taps = k[None]                                                              # [1, 2r + 1]
    else:
        taps = _padded_taps(sigmas, x)                                              # [B, 2r + 1]
    groups, radius = taps.shape[0], taps.shape[1] // 2
    rows, columns = taps[:, None, None, :], taps[:, None, :, None]                 # [G, 1, 1 | K, K | 1]
    for pad, weight in (((radius, radius, 0, 0), rows), ((0, 0, radius, radius), columns)):
        padded = F.pad(x, pad, mode="replicate")
        x = F.conv2d(padded.view(-1, groups, *padded.shape[2:]), weight, groups=groups).view(x.shape)
    return x


def _padded_taps(sigmas: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """[B, 2R + 1]: each of B images' :func:`_tap_values` (a 1 for sigma 0) in the middle of the
    widest's, zeros around them, in ``like``'s dtype and device."""
    taps = [_tap_values(s) if s > 0 else [1.0] for s in sigmas]
    radius = max(len(t) for t in taps) // 2
    rows = [[0.0] * (radius - len(t) // 2) + t + [0.0] * (radius - len(t) // 2) for t in taps]
    return torch.tensor(rows, dtype=like.dtype).to(like.device)


def _gaussian_taps(sigma: float, like: torch.Tensor) -> torch.Tensor:
    """[2r + 1] :func:`_tap_values` of ``sigma`` px in ``like``'s dtype and device."""
    return torch.tensor(_tap_values(sigma), dtype=like.dtype, device=like.device)


def _tap_values(sigma: float) -> list[float]:
    """2r + 1 normalised Gaussian taps of ``sigma`` px, r = round(3 sigma) (at least 1)."""
    radius = max(1, int(3 * sigma + 0.5))
    # In Python floats (float64), rounded once where they become a tensor: as tensor ops this
    # was ~50 us a call.
    k = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]
    total = math.fsum(k)
    return [v / total for v in k]


def dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Square (2r + 1)^2 max-filter of float [B, 1, H, W] (dilation of a mask), pixels off the
    image left out: ``max_pool2d`` with padding r (on the CPU without autograd, OpenCV's, the same
    values: :func:`.kernels.max_filter`)."""
    if r <= 0:
        return x
    if kernels.use_kernels(x):
        return kernels.max_filter(x, r)
    return F.max_pool2d(x, 2 * r + 1, stride=1, padding=r)


def erode(x: torch.Tensor, r: int) -> torch.Tensor:
    """Square (2r + 1)^2 min-filter of float [B, 1, H, W] (erosion of a mask): -dilate(-x), the
    same values (on the CPU without autograd, OpenCV's erosion, without the two negations)."""
    if r > 0 and kernels.use_kernels(x):
        return kernels.min_filter(x, r)
    return -dilate(-x, r)


def fill_specks(coverage: torch.Tensor, radius_px: int) -> torch.Tensor:
    """Close gaps narrower than about ``2 * radius_px + 1`` px in a coverage [B, 1, H, W] in {0, 1}
    (a morphological closing: dilate, then erode). Larger uncovered regions stay as they are."""
    if radius_px <= 0:
        return coverage
    return erode(dilate(coverage, radius_px), radius_px)


def feathered_mask(coverage: torch.Tensor, feather_px: float | Sequence[float],
                   speck_px: int | Sequence[int] = 0) -> torch.Tensor:
    """A soft compositing mask from a hard coverage [B, 1, H, W] in {0, 1}.

    Gaps narrower than about ``2 * speck_px + 1`` px are closed first (:func:`fill_specks`). The
    coverage is eroded by ``feather_px`` and blurred with sigma ``feather_px / 2``, so the
    mask reaches 0 inside the rendered region's outline: the layer's outermost pixels, whose
    texture comes from the face's silhouette and may mix in background, never show fully.
    The closing's erosion and the feather's are one erosion by both radii: eroding by a square
    and then by another is eroding by the square as wide as both (pixels off the image left out).
    ``feather_px`` and ``speck_px`` are one value for the B images or one each (faces of other
    sizes): the torch path filters them together, a filter per distinct radius and one blur.
    """
    b = coverage.shape[0]
    feathers = [float(feather_px)] * b if isinstance(feather_px, (int, float)) else [float(f) for f in feather_px]
    grow = [max(speck_px, 0)] * b if isinstance(speck_px, int) else [max(int(s), 0) for s in speck_px]
    shrink = [g + (max(1, int(round(f))) if f > 0 else 0) for g, f in zip(grow, feathers)]
    if kernels.use_kernels(coverage):   # the same three filters, in one round trip (per image, where they differ)
        def filtered(x: torch.Tensor, i: int) -> torch.Tensor:
            taps = _gaussian_taps(feathers[i] / 2, coverage) if feathers[i] > 0 else None
            return kernels.closed_eroded_blurred(x, grow[i], shrink[i], taps)
        if len(set(zip(feathers, grow))) == 1:
            return filtered(coverage, 0)
        return torch.cat([filtered(coverage[i:i + 1], i) for i in range(b)])
    grown = _by_radius(dilate, coverage, grow)
    return _gaussian_blur(_by_radius(erode, grown, shrink), [f / 2 for f in feathers])


def _by_radius(fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, radii: Sequence[int]) -> torch.Tensor:
    """``fn(x, r)`` of [B, 1, H, W] ``x``, image b by radius ``radii[b]`` (0: as it is): one call
    per distinct radius (faces of a batch are of a few sizes in px), on the images of that radius."""
    if len(set(radii)) == 1:
        return fn(x, radii[0]) if radii[0] > 0 else x
    out = x.clone()
    for r in sorted(set(radii) - {0}):
        index = torch.tensor([i for i, own in enumerate(radii) if own == r], device=x.device)
        out[index] = fn(x[index], r)
    return out


def composite(photo: torch.Tensor, layer: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * layer + (1 - mask) * photo`` (on the CPU without autograd, in one pass:
    :func:`.kernels.blend`, the same bits).

    Args:
        photo: [B, C, H, W] the original photo.
        layer: [B, C, H, W] the rendered face.
        mask: [B, 1, H, W] in [0, 1].
    Returns:
        [B, C, H, W].
    """
    same = photo.shape == layer.shape and mask.shape == (photo.shape[0], 1, *photo.shape[2:])
    if same and photo.dtype == layer.dtype == mask.dtype and kernels.use_kernels(photo, layer, mask):
        return kernels.blend(photo, layer, mask)
    return mask * layer + (1 - mask) * photo
