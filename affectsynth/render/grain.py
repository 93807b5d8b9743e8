"""Grain: the photo's noise, measured near the face and given back where the renderer smoothed it away.

A re-rendered face is smoother than the photo around it. Its skin is the photo's, looked up
between pixel centres, and a lookup is a weighted mean that keeps ``sum(w^2)`` of white noise's
variance (Catmull-Rom, at offsets spread over the pixel: 0.66 on average, 1 at a pixel centre);
the mouth interior and painted eyes are shaded and have no grain at all. A classifier trained on
renders could tell a synthetic face by that smoothness alone. So the photo's noise level is
measured once per photo (:func:`estimate_grain`) and each composited pixel gets the noise it
lacks (:func:`add_grain`): ``sigma * sqrt(1 - kept)``, kept the lookup's share for a photo pixel,
0 for a shaded one.

Convention: the noise is luminance noise, the same value on every channel (a greyscale photo stays
grey), and a function of the pixel's position in the photo and the photo's own 8-bit value there,
hashed (integer arithmetic): the same render is the same bits on every run and device, and two
images (or a flip of one) get unrelated noise, so the renders share no fixed pattern a classifier
could learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import kernels
from .eyes import luma
from .shade import centre_index, sample_image

__all__ = ["Grain", "estimate_grain", "kept_variance", "add_grain"]

#: Immerkaer's noise operator (Fast Noise Variance Estimation, CVIU 64(2), 1996): the difference of
#: two Laplacians, blind to linear and quadratic shading; white noise of sigma gives a response of
#: sigma * 6 (the root of the sum of its squared weights).
NOISE_OPERATOR = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
#: How many bytes of a pixel's hash are summed into its noise, and the factor that scales their
#: centred sum to unit variance (a byte's variance is (256^2 - 1) / 12).
NOISE_BYTES = 4
NOISE_SCALE = 1.0 / math.sqrt(NOISE_BYTES * (256 ** 2 - 1) / 12)
#: The median of |N(0, 1)|: a median absolute response over it is the response's sigma, and edges
#: among the sampled points (brows, lips) are outliers it ignores.
HALF_NORMAL_MEDIAN = 0.6744897501960817


@dataclass(frozen=True)
class Grain:
    """The noise level of B faces' photos.

    Attributes:
        sigma: [B] the luminance noise's standard deviation near each face, in the photo's values
            (0..1).
    """

    sigma: torch.Tensor


def estimate_grain(photo: torch.Tensor, points: torch.Tensor) -> Grain:
    """Measure the photo's noise at B faces' points.

    Args:
        photo: [1 or B, 3, H, W] float in [0, 1] (face b's photo at b, or one for all).
        points: [B, N, 2] px, where to measure (e.g. the fitted skin's vertices in the photo).
    Returns:
        :class:`Grain`: per face, the median absolute :data:`NOISE_OPERATOR` response of the luminance
        at the points' pixels (the operator's 9 taps looked up there, the photo's edge repeated),
        over 6 and :data:`HALF_NORMAL_MEDIAN`.
    """
    photo = photo.expand(points.shape[0], -1, -1, -1)
    response = 0.0
    for dy, row in zip((-1, 0, 1), NOISE_OPERATOR):
        for dx, weight in zip((-1, 0, 1), row):
            tap = sample_image(photo, points + points.new_tensor((dx, dy)), "nearest")               # [B, N, C]
            response = response + weight * luma(tap[..., :3])
    return Grain(sigma=response.abs().median(1).values / (6.0 * HALF_NORMAL_MEDIAN))


#: The sum of the squared Catmull-Rom weights (:func:`~.shade.catmull_rom`) at t, a polynomial:
#: 1 - 9/2 t^2 + 4 t^3 + 21/2 t^4 - 15 t^5 + 5 t^6, its coefficients from the highest power.
CATMULL_ROM_SQUARES = (5.0, -15.0, 10.5, 4.0, -4.5, 0.0, 1.0)


def kept_variance(where: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[...] the share of white noise's variance a bicubic lookup (``sample_image(..., "bicubic")``)
    keeps at points ``where`` [..., 2] px of an image of ``size`` (h, w): the product over x and y of
    the sum of the squared Catmull-Rom weights (1 at a pixel centre, 0.41 half a pixel off in x and y)."""
    kept = None
    for axis, extent in ((0, size[1]), (1, size[0])):
        t = centre_index(where[..., axis], extent)
        t = t - t.floor()
        along = torch.full_like(t, CATMULL_ROM_SQUARES[0])
        for coefficient in CATMULL_ROM_SQUARES[1:]:   # Horner
            along = along * t + coefficient
        kept = along if kept is None else kept * along
    return kept


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """int64 [...] in [0, 2^32) -> a well-mixed hash in [0, 2^32) (each product stays under 2^59)."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def add_grain(colour: torch.Tensor, where: torch.Tensor, shaded: torch.Tensor, grain: Grain, pixels: torch.Tensor,
              window: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
    """Drawn pixels' colours with the grain they lack added.

    Args:
        colour: [B, 1, N, C] the drawn pixels' colours.
        where: [B, 1, N, >=2] where each was looked up in the window, px (:func:`kept_variance`).
        shaded: [B, 1, N] bool, the pixels shaded rather than looked up (they keep none of the grain).
        grain: the B faces' :class:`Grain`.
        pixels: [B, N] int64 the pixels' flat indices in the window (``h * w``: padding).
        window: [1 or B, C, h, w] the faces' photo's window (its 8-bit values key the noise).
        origin: (row, col) of the window's first pixel in the photo.
    Returns:
        [B, 1, N, C] ``colour + sigma * sqrt(1 - kept) * noise``, the same noise on every channel:
        :data:`NOISE_BYTES` bytes of a hash of the pixel's row and column in the photo and its packed
        8-bit colour there, summed, centred and scaled to unit variance (Irwin-Hall: near-normal, and
        integer arithmetic, so the CPU kernel, :func:`.kernels.add_grain`, draws the same noise; the
        colours agree to float rounding, a last bit where the JIT fuses a multiply-add).
    """
    b, (channels, height, width) = colour.shape[0], window.shape[-3:]
    sigma = grain.sigma.to(colour.dtype)
    if kernels.use_kernels(colour, where, window):
        return kernels.add_grain(colour.view(b, -1, colour.shape[-1]).clone(), where.view(b, -1, where.shape[-1]),
                                 shaded.view(b, -1), sigma, pixels, window.expand(b, -1, -1, -1), origin,
                                 CATMULL_ROM_SQUARES, NOISE_SCALE).view(colour.shape)
    kept = torch.where(shaded, torch.zeros((), dtype=where.dtype, device=where.device),
                       kept_variance(where[..., :2], (height, width)))
    flat = pixels.clamp(max=height * width - 1)
    values = window.flatten(2).expand(b, -1, -1).gather(2, flat[:, None].expand(-1, channels, -1))
    eight_bit = (values * 255 + 0.5).long()                                 # [B, C, N] (rounded: values >= 0)
    packed = eight_bit[:, 0]
    for c in range(1, eight_bit.shape[1]):
        packed = ((packed << 8) | eight_bit[:, c]) & 0xFFFFFFFF
    key = (((flat // width + origin[0]) * 73856093) ^ ((flat % width + origin[1]) * 19349663)
           ^ (packed * 83492791)) & 0xFFFFFFFF
    hashed = _hash32(key)
    total = hashed & 0xFF
    for k in range(1, NOISE_BYTES):
        total = total + ((hashed >> (8 * k)) & 0xFF)
    noise = (total - NOISE_BYTES * 255 // 2).to(colour.dtype) * NOISE_SCALE                         # [B, N]
    amount = sigma[:, None, None] * (1 - kept).clamp(min=0).sqrt()                                  # [B, 1, N]
    return colour + (amount * noise[:, None])[..., None]
