"""The rasteriser: fill rule, watertightness, barycentrics, depth test, culling, batches, backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectsynth.camera import rotation_from_euler_deg, to_image_space
from affectsynth.render import BACKENDS, Rasterizer, available_backends, interpolate, rasterize

GL = "moderngl"
need_gl = pytest.mark.skipif(GL not in available_backends(), reason="moderngl/EGL is not usable here "
                             "(pip moderngl; apt libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)")
BACKEND_NAMES = ["numba", pytest.param(GL, marks=need_gl)]


def centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x [H, W], y [H, W])."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    return x, y


def one_triangle(corners, depth=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    verts = torch.tensor([[[x, y, z] for (x, y), z in zip(corners, depth)]], dtype=torch.float64)
    return verts, torch.tensor([[0, 1, 2]])


def posed_model(model, size: int, yaws=(0.0,), pitch=0.0) -> torch.Tensor:
    """The default model's mean face [B, V, 3] in image space, about 80% of a size x size image wide."""
    b = len(yaws)
    rot = rotation_from_euler_deg(torch.tensor(yaws), torch.full((b,), pitch), torch.zeros(b))
    return to_image_space(model.mean.expand(b, -1, -1), rot, torch.full((b,), 0.8 * size / 155.0),
                          torch.full((b, 2), size / 2.0))


def test_random_triangles_cover_the_centres_inside():
    """Generic triangles (no pixel centre on an edge): covered = centre strictly inside. (OpenGL
    snaps corners to 1/256 px, so it can differ next to an edge: see test_backends_agree.)"""
    rng = np.random.default_rng(0)
    x, y = centres(40, 50)
    for _ in range(20):
        corners = rng.uniform([-10, -10], [60, 50], size=(3, 2))
        verts, faces = one_triangle(corners)
        frags = rasterize(verts, faces, (40, 50), backend="numba", cull_backfaces=False)
        a, b, c = corners
        edges = [(b, c), (c, a), (a, b)]
        side = [(q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0]) for p, q in edges]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        inside = np.all([s * np.sign(area) > 0 for s in side], axis=0)
        np.testing.assert_array_equal(frags.mask[0].numpy(), inside)


def test_top_left_fill_rule_on_a_square_split_along_its_diagonal():
    """Corners on pixel centres: the left and top edges are drawn, the right and bottom are not,
    and the shared diagonal goes to exactly one of the two triangles."""
    x, y = centres(10, 10)
    lower_left = [(1.5, 1.5), (1.5, 6.5), (6.5, 1.5)]          # x + y < 8 side, front-facing
    upper_right = [(6.5, 6.5), (6.5, 1.5), (1.5, 6.5)]
    first = rasterize(*one_triangle(lower_left), (10, 10), backend="numba").mask[0].numpy()
    second = rasterize(*one_triangle(upper_right), (10, 10), backend="numba").mask[0].numpy()
    np.testing.assert_array_equal(first, (x >= 1.5) & (y >= 1.5) & (x + y < 8))
    np.testing.assert_array_equal(second, (x < 6.5) & (y < 6.5) & (x + y >= 8))
    assert not (first & second).any()
    np.testing.assert_array_equal(first | second, (x >= 1.5) & (x < 6.5) & (y >= 1.5) & (y < 6.5))


def grid_mesh(cells: int, step: float, origin: float, jitter: float, seed: int = 0):
    """A (cells x cells) grid of quads, each split in two along alternating diagonals, with
    its inner vertices moved at random by up to ``jitter`` px. Returns verts [1, V, 3], faces."""
    rng = np.random.default_rng(seed)
    n = cells + 1
    gy, gx = np.mgrid[0:n, 0:n] * step + origin
    xy = np.stack((gx, gy), -1).astype(np.float64)
    xy[1:-1, 1:-1] += rng.uniform(-jitter, jitter, size=(n - 2, n - 2, 2))
    ids = np.arange(n * n).reshape(n, n)
    faces = []
    for i in range(cells):
        for j in range(cells):
            a, b, c, d = ids[i, j], ids[i, j + 1], ids[i + 1, j + 1], ids[i + 1, j]  # TL, TR, BR, BL
            faces += [(a, d, c), (a, c, b)] if (i + j) % 2 else [(a, d, b), (b, d, c)]  # front-facing
    verts = np.concatenate((xy.reshape(-1, 2), rng.uniform(0, 1, size=(n * n, 1))), -1)
    return torch.tensor(verts[None]), torch.tensor(faces)


def coverage_count(verts, faces, size, backend, cull_backfaces=True):
    """How many triangles of the mesh cover each pixel centre, [H, W] (triangles drawn one at a time)."""
    return sum(rasterize(verts, faces[k:k + 1], size, backend=backend, cull_backfaces=cull_backfaces).mask[0].long()
               for k in range(len(faces)))


def test_grid_on_pixel_centres_is_covered_exactly_once():
    # Every vertex and every diagonal runs through pixel centres: ties everywhere.
    verts, faces = grid_mesh(cells=6, step=4.0, origin=0.5, jitter=0.0)
    count = coverage_count(verts, faces, (28, 28), "numba")
    x, y = centres(28, 28)
    expected = ((x >= 0.5) & (x < 24.5) & (y >= 0.5) & (y < 24.5)).astype(np.int64)
    np.testing.assert_array_equal(count.numpy(), expected)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_jittered_grid_has_no_gaps_and_no_double_draws(backend):
    verts, faces = grid_mesh(cells=8, step=3.0, origin=1.3, jitter=1.2, seed=3)
    count = coverage_count(verts, faces, (30, 30), backend)
    x, y = centres(30, 30)
    inside = (x > 1.3) & (x < 25.3) & (y > 1.3) & (y < 25.3)
    np.testing.assert_array_equal(count.numpy(), inside.astype(np.int64))
    # Drawn at once, every pixel shows one triangle (whichever is nearest) and the union is the same.
    assert torch.equal(rasterize(verts, faces, (30, 30), backend=backend).mask[0], torch.from_numpy(inside))


def test_shared_edges_through_pixel_centres_with_rounded_endpoints():
    """Quads whose diagonal runs (up to rounding) through pixel centres, with endpoints that are
    not exact binary fractions: the two triangles must still split those centres between them
    exactly, which needs both to evaluate the shared edge identically."""
    rng = np.random.default_rng(7)
    x, y = centres(24, 24)
    for _ in range(150):
        c1 = rng.integers(6, 10, size=2) + 0.5
        c2 = c1 + rng.integers(3, 8, size=2) * rng.choice([-1, 1], size=2)
        s, t = rng.uniform(-0.6, -0.1), rng.uniform(1.1, 1.6)
        a, b = c1 + s * (c2 - c1), c1 + t * (c2 - c1)                 # the diagonal, rounded
        normal = np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a)
        left, right = (a + b) / 2 + 4.3 * normal, (a + b) / 2 - 3.7 * normal
        verts = torch.tensor([[[*a, 0.0], [*b, 0.0], [*left, 0.0], [*right, 0.0]]], dtype=torch.float64)
        faces = torch.tensor([[0, 1, 2], [1, 0, 3]])
        count = coverage_count(verts, faces, (24, 24), "numba", cull_backfaces=False).numpy()
        assert count.max() <= 1
        # Every centre well inside the quad (away from its 4 outer edges) is covered.
        outer = [(a, left), (left, b), (b, right), (right, a)]
        ring = np.sign(np.cross(left - a, b - a))
        inside = np.all([ring * ((q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])) / np.linalg.norm(q - p)
                         > 1e-6 for p, q in outer], axis=0)
        assert (count[inside] == 1).all()


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_barycentrics_reproduce_pixel_centres(skin_model, backend):
    default_model = skin_model
    verts = posed_model(default_model, 256, yaws=(0.0, 35.0))
    frags = rasterize(verts, default_model.triangles, (256, 256), backend=backend)
    where = interpolate(verts[..., :2], frags, default_model.triangles)
    x, y = centres(256, 256)
    expected = torch.from_numpy(np.stack((x, y), -1)).float().expand(2, -1, -1, -1)
    mask = frags.mask
    assert mask.float().mean() > 0.3
    # OpenGL may take in centres up to 1/256 px outside a triangle; its barycentrics are clamped
    # onto it, which on a sliver (edge-on near the silhouette) moves the point along the sliver.
    error = (where[mask] - expected[mask]).abs().amax(-1)
    if backend == "numba":
        assert error.max() < 1e-4
    else:
        assert error.max() < 0.05 and (error > 1 / 256).float().mean() < 1e-3
    assert torch.allclose(frags.bary.sum(-1)[mask], torch.ones(()), atol=1e-5)
    assert (frags.bary >= -1e-6).all()
    # Depth too is the affine blend of the corner depths.
    depth = interpolate(verts[..., 2:], frags, default_model.triangles)[..., 0]
    assert (depth[mask] - frags.depth[mask]).abs().max() < 1e-3
    assert torch.isneginf(frags.depth[~mask]).all() and (frags.bary[~mask] == 0).all()


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_depth_test_keeps_the_nearer_triangle(backend):
    """Two overlapping triangles; in batch element 0 triangle 0 is nearer, in element 1 the
    other way round (so the winner does not depend on drawing order)."""
    tri = [(2.0, 2.0), (2.0, 14.0), (14.0, 2.0)]
    shifted = [(4.0, 4.0), (4.0, 16.0), (16.0, 4.0)]
    xy = torch.tensor(tri + shifted, dtype=torch.float32)
    near, far = torch.full((3, 1), 5.0), torch.full((3, 1), -5.0)
    verts = torch.stack((torch.cat((xy, torch.cat((near, far))), -1),
                         torch.cat((xy, torch.cat((far, near))), -1)))
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, (20, 20), backend=backend)
    alone = [rasterize(verts, faces[k:k + 1], (20, 20), backend=backend).mask for k in range(2)]
    both = alone[0] & alone[1]
    assert both[0].sum() > 20
    assert (frags.tri_id[0][both[0]] == 0).all() and (frags.tri_id[1][both[1]] == 1).all()
    assert torch.allclose(frags.depth[both], torch.tensor(5.0), atol=1e-4)
    # A slanted triangle crossing the other one: each wins where it is nearer.
    slanted = verts[:1].clone()
    slanted[0, 3:, 2] = torch.tensor([-10.0, 20.0, 20.0])    # depth rises with x + y
    frags = rasterize(slanted, faces, (20, 20), backend=backend)
    alone_1 = rasterize(slanted, faces[1:], (20, 20), backend=backend)
    depth_1 = interpolate(slanted[..., 2:], alone_1, faces[1:])[0, ..., 0]
    overlap = both[0]
    expected = torch.where(depth_1 > 5.0, 1, 0)
    decided = overlap & ((depth_1 - 5.0).abs() > 1e-3)
    assert torch.equal(frags.tri_id[0][decided], expected[decided])
    assert set(expected[decided].tolist()) == {0, 1}


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_back_faces_are_culled_by_default(skin_model, backend):
    default_model = skin_model
    front = [(2.0, 2.0), (2.0, 14.0), (14.0, 2.0)]            # negative signed area: faces the camera
    back = front[::-1]
    assert rasterize(*one_triangle(front), (16, 16), backend=backend).mask.sum() > 50
    assert rasterize(*one_triangle(back), (16, 16), backend=backend).mask.sum() == 0
    drawn = rasterize(*one_triangle(back), (16, 16), backend=backend, cull_backfaces=False)
    assert torch.equal(drawn.mask, rasterize(*one_triangle(front), (16, 16), backend=backend).mask)
    # The face seen from behind shows only back faces; seen from the front nearly none are culled.
    faces = default_model.triangles
    behind = posed_model(default_model, 128, yaws=(180.0,))
    seen_back = rasterize(behind, faces, (128, 128), backend=backend, cull_backfaces=False).mask.sum()
    assert seen_back > 0.4 * 128 ** 2
    assert rasterize(behind, faces, (128, 128), backend=backend).mask.sum() <= 1e-3 * seen_back
    frontal = posed_model(default_model, 128)
    culled = rasterize(frontal, faces, (128, 128), backend=backend).mask
    assert culled.sum() >= 0.99 * rasterize(frontal, faces, (128, 128), backend=backend,
                                            cull_backfaces=False).mask.sum()


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_partly_outside_degenerate_and_invalid_triangles(backend):
    x, y = centres(12, 16)
    # A triangle much larger than the image, with corners far outside: covers x + y < 20.
    big = [(-500.0, -500.0), (-500.0, 520.0), (520.0, -500.0)]
    frags = rasterize(*one_triangle(big), (12, 16), backend=backend)
    np.testing.assert_array_equal(frags.mask[0].numpy(), x + y < 20)
    # Zero-area triangles (collinear, repeated corner) draw nothing, and do not disturb a good one.
    verts = torch.tensor([[[1.0, 1.0, 0], [5.0, 5.0, 0], [9.0, 9.0, 0], [1.0, 1.0, 0],
                           [1.0, 1.0, 0], [1.0, 11.0, 0], [11.0, 1.0, 0]]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [4, 5, 6]])
    frags = rasterize(verts, faces, (12, 16), backend=backend, cull_backfaces=False)
    assert set(frags.tri_id.unique().tolist()) == {-1, 2}
    np.testing.assert_array_equal(frags.mask[0].numpy(), (x > 1) & (y > 1) & (x + y < 12))
    # Entirely off the image: nothing.
    off = rasterize(*one_triangle([(-30.0, 2.0), (-30.0, 9.0), (-20.0, 2.0)]), (12, 16), backend=backend)
    assert off.mask.sum() == 0


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_non_finite_vertices_and_empty_meshes(backend):
    verts = torch.tensor([[[1.0, 1.0, 0], [1.0, 11.0, 0], [11.0, 1.0, 0], [float("nan"), 3.0, 0],
                           [float("inf"), 3.0, 0]]])
    frags = rasterize(verts, torch.tensor([[0, 1, 3], [0, 1, 2], [4, 0, 1]]), (12, 12), backend=backend,
                      cull_backfaces=False)
    assert set(frags.tri_id.unique().tolist()) == {-1, 1}
    empty = rasterize(verts, torch.zeros(0, 3, dtype=torch.int64), (12, 12), backend=backend)
    assert not empty.mask.any() and torch.isneginf(empty.depth).all()


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_batch_with_different_poses_equals_one_at_a_time(default_model, backend):
    verts = posed_model(default_model, 160, yaws=(-40.0, 0.0, 25.0), pitch=10.0)
    faces = default_model.triangles
    batch = rasterize(verts, faces, (160, 160), backend=backend)
    assert not torch.equal(batch.tri_id[0], batch.tri_id[2])
    for b in range(3):
        one = rasterize(verts[b:b + 1], faces, (160, 160), backend=backend)
        assert torch.equal(one.tri_id, batch.tri_id[b:b + 1])
        assert torch.equal(one.bary, batch.bary[b:b + 1])


@pytest.mark.parametrize("threads", [1, 2])
def test_surfaces_behind_drawn_ones_change_nothing(default_model, threads):
    """Triangles strictly behind what is drawn over their box are skipped untested: copies of the
    face 0.5 px and 1e-4 px (about 10 float32 steps of its depths) behind it, drawn after it,
    leave its fragments as they are, while a copy 0.5 px in front takes over."""
    verts = posed_model(default_model, 160, yaws=(-40.0, 20.0), pitch=10.0)
    faces = default_model.triangles
    n = verts.shape[1]
    alone = rasterize(verts, faces, (160, 160), backend="numba")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for shift, front in ((-0.5, False), (-1e-4, False), (0.5, True)):
            both = rasterize(torch.cat((verts, verts + torch.tensor([0.0, 0.0, shift])), 1),
                             torch.cat((faces, faces + n)), (160, 160), backend="numba")
            assert torch.equal(both.mask, alone.mask)
            assert torch.equal(both.tri_id, alone.tri_id + len(faces) * alone.mask if front else alone.tri_id)
            assert torch.equal(both.bary, alone.bary)
    finally:
        torch.set_num_threads(previous)


def test_one_thread_draws_what_the_bands_draw(default_model):
    """One torch thread (a DataLoader worker) draws triangles in id order, unbinned; two draw
    bands of rows in parallel. Same fragments, to the bit, ties and culling included."""
    verts = posed_model(default_model, 224, yaws=(-40.0, 0.0, 25.0), pitch=10.0)
    threads = torch.get_num_threads()
    try:
        drawn = []
        for n in (1, 2):
            torch.set_num_threads(n)
            drawn.append([rasterize(verts, default_model.triangles, (224, 224), backend="numba", cull_backfaces=cull)
                          for cull in (True, False)])
    finally:
        torch.set_num_threads(threads)
    for serial, banded in zip(*drawn):
        assert serial.mask.sum() > 10_000
        for field in ("tri_id", "bary", "depth"):
            assert torch.equal(getattr(serial, field), getattr(banded, field)), field


@need_gl
@pytest.mark.parametrize("size", [224, 512])
def test_backends_agree(default_model, size):
    verts = posed_model(default_model, size, yaws=(0.0, -30.0), pitch=-10.0)
    faces = default_model.triangles
    ours = rasterize(verts, faces, (size, size), backend="numba")
    gl = rasterize(verts, faces, (size, size), backend=GL)
    assert ours.backend == "numba" and gl.backend == GL
    differ = ours.tri_id != gl.tri_id
    # Only pixel centres within a hair of an edge may go either way.
    assert differ.float().mean() < 2e-3, differ.float().mean()
    same = ~differ & ours.mask
    assert (ours.bary[same] - gl.bary[same]).abs().max() < 1e-4
    assert (ours.depth[same] - gl.depth[same]).abs().max() < 1e-3 * size
    # Where they differ, the pixel centre lies within llvmpipe's 1/256 px snapping of an edge.
    near = torch.minimum(edge_distance_px(ours, verts, faces), edge_distance_px(gl, verts, faces))
    assert (near[differ] < 1 / 256).all(), near[differ].max()


def edge_distance_px(frags, verts, faces) -> torch.Tensor:
    """[B, H, W] distance, px, from each pixel centre to the nearest edge of its triangle (inf where empty)."""
    batch = torch.arange(verts.shape[0])[:, None, None, None]
    corners = verts[batch, faces[frags.tri_id.clamp(min=0)]][..., :2].double()          # [B, H, W, 3, 2]
    edges = corners[..., [2, 0, 1], :] - corners[..., [1, 2, 0], :]                     # edge k faces corner k
    twice_area = (edges[..., 0, 0] * edges[..., 1, 1] - edges[..., 0, 1] * edges[..., 1, 0]).abs()
    distance = (frags.bary.double() * twice_area[..., None] / edges.norm(dim=-1)).min(-1).values
    return torch.where(frags.mask, distance, torch.inf)


def test_backend_choice_and_validation(default_model):
    verts = posed_model(default_model, 64)
    assert rasterize(verts, default_model.triangles, (64, 64)).backend == available_backends()[0] == "numba"
    assert set(BACKENDS) >= {"numba", GL}
    module = Rasterizer((64, 48), backend="numba")
    frags = module(verts, default_model.triangles)
    assert frags.size == (64, 48) and frags.tri_id.dtype == torch.int64 and frags.bary.shape == (1, 64, 48, 3)
    with pytest.raises(ValueError, match="unknown rasteriser backend"):
        rasterize(verts, default_model.triangles, (64, 64), backend="nope")
    with pytest.raises(ValueError, match="faces index"):
        rasterize(verts, default_model.triangles + 5000, (64, 64))
    with pytest.raises(ValueError, match="verts_img"):
        rasterize(verts[0], default_model.triangles, (64, 64))
