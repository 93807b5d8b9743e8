"""Derive the default model's rest-shape calibration: where MediaPipe's 468 landmarks lie on
neutral faces, relative to its own canonical mesh.

Writes assets/mp468_rest_offsets.json: per MediaPipe point an (x, y, z) offset in mm (z is 0),
which affectsynth.model.default adds to the canonical mesh before building the model.

Why: fitted to MediaPipe's landmarks on neutral photos, the canonical mesh leaves systematic,
local residuals that its smooth identity basis cannot take up: the detector closes the lips
(the mesh has them 5.8 mm apart) and puts the ring above the upper lid up to 5.6 mm higher.
The fitter then explained them with action units, and synthesis, which removes the fitted
expression, changed every neutral face.

Method (reproducible; it uses photos that come with our dependencies and nothing else,
never ../shared):

1. Photos: scikit-image's astronaut and matplotlib's Grace Hopper portrait (both frontal and
   near-neutral), and the mirror image of each (the detector is not mirror-equivariant, so
   a mirrored photo is a second sample of where it puts each point).
2. The model with the uncalibrated rest shape (``build_default_model(calibrated=False)``) is
   fitted to each photo's MediaPipe landmarks, pose and identity only (``FitConfig`` defaults
   with ``fit_expression=False``).
3. Per photo and point: the image-plane residual (detected minus fitted, over the scale) in
   the model frame; its x and y are kept. MediaPipe's depth is a network's guess: the
   canonical depth stays.
4. Mean over the photos; from the subnasale (MediaPipe 2) down over Grace Hopper's two only
   (blended over +-MOUTH_BLEND_MM): the astronaut smiles with her lips 11 mm apart, which is
   not a neutral mouth. Grace Hopper's lips are closed.
5. Symmetrised (each point's offset averaged with its mirror point's, x negated): the
   canonical mesh is mirror-symmetric and stays so.

It prints the offsets' size, what they do to the rest shape (lip gap, palpebral fissure,
the ring above the upper lid) and, per photo, the residual's RMS and what of it the offsets
leave (the photo's own shape and expression: the astronaut's open smile stays).

    python scripts/derive_rest_shape.py [-o assets/mp468_rest_offsets.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectsynth.detect import MediaPipeDetector  # noqa: E402
from affectsynth.fit import FitConfig, Fitter  # noqa: E402
from affectsynth.io import load_image  # noqa: E402
from affectsynth.model.default import (NUM_MEDIAPIPE_VERTICES, REST_OFFSETS_FILE, build_default_model,  # noqa: E402
                                       canonical_rig)

SUBNASALE = 2
#: Half-width (mm) of the blend between all photos (above) and the closed-mouth ones (below).
MOUTH_BLEND_MM = 5.0
#: MediaPipe points above the right upper lid (the ring the canonical mesh has too low).
UPPER_LID_RING_R = (247, 30, 29, 27, 28, 56, 190)
SOURCE = ("mean image-plane residual (x, y) of identity-only fits of the uncalibrated model to MediaPipe's "
          "landmarks on scikit-image's astronaut and matplotlib's Grace Hopper photo and their mirror images "
          "(below the subnasale: Grace Hopper's only), symmetrised; scripts/derive_rest_shape.py")


def photos() -> dict[str, tuple[np.ndarray, bool]]:
    """name -> ([H, W, 3] uint8, closed mouth) of the calibration photos."""
    from matplotlib import cbook
    from skimage import data

    astronaut = data.astronaut()
    grace = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    out = {}
    for name, image, closed in (("skimage astronaut", astronaut, False), ("matplotlib grace_hopper", grace, True)):
        out[name] = (image, closed)
        out[name + ", mirrored"] = (np.ascontiguousarray(image[:, ::-1]), closed)
    return out


def residuals(fitter: Fitter, landmarks: dict) -> dict[str, np.ndarray]:
    """name -> [468, 2] detected minus fitted MediaPipe point, model-frame x and y, mm."""
    out = {}
    model = fitter.model
    for name, lm in landmarks.items():
        fit = fitter(lm)
        with torch.no_grad():
            fitted = fit.image_points(model.landmarks(fit.vertices(model), "mp478"))[0, :NUM_MEDIAPIPE_VERTICES]
        image = (lm.xy[0, :NUM_MEDIAPIPE_VERTICES] - fitted[:, :2]) / fit.scale[0]
        camera = torch.cat((image * torch.tensor([1.0, -1.0]), torch.zeros(NUM_MEDIAPIPE_VERTICES, 1)), 1)
        out[name] = (camera @ fit.rotation[0]).double().numpy()[:, :2]  # camera -> model axes
    return out


def rms(r: np.ndarray) -> float:
    return float(np.sqrt((r ** 2).sum(-1).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "assets" / REST_OFFSETS_FILE)
    args = parser.parse_args()

    with MediaPipeDetector() as detector:
        found = {name: (detector(image), closed) for name, (image, closed) in photos().items()}
    for name, (lm, _) in found.items():
        if lm.batch_size != 1:
            raise SystemExit(f"{name}: {lm.batch_size} faces found, expected 1")
    landmarks = {name: lm for name, (lm, _) in found.items()}
    closed = [name for name, (_, c) in found.items() if c]

    rig = canonical_rig(calibrated=False)
    canonical = rig.vertices[:NUM_MEDIAPIPE_VERTICES]
    before = residuals(Fitter(build_default_model(calibrated=False), FitConfig(fit_expression=False)), landmarks)
    everyone = np.mean(list(before.values()), 0)
    mouth = np.mean([before[n] for n in closed], 0)
    w = np.clip((canonical[SUBNASALE, 1] - canonical[:, 1]) / (2 * MOUTH_BLEND_MM) + 0.5, 0.0, 1.0)[:, None]
    xy = (1 - w) * everyone + w * mouth
    mirror = rig.mirror[:NUM_MEDIAPIPE_VERTICES]
    xy = 0.5 * (xy + xy[mirror] * [-1.0, 1.0])
    offsets = np.round(np.concatenate([xy, np.zeros((NUM_MEDIAPIPE_VERTICES, 1))], 1), 4) + 0.0  # no -0.0

    args.output.write_text(json.dumps({"source": SOURCE, "units": "mm", "offsets_mm": offsets.tolist()}) + "\n")
    print(f"wrote {args.output} (scripts/build_default_model.py builds the model with it)")

    v = canonical + offsets
    size = np.linalg.norm(offsets, axis=1)
    print(f"offsets: RMS {rms(offsets):.2f} mm, largest {size.max():.2f} mm (point {int(size.argmax())})")
    print(f"rest shape: lip gap 13-14 {canonical[13, 1] - canonical[14, 1]:.2f} -> {v[13, 1] - v[14, 1]:.2f} mm, "
          f"fissure 159-145 {canonical[159, 1] - canonical[145, 1]:.2f} -> {v[159, 1] - v[145, 1]:.2f} mm, "
          f"ring above the right upper lid raised {offsets[list(UPPER_LID_RING_R), 1].round(1).tolist()} mm")
    for name, r in before.items():
        print(f"  {name:34s} identity-only residual RMS {rms(r):.2f} mm, less the offsets {rms(r - xy):.2f} mm")


if __name__ == "__main__":
    main()
