"""The eyes' appearance, measured on the photo, for the eyeball surface the photo did not show.

A target that widens the eyes (AU5) uncovers sclera and iris that the photo's lids hid;
the eyeballs (:mod:`affectsynth.model.eyes`) are rigid, so every eyeball point the photo
did show keeps its own pixel, and only the uncovered rest is painted from here: a sclera,
an iris disc around the gaze direction (darker toward a soft limbal ring, a little lighter
around the pupil) and a pupil, in colours measured on the same eye.

Geometry (:mod:`affectsynth.camera` conventions): each eye is a sphere of centre ``c`` and
radius ``r`` in model space, mm. The iris is the part of the sphere within ``r sin(alpha)`` of
the gaze axis (the line through ``c`` along the unit gaze ``g``; ``alpha`` is the iris's
angular radius); its rim, the limbus, is the circle of that radius around
``c + r cos(alpha) g``. Under the weak-perspective camera that circle's centre projects to the
centre of its image, an ellipse, which is what MediaPipe's iris centre landmark marks; so the
gaze is found by back-projecting that landmark onto the sphere of radius ``r cos(alpha)`` (its
front side). It is kept within :data:`MAX_CAMERA_GAZE_DEG` of the camera's view axis, the
sphere moved so that the limbus's centre stays on the landmark (the fitted eyeball centre is
the less reliable of the two), and within :data:`MAX_GAZE_DEG` of straight ahead. The iris
size comes from the landmarks' iris radius in pixels over the camera scale, kept near the
human visible iris diameter of 11.7 mm (:data:`IRIS_RADIUS_MM`). An eyeball point's place in
the iris is its distance from the gaze axis over the limbus's radius: with the sphere moved,
the angle from its centre would not be (an iris painted by it was 0.74 as tall as wide).

Colours are in the photo's own values (no gamma handling), measured inside the eye opening
(the landmarks' lid contour, :data:`EYE_CONTOURS`, shrunk by :data:`LID_MARGIN_MM` to keep
lashes and lid margins out): pixels are classed by their distance from the iris landmark
over the iris radius (the iris faces the camera, nearly). Without iris landmarks (the "ibug68" scheme) the gaze is taken to be the
eyeball's +z, the iris of the prior size, and the colours come from brightness quantiles of
the opening's pixels. Where an eye shows no pixels of a kind (closed in the photo, or tiny)
the :data:`DEFAULT_COLOURS` are used; so is the other eye's sclera, or the default, where
an eye's sclera does not come out clearly brighter than its iris (a squint or a smile can
hide the sclera, leaving lids and lashes in its place).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..fit import FitResult
from ..landmarks import Landmarks
from ..model.eyes import SIDES
from ..model.face_model import FaceModel
from . import kernels
from .polygon import polygon_pixels

__all__ = ["EyeAppearance", "estimate_eye_appearance", "eyeball_colour", "eyeball_layers", "nearest_eye", "luma",
           "LUMA", "eyeball_centres", "IRIS_LANDMARKS", "IRIS_RADIUS_MM", "PUPIL_FRACTION", "EYE_CONTOURS"]

#: mp478 index of each eye's iris centre (L, R); the next 4 are points on its rim (image
#: right, up, left, down).
IRIS_LANDMARKS = (473, 468)
#: Each scheme's lid contour landmarks of each eye (L, R), in order around the opening.
EYE_CONTOURS = {
    "mp478": ((263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249),
              (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)),
    "ibug68": ((42, 43, 44, 45, 46, 47), (36, 37, 38, 39, 40, 41)),
}
#: Visible iris (limbus) radius of the adult human eye, mm (horizontal diameter ~11.7 mm).
IRIS_RADIUS_MM = 5.85
#: A measured iris radius is kept within these multiples of IRIS_RADIUS_MM.
IRIS_RADIUS_RANGE = (0.8, 1.2)
#: Pupil radius as a fraction of the iris radius (a 4 mm pupil in daylight).
PUPIL_FRACTION = 0.35
#: The gaze is kept within this angle of the eyeball's +z (straight ahead), so that the iris
#: stays on the spherical part of the eyeball (:data:`affectsynth.model.eyes.GLOBE_POLAR_DEG`).
MAX_GAZE_DEG = 25.0
#: ... and within this angle of the camera's view axis. The fitted eyeball centres project up to
#: 5 mm from where the eyes' own would, below the iris on most of the dev photos (the fit's head
#: pitch: a point 12 mm behind the cornea moves 4 mm in the image for 20 degrees), which read
#: as gazes 6-31 degrees up at subjects who look into the camera, and drew the iris as a disc
#: that steep: a narrow ellipse whose top, uncovered by a raised lid, was painted sclera across
#: the photo's round iris. Such a gaze is taken as this angle and the sphere moved behind the iris
#: (:func:`estimate_eye_appearance`): a design choice for photos of people who face the camera,
#: as FER datasets' are; an eye that truly looks 30 degrees aside is painted as if at this angle.
MAX_CAMERA_GAZE_DEG = 10.0
#: Pixels closer than this (mm, at the face's scale) to the lid loop are not sampled.
LID_MARGIN_MM = 0.6
#: Colour classes by normalised radius rho (distance from the iris centre over the iris's
#: radius): the pupil within PUPIL_CORE,
#: the iris between IRIS_RING, the sclera beyond SCLERA_FROM.
PUPIL_CORE, IRIS_RING, SCLERA_FROM = 0.25, (0.45, 0.85), 1.25
#: The sclera colour is the median of the sclera pixels whose whiteness (luminance minus
#: chroma) is above this quantile.
SCLERA_QUANTILE = 0.75
#: A sclera colour less than this much brighter (luminance) than the iris is not trusted.
MIN_SCLERA_CONTRAST = 0.25
#: Without iris landmarks: luminance quantile ranges of the opening's pixels for each class.
QUANTILES = {"pupil": (0.0, 0.1), "iris": (0.1, 0.4), "sclera": (0.7, 1.0)}
#: Colours of an eye that shows no pixels of a kind (a shaded sclera, a brown iris).
DEFAULT_COLOURS = {"sclera": (0.78, 0.74, 0.72), "iris": (0.30, 0.21, 0.15), "pupil": (0.04, 0.04, 0.04)}
#: Iris shading, by normalised radius rho (distance from the gaze axis over the limbus's radius): the
#: limbus darkens it by LIMBAL_DARKENING from rho = LIMBAL_FROM to 1; around the pupil it is
#: COLLARETTE_GAIN lighter, fading out by rho = 0.6; edges (pupil, limbus) are EDGE_SOFTNESS wide.
LIMBAL_DARKENING, LIMBAL_FROM = 0.45, 0.75
COLLARETTE_GAIN = 0.12
EDGE_SOFTNESS = 0.06
#: Rec. 601 luminance weights of (R, G, B) (:func:`luma`).
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class EyeAppearance:
    """Both eyes of B faces (eye 0 = the subject's left, 1 = right, as in
    :data:`affectsynth.model.eyes.SIDES`), in the fitted faces' model space.

    Attributes:
        centre: [B, 2, 3] eyeball centres, mm.
        radius: [B, 2] eyeball radii, mm.
        gaze: [B, 2, 3] unit vectors from the centre through the iris centre.
        iris_angle: [B, 2] the iris's angular radius on the eyeball, radians.
        iris, pupil, sclera: [B, 2, 3] colours, in the photo's values.
        measured_gaze: [B] bool, True where the gaze and iris size come from iris landmarks
            (False: the eyeball's +z and the prior size).
    """

    centre: torch.Tensor
    radius: torch.Tensor
    gaze: torch.Tensor
    iris_angle: torch.Tensor
    iris: torch.Tensor
    pupil: torch.Tensor
    sclera: torch.Tensor
    measured_gaze: torch.Tensor

    def limbus_centres(self) -> torch.Tensor:
        """[B, 2, 3] centres of the iris rims (where the iris landmark points), mm."""
        return self.centre + (self.radius * self.iris_angle.cos())[..., None] * self.gaze


def eyeball_centres(model: FaceModel, id_coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eyeball centres [B, 2, 3] (mm) and radii [2] of B identities [B, K].

    The centres are ``meta["eyeballs"]`` moved by the identity displacement of the eyeball
    regions (a translation: the eyeballs are rigid); a model without eyeball geometry uses
    that of the lid loops ("eye_L", "eye_R"), which is how the default model defines it.
    """
    centres, radii = [], []
    for side in SIDES:
        meta = model.meta["eyeballs"][side]
        ids = model.regions["eyeball_" + side] if "eyeball_" + side in model.regions else model.regions["eye_" + side]
        # (index_select: the same values as id_basis[:, ids], ~3x faster on the CPU)
        shift = torch.einsum("bk,kc->bc", id_coeffs.to(model.dtype), model.id_basis.index_select(1, ids).mean(1))
        centres.append(model.mean.new_tensor(meta["centre_mm"]) + shift)
        radii.append(float(meta["radius_mm"]))
    return torch.stack(centres, 1), model.mean.new_tensor(radii)


def _smoothstep(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _camera_offsets(points_px: torch.Tensor, centre_px: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Image points [..., 2] px relative to projected centres [..., 2], in camera axes (x
    right, y up), mm; ``scale`` broadcasts against [...] (px per mm)."""
    d = (points_px - centre_px) / scale[..., None]
    return torch.stack((d[..., 0], -d[..., 1]), -1)


def _front_of_sphere(offsets: torch.Tensor, radius) -> torch.Tensor:
    """Unit camera-axes directions [..., 3] from a sphere's centre to the front point under
    camera-axes offsets [..., 2] (mm); off the sphere, the direction of the silhouette point."""
    lateral = offsets / radius
    lateral = lateral / lateral.norm(dim=-1, keepdim=True).clamp(min=1.0)
    depth = (1.0 - (lateral ** 2).sum(-1, keepdim=True)).clamp(min=0.0).sqrt()
    return torch.cat((lateral, depth), -1)


def _within_cone(directions: torch.Tensor, max_deg: float) -> torch.Tensor:
    """Unit vectors [..., 3] turned toward +z where they are more than ``max_deg`` from it."""
    z = directions.new_tensor([0.0, 0.0, 1.0])
    side = directions - directions[..., 2:] * z
    side = side / side.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    limit = math.radians(max_deg)
    clamped = math.cos(limit) * z + math.sin(limit) * side
    return torch.where((directions[..., 2:] < math.cos(limit)), clamped, directions)


def _median_colour(pixels: torch.Tensor, default: tuple[float, float, float]) -> torch.Tensor:
    """Per-channel median [3] of pixels [N, 3], or ``default`` when N = 0."""
    if pixels.shape[0] == 0:
        return pixels.new_tensor(default)
    return pixels.median(0).values


def luma(colours: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [...] the luminance (Rec. 601 weights) of colours in the photo's values."""
    return (colours * colours.new_tensor(LUMA)).sum(-1)


def _classified_colours(colours: torch.Tensor, rho: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Sclera, iris and pupil colours [3] of an eye's opening pixels [N, 3], classed by their
    normalised radius ``rho`` [N] (:data:`PUPIL_CORE`), or by brightness when it is None."""
    if rho is None:
        brightness = luma(colours)
        if colours.shape[0] == 0:
            sets = {k: colours for k in QUANTILES}
        else:
            order, n = brightness.argsort(), len(brightness)
            sets = {k: colours[order[int(lo * n):max(int(lo * n) + 1, int(hi * n))]]
                    for k, (lo, hi) in QUANTILES.items()}
        return {k: _median_colour(v, DEFAULT_COLOURS[k]) for k, v in sets.items()}
    if kernels.use_kernels(colours, rho):   # these steps in one pass
        medians, found = kernels.eye_colours(colours, rho, PUPIL_CORE, IRIS_RING, SCLERA_FROM, SCLERA_QUANTILE, LUMA)
        return {k: medians[i] if found[i] else colours.new_tensor(DEFAULT_COLOURS[k])
                for i, k in enumerate(("sclera", "iris", "pupil"))}
    sclera, pupil = colours[rho > SCLERA_FROM], colours[rho < PUPIL_CORE]
    # sclera: its brightest, greyest quarter (lids shade it and lashes and lid margins reach
    # into a narrow opening; the caruncle is pink); pupil: its darker half (catch-lights)
    whiteness = luma(sclera) - (sclera.amax(-1) - sclera.amin(-1))
    lit = sclera[whiteness >= whiteness.quantile(SCLERA_QUANTILE)] if len(sclera) else sclera
    dark = pupil[luma(pupil) <= luma(pupil).median()] if len(pupil) else pupil
    ring = colours[(rho > IRIS_RING[0]) & (rho < IRIS_RING[1])]
    return {"sclera": _median_colour(lit, DEFAULT_COLOURS["sclera"]),
            "iris": _median_colour(ring, DEFAULT_COLOURS["iris"]),
            "pupil": _median_colour(dark, DEFAULT_COLOURS["pupil"])}


def _plausible_sclera(sclera: torch.Tensor, iris: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] sclera colours, each at least MIN_SCLERA_CONTRAST brighter than its iris or
    replaced: by the other eye's when that one is, else by the default. (An eye narrowed by a
    smile or a squint may show no sclera at all; its "sclera" pixels are lids and lashes.)"""
    plausible = luma(sclera) >= luma(iris) + MIN_SCLERA_CONTRAST                          # [B, 2]
    other = sclera.flip(1)
    default = sclera.new_tensor(DEFAULT_COLOURS["sclera"]).expand_as(sclera)
    fallback = torch.where(plausible.flip(1)[..., None], other, default)
    return torch.where(plausible[..., None], sclera, fallback)


def estimate_eye_appearance(photo: torch.Tensor, landmarks: Landmarks, fit: FitResult,
                            model: FaceModel) -> EyeAppearance:
    """Gaze, iris size and eye colours of B faces in one photo.

    Args:
        photo: [1, C, H, W] float in [0, 1] (C >= 3; RGB first).
        landmarks: the B faces' landmarks: mp478 (with iris points) or ibug68.
        fit: their fit (:class:`~affectsynth.fit.FitResult`, batch B) to ``model``.
        model: the face model (``meta["eyeballs"]``; see :func:`eyeball_centres`).
    Returns:
        :class:`EyeAppearance` on the photo's device, in its dtype.
    """
    dtype, device = photo.dtype, photo.device
    b = fit.batch_size
    rotation, scale = fit.rotation.to(device, dtype), fit.scale.to(device, dtype)
    centre, radii = eyeball_centres(model, fit.id_coeffs)
    centre, radius = centre.to(device, dtype), radii.to(device, dtype).expand(b, -1)
    centre_px = fit.image_points(centre.to(fit.rotation))[..., :2].to(device, dtype)       # [B, 2, 2]

    measured = landmarks.scheme == "mp478"
    if measured:
        xy = landmarks.xy.to(device, dtype)
        iris_px = torch.stack([xy[:, i:i + 5] for i in IRIS_LANDMARKS], 1)                # [B, 2, 5, 2]
        rim = iris_px[:, :, 1:] - iris_px[:, :, :1]
        half_widths = torch.stack(((rim[:, :, 0] - rim[:, :, 2]).norm(dim=-1),
                                   (rim[:, :, 1] - rim[:, :, 3]).norm(dim=-1)), -1) / 2     # [B, 2, 2]
        # the larger half-width is the projected circle's major axis: its true radius
        iris_mm = (half_widths.amax(-1) / scale[:, None]).clamp(*(f * IRIS_RADIUS_MM for f in IRIS_RADIUS_RANGE))
        iris_angle = torch.asin((iris_mm / radius).clamp(max=1.0))
        limbus = (radius * iris_angle.cos())[..., None]                                   # [B, 2, 1] mm
        gaze_camera = _front_of_sphere(_camera_offsets(iris_px[:, :, 0], centre_px, scale[:, None]), limbus)
        # Painted as seen: the iris faces the camera within MAX_CAMERA_GAZE_DEG, and the sphere is
        # moved (in the image plane mostly) so that its rim's centre stays on the landmark.
        gaze = _within_cone(_within_cone(gaze_camera, MAX_CAMERA_GAZE_DEG) @ rotation, MAX_GAZE_DEG)  # R^T: to model
        centre = centre + limbus * (gaze_camera @ rotation - gaze)
    else:
        iris_angle = torch.asin(IRIS_RADIUS_MM / radius)
        gaze = centre.new_tensor([0.0, 0.0, 1.0]).expand(b, 2, 3)

    contours = landmarks.xy.to(device, dtype)[:, list(EYE_CONTOURS[landmarks.scheme])]           # [B, 2, M, 2]
    colours = {k: [] for k in DEFAULT_COLOURS}
    for i in range(b):
        for e in range(2):
            pixels, where = polygon_pixels(photo[0], contours[i, e], LID_MARGIN_MM * float(scale[i]))
            rho = None
            if measured:  # the iris faces the camera (nearly): its rim is the landmarks' circle
                rho = _camera_offsets(where, iris_px[i, e, 0], scale[i]).norm(dim=-1) / iris_mm[i, e]
            for k, v in _classified_colours(pixels, rho).items():
                colours[k].append(v)
    stacked = {k: torch.stack(v).reshape(b, 2, 3) for k, v in colours.items()}
    stacked["sclera"] = _plausible_sclera(stacked["sclera"], stacked["iris"])
    return EyeAppearance(centre=centre, radius=radius, gaze=gaze, iris_angle=iris_angle, iris=stacked["iris"],
                         pupil=stacked["pupil"], sclera=stacked["sclera"],
                         measured_gaze=torch.full((b,), measured, dtype=torch.bool, device=device))


def nearest_eye(points: torch.Tensor, appearance: EyeAppearance) -> torch.Tensor:
    """[B, N] int64: which eye (0 or 1, as ``appearance``'s [B, 2] rows) each of the [B, N, 3]
    model-space eyeball points belongs to: the one whose centre is nearer."""
    return (points[:, :, None] - appearance.centre[:, None]).norm(dim=-1).argmin(-1)


def eyeball_layers(points: torch.Tensor, appearance: EyeAppearance) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layers :func:`eyeball_colour` mixes: the iris disc's colour (iris and pupil), how much
    of each point is sclera, and that eye's sclera colour.

    Args:
        points: [B, N, 3] model-space points on the eyeballs of B faces (each belongs to the
            eye whose centre is nearer).
        appearance: their :class:`EyeAppearance`.
    Returns:
        (disc [B, N, 3], sclera_share [B, N, 1] in [0, 1], sclera [B, N, 3]), differentiable
        w.r.t. ``points`` and the appearance's tensors.
    """
    a = appearance
    eye = nearest_eye(points, a)                                                            # [B, N]

    def per_point(t: torch.Tensor) -> torch.Tensor:                                         # [B, 2, ...] -> [B, N, ...]
        return torch.gather(t, 1, eye.view(*eye.shape, *([1] * (t.ndim - 2))).expand(-1, -1, *t.shape[2:]))

    offset = points - per_point(a.centre)
    gaze = per_point(a.gaze)
    along = (offset * gaze).sum(-1, keepdim=True)                                          # [B, N, 1]
    # distance from the gaze axis (clamped under the root: smooth gradients on the axis)
    lateral = ((offset - along * gaze) ** 2).sum(-1, keepdim=True).clamp(min=1e-12).sqrt()
    rho = lateral / (per_point(a.radius) * per_point(a.iris_angle).sin())[..., None]       # [B, N, 1]
    rho = torch.where(along > 0, rho, torch.full_like(rho, float("inf")))                 # the back: sclera
    iris_tone = per_point(a.iris) * (1.0 + COLLARETTE_GAIN * (1.0 - _smoothstep(rho, PUPIL_FRACTION, 0.6))) \
        * (1.0 - LIMBAL_DARKENING * _smoothstep(rho, LIMBAL_FROM, 1.0))
    in_pupil = 1.0 - _smoothstep(rho, PUPIL_FRACTION - EDGE_SOFTNESS / 2, PUPIL_FRACTION + EDGE_SOFTNESS / 2)
    in_iris = 1.0 - _smoothstep(rho, 1.0 - EDGE_SOFTNESS / 2, 1.0 + EDGE_SOFTNESS / 2)
    inner = in_pupil * per_point(a.pupil) + (1.0 - in_pupil) * iris_tone
    return inner, 1.0 - in_iris, per_point(a.sclera)


def eyeball_colour(points: torch.Tensor, appearance: EyeAppearance) -> torch.Tensor:
    """Colour of eyeball surface points: sclera, iris disc, pupil (see the module docstring).

    Args:
        points: [B, N, 3] model-space points on the eyeballs of B faces (each belongs to the
            eye whose centre is nearer).
        appearance: their :class:`EyeAppearance`.
    Returns:
        [B, N, 3] colours in the photo's values, differentiable w.r.t. ``points`` and the
        appearance's tensors.
    """
    disc, sclera_share, sclera = eyeball_layers(points, appearance)
    return ((1.0 - sclera_share) * disc + sclera_share * sclera).clamp(0.0, 1.0)
