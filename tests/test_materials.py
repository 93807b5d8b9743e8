"""Mouth-interior shading, the re-shading of turned skin, and the per-point depth lookup the renderer's 'does the photo show it' test uses."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from affectsynth.io import load_image
from affectsynth.model.face_model import MATERIALS
from affectsynth.pipeline import FaceFitter
from affectsynth.render import rasterize
from affectsynth.render.materials import (OCCLUSION_DEPTH_MM, OCCLUSION_FLOOR, PHOTO_GAMMA, RATIO_RANGE, TEETH_ALBEDO,
                                          MouthAppearance, estimate_mouth_appearance, looks_like_teeth, shade_mouth,
                                          shading_ratio, vertex_normals)
from affectsynth.render.eyes import luma
from affectsynth.render.shade import surface_depth_at

from .conftest import DEV_FACES, need_shared


def test_surface_depth_at_is_exact_on_a_slanted_plane_and_sees_occluders():
    # A slanted square (depth = 2u + v) with a small nearer square over its middle.
    verts = torch.tensor([[[1.0, 1.0, 3.0], [1.0, 19.0, 21.0], [19.0, 19.0, 57.0], [19.0, 1.0, 39.0],
                           [8.0, 8.0, 100.0], [8.0, 12.0, 100.0], [12.0, 12.0, 100.0], [12.0, 8.0, 100.0]]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    frags = rasterize(verts, faces, (20, 20))
    points = torch.tensor([[[3.3, 15.7], [17.9, 2.2], [10.0, 10.0], [25.0, 5.0]]], dtype=torch.float64)
    depth, covered = surface_depth_at(frags, verts, faces, points)
    assert covered.tolist() == [[True, True, True, False]]
    assert torch.allclose(depth[0, :2], 2 * points[0, :2, 0] + points[0, :2, 1])       # exact, not at the pixel centre
    assert depth[0, 2] == 100.0                                                           # the occluder


def test_vertex_normals_face_the_camera_in_image_space():
    verts = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 10.0, 5.0], [10.0, 10.0, 5.0]]])      # clockwise in the image
    assert rasterize(verts, torch.tensor([[0, 1, 2]]), (12, 12)).mask.any()               # a front face
    normals = vertex_normals(verts, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, -1.0]).expand(1, 3, 3))


def test_shade_mouth_tones_and_light_fall_off():
    appearance = MouthAppearance(lip=torch.tensor([[0.7, 0.35, 0.35]]), light=torch.tensor([1.0]),
                                 teeth=torch.tensor([TEETH_ALBEDO]))
    names = ["teeth", "gums", "tongue", "mouth_socket"]
    material = torch.tensor([[[MATERIALS.index(n) for n in names]]])
    near = shade_mouth(material, torch.zeros(1, 1, 4), torch.ones(1, 1, 4), appearance)[0, 0]
    far = shade_mouth(material, torch.full((1, 1, 4), 40.0), torch.ones(1, 1, 4), appearance)[0, 0]
    teeth, gums, tongue, socket = near
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert teeth @ luma > 0.75 and teeth[0] >= teeth[1] >= teeth[2]     # bright, not blue
    assert gums[0] > gums[1] and tongue[0] > tongue[1]                  # red
    assert socket.sum() < tongue.sum() < gums.sum() < teeth.sum()
    assert (far < near).all() and (far @ luma > 0.9 * OCCLUSION_FLOOR * near @ luma).all()  # darker deep inside, never black
    # in the lips' shadow a tooth takes on the mouth's red at the luminance the occlusion gives it
    deep = shade_mouth(material, torch.full((1, 1, 4), 9.0), torch.ones(1, 1, 4), appearance)[0, 0, 0]
    occlusion = OCCLUSION_FLOOR + (1 - OCCLUSION_FLOOR) * math.exp(-9.0 / OCCLUSION_DEPTH_MM)
    assert deep @ luma == pytest.approx(occlusion * float(teeth @ luma), rel=1e-5)
    assert deep[0] / deep[1] > 1.05 * teeth[0] / teeth[1] and deep[2] / deep[1] <= teeth[2] / teeth[1]
    dim = replace(appearance, teeth=appearance.teeth * 0.5)            # the measured tone is the teeth's
    assert torch.allclose(shade_mouth(material, torch.zeros(1, 1, 4), torch.ones(1, 1, 4), dim)[0, 0, 0], teeth * 0.5)


def test_looks_like_teeth_tells_enamel_from_lips_cavity_and_dim_pixels():
    lip = torch.tensor([[0.75, 0.45, 0.42]])
    colours = torch.tensor([[[[0.92, 0.88, 0.80],    # enamel
                              [0.74, 0.71, 0.64],    # enamel in the shade of the lips: still brighter than them
                              [0.80, 0.50, 0.47],    # a lip highlight: bright but as red as the lips
                              [0.20, 0.08, 0.08],    # the cavity
                              [0.45, 0.44, 0.42]]]])  # grey, but no brighter than the lips
    assert looks_like_teeth(colours, lip).tolist() == [[[True, True, False, False, False]]]


def test_mouth_appearance_of_a_real_face(default_model, astronaut, mp_detector):
    fit = FaceFitter(default_model, mp_detector)(astronaut).fit
    photo = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 255
    appearance = estimate_mouth_appearance(photo, fit.image_points(default_model(fit.id_coeffs, fit.exp_coeffs).vertices),
                                           default_model)
    red, green, blue = appearance.lip[0]
    assert red > green + 0.1 and red > blue + 0.1          # the astronaut's lips are red
    assert 0.8 < float(appearance.light[0]) <= 1.05        # a well-lit studio portrait
    # She smiles with her teeth showing: their tone is hers (brighter than the lips, near-white), not the prior.
    teeth = appearance.teeth[0]
    assert not torch.allclose(teeth, teeth.new_tensor(TEETH_ALBEDO) * appearance.light[0])
    assert teeth.min() > 0.6 and float(teeth.max() - teeth.min()) < 0.25


def test_a_closed_mouth_gives_the_teeth_prior(default_model, mp_detector):
    image = load_image(next(need_shared(DEV_FACES / "tw_07").glob("neutral.*")))
    fit = FaceFitter(default_model, mp_detector)(image).fit
    photo = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    appearance = estimate_mouth_appearance(photo, fit.image_points(default_model(fit.id_coeffs, fit.exp_coeffs).vertices),
                                           default_model)
    torch.testing.assert_close(appearance.teeth[0], torch.tensor(TEETH_ALBEDO) * appearance.light[0])


def test_a_greyscale_photo_gives_grey_teeth(default_model, mp_detector):
    image = load_image(next(need_shared(DEV_FACES / "tw_07").glob("neutral.*")))  # a closed mouth: the prior
    grey = np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, axis=2)
    fit = FaceFitter(default_model, mp_detector)(grey).fit
    photo = torch.from_numpy(grey).permute(2, 0, 1)[None].float() / 255
    appearance = estimate_mouth_appearance(photo, fit.image_points(default_model(fit.id_coeffs, fit.exp_coeffs).vertices),
                                           default_model)
    teeth = appearance.teeth[0]
    assert float(teeth.max() - teeth.min()) < 1e-6                                 # grey
    assert float(luma(teeth)) == pytest.approx(float(luma(torch.tensor(TEETH_ALBEDO))) * float(appearance.light[0]))


def test_teeth_in_a_greyscale_photo_are_told_by_brightness():
    lip = torch.tensor([[0.45, 0.45, 0.45]])
    colours = torch.tensor([[[0.90, 0.90, 0.90], [0.47, 0.47, 0.47], [0.10, 0.10, 0.10]]])  # enamel, lip, cavity
    assert looks_like_teeth(colours, lip).tolist() == [[True, False, False]]


def test_shading_ratio_follows_the_turn_of_the_normal():
    # vertex_normals' image-space normals: front faces have depth < 0, the outward normal is -n
    facing = torch.tensor([0.0, 0.0, -1.0])
    up = torch.nn.functional.normalize(torch.tensor([0.0, 0.5, -1.0]), dim=0)    # faces up: toward the key light
    down = torch.nn.functional.normalize(torch.tensor([0.0, -0.8, -0.6]), dim=0)  # faces down (below a fold)
    normals = torch.stack([facing, up, down])
    assert torch.allclose(shading_ratio(normals, normals), torch.ones(3))
    turned = shading_ratio(facing.expand(3, 3), normals)
    assert turned[1] > 1.0 > turned[2] and turned[0] == 1.0
    # turned away: darkened, but only so far (in linear light; the factor is for sRGB-encoded values)
    assert shading_ratio(facing, -facing) == pytest.approx(RATIO_RANGE[0] ** (1 / PHOTO_GAMMA))
