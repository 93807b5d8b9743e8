"""Benchmark of synthesis on this CPU: median ms per photo for each stage and end to end.

    python scripts/bench_render.py [--threads 1] [--repeats 15]

The photo is scikit-image's astronaut, resized to 256² and 512²; the target is the "surprise"
prototype; models and detector are loaded once (as in a long-running process). Stages:
detect_fit (MediaPipe + fit), deform, render_composite (two rasterisations, shading,
feathered composite; the mouth interior and eyeballs are part of the model's mesh). The last
line holds `key=value` figures, including `e2e_ms_512=` and `img_s_512=`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from benchlib import cpu_name  # noqa: E402

from affectsynth.affect.targets import parse_expression  # noqa: E402
from affectsynth.model import load_default_model  # noqa: E402
from affectsynth.pipeline import Synthesizer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from skimage import data

    synthesizer = Synthesizer(load_default_model())
    target = parse_expression("surprise")
    figures = {"cpu": cpu_name().replace(" ", "_"), "threads": str(args.threads), "rasterizer": synthesizer.backend}
    for size in (256, 512):
        image = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
        synthesizer(image, target)  # warm-up: numba compile cache, MediaPipe graphs
        stages: dict[str, list[float]] = {}
        e2e = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = synthesizer(image, target)
            e2e.append(1000.0 * (time.perf_counter() - start))
            for name, ms in result.timings_ms.items():
                stages.setdefault(name, []).append(ms)
        for name, values in stages.items():
            figures[f"{name}_ms_{size}"] = f"{statistics.median(values):.2f}"
        figures[f"e2e_ms_{size}"] = f"{statistics.median(e2e):.2f}"
        figures[f"img_s_{size}"] = f"{1000.0 / statistics.median(e2e):.1f}"
    synthesizer.close()
    for key, value in figures.items():
        print(f"{key:>24} = {value}")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
