"""The CPU kernels return what the torch ops they stand in for return (the same bits), on the
default model's face rasterised at several poses, and step aside where a gradient is asked for."""

from __future__ import annotations

import pytest
import torch

from affectsynth.model.default import load_default_model
from affectsynth.render import interpolate, kernels, rasterize, sample_image
from affectsynth.render.composite import _running_max, dilate
from affectsynth.render.materials import shading_ratio, vertex_normals
from affectsynth.render.shade import _surface_depth_torch, surface_depth_at

from .test_raster import posed_model


@pytest.fixture(scope="module")
def posed():
    """The default model's mean face at three yaws in a 96^2 image, its faces and fragments."""
    model = load_default_model()
    verts = posed_model(model, 96, yaws=(-40.0, 0.0, 25.0), pitch=10.0)
    return verts, model.triangles, rasterize(verts, model.triangles, (96, 96), backend="numba")


def test_interpolate_kernel_matches_torch_and_steps_aside_for_gradients(posed):
    verts, faces, frags = posed
    attr = torch.randn(3, verts.shape[1], 7, generator=torch.Generator().manual_seed(0))
    fast = interpolate(attr, frags, faces)
    reference = interpolate(attr.clone().requires_grad_(), frags, faces)   # the torch path: a gradient is asked for
    assert reference.requires_grad and not fast.requires_grad
    assert frags.mask.sum() > 3000 and torch.equal(fast, reference.detach())
    assert (fast[~frags.mask] == 0).all()


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_sample_image_kernel_matches_torch(mode):
    g = torch.Generator().manual_seed(1)
    photo = torch.rand(1, 3, 120, 130, generator=g)
    window = photo[..., 10:90, 20:110].expand(2, -1, -1, -1)               # a strided view, as the renderer passes
    points = torch.rand(2, 40, 50, 2, generator=g) * torch.tensor([100.0, 90.0]) - 5   # some off the window
    fast = sample_image(window, points, mode)
    reference = sample_image(window.clone().requires_grad_(), points, mode)
    assert fast.shape == (2, 40, 50, 3) and torch.equal(fast, reference.detach())


def test_surface_depth_kernel_matches_torch(posed):
    verts, faces, frags = posed
    points = torch.rand(3, 5000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 110 - 7
    depth, covered = surface_depth_at(frags, verts, faces, points)
    ref_depth, ref_covered = _surface_depth_torch(frags.tri_id, verts.double(), faces, points)
    assert covered.sum() > 1000 and (~covered).sum() > 1000
    assert torch.equal(covered, ref_covered) and torch.equal(depth[covered], ref_depth[covered])


def test_vertex_normals_kernel_agrees_with_torch(posed):
    verts, faces, _ = posed
    fast = vertex_normals(verts.float(), faces)
    reference = vertex_normals(verts.float().requires_grad_(), faces).detach()
    used = torch.zeros(verts.shape[1], dtype=torch.bool)
    used[faces.reshape(-1)] = True
    assert torch.allclose(fast, reference, atol=1e-6, rtol=0)     # torch's cross and norm fuse multiply-adds
    assert torch.allclose(fast[:, used].norm(dim=-1), torch.ones(1), atol=1e-6) and (fast[:, ~used] == 0).all()


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_dilate_kernel_matches_the_running_maxima(radius):
    g = torch.Generator().manual_seed(radius)
    mask = (torch.rand(2, 1, 37, 45, generator=g) > 0.8).float() * torch.rand(2, 1, 37, 45, generator=g)
    reference = _running_max(_running_max(mask, 3, radius), 2, radius)
    assert torch.equal(dilate(mask, radius), reference)
    assert torch.equal(-dilate(-mask, radius), -_running_max(_running_max(-mask, 3, radius), 2, radius))
    assert not kernels.use_kernels(mask.clone().requires_grad_()) and kernels.use_kernels(mask)


@pytest.mark.parametrize("radii", [(2,), (0, 1, 2), (1, 3)])
def test_radius_reached_matches_growing_the_mask(radii):
    """The search kernel gives what dilating the mask radius by radius gives (the torch path of
    ``retarget._distance``), at pixels near the mask's edge and near the window's border."""
    g = torch.Generator().manual_seed(len(radii))
    mask = torch.rand(2, 30, 40, generator=g) > 0.93
    face = torch.randint(0, 2, (500,), generator=g)
    rows, cols = torch.randint(0, 30, (500,), generator=g), torch.randint(0, 40, (500,), generator=g)
    grown, expected = mask[:, None].float(), torch.full_like(rows, radii[-1] + 1)
    for previous, r in zip((0,) + radii, radii):
        grown = _running_max(_running_max(grown, 3, r - previous), 2, r - previous)
        expected = torch.where((grown[face, 0, rows, cols] > 0) & (expected > r), r, expected)
    got = kernels.radius_reached(mask, face, rows, cols, radii)
    assert len(set(got.tolist())) == len(radii) + 1 and torch.equal(got, expected)


def test_shading_ratio_kernel_agrees_with_torch(posed):
    verts, faces, frags = posed
    normals = vertex_normals(verts.float(), faces)
    turned = vertex_normals(verts.float() * torch.tensor([1.0, 1.3, 0.7]), faces)     # a stretched face
    fast = shading_ratio(normals, turned)
    reference = shading_ratio(normals.requires_grad_(), turned).detach()
    assert fast.dtype == reference.dtype and fast.std() > 0.01
    assert torch.allclose(fast, reference, rtol=1e-6, atol=0)     # libm's and torch's pow may differ in the last bit


def test_crease_kernel_agrees_with_torch():
    """Every crease of the default model at full activation (both sides), on a face at 8 and at
    0.8 px per mm (its profiles widened): the kernel's shading agrees with the torch ops' to the
    last bit or so (torch's and libm's exp), through the whole of crease_shading."""
    from affectsynth.affect.targets import AU_KEYS
    from affectsynth.render.creases import crease_lines, crease_shading

    model = load_default_model()
    lines = crease_lines(model)
    rest = model.mean[None, :, :2].float()
    activation = torch.ones(1, len(AU_KEYS))
    for px_per_mm in (8.0, 0.8):
        scale = torch.tensor([px_per_mm])
        fast = crease_shading(rest, activation, lines, scale)
        reference = crease_shading(rest, activation.requires_grad_(), lines, scale).detach()  # the torch ops
        activation = activation.detach()
        assert (fast < 0.95).sum() > 100                                       # many vertices lie in a crease
        assert torch.allclose(fast, reference, rtol=0, atol=1e-6), (fast - reference).abs().max()


@pytest.mark.parametrize("sigma", [0.7, 1.25, 8.0])
def test_gaussian_blur_kernel_agrees_with_torch(sigma):
    """A feathered mask's blur (composite._gaussian_blur): OpenCV's separable filter with the same
    taps and replicated border agrees with the torch passes to the last bit or so."""
    from affectsynth.render.composite import _gaussian_blur

    mask = torch.zeros(2, 1, 90, 120)
    mask[0, 0, 10:70, 20:100] = 1.0
    mask[1, 0, 40:, :30] = 1.0                                                  # touching the border
    fast = _gaussian_blur(mask, sigma)
    reference = _gaussian_blur(mask.clone().requires_grad_(), sigma).detach()
    assert fast.shape == mask.shape and 0.2 < float(fast[0, 0, 10, 60]) < 0.8   # blurred across the edge
    assert torch.allclose(fast, reference, rtol=0, atol=1e-6)
