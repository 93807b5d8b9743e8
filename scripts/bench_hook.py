"""Benchmark of the training hook against kornia's RandAugment on the same images, in one run.

    python scripts/bench_hook.py [--threads 1] [--calls 200] [--faces ../shared/faces/dev]

Images: face crops, as FER datasets hold them (the face filling the frame), of scikit-image's
astronaut and, when the folder exists, of the dev photos' neutral faces (cropped around the
face MediaPipe finds), each also mirrored, at 112² and 224², uint8 [3, S, S] tensors.
Hook: ``AffectAugment(RandomExpression(), p=1)`` (every call re-renders the face), with a warm fit
cache (one untimed pass fits every image first, as the first epoch of a training run does). Also,
as a dataset larger than the hook's memory meets it (``memory_fits`` fits per process), the same
hook with every fit read from its disk cache (``cache_dir``, ``memory_fits=1``: each call reads the
entry and the eyes' and mouth's appearance stored beside it): ``hook_disk_img_s_224=`` and so on.
And the hook applied to a batch (every crop in one [B, 3, S, S] tensor, as to a training batch: its
faces rendered together, :meth:`~affectsynth.pipeline.Synthesizer.render_batch`):
``hook_batch_img_s_224=``, ``ratio_batch_224=``.
Reference: ``kornia.augmentation.auto.RandAugment(n=2, m=10)`` on the same images as float
[1, 3, S, S]. Both run per image, in this process, with ``--threads`` torch threads (1, as in a
DataLoader worker, by default), in ``--rounds`` rounds in which each method takes its turn (the
first of a round turning round), so that a machine whose speed drifts during the run (a shared
VM) slows them alike. The last line holds `key=value` figures: each method's images/s over all its calls,
`ratio_224=` (the median over the rounds of the hook's images/s over RandAugment's), the rounds'
lowest and highest ratio (`ratio_224_min=`, `ratio_224_max=`) and `ratio_disk_224=` (the same
median for the hook reading its fits from disk).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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


def seconds(call, items: list, first: int, calls: int) -> float:
    """Time of ``calls`` calls on the items from number ``first`` on (cycling through them)."""
    start = time.perf_counter()
    for i in range(first, first + calls):
        call(items[i % len(items)], i)
    return time.perf_counter() - start


def alternating_rounds(methods: list[tuple], per_round: int, rounds: int) -> np.ndarray:
    """Each method's seconds per image in each round [M, rounds] (``methods``: M (call, items,
    images per item) triples: a batch method's items are batches), about ``per_round`` images a
    round, on the same images in the same order; the first of each round turns round."""
    times = np.zeros((len(methods), rounds))
    for r in range(rounds):
        for k in range(len(methods)):
            method = (r + k) % len(methods)
            call, items, per_item = methods[method]
            calls = max(1, per_round // per_item)
            times[method, r] = seconds(call, items, r * calls, calls) / (calls * per_item)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per method and size")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds the calls are split into")
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces" / "dev")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kornia.augmentation.auto import RandAugment

    crops = face_crops(args.faces)
    hook = AffectAugment(RandomExpression(), p=1.0, generator=torch.Generator().manual_seed(0))
    fits_dir = tempfile.TemporaryDirectory()
    disk_hook = AffectAugment(RandomExpression(), p=1.0, generator=torch.Generator().manual_seed(0),
                              cache_dir=fits_dir.name, memory_fits=1)
    batch_hook = AffectAugment(RandomExpression(), p=1.0, generator=torch.Generator().manual_seed(0))
    rand_augment = RandAugment(n=2, m=10)
    figures: dict[str, float] = {}
    print(f"{len(crops)} face crops; {cpu_name()}; torch threads {torch.get_num_threads()}")
    for size in SIZES:
        images = [torch.from_numpy(np.ascontiguousarray(cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)))
                  .permute(2, 0, 1).contiguous() for c in crops]
        floats = [image[None].float() / 255 for image in images]
        batch = [torch.stack(images)]   # every crop in one batch: the hook applied to a training batch
        labels = torch.arange(len(images)) % 7
        for i, image in enumerate(images):  # warm: fit every image once (in memory and on disk), compile
            hook(image, 0)
            disk_hook(image, 0)
            rand_augment(floats[i])
        batch_hook(batch[0], labels)
        before, disk_before = dict(hook.stats), dict(disk_hook.stats)
        per_round = max(1, args.calls // args.rounds)
        hook_s, ra_s, disk_s, batch_s = alternating_rounds(
            [(lambda image, i: hook(image, i % 7), images, 1), (lambda image, i: rand_augment(image), floats, 1),
             (lambda image, i: disk_hook(image, i % 7), images, 1), (lambda images, i: batch_hook(images, labels), batch,
                                                                     len(images))],
            per_round, args.rounds)
        calls = args.rounds * per_round
        synthesized = hook.stats["synthesized"] - before.get("synthesized", 0)
        fitted = sum(h.stats["fitted"] - b.get("fitted", 0) for h, b in ((hook, before), (disk_hook, disk_before)))
        hook_ips, ra_ips, disk_ips, batch_ips = (1 / t.mean() for t in (hook_s, ra_s, disk_s, batch_s))
        ratios, disk_ratios, batch_ratios = ra_s / hook_s, ra_s / disk_s, ra_s / batch_s
        figures |= {f"hook_img_s_{size}": hook_ips, f"randaugment_img_s_{size}": ra_ips,
                    f"ratio_{size}": float(np.median(ratios)), f"ratio_{size}_min": float(ratios.min()),
                    f"ratio_{size}_max": float(ratios.max()), f"hook_disk_img_s_{size}": disk_ips,
                    f"ratio_disk_{size}": float(np.median(disk_ratios)), f"hook_batch_img_s_{size}": batch_ips,
                    f"ratio_batch_{size}": float(np.median(batch_ratios))}
        print(f"{size}²: hook {hook_ips:.1f} img/s ({1000 / hook_ips:.1f} ms; {synthesized}/{calls} re-rendered, "
              f"fits made in the timed part: {fitted}), RandAugment {ra_ips:.1f} img/s ({1000 / ra_ips:.1f} ms): "
              f"ratio {np.median(ratios):.3f} (median of {args.rounds} rounds; {ratios.min():.3f}-{ratios.max():.3f}); "
              f"every fit from disk: {disk_ips:.1f} img/s ({1000 / disk_ips:.1f} ms), "
              f"ratio {np.median(disk_ratios):.3f}; batches of {len(images)}: {batch_ips:.1f} img/s "
              f"({1000 / batch_ips:.1f} ms an image), ratio {np.median(batch_ratios):.3f}")
    fits_dir.cleanup()
    figures["threads"] = torch.get_num_threads()
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
