"""Write SYNTHETIC 4D expression sequences from a face model (e.g. the imported ICT-FaceKit model),
to test and benchmark ``affectsynth model build-affect``. They are not captures of real faces.

For each identity (random N(0, 1) identity coefficients) and each of the six basic expressions: a
sequence of F frames whose expression coefficients follow an onset-apex-offset curve (0 at the
first and last frame, 1 at an apex frame drawn per sequence) times a per-sequence intensity, on the
emotion's EMFACS prototype mapped to the model (``parse_expression(e).to_model_coeffs(model)``);
then a smooth random rigid head motion (rotation up to ``--max-rotation-deg``, translation up to
``--max-translation-mm``) and Gaussian vertex noise. Per-frame valence-arousal labels put the
emotion at its circumplex angle (:data:`affectsynth.affect.bank.CIRCUMPLEX_DEG`), scaled by the
curve and intensity.

Output (the ``flat`` layout of build-affect): ``OUT/<person>_<emotion>/frames.npy`` [F, V, 3]
float32 mm, ``OUT/labels.csv`` (sequence, frame, person, category, valence, arousal per frame) and
``OUT/truth.json`` (per sequence the apex frame and intensity; per emotion the generating
coefficients, by the model's expression names).

    python scripts/make_synthetic_4d.py --model ict.npz -o synth/ [--identities 3] [--frames 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsynth.affect.bank import CIRCUMPLEX_DEG  # noqa: E402
from affectsynth.affect.targets import parse_expression  # noqa: E402
from affectsynth.model import FaceModel  # noqa: E402

EMOTIONS = ("happiness", "sadness", "surprise", "fear", "anger", "disgust")


@dataclass(frozen=True)
class SyntheticTruth:
    """What generated the sequences.

    Attributes:
        apex: sequence name -> its apex frame index.
        intensity: sequence name -> its expression intensity (the coefficients' scale at the apex).
        prototypes: emotion -> [E] generating coefficients (at intensity 1).
    """

    apex: dict[str, int]
    intensity: dict[str, float]
    prototypes: dict[str, np.ndarray]


def onset_apex_offset(frames: int, apex: int) -> np.ndarray:
    """[F] raised-cosine rise from 0 (frame 0) to 1 (frame ``apex``), fall to 0 at the last frame."""
    t = np.arange(frames, dtype=np.float64)
    rise = np.sin(0.5 * np.pi * t / apex) ** 2
    fall = np.cos(0.5 * np.pi * (t - apex) / (frames - 1 - apex)) ** 2
    return np.where(t <= apex, rise, fall)


def _rotations(angles: np.ndarray) -> np.ndarray:
    """[F, 3, 3] rotations from [F, 3] angles (radians) about x, y, z."""
    cx, cy, cz = np.cos(angles).T
    sx, sy, sz = np.sin(angles).T
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).reshape(-1, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def make_synthetic_4d(model: FaceModel, out: Path, *, identities: int = 3, frames: int = 20, seed: int = 0,
                      emotions: tuple[str, ...] = EMOTIONS, max_rotation_deg: float = 8.0,
                      max_translation_mm: float = 5.0, noise_mm: float = 0.05,
                      max_sequences: int | None = None) -> SyntheticTruth:
    """Write the sequences (module docstring), at most ``max_sequences`` of them (identities x
    emotions in that order), and return what generated them."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    mean = model.mean.double().numpy()
    id_basis = model.id_basis.double().numpy().reshape(model.num_identity, -1)
    exp_basis = model.exp_basis.double().numpy().reshape(model.num_expressions, -1)
    prototypes = {e: parse_expression(e).to_model_coeffs(model)[0].double().numpy() for e in emotions}
    truth = SyntheticTruth({}, {}, prototypes)
    with (out / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "frame", "person", "category", "valence", "arousal"])
        for person_index in range(identities):
            person = f"p{person_index:03d}"
            neutral = mean + (rng.standard_normal(model.num_identity) @ id_basis).reshape(-1, 3)
            for emotion in emotions:
                if max_sequences is not None and len(truth.apex) >= max_sequences:
                    break
                name = f"{person}_{emotion}"
                apex = int(rng.integers(frames // 3, frames - frames // 3))
                intensity = float(rng.uniform(0.7, 1.0))
                curve = intensity * onset_apex_offset(frames, apex)  # [F]
                vertices = neutral + (curve[:, None] * prototypes[emotion] @ exp_basis).reshape(frames, -1, 3)
                # smooth head motion: each angle and offset a sine of random phase over the sequence
                phase = rng.uniform(0, 2 * np.pi, (2, 3))
                t = np.linspace(0, np.pi, frames)[:, None]
                angles = np.radians(max_rotation_deg) * np.sin(t + phase[0])
                shift = max_translation_mm * np.sin(t + phase[1])
                centre = neutral.mean(0)
                vertices = (vertices - centre) @ _rotations(angles).transpose(0, 2, 1) + centre + shift[:, None, :]
                vertices += rng.normal(0.0, noise_mm, vertices.shape)
                folder = out / name
                folder.mkdir(exist_ok=True)
                np.save(folder / "frames.npy", vertices.astype(np.float32))
                angle = math.radians(CIRCUMPLEX_DEG[emotion])
                for i, r in enumerate(curve):
                    writer.writerow([name, i, person, emotion, f"{r * math.cos(angle):.6f}", f"{r * math.sin(angle):.6f}"])
                truth.apex[name], truth.intensity[name] = apex, intensity
    (out / "truth.json").write_text(json.dumps({
        "synthetic": True, "apex": truth.apex, "intensity": truth.intensity, "exp_names": list(model.exp_names),
        "prototypes": {e: c.tolist() for e, c in prototypes.items()}}, indent=1))
    return truth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a model .npz with identity modes and AU-mapped "
                                                                "expressions (affectsynth model import ict ...)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--identities", type=int, default=3)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-mm", type=float, default=0.05)
    args = ap.parse_args()
    truth = make_synthetic_4d(FaceModel.load(args.model), args.output, identities=args.identities,
                              frames=args.frames, seed=args.seed, noise_mm=args.noise_mm)
    print(f"wrote {len(truth.apex)} synthetic sequences of {args.frames} frames to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
