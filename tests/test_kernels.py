"""The CPU kernels return what the torch ops they stand in for return (the same bits), on the
default model's face rasterised at several poses, and step aside where a gradient is asked for."""

from __future__ import annotations

import pytest
import torch

from affectsynth.model.default import load_default_model
from affectsynth.render import kernels, rasterize
from affectsynth.render.composite import dilate, erode
from affectsynth.render.materials import vertex_normals

from .test_raster import posed_model


@pytest.fixture(scope="module")
def posed():
    """The default model's mean face at three yaws in a 96^2 image, its faces and fragments."""
    model = load_default_model()
    verts = posed_model(model, 96, yaws=(-40.0, 0.0, 25.0), pitch=10.0)
    return verts, model.triangles, rasterize(verts, model.triangles, (96, 96), backend="numba")


def test_surface_samples_kernel_matches_the_torch_ops():
    """The renderer's lookup of each drawn pixel in the photo (retarget._surface_samples): the
    kernel's one pass returns the bits of interpolate, surface_depth_at, sample_image and the
    shading ratio in turn (the ratio to the last bit or so: torch's and libm's pow), for a photo
    of the face turned 40 deg (its far cheek hidden) redrawn turned 20 deg and stretched, two
    faces at once, the photo a strided window as the renderer passes it."""
    from affectsynth.model.face_model import MATERIALS
    from affectsynth.render.retarget import _drawn_pixels, _surface_samples

    model = load_default_model()
    skin = model.triangles[model.triangle_materials() == MATERIALS.index("skin")]
    source = posed_model(model, 96, yaws=(-40.0, 35.0), pitch=10.0)
    target = posed_model(model, 96, yaws=(-20.0, 15.0), pitch=0.0) * torch.tensor([1.0, 1.1, 0.9])
    photo_frags = rasterize(source, skin, (96, 96), backend="numba")
    drawn = _drawn_pixels(rasterize(target, model.triangles, (96, 96), backend="numba"), model.triangle_materials()).frags
    normals = vertex_normals(torch.cat((source, target)).float(), model.triangles).split(2)
    attributes = torch.stack((source.float(), *normals, target.float()))                     # [4, 2, V, 3]
    window = torch.rand(1, 3, 120, 130, generator=torch.Generator().manual_seed(0))[..., 10:106, 20:116]
    fast = _surface_samples(attributes, drawn, model.triangles, photo_frags, source.float(), skin, window)
    reference = [x.detach() for x in _surface_samples(attributes.clone().requires_grad_(), drawn, model.triangles,
                                                      photo_frags, source.float(), skin, window)]
    values, seen, colour, ratio = fast
    assert values.shape == (2, 1, drawn.tri_id.shape[-1], 12) and not values.requires_grad
    assert seen.sum() > 3000 and (drawn.mask & ~seen).sum() > 200        # the far cheek, hidden in the photo
    assert ratio.std() > 0.02
    for got, expected in zip((values, seen, colour), reference[:3]):
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    assert torch.allclose(ratio, reference[3], rtol=1e-6, atol=0)


def test_vertex_normals_kernel_agrees_with_torch(posed):
    verts, faces, _ = posed
    fast = vertex_normals(verts.float(), faces)
    reference = vertex_normals(verts.float().requires_grad_(), faces).detach()
    used = torch.zeros(verts.shape[1], dtype=torch.bool)
    used[faces.reshape(-1)] = True
    assert torch.allclose(fast, reference, atol=1e-6, rtol=0)     # torch's cross and norm fuse multiply-adds
    assert torch.allclose(fast[:, used].norm(dim=-1), torch.ones(1), atol=1e-6) and (fast[:, ~used] == 0).all()


def square_max(x: torch.Tensor, r: int) -> torch.Tensor:
    """The torch path's dilation: the (2r + 1)^2 max-pool, pixels off the image left out."""
    return torch.nn.functional.max_pool2d(x, 2 * r + 1, stride=1, padding=r)


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_dilate_kernel_matches_the_max_pool(radius):
    g = torch.Generator().manual_seed(radius)
    mask = (torch.rand(2, 1, 37, 45, generator=g) > 0.8).float() * torch.rand(2, 1, 37, 45, generator=g)
    assert torch.equal(dilate(mask, radius), square_max(mask, radius))
    assert torch.equal(erode(mask, radius), -square_max(-mask, radius))
    assert not kernels.use_kernels(mask.clone().requires_grad_()) and kernels.use_kernels(mask)


@pytest.mark.parametrize("radii", [(2,), (0, 1, 2), (1, 3)])
def test_radius_reached_matches_growing_the_mask(radii):
    """The search kernel gives what dilating the mask of (flagged) triangles radius by radius gives
    (the torch path of ``retarget._distance``), at pixels near the mask's edge and the image's."""
    g = torch.Generator().manual_seed(len(radii))
    tri_id = torch.where(torch.rand(2, 30, 40, generator=g) > 0.9, torch.randint(0, 50, (2, 30, 40), generator=g), -1)
    flagged = torch.rand(50, generator=g) > 0.5
    face = torch.randint(0, 2, (500,), generator=g)
    rows, cols = torch.randint(0, 30, (500,), generator=g), torch.randint(0, 40, (500,), generator=g)
    for flags in (None, flagged):
        mask = (tri_id >= 0) if flags is None else (tri_id >= 0) & flags[tri_id.clamp(min=0)]
        grown, expected = mask[:, None].float(), torch.full_like(rows, radii[-1] + 1)
        for previous, r in zip((0,) + radii, radii):
            grown = square_max(grown, r - previous) if r > previous else grown
            expected = torch.where((grown[face, 0, rows, cols] > 0) & (expected > r), r, expected)
        got = kernels.radius_reached(tri_id, flags, face, rows, cols, radii)
        assert len(set(got.tolist())) == len(radii) + 1 and torch.equal(got, expected)


def test_the_renderers_distance_takes_the_same_radii_either_way(monkeypatch):
    """retarget._distance: the kernel on the CPU, the masked box dilated where kernels are not
    used (a GPU), on the same fragments: the same radii."""
    from affectsynth.render.retarget import _distance

    g = torch.Generator().manual_seed(7)
    tri_id = torch.where(torch.rand(2, 30, 40, generator=g) > 0.9, torch.randint(0, 50, (2, 30, 40), generator=g), -1)
    flagged = torch.rand(50, generator=g) > 0.5
    face = torch.randint(0, 2, (300,), generator=g)
    rows, cols = torch.randint(5, 20, (300,), generator=g), torch.randint(3, 30, (300,), generator=g)
    fast = [_distance(tri_id, flags, face, rows, cols, (0, 1, 3)) for flags in (None, flagged)]
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    for flags, got in zip((None, flagged), fast):
        assert torch.equal(got, _distance(tri_id, flags, face, rows, cols, (0, 1, 3)))


def test_crease_kernel_agrees_with_torch():
    """Every crease of the default model at full activation (both sides), on a face at 8 and at
    0.8 px per mm (its profiles widened), and a batch of four faces of other scales and
    activations (one with no crease): the kernel's shading, face by face, agrees with the torch
    ops' on the whole batch (every face's grid padded to the largest) to the last bit or so
    (torch's and libm's exp), through the whole of crease_shading."""
    from affectsynth.affect.targets import AU_KEYS
    from affectsynth.render.creases import crease_lines, crease_shading

    model = load_default_model()
    lines = crease_lines(model)
    rest = model.mean[None, :, :2].float()
    g = torch.Generator().manual_seed(3)
    partial = torch.rand(4, len(AU_KEYS), generator=g)
    partial = torch.where(partial > 0.4, partial, 0.0)                       # some units, each partly
    partial[2] = 0.0
    for scale, activation in ((torch.tensor([8.0]), torch.ones(1, len(AU_KEYS))),
                              (torch.tensor([0.8]), torch.ones(1, len(AU_KEYS))),
                              (torch.tensor([8.0, 0.8, 2.0, 1.3]), partial)):
        points = rest.expand(len(scale), -1, -1)
        fast = crease_shading(points, activation, lines, scale)
        reference = crease_shading(points, activation.clone().requires_grad_(), lines, scale).detach()  # the torch ops
        assert ((fast < 0.98).sum(1) > 20).tolist() == (activation.amax(1) > 0).tolist()     # many in a crease
        assert torch.allclose(fast, reference, rtol=0, atol=1e-6), (fast - reference).abs().max()
    assert (fast[2] == 1).all()                                                # no crease: 1


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


def test_blend_kernel_matches_torch():
    """composite's one pass gives the bits of its three torch ops, on strided views as the
    renderer passes them (a photo window, a channels-last layer)."""
    from affectsynth.render.composite import composite

    g = torch.Generator().manual_seed(3)
    photo = torch.rand(2, 3, 70, 90, generator=g)[..., 5:65, 10:80]
    layer = torch.rand(2, 60, 70, 3, generator=g).permute(0, 3, 1, 2)
    mask = torch.rand(2, 1, 60, 70, generator=g).clamp(0.2, 0.8) - 0.2
    fast = composite(photo, layer, mask)
    reference = composite(photo, layer, mask.clone().requires_grad_()).detach()
    assert (mask == 0).any() and torch.equal(fast, reference)
    assert torch.equal(fast[(mask == 0).expand_as(fast)], photo[(mask == 0).expand_as(photo)])


def test_neighbour_share_kernel_matches_pooling(monkeypatch):
    """retarget._neighbour_share (the share of photo pixels among a part's around each of its
    pixels): the kernel's count gives the bits of the torch path's pooled grid, for two faces
    whose drawn pixels are padded, at the window's edges too."""
    from affectsynth.render.retarget import _neighbour_share

    g = torch.Generator().manual_seed(5)
    size = (25, 31)
    pixels = torch.stack([torch.randperm(size[0] * size[1], generator=g)[:400].sort().values for _ in range(2)])
    pixels[1, -50:] = size[0] * size[1]                                          # padding
    part = torch.rand(2, 400, generator=g) > 0.3
    part[1, -50:] = False
    chosen = part & (torch.rand(2, 400, generator=g) > 0.4)
    fast = _neighbour_share(chosen, part, pixels, size)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _neighbour_share(chosen, part, pixels, size)
    assert fast.shape == (int(part.sum()),) and 0.0 < float(fast.mean()) < 1.0
    assert torch.equal(fast, reference)


def test_shade_mouth_kernel_agrees_with_torch():
    """materials.shade_mouth for every material at depths behind the lips from in front of them to
    far back and every facing, on two faces' appearances: the kernel agrees with the torch ops to
    the last bit or so (libm's and torch's exp)."""
    from affectsynth.model.face_model import MATERIALS
    from affectsynth.render.materials import MouthAppearance, shade_mouth

    g = torch.Generator().manual_seed(11)
    material = torch.randint(0, len(MATERIALS), (2, 40, 50), generator=g)
    behind = torch.rand(2, 40, 50, generator=g) * 30 - 5
    facing = torch.rand(2, 40, 50, generator=g) * 1.2 - 0.1
    appearance = MouthAppearance(lip=torch.tensor([[0.7, 0.35, 0.3], [0.5, 0.3, 0.32]]), light=torch.ones(2),
                                 teeth=torch.tensor([[0.9, 0.85, 0.75], [0.8, 0.75, 0.7]]))
    fast = shade_mouth(material, behind, facing, appearance)
    reference = shade_mouth(material, behind.clone().requires_grad_(), facing, appearance).detach()
    assert fast.shape == (2, 40, 50, 3) and (fast[material == 0] == 0).all() and fast.std() > 0.1
    assert torch.allclose(fast, reference, rtol=0, atol=1e-6), (fast - reference).abs().max()


def test_drawn_pixels_kernel_matches_torch(posed, monkeypatch):
    """retarget._drawn_pixels: the kernel's compaction of three faces' fragments (different
    counts, so padded), their materials and the interior and eyeball masks are the torch path's,
    element for element."""
    from affectsynth.render.retarget import _drawn_pixels

    _, _, frags = posed
    materials = load_default_model().triangle_materials()
    fast = _drawn_pixels(frags, materials)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _drawn_pixels(frags, materials)
    counts = frags.mask.flatten(1).sum(1)
    assert len(set(counts.tolist())) == 3 and fast.pixels.shape == (3, int(counts.max()))
    assert len(set(reference.material[reference.frags.mask].tolist())) > 1          # skin and more
    assert reference.interior.any() and reference.eyeball.any() and reference.any_interior
    for field in ("pixels", "material", "interior", "eyeball"):
        assert torch.equal(getattr(fast, field), getattr(reference, field)), field
    assert fast.any_interior is True
    for field in ("tri_id", "bary", "depth"):
        assert torch.equal(getattr(fast.frags, field), getattr(reference.frags, field)), field


def test_mouth_edge_smoothing_kernel_agrees_with_torch(monkeypatch):
    """retarget._smoothed_mouth_edges on two faces' drawn pixels (random materials in blobs, some of the
    interior shaded, undrawn holes, padding, drawn pixels on the window's edges, one photo window for
    both): the kernel's colours agree with the torch ops' (a conv2d over the layer) to float rounding,
    and only pixels on an edge near a shaded one change."""
    from affectsynth.render.retarget import _smoothed_mouth_edges

    g = torch.Generator().manual_seed(23)
    size = (30, 40)
    blobs = torch.nn.functional.interpolate(torch.randint(0, 5, (2, 1, 6, 8), generator=g).float(), size=size)
    material = blobs[:, 0].long().view(2, -1)                                    # skin, socket, teeth, gums, tongue
    drawn = torch.rand(2, size[0] * size[1], generator=g) > 0.02
    pixels = torch.stack([torch.cat((row.nonzero()[:, 0], torch.full((int((~row).sum()),), size[0] * size[1])))
                          for row in drawn])                                      # padded where not drawn
    material = torch.stack([torch.cat((m[row], torch.zeros(int((~row).sum()), dtype=torch.long)))
                            for m, row in zip(material, drawn)])[:, None]
    shaded = (material > 0) & (pixels[:, None] % 40 < 25)                       # the photo shows the rest
    colour = torch.rand(2, 1, pixels.shape[1], 3, generator=g)
    window = torch.rand(1, 3, 40, 50, generator=g)[..., 5:35, 3:43]
    fast = _smoothed_mouth_edges(colour.clone(), material, shaded, pixels, window, size)     # (in place)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _smoothed_mouth_edges(colour, material, shaded, pixels, window, size)
    assert torch.allclose(fast, reference, rtol=0, atol=1e-6), (fast - reference).abs().max()
    changed = (fast != colour).any(-1)[:, 0]
    assert 0 < int(changed.sum()) < 0.8 * int((pixels < size[0] * size[1]).sum())     # the edges only
    assert not changed[pixels == size[0] * size[1]].any() and not changed[pixels % 40 >= 27].any()


def test_in_place_kernel_matches_torch(monkeypatch):
    """retarget._in_place (drawn pixels' masks back onto the window): the kernel's grid, as bool
    and as float, is the torch path's for two faces, one padded with the spare index."""
    from affectsynth.render.retarget import _in_place

    g = torch.Generator().manual_seed(5)
    size = (30, 40)
    pixels = torch.stack([torch.randperm(size[0] * size[1], generator=g)[:500].sort().values for _ in range(2)])
    pixels[1, 450:] = size[0] * size[1]                                             # padding
    values = torch.rand(2, 500, generator=g) > 0.3
    fast = [_in_place(values, pixels, size, dtype) for dtype in (torch.bool, torch.float32)]
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    for grid, dtype in zip(fast, (torch.bool, torch.float32)):
        reference = _in_place(values, pixels, size, dtype)
        assert grid.dtype == reference.dtype == dtype and torch.equal(grid, reference)
    assert 0 < int(fast[1].sum()) == int((values & (pixels < size[0] * size[1])).sum()) < 1000


def test_lid_shadow_kernel_agrees_with_torch(monkeypatch):
    """retarget._lid_shadow (the upper lid's shadow on painted eyeball pixels): the kernel's column
    search gives the torch path's margins, with and without the photo's lid band between, and
    its light to the last bit or so (libm's and torch's exp)."""
    from affectsynth.render.raster import Fragments
    from affectsynth.render.retarget import _lid_shadow

    g = torch.Generator().manual_seed(13)
    size, n = (40, 30), 1200
    tri_id = torch.where(torch.rand(2, *size, generator=g) > 0.85, torch.randint(0, 60, (2, *size), generator=g), -1)
    skin = torch.rand(60, generator=g) > 0.5                                      # the rest: eyeball
    frags = Fragments(tri_id=tri_id, bary=torch.zeros(2, *size, 3), depth=torch.zeros(2, *size), backend="numba")
    pixels = torch.stack([torch.randperm(size[0] * size[1], generator=g)[:n].sort().values for _ in range(2)])
    selected = (torch.rand(2, 1, n, generator=g) > 0.5)
    band = torch.rand(2, *size, generator=g) > 0.95
    scale = torch.tensor([1.5, 2.5])
    fast = [_lid_shadow(selected, pixels, frags, skin, scale, size, lid_band) for lid_band in (None, band)]
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    for lid_band, got in zip((None, band), fast):
        reference = _lid_shadow(selected, pixels, frags, skin, scale, size, lid_band)
        assert got.shape == reference.shape and (got < 0.99).sum() > 100 and (got == 1).sum() > 100
        assert torch.allclose(got, reference, rtol=0, atol=1e-6), (got - reference).abs().max()
    assert (fast[1] == 1).sum() > (fast[0] == 1).sum()                   # the band lifts shadows


def test_sclera_below_kernel_matches_torch(monkeypatch):
    """retarget._photo_sclera_below (the photo's sclera below each uncovered eyeball pixel): the
    kernel's column search and mean give the torch path's pooled grid, the same bits, for two
    faces at two scales, some columns with no sclera below and some too dark."""
    from affectsynth.render.retarget import _photo_sclera_below

    g = torch.Generator().manual_seed(17)
    size, n = (36, 28), 700
    pixels = torch.stack([torch.randperm(size[0] * size[1], generator=g)[:n].sort().values for _ in range(2)])
    kind = torch.rand(2, 1, n, generator=g)
    selected, shown = kind < 0.3, kind > 0.55
    window = torch.rand(1, 3, 50, 40, generator=g)[..., 4:40, 6:34]
    sclera = torch.rand(int(selected.sum()), 3, generator=g) * 0.5 + 0.5
    for scale in (torch.tensor([1.5, 3.0]), torch.tensor([4.0, 2.0])):
        fast = _photo_sclera_below(selected, pixels, shown, window, sclera, scale, size)
        with monkeypatch.context() as patched:
            patched.setattr(kernels, "use_kernels", lambda *tensors: False)
            reference = _photo_sclera_below(selected, pixels, shown, window, sclera, scale, size)
        assert fast[1].sum() > 20 and (~fast[1]).sum() > 20
        assert torch.equal(fast[1], reference[1]) and torch.equal(fast[0], reference[0])


def test_lid_band_kernel_matches_torch(monkeypatch):
    """retarget._lid_band (the photo's lash band that goes with a raised lid): on lids drawn as
    skin above an eye opening in each column, raised 0-4 rows in the target, with source
    positions a little off the pixels, two faces, the kernel's takes and sample points are the
    torch path's."""
    from affectsynth.render.raster import Fragments
    from affectsynth.render.retarget import _lid_band

    g = torch.Generator().manual_seed(23)
    size = (40, 30)
    rows = torch.arange(size[0])[None, :, None]
    lid = 12 + torch.randint(0, 4, (2, 1, size[1]), generator=g)                     # the photo's upper lid
    lower = 30 + torch.randint(0, 3, (2, 1, size[1]), generator=g)
    photo_skin = (rows < lid) | (rows >= lower)
    raised = lid - torch.randint(0, 5, (2, 1, size[1]), generator=g)
    target_skin = (rows < raised) | (rows >= lower)
    skin_id, eye_id = torch.randint(0, 10, (2, *size), generator=g), torch.randint(10, 20, (2, *size), generator=g)
    photo = torch.where(photo_skin, skin_id, -1)
    target = torch.where(target_skin, skin_id, eye_id)
    skin = torch.arange(20) < 10                                                     # skin, then eyeball
    frags = [Fragments(tri_id=t, bary=torch.zeros(2, *size, 3), depth=torch.zeros(2, *size), backend="numba")
             for t in (photo, target)]
    pixels = torch.arange(size[0] * size[1]).expand(2, -1)
    eyeball = (~target_skin).reshape(2, 1, -1)
    centres = torch.stack((pixels % size[1], pixels // size[1]), -1).float() + 0.5
    offset = torch.rand(2, pixels.shape[1], 2, generator=g) * 2 - 1
    where = torch.cat((centres + offset, torch.zeros(2, pixels.shape[1], 1)), -1)[:, None]
    band = torch.tensor([2, 3])
    fast = _lid_band(eyeball, pixels, where, frags[0], frags[1], skin, band, size)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _lid_band(eyeball, pixels, where, frags[0], frags[1], skin, band, size)
    assert fast[0].sum() > 20 and (~fast[0]).sum() > 20
    assert torch.equal(fast[0], reference[0]) and torch.equal(fast[1][fast[0]], reference[1][reference[0]])


@pytest.mark.parametrize("with_creases", [True, False])
def test_reshade_kernel_matches_torch(with_creases, monkeypatch):
    """retarget._reshaded (the shown skin times its shading ratio and crease factor): the kernel,
    in place, gives the bits of the torch path's where, on two faces' pixels of every material."""
    from affectsynth.model.face_model import MATERIALS
    from affectsynth.render.retarget import _reshaded

    g = torch.Generator().manual_seed(13)
    colour = torch.rand(2, 1, 500, 3, generator=g)
    ratio = 0.7 + 0.6 * torch.rand(2, 1, 500, generator=g)
    factor = 0.8 + 0.2 * torch.rand(2, 1, 500, generator=g) if with_creases else None
    seen = torch.rand(2, 1, 500, generator=g) > 0.3
    material = torch.randint(0, len(MATERIALS), (2, 1, 500), generator=g)
    fast = _reshaded(colour.clone(), ratio, factor, seen, material)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _reshaded(colour, ratio, factor, seen, material)
    changed = seen & (material == MATERIALS.index("skin"))
    assert changed.sum() > 50 and (fast != colour).any(-1).eq(changed).all()
    assert torch.equal(fast, reference)


def test_uint8_kernel_matches_torch():
    """The pipeline's conversion of the composited window to uint8 pixels: clamped, scaled, rounded
    half to even as torch.round, into a window of a larger [H, W, 3] image."""
    import numpy as np

    g = torch.Generator().manual_seed(17)
    window = torch.rand(3, 40, 50, generator=g) * 1.2 - 0.1
    window[0, 0, :4] = torch.tensor([0.5, 1.5, 2.5, 254.5]) / 255      # halves: to even
    out = np.zeros((60, 70, 3), np.uint8)
    kernels.to_uint8_hwc(window, out[10:50, 5:55])
    reference = (window.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    assert (out[10:50, 5:55] == reference).all() and out[:10].max() == 0 and out[:, 55:].max() == 0
    assert reference[0, :4, 0].tolist() == [0, 2, 2, 254]


def test_blend_drawn_kernel_matches_layer_and_blend(monkeypatch):
    """retarget._composited (each face's layer, its window with its drawn colours, blended into what
    is composited so far): the kernel's one pass per face gives the bits of building the layers and
    blending in batched torch ops, for two faces with drawn pixels at the window's corners and
    padding (more for one), the windows a strided view."""
    from affectsynth.render.retarget import _composited

    g = torch.Generator().manual_seed(19)
    size = (37, 41)
    window = torch.rand(2, 3, 50, 60, generator=g)[..., 5:42, 9:50]
    base = torch.rand(2, 3, *size, generator=g)
    rows = []
    for padding in (20, 150):
        pixels = torch.randperm(size[0] * size[1], generator=g)[:900].sort().values
        pixels = pixels[(pixels > 0) & (pixels < size[0] * size[1] - 1)][:800 - padding]
        rows.append(torch.cat((torch.tensor([0]), pixels, torch.tensor([size[0] * size[1] - 1]),
                               torch.full((padding,), size[0] * size[1]))))
    pixels = torch.stack(rows)                                                   # [2, 802]
    colour = torch.rand(2, pixels.shape[1], 3, generator=g)
    mask = (torch.rand(2, 1, *size, generator=g) * 1.4 - 0.2).clamp(0, 1)
    mask[..., 0, 0] = 1.0
    fast = _composited(base, colour, pixels, window, mask)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _composited(base, colour, pixels, window, mask)
    assert (mask == 0).any() and (mask == 1).any() and torch.equal(fast, reference)
    assert torch.equal(fast[..., 0, 0], colour[:, 0])                       # fully in: the drawn colour
    alone = _composited(base[1:], colour[1:], pixels[1:], window[1:], mask[1:])
    assert torch.equal(alone, reference[1:])                                # each face's own


def _with_a_smaller_copy(fit):
    """A fit of one face as two: itself and a copy at 0.4x its scale, moved down and right."""
    import dataclasses

    from affectsynth.fit import FitResult

    copy = dataclasses.replace(fit, scale=fit.scale * 0.4,
                               translation=fit.translation + fit.translation.new_tensor([170.0, 190.0]))
    return FitResult(**{f.name: torch.cat((getattr(fit, f.name), getattr(copy, f.name)))
                        if isinstance(getattr(fit, f.name), torch.Tensor) else getattr(fit, f.name)
                        for f in dataclasses.fields(FitResult)})


def test_the_renderer_draws_the_same_with_kernels_and_torch_ops(default_model, astronaut, mp_detector, monkeypatch):
    """render_retargeted on a real photo, its eyes and mouth measured: the CPU kernels give what the
    torch ops give (to float rounding: libm's exp and pow are not torch's), for targets that open
    the mouth (the interior's tests and shading), raise the lids (the lid band moved, the sclera
    painted and lit from below) and lower them, and for two faces of one photo at once."""
    import dataclasses

    from affectsynth.affect.targets import parse_au, parse_expression
    from affectsynth.deform import retarget
    from affectsynth.pipeline import Synthesizer
    from affectsynth.render.retarget import render_retargeted

    synthesizer = Synthesizer(default_model, detector=mp_detector)
    fitted = synthesizer.face_fitter(astronaut)
    appearance = synthesizer.appearance(astronaut, fitted)
    photo = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 255
    fit = fitted.fit
    both = _with_a_smaller_copy(fit)
    two = {k: type(v)(**{f.name: torch.cat((getattr(v, f.name),) * 2) for f in dataclasses.fields(v)})
           for k, v in appearance.items()}
    cases = [(fit, parse_expression(name), appearance) for name in ("surprise", "happiness", "fear", "disgust")]
    cases += [(fit, parse_au("43:1,26:0.6"), appearance), (both, parse_expression("surprise"), two)]
    for faces, target, measured in cases:
        coeffs, _ = target.to_model_coeffs(default_model)
        deformation = retarget(default_model, faces, coeffs[None].expand(faces.batch_size, -1).to(faces.exp_coeffs))
        fast = render_retargeted(photo, deformation, default_model, parts=synthesizer.parts, **measured)
        with monkeypatch.context() as patched:
            patched.setattr(kernels, "use_kernels", lambda *tensors: False)
            reference = render_retargeted(photo, deformation, default_model, parts=synthesizer.parts, **measured)
        assert fast.box == reference.box and float(fast.window_mask.amax()) > 0.99, target.source
        assert torch.allclose(fast.window_mask, reference.window_mask, rtol=0, atol=1e-5), target.source
        assert torch.allclose(fast.window, reference.window, rtol=0, atol=1e-5), target.source


def test_interior_seen_kernel_matches_torch(monkeypatch):
    """retarget._interior_seen (which of the mouth interior's pixels keep the photo's): on a mouth
    drawn as a slit in the photo and opened 0-5 rows in the target, with source positions moved up
    to 2 px and some pixels tooth-coloured, two faces, the kernel clears the torch path's pixels."""
    from affectsynth.model.face_model import MATERIALS
    from affectsynth.render.raster import Fragments
    from affectsynth.render.retarget import _interior_seen

    g = torch.Generator().manual_seed(29)
    size = (30, 40)
    rows = torch.arange(size[0])[None, :, None]
    photo_gap = (rows >= 14) & (rows < 14 + torch.randint(1, 3, (2, 1, size[1]), generator=g))
    target_gap = (rows >= 12) & (rows < 15 + torch.randint(0, 6, (2, 1, size[1]), generator=g))
    skin_id, teeth_id = torch.randint(0, 10, (2, *size), generator=g), torch.randint(10, 20, (2, *size), generator=g)
    material_of = torch.cat((torch.zeros(10, dtype=torch.long), torch.full((10,), MATERIALS.index("teeth"))))
    photo = torch.where(photo_gap, -1, skin_id)
    target = torch.where(target_gap, teeth_id, skin_id)
    frags = [Fragments(tri_id=t, bary=torch.zeros(2, *size, 3), depth=torch.zeros(2, *size), backend="numba")
             for t in (photo, target)]
    pixels = torch.arange(size[0] * size[1]).expand(2, -1)
    material = material_of[target].reshape(2, 1, -1)
    interior = material != 0
    centres = torch.stack((pixels % size[1], pixels // size[1]), -1).float() + 0.5
    offset = (torch.rand(2, pixels.shape[1], 2, generator=g) * 2 - 1) * torch.tensor([0.5, 2.0])
    where = torch.cat((centres + offset, torch.zeros(2, pixels.shape[1], 1)), -1)[:, None]
    colour = torch.rand(2, 1, pixels.shape[1], 3, generator=g)
    colour[torch.rand(2, 1, pixels.shape[1], generator=g) < 0.3] = torch.tensor([0.9, 0.88, 0.85])  # teeth
    lip, scale = torch.tensor([[0.6, 0.3, 0.3], [0.5, 0.25, 0.3]]), torch.tensor([4.0, 7.0])
    seen = torch.rand(2, 1, pixels.shape[1], generator=g) > 0.1
    fast = _interior_seen(interior, seen.clone(), pixels, where, *frags, material_of == 0, material, colour, lip, scale,
                          size)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = _interior_seen(interior, seen, pixels, where, *frags, material_of == 0, material, colour, lip, scale, size)
    cleared = seen & ~reference
    assert cleared.sum() > 50 and (interior & reference).sum() > 50 and torch.equal(fast, reference)


def test_lid_lifted_and_moved_band_kernels_match_torch(monkeypatch):
    """retarget._lid_lifted (the photo's lid band under a raised lid is no longer the photo's) and
    retarget._moved_band (the band, sampled where it went with the lid): on lids drawn as skin above
    an eye opening, raised 0-4 rows in the target, two faces, the kernels give the torch path's
    seen pixels, colours and band."""
    from affectsynth.render.raster import Fragments
    from affectsynth.render.retarget import _lid_band, _lid_lifted, _moved_band

    g = torch.Generator().manual_seed(31)
    size = (40, 30)
    rows = torch.arange(size[0])[None, :, None]
    lid = 12 + torch.randint(0, 4, (2, 1, size[1]), generator=g)
    lower = 30 + torch.randint(0, 3, (2, 1, size[1]), generator=g)
    raised = lid - torch.randint(0, 5, (2, 1, size[1]), generator=g)
    skin_id, eye_id = torch.randint(0, 10, (2, *size), generator=g), torch.randint(10, 20, (2, *size), generator=g)
    photo = torch.where((rows < lid) | (rows >= lower), skin_id, -1)
    target = torch.where((rows < raised) | (rows >= lower), skin_id, eye_id)
    skin = torch.arange(20) < 10                                                     # skin, then eyeball
    frags = [Fragments(tri_id=t, bary=torch.zeros(2, *size, 3), depth=torch.zeros(2, *size), backend="numba")
             for t in (photo, target)]
    pixels = torch.arange(size[0] * size[1]).expand(2, -1)
    eyeball = (target >= 10).reshape(2, 1, -1)
    centres = torch.stack((pixels % size[1], pixels // size[1]), -1).float() + 0.5
    where = torch.cat((centres + torch.rand(2, pixels.shape[1], 2, generator=g) - 0.5,
                       torch.zeros(2, pixels.shape[1], 1)), -1)[:, None]
    seen = eyeball & (torch.rand(2, 1, pixels.shape[1], generator=g) > 0.05)
    colour = torch.rand(2, 1, pixels.shape[1], 3, generator=g)
    window = torch.rand(1, 3, size[0] + 6, size[1] + 4, generator=g)[..., 3:-3, 2:-2]
    band_px = torch.tensor([2, 3])

    def run():
        shown, lifted = _lid_lifted(eyeball, seen.clone(), pixels, where, *frags, skin, band_px, size)
        take, band_xy = _lid_band(eyeball, pixels, where, *frags, skin, band_px, size)
        return (shown, lifted, *_moved_band(eyeball, take, band_xy, window, pixels, size, colour.clone(), shown.clone()))

    fast = run()
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = run()
    assert fast[1] and (seen & ~reference[0]).sum() > 10 and reference[4].sum() > 10
    for got, expected in zip(fast, reference):
        assert got == expected if isinstance(got, bool) else torch.equal(got, expected)


def test_extents_kernel_matches_torch():
    """retarget._extents (each face's size and the box of every face before and after): the kernel
    reads the same numbers into Python as the torch path, for two faces."""
    from affectsynth.render.retarget import _extents

    g = torch.Generator().manual_seed(37)
    src = torch.rand(2, 500, 3, generator=g) * torch.tensor([300.0, 200.0, 50.0]) - 20
    dst = torch.rand(2, 500, 3, generator=g) * torch.tensor([280.0, 260.0, 50.0])
    fast = _extents(src, dst)
    reference = _extents(src.clone().requires_grad_(), dst)
    assert fast == reference and fast[1][0] < 0 < fast[1][3]


def test_moved_kernel_matches_torch(monkeypatch):
    """retarget._moved (the points in the render's window, the eyeballs' and the mouth interior's
    depth bias): the kernel shifts two faces' points and moves the selected vertices back at two
    scales by the same bits as the torch path, leaving the others' depths as they were; with no
    vertices it only shifts."""
    from affectsynth.render.retarget import _moved

    g = torch.Generator().manual_seed(41)
    points = torch.rand(2, 300, 3, generator=g) * 200 - 100
    selected = torch.rand(300, generator=g) > 0.7
    scale = torch.tensor([1.37, 6.1])
    fast = [_moved(points, scale, vertices, 2.5, (17, 4)) for vertices in (selected, None)]
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = [_moved(points, scale, vertices, 2.5, (17, 4)) for vertices in (selected, None)]
    assert all(torch.equal(a, b) for a, b in zip(fast, reference))
    assert torch.equal(fast[0][..., :2], points[..., :2] - torch.tensor([17.0, 4.0]))
    assert torch.equal(fast[0][:, ~selected, 2], points[:, ~selected, 2])
    assert (fast[0][:, selected, 2] < points[:, selected, 2]).all() and torch.equal(fast[1][..., 2], points[..., 2])


def test_polygon_pixels_kernel_matches_torch(monkeypatch):
    """polygon.polygon_pixels (the eye and mouth openings' pixels): the kernel takes the same
    pixels, colours and centres as the torch path, in its order, from a channels-last photo, for
    30 star-shaped polygons (5-40 corners, some edges horizontal, some reaching off the photo) at
    margins of 0-2 px."""
    from affectsynth.render.polygon import polygon_pixels

    g = torch.Generator().manual_seed(43)
    photo = torch.rand(80, 100, 3, generator=g).permute(2, 0, 1)                                # [3, 80, 100]
    counts = []
    for k in range(30):
        corners = int(torch.randint(5, 41, (1,), generator=g))
        angle = (torch.rand(corners, generator=g) * 2 * torch.pi).sort().values
        radius = 10 + 30 * torch.rand(corners, generator=g)
        polygon = torch.stack((50 + radius * angle.cos(), 40 + radius * angle.sin()), 1)
        polygon = polygon.round() if k % 2 else polygon                                          # integer corners: flat edges
        fast = polygon_pixels(photo, polygon, k % 3)
        monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
        reference = polygon_pixels(photo, polygon, k % 3)
        monkeypatch.undo()
        assert torch.equal(fast[0], reference[0]) and torch.equal(fast[1], reference[1])
        counts.append(len(reference[0]))
    assert min(counts) > 0 and max(counts) > 1000


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_sample_image_kernel_matches_torch(monkeypatch, mode):
    """shade.sample_image, bilinear and bicubic: the kernel returns the torch path's bits for two images of a
    channels-last photo (strided, as the renderer's is) at points inside, between pixel centres,
    on them and off the image (clamped to the border)."""
    from affectsynth.render.shade import sample_image

    g = torch.Generator().manual_seed(47)
    image = torch.rand(2, 40, 50, 3, generator=g).permute(0, 3, 1, 2)                      # [2, 3, 40, 50]
    points = torch.rand(2, 7, 300, 2, generator=g) * torch.tensor([70.0, 60.0]) - 10.0
    points[:, 0] = points[:, 0].floor() + 0.5                                               # pixel centres
    fast = sample_image(image, points, mode)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = sample_image(image, points, mode)
    assert fast.shape == (2, 7, 300, 3) and torch.equal(fast, reference)
    inside = ((points >= 0.5) & (points <= torch.tensor([49.5, 39.5]))).all(-1)
    assert 0 < int(inside.sum()) < inside.numel()


def test_eye_colours_kernel_matches_torch(monkeypatch):
    """eyes._classified_colours by radius (an eye opening's sclera, iris and pupil colours): the
    kernel returns the torch path's medians, its quantile and lower medians included, for 40
    openings of 0-400 pixels, some with no pupil or no sclera pixels (the defaults)."""
    from affectsynth.render.eyes import _classified_colours

    g = torch.Generator().manual_seed(53)
    defaults_used = 0
    for k in range(40):
        n = int(torch.randint(0, 400, (1,), generator=g))
        colours = torch.rand(n, 3, generator=g)
        rho = torch.rand(n, generator=g) * (1.0 if k % 5 == 0 else 2.0) + (0.3 if k % 7 == 0 else 0.0)
        fast = _classified_colours(colours, rho)
        monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
        reference = _classified_colours(colours, rho)
        monkeypatch.undo()
        assert fast.keys() == reference.keys()
        for key in reference:
            assert torch.equal(fast[key], reference[key]), (k, key)
        defaults_used += n == 0 or k % 5 == 0 or k % 7 == 0
    assert defaults_used > 5


def test_linear_quantile_kernel_matches_torch():
    """kernels.linear_quantile (the light on a face: its skin's 90th percentile of luminance) gives
    torch.quantile's bits, row by row, at several q and sizes (1 to 3,000 values, ties included)."""
    g = torch.Generator().manual_seed(59)
    for n in (1, 2, 3, 10, 157, 1790, 3000):
        values = torch.rand(3, n, generator=g)
        values[1] = values[1].mul(8).round() / 8                                                  # ties
        for q in (0.0, 0.1, 0.5, 0.75, 0.9, 1.0):
            assert torch.equal(kernels.linear_quantile(values, q), values.quantile(q, dim=1)), (n, q)
