"""Benchmark of the training hook against kornia's RandAugment on the same images, in one run.

    python scripts/bench_hook.py [--threads 1] [--calls 200] [--faces ../shared/faces/dev]

Images: face crops, as FER datasets hold them (the face filling the frame), of scikit-image's
astronaut and, when the folder exists, of the dev photos' neutral faces (cropped around the
face MediaPipe finds), each also mirrored, at 112² and 224², uint8 [3, S, S] tensors.
Hook: ``AffectAugment(RandomExpression(), p=1)`` (every call re-renders the face), with a warm fit
cache (one untimed pass fits every image first, as the first epoch of a training run does).
Reference: ``kornia.augmentation.auto.RandAugment(n=2, m=10)`` on the same images as float
[1, 3, S, S]. Both run per image, in this process, with ``--threads`` torch threads (1, as in a
DataLoader worker, by default). The last line holds `key=value` figures, including `ratio_224=`
(the hook's images/s over RandAugment's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from benchlib import cpu_name  # noqa: E402

from affectsynth.augment import AffectAugment, RandomExpression  # noqa: E402
from affectsynth.detect import create_detector  # noqa: E402
from affectsynth.io import load_image  # noqa: E402

SIZES = (112, 224)


def face_crops(faces_dir: Path) -> list[np.ndarray]:
    """Square crops around the face (1.6x the landmarks' extent) of the astronaut and the dev neutrals."""
    from skimage import data

    photos = [data.astronaut()]
    if faces_dir.is_dir():
        photos += [load_image(p) for p in sorted(faces_dir.glob("*/neutral.*"))]
    crops = []
    with create_detector("mediapipe") as detector:
        for photo in photos:
            xy = detector(photo).xy[0].numpy()
            centre, half = (xy.min(0) + xy.max(0)) / 2, 0.8 * (xy.max(0) - xy.min(0)).max()
            x0, y0 = np.maximum(0, (centre - half).astype(int))
            x1, y1 = np.minimum(photo.shape[1::-1], (centre + half).astype(int))
            crop = photo[y0:y1, x0:x1]
            crops += [crop, crop[:, ::-1]]
    return crops


def images_per_second(call, images: list, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        call(images[i % len(images)], i)
    return calls / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per method and size")
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces" / "dev")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kornia.augmentation.auto import RandAugment

    crops = face_crops(args.faces)
    hook = AffectAugment(RandomExpression(), p=1.0, generator=torch.Generator().manual_seed(0))
    rand_augment = RandAugment(n=2, m=10)
    figures: dict[str, float] = {}
    print(f"{len(crops)} face crops; {cpu_name()}; torch threads {torch.get_num_threads()}")
    for size in SIZES:
        images = [torch.from_numpy(np.ascontiguousarray(cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)))
                  .permute(2, 0, 1).contiguous() for c in crops]
        floats = [image[None].float() / 255 for image in images]
        for i, image in enumerate(images):  # warm: fit every image once, compile, allocate
            hook(image, 0)
            rand_augment(floats[i])
        before = dict(hook.stats)
        hook_ips = images_per_second(lambda image, i: hook(image, i % 7), images, args.calls)
        synthesized = hook.stats["synthesized"] - before.get("synthesized", 0)
        ra_ips = images_per_second(lambda image, i: rand_augment(image), floats, args.calls)
        figures |= {f"hook_img_s_{size}": hook_ips, f"randaugment_img_s_{size}": ra_ips,
                    f"ratio_{size}": hook_ips / ra_ips}
        print(f"{size}²: hook {hook_ips:.1f} img/s ({1000 / hook_ips:.1f} ms; {synthesized}/{args.calls} re-rendered, "
              f"fits made in the timed part: {hook.stats['fitted'] - before.get('fitted', 0)}), RandAugment "
              f"{ra_ips:.1f} img/s ({1000 / ra_ips:.1f} ms): ratio {hook_ips / ra_ips:.3f}")
    figures["threads"] = torch.get_num_threads()
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
