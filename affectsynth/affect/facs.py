"""FACS action units as data: what each one does and how far the default model moves it.

Names and muscles follow the Facial Action Coding System manual (Ekman, Friesen & Hager,
2002); ``motion`` is how the default model implements each unit's appearance.
Magnitudes are the displacement of the default model (:mod:`affectsynth.model.default`)
at full intensity (coefficient 1 = FACS intensity E, the maximum), in millimetres,
measured on its rest shape (MediaPipe's canonical mesh, calibrated) at the listed
vertices. None of these fields was measured on people: where a figure is a design choice
scaled to an anatomical quantity, its ``source`` says so and names the quantity.

Model axes (see :mod:`affectsynth.camera`): +x = subject's left, +y up, +z toward the
viewer. "Lateral" = away from the midline, "medial" = toward it, "back" = -z.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["ActionUnit", "ACTION_UNITS", "action_unit", "basis_names", "FACS_MAIN_CODES"]

#: How ``magnitude_mm`` is measured at each entry of ``measured_at`` ((vertex,) or (vertex, vertex)):
#: "norm" |displacement|, "up" its +y component, "down" its -y component, "closure" how much
#: the distance between the two vertices of a pair shrinks.
Measure = Literal["norm", "up", "down", "closure"]


@dataclass(frozen=True)
class ActionUnit:
    """One FACS action unit as the default model implements it.

    Attributes:
        number: the AU number (12 for AU12).
        name: the FACS name.
        muscles: the muscular basis FACS gives.
        lateral: True when the default model has ``AU<n>_L`` and ``AU<n>_R`` (whose sum is
            the bilateral action) instead of one ``AU<n>``.
        motion: the direction of motion the field implements at full intensity.
        magnitude_mm: the displacement at full intensity, measured as ``measure`` says at
            each entry of ``measured_at`` (on the bilateral field, L + R).
        measured_at: MediaPipe vertex ids, (v,) or a pair (a, b) for "closure".
        measure: see :data:`Measure`.
        source: where ``magnitude_mm`` comes from.
    """

    number: int
    name: str
    muscles: str
    lateral: bool
    motion: str
    magnitude_mm: float
    measured_at: tuple[tuple[int, ...], ...]
    measure: Measure
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        """The blendshape names of this AU in the default model."""
        base = f"AU{self.number}"
        return (base + "_L", base + "_R") if self.lateral else (base,)


_DESIGN = "Design choice (no measured norm for this displacement is cited): "
#: Magnitudes taken from ICT-FaceKit (USC ICT, MIT licence; R. Li et al., "Learning formation of
#: physically-based face attributes", CVPR 2020), a face model built on light-stage scans, whose
#: README maps its ARKit-named expression shapes to FACS units: the mapped shapes' displacement at
#: full weight, measured at the same MediaPipe landmarks through the mp478 registration of
#: :mod:`affectsynth.model.importers.ict`.
_ICT = "ICT-FaceKit's ARKit shapes at full weight (measured at these landmarks): "

ACTION_UNITS: tuple[ActionUnit, ...] = (
    ActionUnit(
        1, "Inner Brow Raiser", "frontalis, pars medialis", False,
        "inner brow up along the forehead surface (outer brow 25 %), forehead above it follows "
        "less (it bunches into horizontal wrinkles); lid margins stay",
        8.0, ((107,), (336,)), "norm",
        _DESIGN + "about 40 % of the canonical mesh's ~21 mm from the mid brow to the upper-lid "
        "margin."),
    ActionUnit(
        2, "Outer Brow Raiser", "frontalis, pars lateralis", True,
        "outer brow up along the forehead surface (inner brow 10 %), arching the brow",
        8.0, ((70,), (300,)), "norm",
        _DESIGN + "the same scale as AU1, applied to the lateral brow."),
    ActionUnit(
        4, "Brow Lowerer", "corrugator supercilii, depressor supercilii, procerus", False,
        "inner and middle brow down 7 mm and medially 2 mm (brows drawn together), outer brow down "
        "3.5 mm, glabella skin down; upper-lid skin pushed down, lid margins stay",
        7.28, ((55,), (285,)), "norm",
        _DESIGN + "MediaPipe landmarks of the 7 dev subjects' posed-anger photos, Procrustes-aligned "
        "to their neutral photos (nose bridge, eye corners, temples) in canonical-mesh millimetres, "
        "lower the inner and middle brow 6.4 mm on average (1-14 mm; the middle 5.7, the inner 5.1 "
        "and the outer 3.3 mm) and draw them in by under 1 mm; renders of the same faces show about "
        "0.7 of the field, measured the same way."),
    ActionUnit(
        5, "Upper Lid Raiser", "levator palpebrae superioris (with the superior tarsal muscle)", False,
        "upper-lid margin up 2.5 mm and back 1 mm at its centre (0 at the canthi), the lid skin "
        "folding up under the brow",
        2.5, ((159,), (386,)), "up",
        _DESIGN + "the relaxed upper lid covers the top ~1-2 mm of the cornea (normal margin-reflex "
        "distance MRD1 ~4-5 mm, standard clinical ophthalmology range); AU5 at E bares sclera above "
        "the limbus, a further 2-3 mm, well inside normal levator function (>= 12 mm of lid "
        "excursion from down- to up-gaze, standard clinical range)."),
    ActionUnit(
        6, "Cheek Raiser", "orbicularis oculi, pars orbitalis", True,
        "infraorbital cheek up 3.5 mm and forward 1 mm, lower-lid margin up 4 mm, skin lateral "
        "to the outer canthus drawn medially 2 mm (crow's feet), lateral brow down 1 mm",
        3.5, ((118,), (347,)), "up",
        _DESIGN + "the cheek point rises by about a quarter of the ~15 mm of infraorbital skin "
        "between it and the lower-lid margin, which is what bags the lower lid."),
    ActionUnit(
        7, "Lid Tightener", "orbicularis oculi, pars palpebralis", True,
        "lower-lid margin up 2 mm at its centre, upper-lid margin down 0.5 mm (0 at the canthi): "
        "the palpebral fissure narrows",
        2.0, ((145,), (374,)), "up",
        _DESIGN + "palpebral fissure height is ~8-11 mm in adults (Farkas, Anthropometry of the "
        "Head and Face, 1994) and 10.1 mm on the default model's rest shape; AU7 at E narrows it by "
        "~25 %."),
    ActionUnit(
        9, "Nose Wrinkler", "levator labii superioris alaeque nasi", False,
        "nasal wings and the skin on the sides of the nose up 8 mm (the tip 3.6, the nasal root 0.5 mm), inner "
        "brows down 4 mm, infraorbital cheek up 4 mm, lower-lid margins up 1.5 mm, upper-lip "
        "centre up 7.5 mm (corners 5 mm)",
        8.0, ((64,), (294,)), "up",
        _ICT + "noseSneer_L + noseSneer_R move the nasal wings 8.5 mm up (the tip 3.6), the upper lip 7.7 (centre) "
        "to 9.4 mm (beside the philtrum), the corners 5.7, the infraorbital cheek 4.6, the inner "
        "brows 3.8 mm down. (Until then 3 mm, a design choice: the rendered disgust prototype "
        "raised the upper lip 1.8 mm where the dev subjects' posed disgust raised it 3.9.)"),
    ActionUnit(
        10, "Upper Lip Raiser", "levator labii superioris (caput infraorbitalis)", False,
        "upper lip up, more laterally (4 mm beside the philtrum) than at the midline (2.5 mm), "
        "slightly everted (1 mm forward); corners 1 mm",
        4.0, ((39,), (269,)), "up",
        _DESIGN + "about two thirds of the ~6 mm upper-lip vermilion height of the canonical mesh."),
    ActionUnit(
        12, "Lip Corner Puller", "zygomaticus major", True,
        "lip corner 18 mm obliquely up, lateral and back (direction 7 : 7 : 5), toward the "
        "zygomatic origin of the muscle; lips stretched after it, carried along more than in other "
        "lip actions (profile t^1.3), the upper lip's midline up 3 mm; the cheek mass above the "
        "nasolabial fold up 3.5 and forward 2 mm; the fold itself 1.5 mm deeper",
        18.0, ((61,), (291,)), "norm",
        _DESIGN + "MediaPipe landmarks of 7 posed-happiness photos, Procrustes-aligned to their "
        "neutral photos in canonical-mesh millimetres, moved the corners 12-19 mm (that includes "
        "the other AUs of a posed smile); at 13 mm, 6+12+25 renders of the same people's neutral "
        "photos moved them only about two thirds as far (measured the same way: the fit does not "
        "carry the whole field into the image), so the field is 13 / (2/3) ~ 18-19 mm."),
    ActionUnit(
        14, "Dimpler", "buccinator", True,
        "lip corner back 3 mm, medial 1.5 mm, up 0.5 mm (tightened against the teeth), a 1.5 mm "
        "dimple lateral to it",
        3.39, ((61,), (291,)), "norm",
        _DESIGN + "a corner pressed against the dentition can only move back a few millimetres."),
    ActionUnit(
        15, "Lip Corner Depressor", "depressor anguli oris (triangularis)", True,
        "lip corner down 4 mm and lateral 1 mm, the lateral lower lip down after it",
        4.0, ((61,), (291,)), "down",
        _DESIGN + "about 40 % of the ~10 mm from the corner down to the lower-lip vermilion border."),
    ActionUnit(
        16, "Lower Lip Depressor", "depressor labii inferioris", False,
        "lower lip down 5 mm at the centre (0 at the corners) and everted 1.5 mm forward",
        5.0, ((17,),), "down",
        _DESIGN + "about the lower-lip vermilion height of the canonical mesh (8 mm) minus the "
        "part that rolls out instead of down."),
    ActionUnit(
        17, "Chin Raiser", "mentalis", False,
        "chin boss up 4 mm and forward 1.5 mm, lower lip pushed up 2.5 mm and out 2 mm",
        4.0, ((200,), (199,)), "up",
        _DESIGN + "a visible bunching of the chin, small against the ~26 mm from the lower-lip "
        "border (MediaPipe 17) to the chin boss (199)."),
    ActionUnit(
        20, "Lip Stretcher", "risorius (with platysma)", True,
        "lip corner lateral 6.7 mm, down 3 mm, back 6.9 mm; lips flattened and stretched",
        10.1, ((61,), (291,)), "norm",
        _ICT + "mouthStretch_L + mouthStretch_R move the corners 6.7 mm out, 3.0 down and 6.9 back. "
        "(Until then 5.3 mm, 5 out, 1 down, 1.5 back, a design choice.)"),
    ActionUnit(
        23, "Lip Tightener", "orbicularis oris", False,
        "corners medial 2 mm, vermilion narrowed 1.5 mm per lip (outer borders toward the slit), "
        "lips pushed 0.5 mm forward",
        2.06, ((61,), (291,)), "norm",
        _DESIGN + "narrows the mouth by ~8 % (2 mm per side of 49 mm)."),
    ActionUnit(
        24, "Lip Pressor", "orbicularis oris", False,
        "inner lip contours pressed into contact (the upper one 40 %, the lower 60 % of the way), "
        "vermilion narrowed 1 mm per lip, lips back 1 mm",
        1.99, ((13, 14),), "closure",
        "Geometry: the default model's rest-shape lips are ~2 mm apart at the midline (13-14, "
        "mostly in depth); pressed lips touch, so the field closes that gap exactly."),
    ActionUnit(
        25, "Lips Part", "depressor labii inferioris, or relaxation of mentalis or orbicularis oris", False,
        "lower lip down 3 mm at the centre, upper lip up 1 mm, both tapering to 0 at the corners; "
        "no jaw motion",
        3.0, ((14,), (17,)), "down",
        _DESIGN + "a visible parting of the lips well short of AU26."),
    ActionUnit(
        26, "Jaw Drop", "masseter; relaxed temporalis and internal pterygoid", False,
        "mandible rotated about the temporomandibular axis (default.JAW_PIVOT_YZ_MM) so the chin "
        "drops 12 mm (and swings 17 mm back); the lower lip drops 15 mm; the lower face follows "
        "with the harmonic jaw weight",
        12.0, ((152,),), "down",
        _DESIGN + "a relaxed jaw drop is a rotation of the condyles, which is how the first "
        "~20-25 mm of incisal opening happens (standard TMJ biomechanics); 12 mm at the chin "
        "opens the lips by 15 mm, about a third of the normal maximal inter-incisal opening "
        "of ~40-55 mm in adults (standard TMJ clinical norms)."),
    ActionUnit(
        27, "Mouth Stretch", "pterygoids, digastric", False,
        "mandible rotated about the temporomandibular axis and translated 12 mm forward and 6 mm "
        "down (the condyles gliding onto the articular eminence, as in wide opening) so the chin "
        "drops 30 mm (and swings 33 mm back); the lower lip drops 39 mm",
        30.0, ((152,),), "down",
        _DESIGN + "the lips open by ~39 mm, toward the lower end of the normal maximal "
        "inter-incisal opening of ~40-55 mm in adults (standard TMJ clinical norms). The chin "
        "drops less than the incisors: it lies farther below the joint, so the rotation swings "
        "it back more than down."),
    ActionUnit(
        43, "Eyes Closed", "relaxation of levator palpebrae superioris; orbicularis oculi, pars "
        "palpebralis", False,
        "the lid margins meet (canthi fixed): each upper-margin vertex and its lower-margin "
        "partner move to a common point, 85 % of the way down over most of the lid (the upper "
        "lid descends, the lower rises a little) and near the medial canthus mostly up; the "
        "upper-lid skin follows up to the brow",
        10.08, ((159, 145), (386, 374)), "closure",
        "Geometry: the default model's rest-shape palpebral fissure is 10.08 mm high at the "
        "centre (159-145); closed lids touch, so the field closes it exactly."),
)


def action_unit(number: int) -> ActionUnit:
    """The table entry of AU ``number``."""
    for au in ACTION_UNITS:
        if au.number == number:
            return au
    raise KeyError(f"AU{number} is not in the table")


def basis_names() -> tuple[str, ...]:
    """All blendshape names of the default model, in table order."""
    return tuple(n for au in ACTION_UNITS for n in au.names)


#: The FACS main codes, number -> name (Ekman, Friesen & Hager, 2002; 41, 42 and 44 are lid codes
#: of the 1978 edition, kept so that older codings parse): the vocabulary of model-independent
#: expression targets (:mod:`affectsynth.affect.targets`). Head and eye positions (51-69) and
#: the gross behaviour codes are not expression targets and are left out.
FACS_MAIN_CODES: MappingProxyType[int, str] = MappingProxyType({
    1: "Inner Brow Raiser", 2: "Outer Brow Raiser", 4: "Brow Lowerer", 5: "Upper Lid Raiser",
    6: "Cheek Raiser", 7: "Lid Tightener", 8: "Lips Toward Each Other", 9: "Nose Wrinkler",
    10: "Upper Lip Raiser", 11: "Nasolabial Deepener", 12: "Lip Corner Puller", 13: "Sharp Lip Puller",
    14: "Dimpler", 15: "Lip Corner Depressor", 16: "Lower Lip Depressor", 17: "Chin Raiser",
    18: "Lip Pucker", 19: "Tongue Show", 20: "Lip Stretcher", 21: "Neck Tightener", 22: "Lip Funneler",
    23: "Lip Tightener", 24: "Lip Pressor", 25: "Lips Part", 26: "Jaw Drop", 27: "Mouth Stretch",
    28: "Lip Suck", 41: "Lid Droop", 42: "Slit", 43: "Eyes Closed", 44: "Squint", 45: "Blink", 46: "Wink",
})
