"""Grain: the photo's noise level measured near the face, and given back to the pixels the renderer
smoothed (looked up between pixel centres) or shaded (the mouth interior)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from affectsynth.affect.targets import parse_expression
from affectsynth.pipeline import Synthesizer
from affectsynth.render import kernels
from affectsynth.render.grain import Grain, add_grain, estimate_grain, kept_variance


def _shaded_photo(sigma: float, generator: torch.Generator) -> torch.Tensor:
    """[1, 3, 120, 160] a smooth quadratic shading (which the noise operator does not see) with
    luminance noise of ``sigma`` (the same on every channel)."""
    y, x = torch.meshgrid(torch.arange(120.0), torch.arange(160.0), indexing="ij")
    shading = 0.3 + 0.002 * x + 0.00001 * (x - 80) ** 2 + 0.00002 * (x - 80) * (y - 60)
    noise = sigma * torch.randn(120, 160, generator=generator)
    return (shading + noise).expand(1, 3, -1, -1).clone()


def test_estimate_grain_measures_the_noise_and_not_the_shading():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2, 3000, 2, generator=g) * torch.tensor([150.0, 110.0]) + 5
    assert float(estimate_grain(_shaded_photo(0.0, g), points).sigma.abs().max()) < 1e-5
    for sigma in (2 / 255, 8 / 255):
        measured = estimate_grain(_shaded_photo(sigma, g), points).sigma
        assert measured.shape == (2,) and torch.allclose(measured, torch.full((2,), sigma), rtol=0.08)


def test_kept_variance_of_a_bicubic_lookup():
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(500, 2, generator=g).mul(50).floor() + 0.5
    assert torch.equal(kept_variance(centres, (60, 60)), torch.ones(500))
    spread = kept_variance(torch.rand(20000, 2, generator=g, dtype=torch.float64) * 50 + 5, (60, 60))
    assert float(spread.mean()) == pytest.approx(0.814 ** 2, abs=0.01) and float(spread.min()) > 0.4
    # What it says: white noise looked up bicubically at those points keeps that share of its variance.
    noise = torch.randn(1, 1, 60, 60, generator=g, dtype=torch.float64)
    from affectsynth.render.shade import sample_image
    off = torch.tensor([[[20.25, 30.5]]], dtype=torch.float64) + torch.stack(
        torch.meshgrid(torch.arange(-15.0, 15.0), torch.arange(-15.0, 15.0), indexing="ij"), -1).reshape(1, -1, 2)
    looked_up = sample_image(noise, off, "bicubic")
    assert float(looked_up.var()) == pytest.approx(float(kept_variance(off[0, :1], (60, 60))), rel=0.15)


@pytest.mark.parametrize("kernels_on", [True, False])
def test_add_grain_tops_up_what_each_pixel_lacks_on_every_channel_alike(kernels_on, monkeypatch):
    if not kernels_on:
        monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    g = torch.Generator().manual_seed(2)
    window = torch.randint(0, 256, (2, 3, 40, 50), generator=g).float() / 255
    colour = torch.full((2, 1, 1500, 3), 0.5)
    pixels = torch.randperm(2000, generator=g)[:1500].expand(2, -1).contiguous()
    centres = torch.stack((pixels % 50, pixels // 50), -1)[:, None].float() + 0.5     # looked up where they are
    shaded = torch.zeros(2, 1, 1500, dtype=torch.bool)
    shaded[1] = True                                                               # face 1: shaded, none kept
    grain = Grain(sigma=torch.tensor([0.03, 0.03]))
    out = add_grain(colour, centres, shaded, grain, pixels, window, (7, 11))
    assert torch.equal(out[0], colour[0])                                          # a lookup at a centre kept it all
    added = out[1, 0] - 0.5
    assert torch.equal(added[:, 0], added[:, 1]) and torch.equal(added[:, 0], added[:, 2])   # luminance only
    assert float(added[:, 0].std()) == pytest.approx(0.03, rel=0.08) and abs(float(added[:, 0].mean())) < 0.003
    between = add_grain(colour, centres + 0.5, torch.zeros_like(shaded), grain, pixels, window, (7, 11))
    assert float((between[0, 0, :, 0] - 0.5).std()) == pytest.approx(0.03 * (1 - 0.41) ** 0.5, rel=0.1)
    assert torch.equal(add_grain(colour, centres, shaded, grain, pixels, window, (7, 11)), out)  # the same bits
    # Another photo (or the same one placed elsewhere) gets unrelated noise: no fixed pattern.
    other = add_grain(colour, centres, shaded, grain, pixels, torch.rand(2, 3, 40, 50, generator=g), (7, 11))
    moved = add_grain(colour, centres, shaded, grain, pixels, window, (8, 11))
    for unrelated in (other[1, 0, :, 0] - 0.5, moved[1, 0, :, 0] - 0.5):
        assert abs(float(torch.corrcoef(torch.stack((added[:, 0], unrelated)))[0, 1])) < 0.1


def test_add_grain_kernel_returns_the_torch_bits(monkeypatch):
    g = torch.Generator().manual_seed(4)
    window = (torch.randint(0, 256, (1, 3, 60, 70), generator=g).float() / 255)[..., 5:55, 3:63]   # strided
    colour = torch.rand(2, 1, 800, 3, generator=g)
    pixels = torch.randint(0, 50 * 60 + 1, (2, 800), generator=g)                   # with padding (h * w)
    where = torch.rand(2, 1, 800, 3, generator=g) * torch.tensor([70.0, 60.0, 1.0]) - 5   # some off the window
    shaded = torch.rand(2, 1, 800, generator=g) < 0.2
    grain = Grain(sigma=torch.tensor([0.02, 0.05]))
    fast = add_grain(colour, where, shaded, grain, pixels, window, (3, 9))
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = add_grain(colour, where, shaded, grain, pixels, window, (3, 9))
    # the noise is integer-hashed, the same in both; its amounts agree to float rounding (the JIT may
    # fuse a multiply-add that torch rounds twice: one ulp in 37 of these 4,800 values with numba 0.68)
    assert torch.allclose(fast, reference, rtol=0.0, atol=2.5e-7) and not torch.equal(fast, colour)


def test_a_noisy_photo_keeps_its_grain_where_the_face_moved(default_model, astronaut):
    rng = np.random.default_rng(3)
    noisy = np.clip(astronaut + rng.normal(0, 6, astronaut.shape[:2])[..., None], 0, 255).astype(np.uint8)
    with Synthesizer(default_model) as synth:
        out = synth(noisy, parse_expression("sadness")).image
    moved = cv2.erode(((out != noisy).any(-1)).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)

    def fine(image):   # what a 3 x 3 box blur takes away
        image = image.astype(np.float32)
        return image - cv2.blur(image, (3, 3))
    kept = np.sqrt((fine(out)[moved] ** 2).mean() / (fine(noisy)[moved] ** 2).mean())
    assert moved.sum() > 2000 and 0.85 < kept < 1.1   # bilinear lookups kept 0.62-0.65, bicubic alone 0.77
