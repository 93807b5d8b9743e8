"""Build assets/default_model.npz, the embedded default face model, from the canonical mesh.

    python scripts/build_default_model.py [-o assets/default_model.npz]

Deterministic: the same inputs (assets/mediapipe_canonical_face.npz, the contours of the
pinned mediapipe package, assets/mp468_to_ibug68.json when present) give the same arrays;
tests/test_default_model.py checks the committed asset against a fresh build. See
affectsynth/model/default.py for what the model is and how it is made.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from affectsynth.model.default import MODEL_FILE, build_default_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "assets" / MODEL_FILE)
    args = ap.parse_args()
    start = time.perf_counter()
    model = build_default_model()
    model.save(args.output)
    print(f"wrote {args.output}: {model.num_vertices} vertices, {len(model.triangles)} triangles, "
          f"{model.num_identity} identity modes, {model.num_expressions} expressions "
          f"({', '.join(model.exp_names)}), landmark maps {sorted(model.landmark_maps)}; "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
