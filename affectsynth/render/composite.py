"""Composite a rendered face layer back into its photo with a feathered mask (torch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import kernels

__all__ = ["dilate", "erode", "feathered_mask", "fill_specks", "composite"]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with replicate padding.

    Each pass sums shifted copies of the padded image tap by tap, a fused multiply-add per tap
    (``addcmul_``): the sums and the order of a 1-channel ``conv2d`` (oneDNN's on the CPU gives
    the same bits), at a third of its time (CPU ``conv2d``: ~0.3 ms per pass at 224^2). On the CPU
    without autograd, OpenCV's separable filter with the same taps (:func:`.kernels.separable_filter`).
    """
    k = _gaussian_taps(sigma, x)
    radius = len(k) // 2
    if kernels.use_kernels(x):
        return kernels.separable_filter(x, k)
    for dim, pad in ((3, (radius, radius, 0, 0)), (2, (0, 0, radius, radius))):
        n = x.shape[dim]
        padded = F.pad(x, pad, mode="replicate")
        x = padded.narrow(dim, 0, n) * k[0]
        for i in range(1, 2 * radius + 1):
            x.addcmul_(padded.narrow(dim, i, n), k[i])
    return x


def _gaussian_taps(sigma: float, like: torch.Tensor) -> torch.Tensor:
    """[2r + 1] normalised Gaussian taps of ``sigma`` px, r = round(3 sigma) (at least 1), in
    ``like``'s dtype and device."""
    radius = max(1, int(3 * sigma + 0.5))
    # In Python floats (float64), rounded once: as tensor ops this was ~50 us a call.
    k = [math.exp(-0.5 * (t / sigma) ** 2) for t in range(-radius, radius + 1)]
    total = math.fsum(k)
    return torch.tensor([v / total for v in k], dtype=like.dtype, device=like.device)


def _running_max(x: torch.Tensor, dim: int, r: int) -> torch.Tensor:
    """The maximum of ``x`` over the window [i - r, i + r] along ``dim`` (positions off the
    tensor are left out), same shape as ``x`` (float).

    Windows of 1, 2, 4, ... entries are built by doubling, and the (2r + 1)-window is the maximum
    of two overlapping ones: O(log r) elementwise maxima, each on the whole tensor. CPU
    ``max_pool2d`` on one channel was ~15x slower at r = 2 (224^2: 1.7 ms against 0.12 ms).
    """
    n = x.shape[dim]
    pad_shape = list(x.shape)
    pad_shape[dim] = r
    pad = x.new_full(pad_shape, float("-inf"))
    m = torch.cat((pad, x, pad), dim)
    length, span = 2 * r + 1, 1
    while 2 * span <= length:   # m[i] = max of the padded x over [i, i + 2 span)
        m = torch.maximum(m.narrow(dim, 0, m.shape[dim] - span), m.narrow(dim, span, m.shape[dim] - span))
        span *= 2
    return torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, length - span, n))


def dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Square (2r + 1)^2 max-filter of float [B, 1, H, W] (dilation of a mask), pixels off the
    image left out (as ``max_pool2d`` with padding r), as a row pass then a column pass: the
    same result as the 2-D filter (on the CPU without autograd, OpenCV's:
    :func:`.kernels.max_filter`)."""
    if r > 0 and kernels.use_kernels(x):
        return kernels.max_filter(x, r)
    return _running_max(_running_max(x, 3, r), 2, r)


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


def feathered_mask(coverage: torch.Tensor, feather_px: float, speck_px: int = 0) -> torch.Tensor:
    """A soft compositing mask from a hard coverage [B, 1, H, W] in {0, 1}.

    Gaps narrower than about ``2 * speck_px + 1`` px are closed first (:func:`fill_specks`). The
    coverage is eroded by ``feather_px`` and blurred with sigma ``feather_px / 2``, so the
    mask reaches 0 inside the rendered region's outline: the layer's outermost pixels, whose
    texture comes from the face's silhouette and may mix in background, never show fully.
    The closing's erosion and the feather's are one erosion by both radii: eroding by a square
    and then by another is eroding by the square as wide as both (pixels off the image left out).
    """
    radius = max(speck_px, 0) + (max(1, int(round(feather_px))) if feather_px > 0 else 0)
    if kernels.use_kernels(coverage):   # the same three filters, in one round trip
        return kernels.closed_eroded_blurred(coverage, max(speck_px, 0), radius,
                                             _gaussian_taps(feather_px / 2, coverage) if feather_px > 0 else None)
    grown = dilate(coverage, speck_px) if speck_px > 0 else coverage
    eroded = erode(grown, radius) if radius > 0 else grown
    return _gaussian_blur(eroded, feather_px / 2) if feather_px > 0 else eroded


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
