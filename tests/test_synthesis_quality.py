"""What a synthesized face looks like, checked on real photos: an opened mouth is a mouth (not
a hole, not the photo's stretched lips), and asking a neutral face for neutral changes almost
nothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from affectsynth.affect.targets import parse_au, parse_expression
from affectsynth.deform import retarget
from affectsynth.io import load_image
from affectsynth.pipeline import Synthesizer

from .conftest import DEV_FACES, need_shared

#: A pixel this dark in every channel (8 bit) is "pure black".
BLACK = 6


@pytest.fixture(scope="module")
def synth(default_model):
    with Synthesizer(default_model) as synthesizer:
        yield synthesizer


def longest_run(mask: np.ndarray) -> int:
    """The longest horizontal or vertical run of True in a 2D mask."""
    best = 0
    for lines in (mask, mask.T):
        for line in lines:
            padded = np.r_[False, line, False].astype(np.int8)
            edges = np.flatnonzero(np.diff(padded))
            if len(edges):
                best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


def mouth_opening(synth, result, coeffs: torch.Tensor) -> np.ndarray:
    """[H, W] bool: inside the target's inner-lip loop (the mouth opening) in the output (where
    ``synth`` drew it: moved by its residual field)."""
    model = synth.model
    deformation = retarget(model, result.fit, coeffs[None].to(model.dtype), synth.residual_field(result.fit.scheme))
    loop = torch.cat((model.regions["lip_inner_upper"], model.regions["lip_inner_lower"].flip(0)))
    polygon = deformation.target_image[0, loop, :2].numpy()
    mask = np.zeros(result.image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def dev_neutral(name: str) -> np.ndarray:
    return load_image(next(need_shared(DEV_FACES / name).glob("neutral.*")))


@pytest.mark.parametrize("photo", ["astronaut", "tw_07", "nimstim_20M"])
def test_surprise_opens_a_mouth_not_a_hole(synth, default_model, astronaut, photo):
    image = astronaut if photo == "astronaut" else dev_neutral(photo)
    target = parse_expression("surprise")
    coeffs, _ = target.to_model_coeffs(default_model)
    result = synth(image, target)
    opening = mouth_opening(synth, result, coeffs)
    face_height = float(np.ptp(result.landmarks.xy[0, :468, 1].numpy()))
    assert opening.sum() > 0.005 * face_height ** 2  # the jaw dropped: a real opening
    inside = result.image[opening].astype(np.int32)                                    # [N, 3]
    black = np.zeros(opening.shape, bool)
    black[opening] = (inside <= BLACK).all(1)
    assert longest_run(black) < 3, longest_run(black)
    # Teeth show (bright, low-saturation pixels), and the rest is darker than the face: a cavity.
    luma = inside @ np.array([0.299, 0.587, 0.114])
    skin = np.median(image[result.mask > 0.99] @ np.array([0.299, 0.587, 0.114]))
    teeth = (luma > 0.8 * skin) & (inside.max(1) - inside.min(1) < 0.35 * inside.max(1))
    assert 0.03 < teeth.mean() < 0.8, teeth.mean()
    assert np.median(luma) < skin


@pytest.mark.parametrize("name", ["nimstim_03F", "nimstim_20M", "tw_07", "tw_16", "tw_27"])
def test_neutral_on_a_neutral_photo_changes_almost_nothing(synth, name):
    image = dev_neutral(name)
    result = synth(image, parse_expression("neutral"))
    x0, y0 = np.floor(result.landmarks.xy[0].numpy().min(0)).astype(int).clip(0)
    x1, y1 = np.ceil(result.landmarks.xy[0].numpy().max(0)).astype(int) + 1
    a, b = (im[y0:y1, x0:x1].astype(np.float64) for im in (image, result.image))
    psnr = 10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12))
    assert psnr >= 35.0, psnr


@pytest.mark.parametrize("expression", ["surprise", "happiness", "fear"])
def test_an_opened_mouth_is_not_photo_rows_stretched_into_stripes(synth, default_model, astronaut, expression):
    """The astronaut's photo shows her teeth; opening her jaw must not stretch those few rows
    (and her lips' edges) over the new opening, nor interleave her teeth with shaded rows where
    her teeth show beyond the fitted opening ("braces"): alternating light and dark rows give a
    large mean vertical second difference (surprise: ~65 grey levels when the moved interior
    sampled the photo, ~25 shaded; happiness: 52 with braces, 27 without; fear 32 and 23)."""
    target = parse_expression(expression)
    coeffs, _ = target.to_model_coeffs(default_model)
    result = synth(astronaut, target)
    opening = mouth_opening(synth, result, coeffs)
    inner = opening.copy()                                  # pixels whose 4 neighbours are in it too
    inner[1:-1] &= opening[:-2] & opening[2:]
    inner[:, 1:-1] &= opening[:, :-2] & opening[:, 2:]
    inner[[0, -1]] = False
    inner[:, [0, -1]] = False
    grey = result.image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    ys, xs = np.nonzero(inner)
    assert len(ys) > 100
    second_difference = np.abs(grey[ys, xs] - 0.5 * (grey[ys - 1, xs] + grey[ys + 1, xs])).mean()
    assert second_difference < 40.0, second_difference


def test_a_broader_smile_does_not_speckle_the_photos_teeth(synth, default_model, astronaut):
    """Where the astronaut's teeth meet what the renderer shades (the upper teeth a raised lip
    uncovers, the lower ones the jaw moves), deciding photo or shading pixel by pixel flipped
    between them: single dark socket pixels among her teeth, like braces (3.9 % of the opening's
    pixels more than 20 grey levels darker or lighter than all 4 neighbours, mean |Laplacian|
    22; blended by the neighbours' share: 0.4 %, 15)."""
    target = parse_expression("happiness")
    coeffs, _ = target.to_model_coeffs(default_model)
    result = synth(astronaut, target)
    opening = mouth_opening(synth, result, coeffs)
    inner = opening.copy()
    inner[1:-1] &= opening[:-2] & opening[2:]
    inner[:, 1:-1] &= opening[:, :-2] & opening[:, 2:]
    grey = result.image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    ys, xs = np.nonzero(inner)
    assert len(ys) > 100
    neighbours = np.stack([grey[ys - 1, xs], grey[ys + 1, xs], grey[ys, xs - 1], grey[ys, xs + 1]])
    specks = (grey[ys, xs] < neighbours.min(0) - 20) | (grey[ys, xs] > neighbours.max(0) + 20)
    assert specks.mean() < 0.015, specks.mean()
    assert np.abs(grey[ys, xs] - neighbours.mean(0)).mean() < 18.0


def lid_skin_bands(photo: np.ndarray, image: np.ndarray, xy: np.ndarray) -> int:
    """Columns of the upper half of each iris disc (MediaPipe's iris landmarks on ``photo``, ``xy``
    [478, 2]) of ``image`` where a pixel that looks like the lid (its colour nearer the photo's skin a
    third of the way from the upper lid to the brow than its iris centre) lies below one that looks
    like the iris: the band of lid skin a raised lid leaves across the top of the iris."""
    bands = 0
    for centre, rim, lid, brow in ((473, (474, 475, 476, 477), 386, 282), (468, (469, 470, 471, 472), 159, 52)):
        c = xy[centre]
        radius = float(np.mean([np.linalg.norm(xy[i] - c) for i in rim]))
        k = max(1, int(radius / 3))
        iris = np.median(photo[int(c[1]) - k:int(c[1]) + k + 1, int(c[0]) - k:int(c[0]) + k + 1].reshape(-1, 3), 0)
        lid_at = (xy[lid] + (xy[brow] - xy[lid]) / 3).astype(int)
        skin = np.median(photo[lid_at[1] - 1:lid_at[1] + 2, lid_at[0] - 1:lid_at[0] + 2].reshape(-1, 3), 0)
        for x in range(int(c[0] - 0.6 * radius), int(c[0] + 0.6 * radius) + 1):
            half = np.sqrt(max(radius ** 2 - (x + 0.5 - c[0]) ** 2, 0.0))
            column = image[int(c[1] - half):int(c[1]) + 1, x].astype(np.float64)
            lid_like = np.linalg.norm(column - skin, axis=1) < np.linalg.norm(column - iris, axis=1)
            bands += int(lid_like[int(np.argmax(~lid_like)):].any()) if (~lid_like).any() else 0
    return bands


@pytest.mark.parametrize("intensity", [0.4, 0.7, 1.0])
def test_raised_lids_leave_no_band_of_lid_skin_across_the_iris(synth, intensity):
    """tw_16 (256 px, the size of FER datasets): its fitted upper lid margins sit a pixel above the
    photo's, so eyeball points there take lid skin from the photo; AU5 lifted the lid off them and
    left a skin-coloured band across the top of the iris (12 columns at every intensity before)."""
    image = dev_neutral("tw_16")
    raised = synth(image, parse_au(f"5:{intensity}"))
    xy = raised.landmarks.xy[0].numpy()  # the photo's
    assert lid_skin_bands(image, raised.image, xy) <= lid_skin_bands(image, image, xy) + 2


#: Upper-lid landmarks of each eye (mp478), keyed by its iris centre landmark.
UPPER_LIDS = {473: (263, 466, 388, 387, 386, 385, 384, 398, 362), 468: (33, 246, 161, 160, 159, 158, 157, 173, 133)}


def under_lid_luma(image: np.ndarray, xy: np.ndarray, px_per_mm: float, mm: tuple[float, float] = (0.3, 0.8)) -> float:
    """Mean luminance (8 bit) of the strip ``mm`` (0.3-0.8 mm) under the upper lids (MediaPipe's,
    ``xy`` [478, 2]) over the sclera: beside the iris (beyond 1.3 iris radii of its centre) and
    away from the canthi (half an iris radius)."""
    grey = image.astype(np.float64) @ [0.299, 0.587, 0.114]
    values = []
    for centre, lid in UPPER_LIDS.items():
        c, r = xy[centre], float(np.linalg.norm(xy[centre + 1] - xy[centre + 3])) / 2
        points = xy[list(lid)][np.argsort(xy[list(lid), 0])]
        for x in range(int(points[0, 0]), int(points[-1, 0]) + 1):
            if abs(x - c[0]) < 1.3 * r or min(x - points[0, 0], points[-1, 0] - x) < 0.5 * r:
                continue
            y = np.interp(x, points[:, 0], points[:, 1])
            values += list(grey[int(y + mm[0] * px_per_mm):int(y + mm[1] * px_per_mm) + 1, x])
    return float(np.mean(values))


@pytest.mark.parametrize("expression", ["happiness", "disgust"])
def test_the_compositing_mask_has_no_hole_at_the_mouth_corners(synth, expression):
    """faces_140_y_f is 2835 x 3543 px (10.6 px/mm). Where the lips meet at a parted mouth's
    corners the photo shows no skin for about 1 mm; left unfilled (the fill was 2 px at any
    scale), the feathered mask opened a ~60 px hole there and the photo's closed corner showed
    through (8,239 px of mask under 0.5 enclosed by the face for happiness, 8,427 for disgust)."""
    from scipy import ndimage

    result = synth(dev_neutral("faces_140_y_f"), parse_expression(expression))
    labels, count = ndimage.label(result.mask < 0.5)
    outside = set(np.r_[labels[0], labels[-1], labels[:, 0], labels[:, -1]].tolist())
    enclosed = [k for k in range(1, count + 1) if k not in outside]
    assert not enclosed, f"{len(enclosed)} holes in the mask, {int(np.isin(labels, enclosed).sum())} px"


def test_the_photos_closed_lips_leave_no_line_across_the_teeth(synth, default_model):
    """faces_116_m_m's closed mouth, fitted, is a slit 0.7 mm wide: 7 px at his 10.6 px/mm. Fear
    bares his upper teeth where the slit was; its middle, over 2 px from the lips, was taken from
    the photo as shown, and the line where his lips meet crossed the teeth in red (1.7 % of the
    opening's pixels lip-red; 0.13 % once fixed, the rest at the opening's edge; 0.55 % since the
    residual field moved the lips, none of them the photo's: 155 px are the shaded teeth's lower edge
    in the lips' shadow, warmed toward the lips' red, 91 the lips' own edge)."""
    target = parse_expression("fear")
    coeffs, _ = target.to_model_coeffs(default_model)
    result = synth(dev_neutral("faces_116_m_m"), target)
    opening = cv2.erode(mouth_opening(synth, result, coeffs).astype(np.uint8), np.ones((3, 3), np.uint8))
    pixels = result.image[opening.astype(bool)].astype(np.float64)
    lip_red = (pixels @ [0.299, 0.587, 0.114] > 70) & (pixels[:, 0] > 1.35 * pixels[:, 1])
    assert lip_red.mean() < 0.008


@pytest.mark.parametrize("photo, expression", [("astronaut", "neutral"), ("faces_116_m_m/happiness.jpg", "neutral"),
                                               ("faces_140_y_f", "sadness")])
def test_lips_barely_parted_show_a_dark_slit(synth, default_model, astronaut, photo, expression):
    """A target whose lips part a fraction of a millimetre (the model's rest, an open smile closed,
    sadness) lets little light into the mouth: the slit between the lips is darker than the lips
    (mean luma 134, 87, 92 against the lips' 155, 115, 128). Lit as an open mouth's teeth (the
    shaded ones, and the photo's where the smile showed them), it was a white line: 173, 198, 167."""
    image = (astronaut if photo == "astronaut" else
             load_image(need_shared(DEV_FACES / photo)) if photo.endswith(".jpg") else dev_neutral(photo))
    target = parse_expression(expression)
    coeffs, _ = target.to_model_coeffs(default_model)
    result = synth(image, target)
    slit = result.image[mouth_opening(synth, result, coeffs)].astype(np.float64) @ [0.299, 0.587, 0.114]
    lip = synth.appearance(image, synth.face_fitter(image))["mouth"].lip[0].double() * 255
    assert len(slit) > 20 and slit.mean() < 0.9 * float(lip @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64))


def test_a_raised_lid_takes_its_lash_shadow_along(synth):
    """faces_116_m_m (a 2835 x 3543 px photo) has dark lashes along his upper lids. AU5 lifts the
    lids ~2 mm: the strip just under the photo's lid line is then uncovered sclera, lit as the
    rest of the painted eyeball. Kept from the photo (as it was before the lid band was painted),
    the lash shadow stayed there as a dark line across the eye: 138 against the photo's 119;
    painted, 173."""
    image = dev_neutral("faces_116_m_m")
    raised = synth(image, parse_au("5:1"))
    xy, px_per_mm = raised.landmarks.xy[0].numpy(), float(raised.fit.scale[0])
    assert under_lid_luma(raised.image, xy, px_per_mm) > under_lid_luma(image, xy, px_per_mm) + 35


def test_a_raised_lid_keeps_its_lash_line(synth):
    """tw_16 (256 px, the hook's scale): the lashes and their shadow darken the sclera right under
    her upper lids (the strip 0-0.4 mm under them 21 darker than 1-1.5 mm under, 8-bit luma). AU5
    lifts the lids; the band under the lid's margin goes with it, so under the raised lids (found
    on the render) the top strip is still darker (by 10). Painted as the rest of the uncovered
    eyeball, as before, it was 7 lighter: a bare white crescent under a lid without lashes."""
    image = dev_neutral("tw_16")
    raised = synth(image, parse_au("5:1"))
    px_per_mm = float(raised.fit.scale[0])
    for picture, xy in ((image, raised.landmarks.xy[0].numpy()),
                        (raised.image, synth.face_fitter(raised.image).landmarks.xy[0].numpy())):
        assert under_lid_luma(picture, xy, px_per_mm, (0.0, 0.4)) < under_lid_luma(picture, xy, px_per_mm, (1.0, 1.5)) - 5


def eye_openings(xy: np.ndarray) -> tuple[float, float]:
    """(the distance between the upper and the lower lid's midpoints, how far the upper one lies
    above the line between the eye corners), both in eye widths, mean of both eyes (MediaPipe's
    landmarks ``xy`` [478, 2])."""
    opening, upper_lid = [], []
    for upper, lower, outer, inner in ((159, 145, 33, 133), (386, 374, 263, 362)):
        width = np.linalg.norm(xy[outer] - xy[inner])
        opening.append(np.linalg.norm(xy[upper] - xy[lower]) / width)
        upper_lid.append(((xy[outer][1] + xy[inner][1]) / 2 - xy[upper][1]) / width)
    return float(np.mean(opening)), float(np.mean(upper_lid))


def test_anger_and_sadness_set_the_lids_as_the_dev_subjects_pose_them(synth):
    """On the dev subjects' neutral photos, the rendered anger does not open the eyes wider (their
    posed anger: 0.88 of the neutral opening, mean of 7; rendered with AU5 at full intensity, 1.00),
    and the rendered sadness lowers the upper lids (their posed sadness: by 0.049 eye widths, mean
    of 5; rendered without AU43, by 0.000)."""
    subjects = [d for d in sorted(need_shared(DEV_FACES).iterdir()) if d.is_dir()]
    opening, drop = [], []
    for d in subjects:
        neutral = load_image(next(d.glob("neutral.*")))
        before = eye_openings(synth.face_fitter(neutral).landmarks.xy[0].numpy())
        for name, out in (("anger", opening), ("sadness", drop)):
            if not list(d.glob(name + ".*")):
                continue
            rendered = synth(neutral, parse_expression(name)).image
            after = eye_openings(synth.face_fitter(rendered).landmarks.xy[0].numpy())
            out.append(after[0] / before[0] if name == "anger" else before[1] - after[1])
    assert len(opening) == 7 and len(drop) == 5
    assert np.mean(opening) < 0.96, opening
    assert np.mean(drop) > 0.03, drop
