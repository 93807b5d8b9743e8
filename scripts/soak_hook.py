"""Soak test of the training hook: RSS over many calls must stay flat.

    python scripts/soak_hook.py [--calls 20000] [--warmup 1000] [--size 112]

Calls ``AffectAugment(RandomExpression(), p=1)`` on the face crops of scripts/bench_hook.py (the
astronaut and, when present, the dev photos, each also mirrored), cycling through them with a
seeded generator, and samples the process's resident set size (VmRSS) every 500 calls. The
growth is measured from the end of the warm-up (every crop fitted, buffers allocated) to the
largest later sample. The last line holds `key=value` figures, including `rss_growth_mb=`.
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
sys.path.insert(0, str(ROOT))

from bench_hook import face_crops  # noqa: E402
from benchlib import cpu_name  # noqa: E402

from affectsynth.augment import AffectAugment, RandomExpression  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces" / "dev")
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = [torch.from_numpy(np.ascontiguousarray(cv2.resize(c, (args.size, args.size), interpolation=cv2.INTER_AREA)))
              .permute(2, 0, 1).contiguous() for c in face_crops(args.faces)]
    hook = AffectAugment(RandomExpression(), p=1.0, generator=torch.Generator().manual_seed(0))
    print(f"{len(images)} crops at {args.size}²; {cpu_name()}")
    start, samples, warm = time.perf_counter(), [], None
    for i in range(1, args.calls + 1):
        hook(images[i % len(images)], i % 7)
        if i == args.warmup:
            warm = rss_mb()
        if i % 500 == 0:
            samples.append((i, rss_mb()))
            print(f"{i:6d} calls  RSS {samples[-1][1]:.1f} MB  {i / (time.perf_counter() - start):.1f} calls/s", flush=True)
    later = [mb for i, mb in samples if i >= args.warmup]
    growth = max(later) - warm
    print(f"calls={args.calls} warmup={args.warmup} rss_warm_mb={warm:.1f} rss_end_mb={samples[-1][1]:.1f} "
          f"rss_growth_mb={growth:.1f} synthesized={hook.stats['synthesized']} fitted={hook.stats['fitted']} "
          f"seconds={time.perf_counter() - start:.0f}")
    return 0 if growth < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
