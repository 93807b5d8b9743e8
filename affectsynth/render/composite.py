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

    Each pass sums shifted copies of the padded image tap by tap, a fused multiply-add per tap
    (``addcmul_``): the sums and the order of a 1-channel ``conv2d`` (oneDNN's on the CPU gives
    the same bits), at a third of its time (CPU ``conv2d``: ~0.3 ms per pass at 224^2). Images
    of other sigmas take the taps of the widest, their own padded with zeros (which add nothing:
    each image's sum is its own). On the CPU without autograd, OpenCV's separable filter with
    the same taps (:func:`.kernels.separable_filter`).
    """
    sigmas = [float(sigma)] * x.shape[0] if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if len(set(sigmas)) == 1:
        if sigmas[0] <= 0:
            return x
        k = _gaussian_taps(sigmas[0], x)
        if kernels.use_kernels(x):
            return kernels.separable_filter(x, k)                                  # k: [2r + 1]
    else:
        k = _padded_taps(sigmas, x)                                                # [2r + 1, B, 1, 1, 1]
    radius = k.shape[0] // 2
    for dim, pad in ((3, (radius, radius, 0, 0)), (2, (0, 0, radius, radius))):
        n = x.shape[dim]
        padded = F.pad(x, pad, mode="replicate")
        x = padded.narrow(dim, 0, n) * k[0]
        for i in range(1, 2 * radius + 1):
            x.addcmul_(padded.narrow(dim, i, n), k[i])
    return x


def _padded_taps(sigmas: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """[2R + 1, B, 1, 1, 1]: each of B images' :func:`_gaussian_taps` (a 1 for sigma 0) in the
    middle of the widest's, zeros around them."""
    taps = [_tap_values(s) if s > 0 else [1.0] for s in sigmas]
    radius = max(len(t) for t in taps) // 2
    rows = [[0.0] * (radius - len(t) // 2) + t + [0.0] * (radius - len(t) // 2) for t in taps]
    return torch.tensor(rows, dtype=like.dtype).T.reshape(2 * radius + 1, len(taps), 1, 1, 1).to(like.device)


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
