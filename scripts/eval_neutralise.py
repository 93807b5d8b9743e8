"""How much of a photo's own expression synthesis removes: render ``--expression neutral`` from
each posed-expression photo of a person and compare it with that person's real neutral photo.

    python scripts/eval_neutralise.py [--faces ../shared/faces/dev] [--max-side 1000]

Every subject folder of --faces holds ``neutral.*`` and posed photos named by their expression
(``happiness.jpg``, ...). For each posed photo P of a subject with neutral photo N:

* ``before``: the mean distance between P's and N's MediaPipe landmarks on the parts that
  expressions move (lips, brows, lids; :data:`MOVING`), after a similarity alignment on points
  that expressions do not move (eye corners, nose; :data:`STABLE`), in mm at a 63 mm
  inter-ocular distance (N's outer eye corners);
* ``after``: the same between the synthesized neutral of P and N.

A perfect removal brings ``after`` down to the landmark noise between two photos of the same
face (two sessions, pose, detector jitter), which this data cannot separate out; ``removed`` is
1 - after / before. Photos whose long side exceeds --max-side are skipped (their renders take
seconds). The last line printed is ``key=value`` figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

#: MediaPipe points that expressions hardly move: eye corners, nasion, nose ridge and tip.
STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1)
#: Points that expressions move: lip corners and midlines, brows, lid margins.
MOVING = (61, 291, 13, 14, 17, 0, 78, 308, 105, 334, 66, 296, 107, 336, 159, 145, 386, 374)
INTEROCULAR_MM = 63.0


def aligned(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` [N, 2] moved by the similarity that best maps their STABLE points onto ``reference``'s."""
    a, b = reference[list(STABLE)], points[list(STABLE)]
    ma, mb = a.mean(0), b.mean(0)
    u, s, vt = np.linalg.svd((b - mb).T @ (a - ma))
    scale = s.sum() / ((b - mb) ** 2).sum()
    return (points - mb) @ (u @ vt) * scale + ma


def expression_distance_mm(neutral: np.ndarray, other: np.ndarray) -> float:
    interocular = np.linalg.norm(neutral[263] - neutral[33])
    moved = aligned(neutral, other)[list(MOVING)] - neutral[list(MOVING)]
    return float(np.linalg.norm(moved, axis=1).mean() / interocular * INTEROCULAR_MM)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces" / "dev")
    ap.add_argument("--max-side", type=int, default=1000)
    args = ap.parse_args(argv)

    from affectsynth.affect.targets import parse_expression
    from affectsynth.io import load_image
    from affectsynth.model.default import load_default_model
    from affectsynth.pipeline import Synthesizer

    neutral_target = parse_expression("neutral")
    per_label: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with Synthesizer(load_default_model()) as synth:
        detect = synth.face_fitter.detector

        def landmarks(image: np.ndarray) -> np.ndarray:
            return detect(image).xy[0, :468].numpy().astype(np.float64)

        for folder in sorted(p for p in args.faces.iterdir() if p.is_dir()):
            neutral_path = next(folder.glob("neutral.*"), None)
            if neutral_path is None:
                continue
            neutral = load_image(neutral_path)
            if max(neutral.shape[:2]) > args.max_side:
                continue
            reference = landmarks(neutral)
            for path in sorted(folder.iterdir()):
                if path.stem == "neutral" or path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                    continue
                posed = load_image(path)
                rendered = synth(posed, neutral_target).image
                before = expression_distance_mm(reference, landmarks(posed))
                after = expression_distance_mm(reference, landmarks(rendered))
                per_label[path.stem].append((before, after))
                print(f"{folder.name:16s} {path.stem:10s} before {before:5.2f} mm  after {after:5.2f} mm", flush=True)
    if not per_label:
        sys.exit(f"no subject with a neutral photo and posed photos under {args.faces}")
    print("\nper expression (mean mm): " + "  ".join(
        f"{label} {statistics.fmean(b for b, _ in v):.2f}->{statistics.fmean(a for _, a in v):.2f}"
        for label, v in sorted(per_label.items())))
    pairs = [p for v in per_label.values() for p in v]
    before, after = statistics.fmean(b for b, _ in pairs), statistics.fmean(a for _, a in pairs)
    print(f"n={len(pairs)} before_mm={before:.3f} after_mm={after:.3f} removed={1 - after / before:.3f}")


if __name__ == "__main__":
    main()
