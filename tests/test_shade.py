"""Shading ops: interpolation, image and texture lookups, visibility, and re-rendering a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectsynth.render import (MeshRenderer, PhotoTextureShader, Rasterizer, interpolate, rasterize, sample_image,
                                texture, visibility)
from affectsynth.render.shade import gather_rows

from .test_raster import posed_model


def two_triangles(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A 6 x 5 image's worth of quad in two triangles, posed differently per batch element."""
    xy = torch.tensor([[0.3, 0.2], [0.4, 4.9], [5.8, 4.7], [5.6, 0.1]], dtype=torch.float64)
    verts = torch.stack([torch.cat((xy + 0.2 * b, torch.zeros(4, 1, dtype=torch.float64)), -1) for b in range(batch)])
    return verts, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_interpolate_gradcheck_and_empty_pixels():
    verts, faces = two_triangles()
    frags = rasterize(verts, faces, (5, 6))
    assert (~frags.mask).any() and frags.mask.any()
    attr = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, frags, faces), (attr,))
    shared = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, frags, faces), (shared,))
    out = interpolate(shared, frags, faces)
    assert out.shape == (2, 5, 6, 2)
    assert torch.equal(out, interpolate(shared.expand(2, -1, -1), frags, faces))
    assert (out[~frags.mask] == 0).all()
    # Non-finite values on vertices no triangle uses do not leak into empty pixels.
    poisoned = torch.cat((shared.detach(), torch.full((1, 2), float("nan"), dtype=torch.float64)))
    assert torch.isfinite(interpolate(poisoned, frags, faces)).all()
    # A covered pixel is the barycentric blend of its triangle's corner values.
    b, i, j = [int(k) for k in frags.mask.nonzero()[0]]
    corners = shared.detach()[faces[frags.tri_id[b, i, j]]]
    assert torch.allclose(out[b, i, j], (frags.bary[b, i, j, :, None].double() * corners).sum(0))


def test_sample_image_is_exact_at_centres_and_bilinear_between():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (2, 3, 37, 53), generator=g).float()
    y, x = torch.meshgrid(torch.arange(37) + 0.5, torch.arange(53) + 0.5, indexing="ij")
    at_centres = sample_image(image, torch.stack((x, y), -1).expand(2, -1, -1, -1))
    assert torch.equal(at_centres, image.permute(0, 2, 3, 1))               # bit-exact
    assert torch.equal(sample_image(image, torch.stack((x, y), -1).expand(2, -1, -1, -1), "nearest"), at_centres)
    # Between centres: the bilinear blend of the four around the point.
    points = torch.rand(2, 100, 2, generator=g) * torch.tensor([52.0, 36.0]) + 0.5
    got = sample_image(image, points)
    for b in range(2):
        for n in range(100):
            px, py = points[b, n] - 0.5
            c0, r0 = int(px), int(py)
            fx, fy = float(px - c0), float(py - r0)
            c1, r1 = min(c0 + 1, 52), min(r0 + 1, 36)
            im = image[b]
            want = ((1 - fy) * ((1 - fx) * im[:, r0, c0] + fx * im[:, r0, c1])
                    + fy * ((1 - fx) * im[:, r1, c0] + fx * im[:, r1, c1]))
            assert torch.allclose(got[b, n], want, atol=1e-3)
    # A linear ramp is reproduced exactly anywhere inside the outermost centres; off the image
    # the border pixels repeat.
    ramp = (torch.arange(53.0) + 0.5).expand(1, 1, 37, -1)
    xs = torch.rand(1, 200, generator=g) * 52 + 0.5
    inside = sample_image(ramp, torch.stack((xs, torch.full_like(xs, 7.3)), -1))[..., 0]
    assert torch.allclose(inside, xs, atol=1e-4)
    outside = sample_image(ramp, torch.tensor([[[-4.0, 3.0], [60.0, 3.0], [10.0, -9.0]]]))[0, :, 0]
    assert torch.allclose(outside, torch.tensor([0.5, 52.5, 10.0]))


def test_bicubic_sample_image_is_exact_at_centres_reproduces_quadratics_and_keeps_grain():
    g = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (2, 3, 37, 53), generator=g).float()
    y, x = torch.meshgrid(torch.arange(37) + 0.5, torch.arange(53) + 0.5, indexing="ij")
    centres = torch.stack((x, y), -1).expand(2, -1, -1, -1)
    assert torch.equal(sample_image(image, centres, "bicubic"), image.permute(0, 2, 3, 1))  # bit-exact
    # A quadratic surface is reproduced exactly between centres at least 1 px in from the outermost
    # (bilinear is off by up to a quarter of its curvature there).
    quadratic = lambda u, v: 0.02 * u * u - 0.03 * u * v + 0.05 * v * v + u - 2 * v  # noqa: E731
    surface = quadratic(x.double() - 0.5, y.double() - 0.5)[None, None]
    points = (torch.rand(1, 400, 2, generator=g, dtype=torch.float64) * torch.tensor([49.0, 33.0]) + 1.5)
    want = quadratic(points[..., 0] - 0.5, points[..., 1] - 0.5)
    assert torch.allclose(sample_image(surface, points, "bicubic")[..., 0], want, atol=1e-9)
    assert (sample_image(surface, points)[..., 0] - want).abs().max() > 1e-3
    # Off the image the border pixels repeat.
    off = torch.tensor([[[-4.0, 3.5], [60.0, 3.5], [10.5, -9.0], [99.0, 99.0]]])
    border = image[0, :, [3, 3, 0, 36], [0, 52, 10, 52]].T[None]
    assert torch.equal(sample_image(image[:1], off, "bicubic"), border)
    # Grain: white noise looked up at offsets spread over the pixel keeps ~0.81 of its RMS (bilinear 2/3).
    noise = torch.randn(1, 1, 200, 200, generator=g, dtype=torch.float64)
    spots = torch.rand(1, 20000, 2, generator=g, dtype=torch.float64) * 180 + 10
    kept = {mode: float(sample_image(noise, spots, mode).std()) for mode in ("bilinear", "bicubic")}
    assert kept["bilinear"] == pytest.approx(2 / 3, abs=0.03) and kept["bicubic"] == pytest.approx(0.81, abs=0.03)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_sample_image_gradcheck(mode):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    # Away from integer pixel indices, where the bilinear blend has a kink.
    points = (torch.rand(1, 3, 4, 2, dtype=torch.float64, generator=g) * 0.8 + 0.1
              + torch.randint(0, 5, (1, 3, 4, 2), generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, p: sample_image(i, p, mode), (image, points))


def test_texture_matches_grid_sample_and_its_uv_convention():
    g = torch.Generator().manual_seed(2)
    tex = torch.rand(2, 3, 64, 32, generator=g)
    uv = torch.rand(2, 9, 11, 2, generator=g)
    # grid_sample (align_corners=False) is exact on power-of-two sizes: x = 2u - 1, y = 1 - 2v (v up).
    grid = torch.stack((2 * uv[..., 0] - 1, 1 - 2 * uv[..., 1]), -1)
    want = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(texture(tex, uv), want.permute(0, 2, 3, 1), atol=1e-5)
    # Texel (r, c) is returned exactly at its centre u = (c + 0.5) / Wt, v = 1 - (r + 0.5) / Ht.
    r, c = 5, 30
    centre = torch.tensor([(c + 0.5) / 32, 1 - (r + 0.5) / 64]).expand(2, 1, 1, 2)
    assert torch.allclose(texture(tex, centre)[:, 0, 0], tex[:, :, r, c], atol=1e-6)
    # v = 1 is the top row, v = 0 the bottom.
    top_left = texture(tex, torch.tensor([[[[0.0, 1.0]]]]).expand(2, 1, 1, 2), mode="nearest")
    assert torch.equal(top_left[:, 0, 0], tex[:, :, 0, 0])
    texc = tex.clone().requires_grad_()
    uvc = uv.double().requires_grad_()
    texture(texc, uvc).sum().backward()
    assert texc.grad.abs().sum() > 0 and uvc.grad.abs().sum() > 0


def test_visibility_of_an_occluded_grid():
    """A flat grid behind a small triangle: the grid vertices under the triangle are hidden."""
    n = 11
    gy, gx = torch.meshgrid(torch.arange(n) * 3.0 + 2.0, torch.arange(n) * 3.0 + 2.0, indexing="ij")
    grid = torch.stack((gx, gy, torch.zeros_like(gx)), -1).reshape(-1, 3)
    ids = torch.arange(n * n).reshape(n, n)
    a, b, c, d = ids[:-1, :-1], ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]
    faces = torch.cat((torch.stack((a, d, c), -1), torch.stack((a, c, b), -1))).reshape(-1, 3)
    front = torch.tensor([[10.0, 10.0, 5.0], [10.0, 25.0, 5.0], [25.0, 10.0, 5.0]])
    verts = torch.cat((grid, front))[None]
    faces = torch.cat((faces, torch.tensor([[n * n, n * n + 1, n * n + 2]])))
    frags = rasterize(verts, faces, (36, 36))
    visible = visibility(frags, verts, faces)[0]
    x, y = grid[:, 0], grid[:, 1]
    under = (x > 10) & (y > 10) & (x + y < 34)           # their pixel centres are inside the front triangle
    clear = ~((x >= 9) & (y >= 9) & (x + y <= 36))        # well away from it
    assert under.sum() >= 10
    assert not visible[:n * n][under].any()
    assert visible[:n * n][clear].all()
    assert visible[n * n:].all()
    # Nothing is visible off the image, nor where every triangle faces away (and is culled).
    moved = verts.clone()
    moved[0, :, 0] += 100
    assert not visibility(rasterize(moved, faces, (36, 36)), moved, faces).any()
    flipped = faces.flip(-1)
    assert not visibility(rasterize(verts, flipped, (36, 36)), verts, flipped).any()


def test_visibility_of_a_turned_face(skin_model):
    default_model = skin_model
    """Turned 50 degrees, the far cheek hides behind the nose; the near side stays visible."""
    faces = default_model.triangles
    verts = posed_model(default_model, 256, yaws=(0.0, 50.0, -50.0))
    visible = visibility(rasterize(verts, faces, (256, 256)), verts, faces).float()
    x = default_model.mean[:, 0]
    # yaw > 0 turns the nose toward the image's right: the subject's left side (+x) turns away.
    right_side, left_side = x < -25, x > 25
    assert visible[0, right_side].mean() > 0.98 and visible[0, left_side].mean() > 0.98
    assert visible[1, right_side].mean() > 0.98 and visible[1, left_side].mean() < 0.7
    assert visible[2, left_side].mean() > 0.98 and visible[2, right_side].mean() < 0.7
    assert visible[1].sum() < 0.85 * visible[0].sum()


def test_renders_the_astronaut_back_through_its_fitted_geometry(default_model, skin_model, astronaut, mp_detector):
    import cv2

    from affectsynth.pipeline import FaceFitter

    face = FaceFitter(default_model, detector=mp_detector)(astronaut)
    default_model = skin_model  # the photo shows the skin; its mask is the face's outline
    fit = face.fit
    verts = fit.image_points(fit.vertices(default_model))                          # [1, V, 3]
    faces = default_model.triangles
    height, width = astronaut.shape[:2]
    photo = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 255
    renderer = MeshRenderer(Rasterizer((height, width)), PhotoTextureShader())
    rgba = renderer(verts, faces, photo=photo, source_points=verts[..., :2])
    assert rgba.shape == (1, height, width, 4)
    mask = rgba[0, ..., 3] > 0
    error = (rgba[0, ..., :3] - photo[0].permute(1, 2, 0)).abs()[mask]
    assert error.mean() < 2 / 255 and error.max() < 2 / 255, (error.mean(), error.max())
    assert (rgba[0, ..., :3][~mask] == 0).all()
    # The mask is the face: it overlaps the hull of MediaPipe's 468 mesh landmarks (IoU), and
    # every landmark lies on it or within 2 px of it (the oval, eye and lip landmarks sit on
    # the mesh's outline and holes).
    points = face.landmarks.xy[0, :468].numpy()
    hull = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull((points * 16).astype(np.int32)), 1, shift=4)
    m = mask.numpy()
    hull = hull.astype(bool)
    assert (m & hull).sum() / (m | hull).sum() > 0.85
    near_mask = F.max_pool2d(mask[None, None].float(), 5, stride=1, padding=2)[0, 0].bool()
    cols, rows = torch.from_numpy(points).floor().long().unbind(-1)
    assert near_mask[rows, cols].all()
    assert mask[rows, cols].float().mean() > 0.9
    # Nearly frontal: most vertices are visible, and the visible ones sample the photo where it
    # shows them.
    visible = visibility(renderer.rasterizer(verts, faces), verts, faces)
    assert visible.float().mean() > 0.8


def test_gather_rows_is_batched_advanced_indexing():
    values = torch.randn(3, 7, 2, 4, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 7, (3, 5, 6))
    expected = values[torch.arange(3)[:, None, None], index]
    assert torch.equal(gather_rows(values, index), expected)
    assert torch.autograd.gradcheck(lambda v: gather_rows(v, index), (values,))
