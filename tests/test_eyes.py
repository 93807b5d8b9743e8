"""Rigid eyeballs of the default model (model/eyes.py) and the eyes' appearance (render/eyes.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.draw import polygon as polygon_pixels

from affectsynth.camera import rotation_from_euler_deg, to_image_space
from affectsynth.fit import Fitter
from affectsynth.landmarks import Landmarks
from affectsynth.model import FaceModel, build_default_model
from affectsynth.model.default import canonical_rig, expression_basis
from affectsynth.model.eyes import (CLEARANCE_MM, GLOBE_POLAR_DEG, MAX_FORNIX_MM, RENDER_DEPTH_MARGIN_MM, SIDES,
                                    eyeballs, ray_distances)
from affectsynth.model.face_model import MATERIALS
from affectsynth.render.eyes import (DEFAULT_COLOURS, EYE_CONTOURS, IRIS_LANDMARKS, IRIS_RADIUS_MM, MAX_CAMERA_GAZE_DEG,
                                     EyeAppearance, estimate_eye_appearance, eyeball_centres, eyeball_colour)
from affectsynth.render.raster import rasterize
from affectsynth.render.shade import interpolate

from .conftest import DEV_FACES, need_shared

PX_PER_MM = 8.0
WINDOW_MM = (50.0, 110.0)  # (height, width) of the rendered window around the eyes
#: Eye-region combinations of the EMFACS prototypes (surprise, fear, anger) and a squint.
COMBINATIONS = (("AU1", "AU2_L", "AU2_R", "AU5"), ("AU1", "AU2_L", "AU2_R", "AU4", "AU5", "AU7_L", "AU7_R"),
                ("AU4", "AU5", "AU7_L", "AU7_R"), ("AU6_L", "AU6_R", "AU7_L", "AU7_R"))
LUMA = torch.tensor([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def built() -> FaceModel:
    return build_default_model()


def _eyeball_vertices(model: FaceModel, side: str) -> np.ndarray:
    return model.regions["eyeball_" + side].numpy()


def _activations(model: FaceModel, names=(), weight: float = 1.0) -> torch.Tensor:
    out = torch.zeros(1, model.num_expressions)
    for name in names:
        out[0, model.exp_index(name)] = weight
    return out


def _render_eyes(model: FaceModel, vertices: torch.Tensor, yaw: float, pitch: float = 0.0,
                 eyeball_behind_mm: float = 0.0) -> dict:
    """Skin and eyeballs of one face [V, 3] seen at (yaw, pitch), in a window around the eyes,
    the eyeballs' depth moved ``eyeball_behind_mm`` away from the camera.

    Returns the eyeball pixels the view shows, those of them outside the projected lid loops
    (poke-through), and per eye the opening (inside the lid loop, no skin in front) and its
    empty pixels.
    """
    rotation = rotation_from_euler_deg(torch.tensor([float(yaw)]), torch.tensor([float(pitch)]), torch.zeros(1))
    centres = torch.tensor([model.meta["eyeballs"][s]["centre_mm"] for s in SIDES]).mean(0)
    height, width = (int(d * PX_PER_MM) for d in WINDOW_MM)
    centre_px = PX_PER_MM * (rotation[0] @ centres)[:2] * torch.tensor([1.0, -1.0])
    shift = torch.tensor([[width / 2, height / 2]]) - centre_px
    image = to_image_space(vertices[None], rotation, torch.tensor([PX_PER_MM]), shift)
    ball = torch.cat([model.regions["eyeball_" + s] for s in SIDES])
    image[0, ball, 2] -= eyeball_behind_mm * PX_PER_MM
    material = model.triangle_materials()
    skin = model.triangles[material == 0]
    eyeball = model.triangles[material == MATERIALS.index("eyeball")]
    both = rasterize(image, torch.cat((skin, eyeball)), (height, width)).tri_id[0].numpy()
    skin_drawn = rasterize(image, skin, (height, width)).tri_id[0].numpy() >= 0
    ball_shown = both >= len(skin)
    out = {"ball": int(ball_shown.sum())}
    in_loops = np.zeros((height, width), dtype=bool)
    for side in SIDES:
        loop = image[0, model.regions["eye_" + side], :2].numpy()
        rows, cols = polygon_pixels(loop[:, 1] - 0.5, loop[:, 0] - 0.5, (height, width))
        in_loops[rows, cols] = True
        out["opening_" + side] = int((~skin_drawn[rows, cols]).sum())
        out["gap_" + side] = int((both[rows, cols] < 0).sum())
    out["poke"] = int((ball_shown & ~in_loops).sum())  # an eyeball seen outside the eye openings
    return out


# ------------------------------------------------------------------------ geometry
def test_eyeball_part_sizes_and_shape(built):
    tri = built.triangles.numpy()
    eyeball_tris = built.materials["eyeball"].numpy()
    v = built.mean.double().numpy()
    seen = set()
    for side in SIDES:
        ids = _eyeball_vertices(built, side)
        assert 300 <= len(ids) <= 600 and not seen & set(ids.tolist())
        seen |= set(ids.tolist())
        eye = built.meta["eyeballs"][side]
        offset = v[ids] - eye["centre_mm"]
        distance = np.linalg.norm(offset, axis=1)
        assert distance.min() > eye["radius_mm"] - 1e-4 and distance.max() < eye["radius_mm"] + MAX_FORNIX_MM + 1e-4
        polar = np.degrees(np.arccos(offset[:, 2] / distance))
        globe = polar < GLOBE_POLAR_DEG
        assert globe.sum() > 100  # the cornea and the sclera around it: an exact sphere
        np.testing.assert_allclose(distance[globe], eye["radius_mm"], atol=1e-4)
        assert polar.max() < 110 and polar.max() > 100  # the front 2/3 of a sphere
    # every eyeball triangle is made of eyeball vertices, faces outward (counter-clockwise from outside)
    corners = v[tri[eyeball_tris]]
    assert set(np.unique(tri[eyeball_tris]).tolist()) == seen
    centre = np.where(corners[:, :1, :1] > 0, built.meta["eyeballs"]["L"]["centre_mm"],
                      built.meta["eyeballs"]["R"]["centre_mm"])[:, 0]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert ((normal * (corners.mean(1) - centre)).sum(1) > 0).all()
    # the skin comes first and keeps its MediaPipe vertices
    assert min(seen) >= len(built.regions["skin"])


def test_eyeballs_are_rigid_and_move_with_identity_as_a_translation(built):
    for side in SIDES:
        ids = torch.as_tensor(_eyeball_vertices(built, side))
        assert built.exp_basis[:, ids].abs().max() == 0  # no action unit moves an eyeball
        shift = built.id_basis[:, ids]
        assert (shift - shift[:, :1]).abs().max() < 1e-6  # one translation per identity mode
    generator = torch.Generator().manual_seed(0)
    out = built(torch.randn(3, built.num_identity, generator=generator),
                torch.rand(3, built.num_expressions, generator=generator))
    ids = torch.as_tensor(_eyeball_vertices(built, "L"))
    d = out.vertices[:, ids] - built.mean[ids]
    assert (d - d[:, :1]).abs().max() < 1e-4  # a rigid translation, whatever the face does


def test_identities_keep_the_lids_outside_the_eyeballs(built):
    """With 50 random identities (0.3 sd per mode) the lids stay >= 0.2 mm outside the sphere
    at rest, with AU5 and with AU43. (Moving the ball by the mean displacement of the lid
    loop instead, they sink up to 0.36 mm in.)"""
    coeffs = 0.3 * torch.randn(50, built.num_identity, generator=torch.Generator().manual_seed(0))
    for names in ((), ("AU5",), ("AU43",)):
        vertices = built(coeffs, _activations(built, names).expand(50, -1)).vertices
        for side in SIDES:
            ball = built.regions["eyeball_" + side]
            shift = (vertices[:, ball] - built.mean[ball]).mean(1)
            centre = torch.tensor(built.meta["eyeballs"][side]["centre_mm"]) + shift
            lids = torch.cat([built.regions["upper_lid_" + side], built.regions["lower_lid_" + side]])
            gap = (vertices[:, lids] - centre[:, None]).norm(dim=-1) - built.meta["eyeballs"][side]["radius_mm"]
            assert gap.min() > 0.2, (names, side, float(gap.min()))


@pytest.mark.parametrize("yaw", [0.0, 30.0, -30.0])
def test_no_poke_through_and_no_gap_in_any_expression(built, yaw):
    """At the mean identity no eyeball pixel shows outside the eye openings, rest pose, every action
    unit at full intensity, and the eye-region combinations of the prototypes; and the eye
    openings are filled: no pixel inside the lid loop is left without a surface."""
    poses = [()] + [(n,) for n in built.exp_names] + list(COMBINATIONS)
    for names in poses:
        r = _render_eyes(built, built(exp_coeffs=_activations(built, names)).vertices[0], yaw)
        assert r["poke"] == 0, (names, r)
        assert r["gap_L"] == 0 and r["gap_R"] == 0, (names, r)


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (30, 0), (-30, 0), (0, 20), (0, -20)])
def test_widened_eyes_are_filled_and_closed_eyes_cover_the_eyeballs(built, yaw, pitch):
    wide = _render_eyes(built, built(exp_coeffs=_activations(built, ["AU5"])).vertices[0], yaw, pitch)
    rest = _render_eyes(built, built().vertices[0], yaw, pitch)
    for side in SIDES:
        assert wide["opening_" + side] > 1.15 * rest["opening_" + side] > 0  # AU5 opens the eye wider
        assert wide["gap_" + side] == 0
    assert wide["poke"] == 0
    closed = _render_eyes(built, built(exp_coeffs=_activations(built, ["AU43"])).vertices[0], yaw, pitch)
    assert closed["ball"] == 0


def test_fornix_stays_inside_the_skin(built):
    """Along every eyeball vertex's direction the skin (rest, AU5, AU43) lies at least the
    clearance beyond it (where it is not the sphere, which the lids never enter)."""
    tri = built.triangles[built.triangle_materials() == 0].numpy()
    for side in SIDES:
        eye = built.meta["eyeballs"][side]
        ids = _eyeball_vertices(built, side)
        centre = np.asarray(eye["centre_mm"])
        offset = built.mean.double().numpy()[ids] - centre
        distance = np.linalg.norm(offset, axis=1)
        fornix = distance > eye["radius_mm"] + 1e-3
        assert fornix.sum() > 50
        for names in ((), ("AU5",), ("AU43",)):
            skin = built(exp_coeffs=_activations(built, names)).vertices[0].double().numpy()
            room = ray_distances(centre, offset[fornix] / distance[fornix, None], skin[tri])
            assert (room - distance[fornix]).min() >= CLEARANCE_MM - 1e-6, names


def _fitted_faces_keep_the_eyeballs_in_the_openings(model, identity: torch.Tensor) -> None:
    """With ``identity`` [1, K] no eyeball pixel outside the eye openings in any of the eye
    poses at 0 and +-30 degrees of yaw, the eyeball tested RENDER_DEPTH_MARGIN_MM behind."""
    for names in ((), ("AU5",), ("AU43",)) + COMBINATIONS:
        vertices = model(identity, _activations(model, names)).vertices[0]
        for yaw in (0.0, 30.0, -30.0):
            r = _render_eyes(model, vertices, yaw, eyeball_behind_mm=RENDER_DEPTH_MARGIN_MM)
            assert r["poke"] == 0, (names, yaw, r)


def test_lids_of_a_fitted_identity_cover_the_eyeballs_with_a_depth_margin(built, astronaut, mp_detector):
    """A translation cannot follow everything an identity does to the lids' shape, so with a
    fitted identity the lids may dip slightly into the ball; an eyeball tested for depth
    RENDER_DEPTH_MARGIN_MM behind (as a renderer should, see affectsynth.model.eyes) stays
    behind them."""
    _fitted_faces_keep_the_eyeballs_in_the_openings(built, Fitter(built)(mp_detector(astronaut)).id_coeffs)


def test_lids_of_the_dev_identities_cover_the_eyeballs_with_a_depth_margin(built, mp_detector):
    import imageio.v3 as iio

    for path in sorted(need_shared(DEV_FACES).glob("*/neutral.*")):
        fit = Fitter(built)(mp_detector(np.ascontiguousarray(iio.imread(path)[..., :3]))[:1])
        _fitted_faces_keep_the_eyeballs_in_the_openings(built, fit.id_coeffs)


def test_build_refuses_fields_that_push_the_lids_into_the_eyeballs():
    rig = canonical_rig()
    names, expression = expression_basis(rig)
    inward = np.concatenate([expression, np.tile([0.0, 0.0, -8.0], (1, len(rig.vertices), 1))])
    with pytest.raises(ValueError, match="inside the eyeball .sink."):
        eyeballs(rig, names + ["sink"], inward, np.zeros((2, len(rig.vertices), 3)), first=len(rig.vertices))


# ------------------------------------------------------------------------ appearance
def _photo(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _appearance(model, image, detector):
    landmarks = detector(image)[:1]
    fit = Fitter(model)(landmarks)
    return landmarks, fit, estimate_eye_appearance(_photo(image), landmarks, fit, model)


def _painted_irises(model, fit, appearance, size) -> tuple[torch.Tensor, torch.Tensor]:
    """([2, 2] centroid (px), [2] height over width) of the pixels where eyeball_colour paints
    the iris, per eye, drawing the eyeballs alone at the photo's pose."""
    vertices = fit.vertices(model)
    image = fit.image_points(vertices)
    faces = model.triangles[model.materials["eyeball"]]
    frags = rasterize(image, faces, size)
    points = interpolate(vertices, frags, faces)                                             # [1, H, W, 3]
    colour = eyeball_colour(points.reshape(1, -1, 3), appearance).reshape(*points.shape)
    out, aspect = [], []
    for e in range(2):
        sclera, iris = appearance.sclera[0, e], appearance.iris[0, e]
        painted = (colour[0] - sclera).norm(dim=-1) > 0.5 * (iris - sclera).norm()
        to_centres = (points[0, :, :, None] - appearance.centre[0]).norm(dim=-1)                  # [H, W, 2]
        nearer = to_centres[..., e] < to_centres[..., 1 - e]
        rows, cols = torch.nonzero(painted & nearer & frags.mask[0], as_tuple=True)
        out.append(torch.stack((cols.float().mean(), rows.float().mean())) + 0.5)
        aspect.append((rows.max() - rows.min() + 1) / (cols.max() - cols.min() + 1))
    return torch.stack(out), torch.stack(aspect)


def _check_appearance(model, landmarks, fit, appearance: EyeAppearance, size) -> None:
    iris_px = landmarks.xy[0, list(IRIS_LANDMARKS)]                                          # [2, 2]
    reprojected = fit.image_points(appearance.limbus_centres())[0, :, :2]
    # exact unless the gaze was held to MAX_GAZE_DEG (faces_140_y_f: 25.3 deg up, 1 px in 3543)
    assert (reprojected - iris_px).norm(dim=-1).max() < 1.5, (reprojected, iris_px)
    painted, aspect = _painted_irises(model, fit, appearance, size)
    assert (painted - iris_px).norm(dim=-1).max() < 2.0, (painted, iris_px)
    # round, as the iris of someone who looks at the camera is (faces_140_y_f: 0.77 as tall as
    # wide when painted at the gaze the fitted eyeball centres gave, 31 deg up)
    assert (aspect > 0.9).all(), aspect
    iris_mm = appearance.radius * appearance.iris_angle.sin()
    assert ((iris_mm > 0.8 * IRIS_RADIUS_MM - 1e-4) & (iris_mm < 1.2 * IRIS_RADIUS_MM + 1e-4)).all()
    # they look at the camera (back-projected from the fitted eyeball centres, 5-31 deg above it)
    toward_camera = fit.rotation[0].T @ torch.tensor([0.0, 0.0, 1.0])
    assert (appearance.gaze[0] @ toward_camera).min() > math.cos(math.radians(MAX_CAMERA_GAZE_DEG + 0.1))
    luma = {k: getattr(appearance, k)[0] @ LUMA for k in ("sclera", "iris", "pupil")}
    assert (luma["sclera"] > luma["iris"] + 0.2).all() and (luma["iris"] >= luma["pupil"]).all(), luma
    assert bool(appearance.measured_gaze.all())


def test_appearance_on_the_astronaut(built, astronaut, mp_detector):
    landmarks, fit, appearance = _appearance(built, astronaut, mp_detector)
    _check_appearance(built, landmarks, fit, appearance, astronaut.shape[:2])
    # brown eyes, red-dominant iris, a near-black pupil
    assert (appearance.iris[0, :, 0] > appearance.iris[0, :, 2] + 0.1).all()
    assert (appearance.pupil[0] @ LUMA < 0.15).all()


def test_appearance_on_the_dev_photos(built, mp_detector):
    import imageio.v3 as iio

    photos = sorted(need_shared(DEV_FACES).glob("*/neutral.*"))
    assert len(photos) == 7
    for path in photos:
        image = np.ascontiguousarray(iio.imread(path)[..., :3])
        landmarks, fit, appearance = _appearance(built, image, mp_detector)
        _check_appearance(built, landmarks, fit, appearance, image.shape[:2])


def _exact_fit(model: FaceModel, yaw: float, pitch: float, roll: float):
    """A face of the mean shape at a known pose in an 800 x 600 image, and its fit."""
    rotation = rotation_from_euler_deg(torch.tensor([yaw]), torch.tensor([pitch]), torch.tensor([roll]))
    xy = to_image_space(model.landmarks(model().vertices, "mp478"), rotation, torch.tensor([6.0]),
                        torch.tensor([[400.0, 300.0]]))[..., :2]
    landmarks = Landmarks(xy=xy, depth=torch.full((1, 478), float("nan")), box=torch.tensor([[0.0, 0.0, 800.0, 600.0]]),
                          score=torch.ones(1), image_size=torch.tensor([[600, 800]]), scheme="mp478")
    return landmarks, Fitter(model)(landmarks)


def _with_iris(landmarks: Landmarks, fit, centre, radius, gaze, iris_angle) -> Landmarks:
    """``landmarks`` with the iris points of eyes [1, 2] of known gaze and iris angle: the
    limbus's projected centre and its extreme points right, up, left and down."""
    xy = landmarks.xy.clone()
    limbus = centre + (radius * iris_angle.cos())[..., None] * gaze                          # [1, 2, 3]
    for e, first in enumerate(IRIS_LANDMARKS):
        g = gaze[0, e]
        u = torch.nn.functional.normalize(torch.linalg.cross(g, torch.tensor([0.0, 1.0, 0.0])), dim=0)
        w = torch.linalg.cross(g, u)
        t = torch.linspace(0, 2 * math.pi, 7201)[:, None]
        rim = limbus[0, e] + radius[0, e] * iris_angle[0, e].sin() * (t.cos() * u + t.sin() * w)
        px = fit.image_points(rim[None])[0, :, :2]
        xy[0, first] = fit.image_points(limbus[:, e:e + 1])[0, 0, :2]
        xy[0, first + 1:first + 5] = torch.stack([px[px[:, 0].argmax()], px[px[:, 1].argmin()],
                                                  px[px[:, 0].argmin()], px[px[:, 1].argmax()]])
    return Landmarks(xy=xy, depth=landmarks.depth, box=landmarks.box, score=landmarks.score,
                     image_size=landmarks.image_size, scheme="mp478")


def test_gaze_and_iris_size_round_trip_under_a_turned_head(built):
    """Iris landmarks made from a known gaze and iris size give them back, for a gaze near the
    camera's view axis; a gaze further from it is taken as MAX_CAMERA_GAZE_DEG from it, the
    eyeball moved so that the iris's rim stays where the landmarks put it."""
    landmarks, fit = _exact_fit(built, 25.0, -8.0, 4.0)
    centre, radii = eyeball_centres(built, fit.id_coeffs)
    radius = radii.expand(1, 2)
    iris_angle = torch.asin(torch.tensor([[5.5, 6.3]]) / radius)
    view = fit.rotation[0, 2]                                   # the camera's +z in model axes, 26 deg from +z
    ahead = torch.tensor([0.0, 0.0, 1.0])
    toward = torch.nn.functional.normalize(ahead - (ahead @ view) * view, dim=0)
    for degrees in (5.0, -30.0):  # toward the face's +z (within both limits), and away from it
        turn = math.radians(degrees)
        gaze = (math.cos(turn) * view + math.sin(turn) * toward).expand(1, 2, 3)
        estimate = estimate_eye_appearance(torch.zeros(1, 3, 600, 800),
                                           _with_iris(landmarks, fit, centre, radius, gaze, iris_angle), fit, built)
        # the rim extremes along x and y give the major axis only nearly: iris angle to 0.6 deg
        torch.testing.assert_close(estimate.iris_angle, iris_angle, atol=1e-2, rtol=0)
        limbus_px = fit.image_points(estimate.limbus_centres())[0, :, :2]
        true_px = fit.image_points(centre + (radius * iris_angle.cos())[..., None] * gaze)[0, :, :2]
        assert (limbus_px - true_px).norm(dim=-1).max() < 0.05
        assert torch.rad2deg(torch.acos((estimate.gaze @ view).clamp(max=1.0))).max() < MAX_CAMERA_GAZE_DEG + 0.1
        if degrees > 0:
            error_deg = torch.rad2deg(torch.acos((estimate.gaze * gaze).sum(-1).clamp(max=1.0)))
            assert error_deg.max() < 0.5, error_deg
            torch.testing.assert_close(estimate.centre, centre)


def test_without_iris_landmarks_the_gaze_is_straight_ahead(built, astronaut, mp_detector):
    """ibug68 landmarks (here the fitted model's, as a dlib detector would give): gaze +z,
    the prior iris size, colours by brightness from the eye openings."""
    fit = Fitter(built)(mp_detector(astronaut)[:1])
    xy = fit.image_points(built.landmarks(fit.vertices(built), "ibug68"))[..., :2]
    landmarks = Landmarks(xy=xy, depth=torch.full((1, 68), float("nan")), box=torch.tensor([[0.0, 0.0, 512.0, 512.0]]),
                          score=torch.ones(1), image_size=torch.tensor([[512, 512]]), scheme="ibug68")
    ibug_fit = Fitter(built)(landmarks)
    appearance = estimate_eye_appearance(_photo(astronaut), landmarks, ibug_fit, built)
    assert not appearance.measured_gaze.any()
    torch.testing.assert_close(appearance.gaze, torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 3))
    torch.testing.assert_close(appearance.radius * appearance.iris_angle.sin(), torch.full((1, 2), IRIS_RADIUS_MM))
    luma = {k: getattr(appearance, k)[0] @ LUMA for k in ("sclera", "iris", "pupil")}
    assert (luma["sclera"] > luma["iris"] + 0.2).all() and (luma["iris"] > luma["pupil"]).all(), luma


def test_closed_eyes_in_the_photo_get_the_default_colours(built):
    """An eye the photo shows closed (no pixels inside its lid contour) gets DEFAULT_COLOURS."""
    landmarks, fit = _exact_fit(built, 0.0, 0.0, 0.0)
    xy = landmarks.xy.clone()
    for contour in EYE_CONTOURS["mp478"]:
        ids = list(contour)
        xy[0, ids, 1] = xy[0, ids, 1].mean()  # the lid contour collapsed onto a line
    closed = Landmarks(xy=xy, depth=landmarks.depth, box=landmarks.box, score=landmarks.score,
                       image_size=landmarks.image_size, scheme="mp478")
    appearance = estimate_eye_appearance(torch.rand(1, 3, 600, 800), closed, fit, built)
    for k, v in DEFAULT_COLOURS.items():
        torch.testing.assert_close(getattr(appearance, k), torch.tensor(v).expand(1, 2, 3))


# ------------------------------------------------------------------------ eyeball_colour
def _two_eyes(dtype=torch.float32) -> EyeAppearance:
    centre = torch.tensor([[[31.6, 26.4, 25.3], [-31.6, 26.4, 25.3]]], dtype=dtype)
    gaze = torch.nn.functional.normalize(torch.tensor([[[0.1, 0.05, 1.0], [0.0, 0.0, 1.0]]], dtype=dtype), dim=-1)

    def colours(*rgb):
        return torch.tensor([rgb], dtype=dtype)

    return EyeAppearance(centre=centre, radius=torch.full((1, 2), 12.0, dtype=dtype), gaze=gaze,
                         iris_angle=torch.full((1, 2), 0.5, dtype=dtype),
                         iris=colours((0.4, 0.3, 0.2), (0.2, 0.3, 0.5)), pupil=colours((0.05,) * 3, (0.02,) * 3),
                         sclera=colours((0.9, 0.85, 0.8), (0.8, 0.8, 0.8)),
                         measured_gaze=torch.ones(1, dtype=torch.bool))


def _on_eye(appearance: EyeAppearance, eye: int, rho: torch.Tensor) -> torch.Tensor:
    """Points [1, N, 3] on the eyeball at normalised angles rho [N] from the gaze (toward +x)."""
    g = appearance.gaze[0, eye]
    side = torch.nn.functional.normalize(torch.linalg.cross(g, g.new_tensor([0.0, 1.0, 0.0])), dim=0)
    angle = rho[:, None] * appearance.iris_angle[0, eye]
    return (appearance.centre[0, eye] + appearance.radius[0, eye] * (angle.cos() * g + angle.sin() * side))[None]


def test_eyeball_colour_pupil_iris_limbus_sclera():
    a = _two_eyes()
    for eye in range(2):
        colour = eyeball_colour(_on_eye(a, eye, torch.tensor([0.0, 0.6, 0.97, 2.0])), a)[0]
        torch.testing.assert_close(colour[0], a.pupil[0, eye])
        torch.testing.assert_close(colour[1], a.iris[0, eye])
        assert (colour[2] < 0.8 * a.iris[0, eye]).all()  # the limbal ring darkens the iris's rim
        torch.testing.assert_close(colour[3], a.sclera[0, eye])
    # radial variation inside the iris, and monotone in brightness from the collarette to the limbus
    ring = eyeball_colour(_on_eye(a, 0, torch.linspace(0.4, 0.96, 30)), a)[0] @ LUMA
    assert (ring[1:] <= ring[:-1] + 1e-6).all() and ring[0] > ring[-1] + 0.05


def test_eyeball_colour_batches_follow_dtype_and_are_differentiable():
    a = _two_eyes(torch.float64)
    points = torch.cat((_on_eye(a, 0, torch.linspace(0, 1.5, 20, dtype=torch.float64)),
                        _on_eye(a, 1, torch.linspace(0, 1.5, 20, dtype=torch.float64))), 1).requires_grad_()
    iris = a.iris.clone().requires_grad_()
    colour = eyeball_colour(points, EyeAppearance(a.centre, a.radius, a.gaze, a.iris_angle, iris, a.pupil,
                                                  a.sclera, a.measured_gaze))
    assert colour.shape == (1, 40, 3) and colour.dtype == torch.float64
    # each point takes the colours of the eye whose centre is nearer
    torch.testing.assert_close(colour[0, 39], a.sclera[0, 1])
    colour.sum().backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0
    assert iris.grad[0, 0].sum() > 0 and iris.grad[0, 1].sum() > 0
    batch = eyeball_colour(points.detach().expand(3, -1, -1), EyeAppearance(
        *(t.expand(3, *t.shape[1:]) for t in (a.centre, a.radius, a.gaze, a.iris_angle, a.iris, a.pupil, a.sclera,
                                              a.measured_gaze))))
    torch.testing.assert_close(batch, colour.detach().expand(3, -1, -1))


def test_an_eye_without_visible_sclera_borrows_the_other_eyes():
    """A squinting eye's "sclera" pixels are lids and lashes, barely brighter than its iris:
    the other eye's sclera is used, or the default when neither is clearly brighter."""
    from affectsynth.render.eyes import _plausible_sclera

    iris = torch.tensor([[[0.2, 0.1, 0.1], [0.2, 0.1, 0.1]], [[0.2, 0.1, 0.1], [0.2, 0.1, 0.1]]])
    sclera = torch.tensor([[[0.3, 0.2, 0.2], [0.8, 0.8, 0.75]], [[0.3, 0.2, 0.2], [0.35, 0.25, 0.2]]])
    out = _plausible_sclera(sclera, iris)
    torch.testing.assert_close(out[0], torch.tensor([[0.8, 0.8, 0.75], [0.8, 0.8, 0.75]]))
    torch.testing.assert_close(out[1], torch.tensor(DEFAULT_COLOURS["sclera"]).expand(2, 3))
