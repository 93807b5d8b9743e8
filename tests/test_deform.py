"""The residual field (affectsynth.deform.ResidualField): what the fit missed, spread over the mesh."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from affectsynth.affect.targets import parse_expression, stack_model_coeffs
from affectsynth.deform import LIP_PAIRS, RESIDUAL_MAX_MM, ResidualField, fitted_image_points, retarget
from affectsynth.io import load_image
from affectsynth.pipeline import FaceFitter, Synthesizer
from affectsynth.render.materials import looks_like_teeth

from .conftest import DEV_FACES, need_shared


@pytest.fixture(scope="module")
def field(default_model):
    return ResidualField.build(default_model, "mp478")


@pytest.fixture(scope="module")
def astronaut_fit(default_model, astronaut, mp_detector):
    return FaceFitter(default_model, mp_detector)(astronaut).fit


def test_a_uniform_residual_moves_the_skin_alone(default_model, field, astronaut_fit):
    """Every landmark 2 px right and 1 px up: every skin vertex moves so, the teeth, tongue and
    eyeballs (no landmark on them) stay; a residual beyond the cap counts as the cap."""
    used = ~astronaut_fit.landmark_residual[0, :, 0].isnan()
    shift = torch.where(used[:, None], torch.tensor([2.0, -1.0]), float("nan"))[None]
    offsets = field.offsets(dataclasses.replace(astronaut_fit, landmark_residual=shift))[0]     # [V, 2]
    skin = default_model.regions["skin"]
    assert torch.allclose(offsets[skin], torch.tensor([2.0, -1.0]), atol=2e-3)
    for part in ("teeth_upper", "teeth_lower", "tongue", "eyeball_L", "eyeball_R"):
        assert offsets[default_model.regions[part]].abs().max() < 1e-3, part
    far = shift * 100 * RESIDUAL_MAX_MM * float(astronaut_fit.scale[0])
    capped = field.offsets(dataclasses.replace(astronaut_fit, landmark_residual=far))[0]
    assert capped[skin].norm(dim=-1).max() == pytest.approx(RESIDUAL_MAX_MM * float(astronaut_fit.scale[0]), rel=1e-3)


def test_the_moved_mesh_puts_the_landmarks_where_they_were_found(default_model, field, astronaut, mp_detector):
    fitted = FaceFitter(default_model, mp_detector)(astronaut)
    fit, detected = fitted.fit, fitted.landmarks.xy[0].double()
    moved = default_model.landmarks(fitted_image_points(default_model, fit, field), "mp478")[0, :, :2].double()
    plain = default_model.landmarks(fit.image_points(fit.vertices(default_model)), "mp478")[0, :, :2].double()
    used = ~fit.landmark_residual[0, :, 0].isnan()
    before, after = ((points - detected)[used].norm(dim=-1) for points in (plain, moved))
    assert before.mean() > 0.3 and after.max() < 0.05 * before.max() and after.mean() < 0.05 * before.mean()


def test_the_target_keeps_the_offsets_but_the_lips_opening_only_while_the_mouth_stays_open(default_model, field,
                                                                                            astronaut_fit):
    """The photo's upper lip 2 px higher than the fitted one: the source's lips move apart by it;
    a target that keeps the expression keeps it all (the photo unchanged), one that closes the
    mouth (neutral, from her open smile) keeps only the common part: both lips 1 px up."""
    used = ~astronaut_fit.landmark_residual[0, :, 0].isnan()
    residual = torch.where(used[:, None], torch.zeros(2), float("nan"))
    residual[list(upper for upper, _ in LIP_PAIRS["mp478"])] = torch.tensor([0.0, -2.0])
    fit = dataclasses.replace(astronaut_fit, landmark_residual=residual[None])
    upper, lower = default_model.landmark_map("mp478").vertices[[13, 14], 0]
    same = retarget(default_model, fit, fit.exp_coeffs, field)
    assert torch.equal(same.source_image, same.target_image)
    assert torch.allclose(same.source_image, fitted_image_points(default_model, fit, field), atol=1e-4)
    plain = retarget(default_model, fit, fit.exp_coeffs)
    moved = (same.source_image - plain.source_image)[0, :, :2]
    assert torch.allclose(moved[upper], torch.tensor([0.0, -2.0]), atol=0.05) and moved[lower].abs().max() < 0.05
    coeffs, _ = stack_model_coeffs([parse_expression("neutral")], default_model)
    closed, closed_plain = (retarget(default_model, fit, coeffs.to(fit.exp_coeffs), f) for f in (field, None))
    assert float(field.opening(closed.source, closed.target)[0]) < 0.2
    kept = (closed.target_image - closed_plain.target_image)[0, :, :2]
    assert float(kept[upper, 1] - kept[lower, 1]) > -0.4                     # the opening (-2 px) mostly gone
    assert torch.allclose(kept[[upper, lower], 1], torch.tensor(-1.0), atol=0.4)   # the common part stays


def test_a_smile_that_shows_teeth_closes_without_them(default_model):
    """A posed smile whose upper lip the fit leaves on the teeth (3.7 mm below the detected lip
    at the midline): rendered neutral, the closed mouth's upper lip is lip, not a row of the
    photo's teeth (3,944 teeth-coloured pixels above the target's lip line before the field, 135 after)."""
    image = load_image(need_shared(DEV_FACES / "faces_116_m_m" / "happiness.jpg"))
    with Synthesizer(default_model) as synth:
        fitted = synth.face_fitter(image)
        result = synth(image, parse_expression("neutral"))
        mouth = synth.appearance(image, fitted)["mouth"]
        coeffs, _ = stack_model_coeffs([parse_expression("neutral")], default_model)
        target = retarget(default_model, fitted.fit, coeffs.to(fitted.fit.exp_coeffs),
                          synth.residual_field("mp478")).target_image[0]
    line = target[default_model.regions["lip_inner_upper"], :2].double()
    line = line[line[:, 0].argsort()]
    top = int(target[default_model.regions["lips"], 1].min())
    pixels = torch.from_numpy(result.image).float() / 255
    columns = range(int(line[0, 0]) + 1, int(line[-1, 0]))
    teeth = 0
    for x in columns:   # each column of the mouth, from the lips' top down to a pixel above the lip line
        y = float(np.interp(x + 0.5, line[:, 0].numpy(), line[:, 1].numpy()))
        teeth += int(looks_like_teeth(pixels[top:int(y - 1), x][None], mouth.lip[:1])[0].sum())
    assert teeth < 0.5 * len(columns), (teeth, len(columns))
