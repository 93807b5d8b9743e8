"""Deform + render + composite on a real photo: texture moves with the target geometry."""

from __future__ import annotations

import torch

from affectsynth.affect.targets import parse_au
from affectsynth.deform import retarget
from affectsynth.pipeline import FaceFitter
from affectsynth.render.retarget import render_retargeted


def _to_tensor(image):
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _to_image(tensor):
    return (tensor[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


def test_unchanged_expression_reproduces_the_photo(default_model, astronaut, mp_detector):
    fit = FaceFitter(default_model, mp_detector)(astronaut).fit
    out = render_retargeted(_to_tensor(astronaut), retarget(default_model, fit, fit.exp_coeffs), default_model)
    diff = (out.image - _to_tensor(astronaut)).abs()
    assert diff.max() < 1.5 / 255 and out.mask.amax() > 0.99


def test_raised_brows_move_the_photo_brows_up(default_model, astronaut, mp_detector):
    """AU1+AU2 at full intensity added to the photo's own expression (her smile and parted jaw
    kept): MediaPipe finds the brows of the output higher, the chin not."""
    fit = FaceFitter(default_model, mp_detector)(astronaut).fit
    brows_up, _ = parse_au("1:1,2:1").to_model_coeffs(default_model)
    coeffs = torch.maximum(fit.exp_coeffs, brows_up[None].to(fit.exp_coeffs))
    out = render_retargeted(_to_tensor(astronaut), retarget(default_model, fit, coeffs), default_model)
    before, after = mp_detector(astronaut).xy[0], mp_detector(_to_image(out.image)).xy[0]
    brows, chin = [105, 66, 334, 296], 152  # mid-brow points of both brows; chin
    rise = (before[brows, 1] - after[brows, 1]).mean()   # px, image y points down
    scale_px_per_mm = float(fit.scale[0])
    assert rise > 3.0 * scale_px_per_mm, rise          # the model raises the brows ~8 mm at full intensity
    assert abs(before[chin, 1] - after[chin, 1]) < 2.0 * scale_px_per_mm  # detector jitter only
