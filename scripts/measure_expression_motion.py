"""How far rendered expressions move the face, against real posed photos of the same people.

    python scripts/measure_expression_motion.py [--faces ../shared/faces/dev] [--aus]

For every subject folder with a ``neutral.*`` photo: MediaPipe's 468 landmarks of the neutral photo, of
each posed expression photo there (``happiness.*``, ...) and of the neutral photo rendered as that
expression (``parse_expression(name)``, intensity 1), each similarity-aligned to the canonical face mesh
(millimetres) on points an expression hardly moves (nose bridge and tip, eye corners, temples), then the
posed and the rendered one aligned to the neutral. Features, in mm: the vertical motion (+ down) of the
inner, mid and outer brow, upper and lower lid, nasal wing, upper-lip side, mouth corner, lower-lip side
and cheek (left and right averaged) and of the upper lip, inner lips, lower lip and chin, and the lateral
motion (+ outward) of each pair. Printed: the mean over subjects per expression, posed and rendered, and
the RMS difference between them over subjects and features. ``--aus`` adds the motion of each single
action unit of the default model rendered at full intensity (its response in the image, which is what a
field's magnitude turns into once fitted, rendered and re-detected). Photos are downscaled to at most
1000 px. The last line holds `key=value` figures: ``rms_posed_<expr>=`` and ``rms_diff_<expr>=``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from affectsynth.affect.facs import ACTION_UNITS  # noqa: E402
from affectsynth.affect.targets import parse_au, parse_expression  # noqa: E402
from affectsynth.detect import create_detector  # noqa: E402
from affectsynth.io import load_image  # noqa: E402
from affectsynth.model import load_default_model  # noqa: E402
from affectsynth.pipeline import Synthesizer  # noqa: E402

EXPRESSIONS = ("happiness", "sadness", "surprise", "fear", "anger", "disgust")
#: Landmarks an expression hardly moves: nose bridge and tip, eye corners, temples.
STABLE = (6, 168, 197, 1, 4, 33, 133, 362, 263, 127, 356)
#: Left/right landmark pairs (MediaPipe ids) and midline landmarks whose motion is measured.
PAIRS = {"inner_brow": (55, 285), "mid_brow": (52, 282), "outer_brow": (46, 276), "upper_lid": (159, 386),
         "lower_lid": (145, 374), "nose_wing": (64, 294), "upper_lip_side": (37, 267), "corner": (61, 291),
         "lower_lip_side": (84, 314), "cheek": (118, 347)}
MIDLINE = {"upper_lip": 0, "upper_inner": 13, "lower_inner": 14, "lower_lip": 17, "chin": 152}
MAX_SIDE = 1000


def similarity_align(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[N, 2] points moved by the least-squares similarity that takes their STABLE points onto the reference's."""
    a, b = points[list(STABLE)], reference[list(STABLE)]
    ca, cb = a.mean(0), b.mean(0)
    u, s, vt = np.linalg.svd((a - ca).T @ (b - cb))
    return (points - ca) @ (u @ vt) * (s.sum() / np.square(a - ca).sum()) + cb


def features(neutral: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Motion from ``neutral`` to ``other`` ([468, 2] mm, image axes: y down) per feature."""
    d = other - neutral
    out = {}
    for name, (left, right) in PAIRS.items():
        outward = np.sign(neutral[right, 0] - neutral[left, 0])
        out[name + "_y"] = 0.5 * (d[left, 1] + d[right, 1])
        out[name + "_x"] = 0.5 * (d[right, 0] - d[left, 0]) * outward
    out.update({name + "_y": d[i, 1] for name, i in MIDLINE.items()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces" / "dev")
    parser.add_argument("--aus", action="store_true", help="also measure each single AU at full intensity")
    args = parser.parse_args()
    canonical = np.load(ROOT / "assets" / "mediapipe_canonical_face.npz")["vertices"][:, :2] * np.array([1.0, -1.0])
    detector = create_detector()
    synthesizer = Synthesizer(load_default_model())

    def load(path: Path) -> np.ndarray:
        image = load_image(path)
        scale = MAX_SIDE / max(image.shape[:2])
        return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image

    def landmarks_mm(image: np.ndarray, neutral: np.ndarray | None = None) -> np.ndarray:
        points = similarity_align(detector(image).xy[0].numpy()[:468].astype(np.float64), canonical)
        return points if neutral is None else similarity_align(points, neutral)

    motion: dict[tuple[str, str], dict[str, dict[str, float]]] = {}  # (target, kind) -> subject -> features
    for folder in sorted(p for p in args.faces.iterdir() if p.is_dir()):
        neutral_photo = next(folder.glob("neutral.*"), None)
        if neutral_photo is None:
            continue
        image = load(neutral_photo)
        neutral = landmarks_mm(image)
        targets = [(name, parse_expression(name)) for name in EXPRESSIONS]
        targets += [(f"AU{au.number}", parse_au(f"{au.number}:1")) for au in ACTION_UNITS] if args.aus else []
        for name, target in targets:
            rendered = np.asarray(synthesizer(image, target).image)
            moved = features(neutral, landmarks_mm(rendered, neutral))
            motion.setdefault((name, "rendered"), {})[folder.name] = moved
            posed = next(folder.glob(f"{name}.*"), None)
            if posed is not None:
                moved = features(neutral, landmarks_mm(load(posed), neutral))
                motion.setdefault((name, "posed"), {})[folder.name] = moved
        print(f"measured {folder.name}", file=sys.stderr, flush=True)

    keys = [k + "_y" for k in PAIRS] + [k + "_y" for k in MIDLINE] + [k + "_x" for k in PAIRS]
    print("mean motion over subjects, mm (_y: + down, _x: + outward)")
    print(f"{'':<18}" + "".join(f"{k[:12]:>13}" for k in keys))
    names = list(dict.fromkeys(name for name, _ in motion))
    for name, kind in ((name, kind) for name in names for kind in ("posed", "rendered") if (name, kind) in motion):
        rows = motion[(name, kind)].values()
        print(f"{name + ' ' + kind:<18}" + "".join(f"{np.mean([r[k] for r in rows]):13.1f}" for k in keys))
    figures = []
    for name in EXPRESSIONS:
        posed = motion.get((name, "posed"), {})
        if not posed:
            continue
        pairs = np.array([[[posed[s][k], motion[(name, "rendered")][s][k]] for k in keys] for s in posed])
        figures += [f"rms_posed_{name}={np.sqrt(np.mean(pairs[..., 0] ** 2)):.2f}",
                    f"rms_diff_{name}={np.sqrt(np.mean((pairs[..., 1] - pairs[..., 0]) ** 2)):.2f}",
                    f"n_{name}={len(posed)}"]
    print(" ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
