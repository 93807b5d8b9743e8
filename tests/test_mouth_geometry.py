"""The default model's mouth interior (affectsynth.model.mouth): socket, teeth, gums, tongue.

Built in memory with build_default_model(), so these tests hold for the code whether or not
assets/default_model.npz has been regenerated.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectsynth.affect.targets import AU_KEYS, au_to_model_coeffs, emfacs_table
from affectsynth.model import FaceModel
from affectsynth.model import mesh_ops as mo
from affectsynth.model.default import build_default_model
from affectsynth.model.mouth import OVERBITE_MM, OVERJET_MM, TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM
from affectsynth.render.raster import rasterize

PARTS = ("mouth_socket", "teeth_upper", "teeth_lower", "gums", "tongue")
MOUTH_MATERIALS = ("mouth_socket", "teeth", "gums", "tongue")
PX_PER_MM = 8.0
UPPER_LIP_MIDDLE, LOWER_LIP_MIDDLE, CHIN = 13, 14, 152  # MediaPipe ids: inner lip midpoints, menton


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return build_default_model().to(dtype=torch.float64)


def arr(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def region(model: FaceModel, *names: str) -> np.ndarray:
    return np.concatenate([arr(model.regions[n]) for n in names])


def skin_triangles(model: FaceModel) -> np.ndarray:
    return np.flatnonzero(arr(model.triangle_materials()) == 0)


def posed(model: FaceModel, coeffs: torch.Tensor, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """[B, V, 3] vertices for coefficients [B, E], turned by yaw (about y) then pitch (about x)."""
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pitch = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return arr(model(exp_coeffs=coeffs).vertices) @ (pitch @ yaw).T


def image_space(vertices: np.ndarray, size: int, px_per_mm: float = PX_PER_MM) -> torch.Tensor:
    """Model-space vertices [B, V, 3] -> (u, v, depth) px, the mouth (0, -45) mm at the centre."""
    u = vertices[..., 0] * px_per_mm + size / 2
    v = -(vertices[..., 1] + 45.0) * px_per_mm + size / 2
    return torch.from_numpy(np.stack([u, v, vertices[..., 2] * px_per_mm], -1))


def coefficients(model: FaceModel, **activations: float) -> torch.Tensor:
    c = torch.zeros(1, model.num_expressions, dtype=model.dtype)
    for name, value in activations.items():
        c[0, model.exp_index(name)] = value
    return c


def visible_area(model: FaceModel, coeffs: torch.Tensor, triangles: np.ndarray, size: int = 640) -> float:
    """mm^2 of the frontal view where one of ``triangles`` is the visible surface."""
    frags = rasterize(image_space(posed(model, coeffs), size), model.triangles, (size, size))
    return float(np.isin(arr(frags.tri_id[0]), triangles).sum()) / PX_PER_MM ** 2


def material_triangles(model: FaceModel, material: str, vertices: np.ndarray | None = None) -> np.ndarray:
    """Triangle ids of a material (with all three corners among ``vertices`` if given)."""
    ids = arr(model.materials[material])
    if vertices is None:
        return ids
    return ids[np.isin(arr(model.triangles)[ids], vertices).all(1)]


def rigid_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, t, max residual) of the least-squares rigid map src [N, 3] -> dst [N, 3]."""
    cs, cd = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
    r = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
    t = cd - r @ cs
    return r, t, float(np.abs(src @ r.T + t - dst).max())


# ------------------------------------------------------------------------ structure
def test_part_sizes_regions_and_materials(model):
    skin = arr(model.regions["skin"])
    ids = region(model, *PARTS)
    assert len(np.unique(ids)) == len(ids) < 1600  # disjoint regions, a modest part (1,541)
    assert np.array_equal(np.sort(ids), np.arange(ids.min(), ids.max() + 1))  # one contiguous block ...
    assert not np.isin(ids, skin).any()  # ... after the skin
    tri = arr(model.triangles)
    every = np.concatenate([arr(model.materials[m]) for m in model.materials])
    assert len(np.unique(every)) == len(every)  # a triangle has one material
    rim = region(model, "lip_inner_upper", "lip_inner_lower")
    allowed = {"mouth_socket": np.r_[region(model, "mouth_socket"), rim],
               "teeth": region(model, "teeth_upper", "teeth_lower"), "gums": region(model, "gums"),
               "tongue": region(model, "tongue")}
    for material in MOUTH_MATERIALS:
        used = tri[arr(model.materials[material])]
        assert len(used) > 0 and np.isin(used, allowed[material]).all(), material
    assert np.isin(ids, tri[np.concatenate([arr(model.materials[m]) for m in MOUTH_MATERIALS])]).all()
    assert arr(model.exp_basis)[:, ids].shape == (model.num_expressions, len(ids), 3)
    assert np.isfinite(arr(model.id_basis)[:, ids]).all() and np.isfinite(arr(model.exp_basis)[:, ids]).all()


def _edge_uses(triangles: np.ndarray) -> dict[tuple[int, int], int]:
    uses: dict[tuple[int, int], int] = {}
    for a, b in np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]).tolist():
        key = (min(a, b), max(a, b))
        uses[key] = uses.get(key, 0) + 1
    return uses


def test_socket_rim_is_the_inner_lip_loop(model):
    """The pouch is watertight except for its rim, and the rim is the skin's inner-lip loop."""
    upper, lower = list(region(model, "lip_inner_upper")), list(region(model, "lip_inner_lower"))
    loop = upper + lower[-2:0:-1]
    loop_edges = {(min(a, b), max(a, b)) for a, b in zip(loop, loop[1:] + loop[:1])}
    uses = _edge_uses(arr(model.triangles)[arr(model.materials["mouth_socket"])])
    assert {e for e, n in uses.items() if n == 1} == loop_edges
    assert all(n == 2 for e, n in uses.items() if e not in loop_edges)
    # so the skin and the socket together have no boundary at the mouth any more
    boundary = {tuple(sorted(b)) for b in mo.boundary_loops(arr(model.triangles))}
    assert tuple(sorted(loop)) not in boundary


def test_teeth_gums_tongue_are_closed_and_face_outward(model):
    v, tri = arr(model.mean), arr(model.triangles)
    for material in ("teeth", "gums", "tongue"):
        faces = tri[arr(model.materials[material])]
        assert set(_edge_uses(faces).values()) == {2}, material
        p = v[faces] - v[np.unique(faces)].mean(0)
        assert np.einsum("ti,ti->t", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() > 0, material


# ------------------------------------------------------------------------ placement
def test_teeth_sit_behind_the_lips_like_teeth(model):
    v = arr(model.mean)
    upper, lower = region(model, "teeth_upper"), region(model, "teeth_lower")
    centrals_u = upper[np.abs(v[upper, 0]) < 4.0]
    centrals_l = lower[np.abs(v[lower, 0]) < 2.5]
    lip = v[UPPER_LIP_MIDDLE]
    upper_edge, upper_labial = v[centrals_u, 1].min(), v[centrals_u, 2].max()
    lower_edge, lower_labial = v[centrals_l, 1].max(), v[centrals_l, 2].max()
    assert 1.0 <= lip[1] - upper_edge <= 3.0  # 1-3 mm of incisor below relaxed, parted lips
    assert 3.0 <= lip[2] - upper_labial <= 6.0  # behind the lip's inner edge
    assert lower_edge - upper_edge == pytest.approx(OVERBITE_MM, abs=0.5)
    assert upper_labial - lower_labial == pytest.approx(OVERJET_MM, abs=0.5)
    width = np.ptp(v[upper[(v[upper, 0] > 0) & (v[upper, 0] < 8.0) & (v[upper, 1] < upper_edge + 3.0)], 0])
    assert 7.0 < width < 9.5  # a central incisor's edge, mesial to distal
    tongue = v[region(model, "tongue")]
    assert tongue[:, 1].max() - lower_edge == pytest.approx(TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM, abs=0.5)
    front = tongue[tongue[:, 2] > tongue[:, 2].max() - 2.0]
    assert tongue[:, 2].max() < lower_labial - 2.0 and front[:, 1].max() < lower_edge - 4.0  # its tip low behind them


# ------------------------------------------------------------------------ motion
def test_upper_teeth_stay_and_lower_parts_move_with_the_jaw(model):
    v, exp = arr(model.mean), arr(model.exp_basis)
    upper = region(model, "teeth_upper")
    lower = np.r_[region(model, "teeth_lower"), region(model, "tongue")]
    assert np.abs(exp[:, upper]).max() == 0.0
    for name in model.exp_names:
        field = exp[model.exp_index(name)]
        if name not in ("AU26", "AU27"):
            assert np.abs(field[lower]).max() == 0.0, name
            continue
        r, t, residual = rigid_fit(v[lower], v[lower] + field[lower])
        assert residual < 1e-4, name
        # the same rigid motion as the skin's mandible (jaw weight 1 at the chin and lower lip)
        for skin_id in (CHIN, LOWER_LIP_MIDDLE):
            np.testing.assert_allclose(v[skin_id] @ r.T + t, v[skin_id] + field[skin_id], atol=1e-3)
        assert field[lower, 1].mean() < -10.0, name  # the lower teeth drop


def test_socket_floor_follows_the_jaw_and_its_roof_stays(model):
    v, exp = arr(model.mean), arr(model.exp_basis)
    socket = region(model, "mouth_socket")
    jaw = exp[model.exp_index("AU27")]
    floor = socket[v[socket, 1] < v[LOWER_LIP_MIDDLE, 1] - 8.0]
    roof = socket[(v[socket, 1] > v[UPPER_LIP_MIDDLE, 1] + 8.0) & (np.abs(v[socket, 0]) < 8.0)]
    assert jaw[floor, 1].mean() < -15.0 and np.abs(jaw[roof]).max() < 0.5
    assert np.abs(exp[model.exp_index("AU1")][socket]).max() < 0.01  # the brows barely reach the mouth


# ------------------------------------------------------------------------ visibility
def test_interior_is_hidden_by_closed_lips_and_shows_when_they_part(model):
    socket = material_triangles(model, "mouth_socket")
    teeth, tongue = material_triangles(model, "teeth"), material_triangles(model, "tongue")
    interior = np.concatenate([arr(model.materials[m]) for m in MOUTH_MATERIALS])
    # AU24 presses the lips together; hairline cracks where the two lips' vertices interleave
    assert visible_area(model, coefficients(model, AU24=1.0), interior) < 1.0
    for name, teeth_mm2, socket_mm2 in (("AU25", 100.0, 5.0), ("AU26", 80.0, 300.0), ("AU27", 50.0, 800.0)):
        c = coefficients(model, **{name: 1.0})
        assert visible_area(model, c, teeth) > teeth_mm2, name
        assert visible_area(model, c, socket) > socket_mm2, name  # the pouch faces the opening
    assert visible_area(model, coefficients(model, AU27=1.0), tongue) > 20.0
    assert visible_area(model, coefficients(model, AU26=1.0), tongue) > 20.0     # behind the lower teeth
    assert visible_area(model, coefficients(model, AU25=1.0), tongue) < 1.0      # the teeth together hide it


def test_slightly_parted_lips_show_a_strip_of_upper_incisor(model):
    """At rest the (calibrated) lips are 0.7 mm apart: under 1 mm of the upper central incisor
    shows; parted a little (AU25 at A) they show 1-3 mm, as relaxed, just-parted lips do."""
    size = 640
    upper_teeth = material_triangles(model, "teeth", region(model, "teeth_upper"))
    for au25, low, high in ((0.0, 0.0, 1.0), (0.25, 1.0, 3.0)):
        frags = rasterize(image_space(posed(model, coefficients(model, AU25=au25)), size), model.triangles, (size, size))
        column = arr(frags.tri_id[0])[:, int(size / 2 + 4.0 * PX_PER_MM)]  # through a central incisor
        assert low <= np.isin(column, upper_teeth).sum() / PX_PER_MM <= high, au25


def _expressions(model: FaceModel) -> torch.Tensor:
    """[N, E]: rest, every expression at 1, every EMFACS variant of the shipped table."""
    rows = [torch.zeros(model.num_expressions, dtype=model.dtype)]
    rows += list(torch.eye(model.num_expressions, dtype=model.dtype))
    table = emfacs_table()
    au = torch.tensor([variant.au for variants in table.variants.values() for variant in variants],
                      dtype=torch.float64).reshape(-1, len(AU_KEYS))
    return torch.cat([torch.stack(rows), au_to_model_coeffs(au, model)[0]])


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (30, 0), (-30, 0), (0, 20), (0, -20)])
def test_nothing_pokes_through_the_skin(model, yaw, pitch):
    """No interior vertex lies in front of the front-facing skin it projects onto (the skin's
    depth evaluated on its triangle's plane at the vertex), in any expression tried."""
    size, px_per_mm = 800, 5.0  # a 160 mm window: the whole interior in every pose tried
    faces = model.triangles[torch.from_numpy(skin_triangles(model))]
    interior = region(model, *PARTS)
    checked = 0
    for coeffs in _expressions(model)[:, None]:
        vertices = arr(image_space(posed(model, coeffs, yaw, pitch), size, px_per_mm))[0]
        tri_id = arr(rasterize(torch.from_numpy(vertices)[None], faces, (size, size)).tri_id[0])
        points = vertices[interior]
        assert (points[:, :2] >= 0).all() and (points[:, :2] < size).all()
        hit = tri_id[points[:, 1].astype(np.int64), points[:, 0].astype(np.int64)]
        points = points[hit >= 0]
        corners = vertices[arr(faces)[hit[hit >= 0]]]  # [H, 3, 3]
        e1, e2, q = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], points - corners[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        l1 = (q[:, 0] * e2[:, 1] - q[:, 1] * e2[:, 0]) / det
        l2 = (e1[:, 0] * q[:, 1] - e1[:, 1] * q[:, 0]) / det
        skin_depth = corners[:, 0, 2] + l1 * e1[:, 2] + l2 * e2[:, 2]  # the skin's plane at the point
        ahead_mm = (points[:, 2] - skin_depth) / px_per_mm
        assert (ahead_mm < 0.0).all(), (arr(coeffs), ahead_mm.max())
        checked += len(points)
    assert checked > 1000 * (model.num_expressions + 1)  # most interior points lie under skin


def test_gum_margin_arches_over_each_crown():
    """The labial gum margin over the central incisor: highest over its middle, lowest (the
    papillae) between crowns, and rounded over the crown: half way from the papilla to the
    middle it has risen 3/4 of the way, not half as a straight zigzag does (whose crowns
    showed as fangs)."""
    from affectsynth.model.mouth import ARCH_MM, UPPER_TEETH, _Arch, _gum_band

    band = _gum_band(_Arch.from_control_points(ARCH_MM, 0.0), UPPER_TEETH, 0.0, +1.0)
    margin = band.vertices[:-2:5]                 # each ring's first point is the labial margin
    incisor = margin[(margin[:, 0] > -0.01) & (margin[:, 0] < UPPER_TEETH[0].width)]    # left central
    incisor = incisor[np.argsort(incisor[:, 0])]
    x, y = incisor[:, 0], incisor[:, 1]
    middle = int(np.argmax(y))
    depth = y[middle] - y[0]                      # from the papilla on the midline
    assert 0 < middle < len(y) - 1 and depth == pytest.approx(0.25 * UPPER_TEETH[0].height, rel=0.05)
    halfway = np.interp(0.5 * x[middle], x, y)
    assert halfway - y[0] > 0.7 * depth
