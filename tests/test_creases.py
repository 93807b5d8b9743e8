"""Expression creases (affectsynth.render.creases) on the default model."""

import pytest
import torch

from affectsynth.affect.targets import AU_KEYS
from affectsynth.model.default import load_default_model
from affectsynth.render.creases import CREASES, FACTOR_RANGE, MIRROR, crease_lines, crease_shading


@pytest.fixture(scope="module")
def model():
    return load_default_model()


@pytest.fixture(scope="module")
def lines(model):
    return crease_lines(model)


def activation(**aus):
    a = torch.zeros(1, len(AU_KEYS))
    for key, value in aus.items():
        a[0, AU_KEYS.index(key)] = value
    return a


def test_mirror_pairs_are_mirror_images_on_the_canonical_mesh(model):
    mean = model.mean.double()
    for right, left in MIRROR.items():
        assert torch.allclose(mean[left], mean[right] * mean.new_tensor([-1.0, 1.0, 1.0]), atol=0.1), (right, left)
    used = {i for crease in CREASES for point in crease.points for i, _ in point}
    assert used <= set(MIRROR)


def test_every_crease_is_placed_on_both_sides(model, lines):
    assert len(lines.au_column) == 2 * len(CREASES)
    names = [AU_KEYS[int(c)] for c in lines.au_column]
    assert sum(n.endswith("_R") for n in names) == sum(n.endswith("_L") for n in names) == len(CREASES)
    # the right side's creases lie at x <= 0, the left side's at x >= 0 (mm, the model's mean shape)
    side = torch.tensor([n.endswith("_L") for n in names])
    x = lines.segments[..., 0]                                                  # [C, K, 2]
    assert (x[~side] <= 1e-4).all() and (x[side] >= -1e-4).all()


def glabella_points(lines, side="R"):
    """Points on, beside and far from the AU4 crease of one side."""
    (c,) = [i for i, col in enumerate(lines.au_column.tolist()) if AU_KEYS[col] == f"AU4_{side}"]
    a, b = lines.segments[c, 0]
    middle = (a + b) / 2
    normal = torch.stack((-(b - a)[1], (b - a)[0])) / (b - a).norm()
    shoulder = 2.5 * float(lines.sigma_mm[c])  # past the valley, on the wider light profile
    return torch.stack((middle, middle + shoulder * normal, middle + 40 * normal))[None]   # [1, 3, 2]


def test_a_crease_darkens_its_line_lightens_its_shoulders_and_leaves_the_rest(lines):
    points = glabella_points(lines)
    scale = torch.tensor([8.0])  # px per mm: wide enough that the profile is not widened
    off = crease_shading(points, activation(), lines, scale)
    assert torch.equal(off, torch.ones(1, 3))
    on = crease_shading(points, activation(AU4_R=1.0), lines, scale)[0]
    assert on[0] < 0.9                          # the valley
    assert 1.0 < on[1] <= FACTOR_RANGE[1]       # a shoulder, 2.5 sigma to the side
    assert on[2] == pytest.approx(1.0, abs=1e-6)
    half = crease_shading(points, activation(AU4_R=0.5), lines, scale)[0]
    assert on[0] < half[0] < 1.0                # deeper with the activation
    # the other side's action unit shades this side's crease only with its far shoulder (~12 mm away)
    other = crease_shading(points, activation(AU4_L=1.0), lines, scale)[0, 0]
    assert abs(float(other) - 1.0) < 0.05 * (1.0 - float(on[0]))


def test_small_faces_get_a_wider_fainter_crease(lines):
    points = glabella_points(lines)
    sharp = crease_shading(points, activation(AU4_R=1.0), lines, torch.tensor([8.0]))[0]
    small = crease_shading(points, activation(AU4_R=1.0), lines, torch.tensor([0.2]))[0]  # 1 px = 5 mm
    assert sharp[0] < small[0] < 1.0
    assert small[1] < 1.0  # the shoulder point is inside the widened valley


def test_creases_fade_out_at_their_free_ends(lines):
    (c,) = [i for i, col in enumerate(lines.au_column.tolist()) if AU_KEYS[col] == "AU10_R"]
    segments = lines.segments[c]   # the last real segment repeated to the padded length
    ends = torch.stack((segments[0, 0], segments[-1, 1], (segments[1, 0] + segments[1, 1]) / 2))[None]
    factor = crease_shading(ends, activation(AU10_R=1.0), lines, torch.tensor([8.0]))[0]
    assert factor[0] == pytest.approx(1.0, abs=1e-3) and factor[1] == pytest.approx(1.0, abs=1e-3)
    assert factor[2] < 0.95


def test_forehead_rows_run_evenly_where_inner_and_outer_brow_raisers_and_both_sides_meet(model, lines):
    """With AU1 and AU2 both at full intensity on both sides each forehead row is one even line
    from the midline to its lateral fade: in its inner three quarters it neither fades (a gap where
    AU1's part ended and AU2's began) nor darkens twice (where the two overlapped, and on the
    midline, where the row meets its mirror image: 1.7 and 2.1 times as dark before)."""
    from affectsynth.render.creases import _FOREHEAD_ROWS

    landmarks = model.landmark_map("mp478").gather(model.mean[None])[0, :, :2]
    for row in _FOREHEAD_ROWS:
        xy = torch.stack([sum(w * landmarks[i] for i, w in point) for point in row])      # [P, 2] mm, the right side
        t = torch.linspace(0.0, 1.0, 200)[:, None]
        along = torch.cat([a + t * (b - a) for a, b in zip(xy[:-1], xy[1:])])              # points along the row
        arc = torch.cat((torch.zeros(1), (along[1:] - along[:-1]).norm(dim=1).cumsum(0)))
        inner = along[arc <= 0.75 * arc[-1]][None]
        dark = 1 - crease_shading(inner, activation(AU1_R=1.0, AU2_R=1.0, AU1_L=1.0, AU2_L=1.0), lines,
                                  torch.tensor([8.0]))[0]
        assert dark.min() > 0.05 and dark.max() < 1.25 * dark.min()
