"""Benchmark the CPU rasteriser backends (numba, moderngl/EGL) on the default face mesh.

For each backend, image size (224, 512, 1024), batch (1, 8) and mesh (the default model's
3408 triangles, and the same surface midpoint-subdivided once and twice: 13632 and 54528
triangles), the median wall time of :func:`affectsynth.render.rasterize` in ms, fragments
included (allocation, tensors back). Batches hold the mean face at yaws from -30 to +30
degrees, about 80% of the image wide.

Also timed: the first call in a fresh process (numba: loading its on-disk compile cache, or
compiling when there is none; moderngl: creating the EGL context and compiling shaders).

Prints one line per figure, then everything as one ``key=value`` line; keys
``{backend}_ms_{size}[_f{triangles}][_b8]`` (no suffix: the default mesh, batch 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numba
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from benchlib import cpu_name, median_ms  # noqa: E402

from affectsynth.camera import rotation_from_euler_deg, to_image_space  # noqa: E402
from affectsynth.model.default import load_default_model  # noqa: E402
from affectsynth.model.mesh_ops import subdivide_midpoint  # noqa: E402
from affectsynth.render import available_backends, rasterize, resolve_backend  # noqa: E402

SIZES = (224, 512, 1024)
BATCHES = (1, 8)




def posed(vertices: torch.Tensor, size: int, batch: int) -> torch.Tensor:
    """Model-space vertices [V, 3] -> image space [batch, V, 3], yaws spread over +-30 degrees."""
    yaw = torch.linspace(-30.0, 30.0, batch) if batch > 1 else torch.zeros(1)
    rot = rotation_from_euler_deg(yaw, torch.zeros(batch), torch.zeros(batch))
    return to_image_space(vertices.expand(batch, -1, -1), rot, torch.full((batch,), 0.8 * size / 155.0),
                          torch.full((batch, 2), size / 2.0))




def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 224 and 512, batch 1 and the default mesh")
    args = ap.parse_args(argv)
    fig: dict[str, str] = {"cpu": cpu_name().replace(" ", "_"), "cores": str(os.cpu_count()),
                           "numba_threads": str(numba.get_num_threads()), "load1": f"{os.getloadavg()[0]:.2f}"}

    def put(key: str, value: str | float) -> None:
        fig[key] = f"{value:.2f}" if isinstance(value, float) else value
        print(f"{key:>28} = {fig[key]}", flush=True)

    model = load_default_model()
    meshes = {"": (model.mean, model.triangles)}
    vertices, triangles = model.mean.double().numpy(), model.triangles.numpy()
    for _ in range(0 if args.quick else 2):
        vertices, triangles, _, _ = subdivide_midpoint(vertices, triangles)
        meshes[f"_f{len(triangles)}"] = (torch.from_numpy(vertices).float(), torch.from_numpy(triangles))
    backends = available_backends()
    put("default_cpu_backend", resolve_backend("auto"))
    put("backends", ",".join(backends))
    sizes, batches = (SIZES[:2], (1,)) if args.quick else (SIZES, BATCHES)

    for name in backends:
        verts = posed(model.mean, 224, 1)
        start = time.perf_counter()
        rasterize(verts, model.triangles, (224, 224), backend=name)
        put(f"{name}_first_call_ms", 1000.0 * (time.perf_counter() - start))
    for mesh_key, (mesh_vertices, mesh_faces) in meshes.items():
        for size in sizes:
            for batch in batches:
                verts = posed(mesh_vertices, size, batch)
                for name in backends:
                    key = f"{name}_ms_{size}{mesh_key}{'' if batch == 1 else f'_b{batch}'}"
                    put(key, median_ms(lambda: rasterize(verts, mesh_faces, (size, size), backend=name), budget_s=2.0))
    print(" ".join(f"{k}={v}" for k, v in fig.items()))


if __name__ == "__main__":
    main()
