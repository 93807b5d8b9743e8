"""The nvdiffrast backend: its wrapping checked on the CPU against an emulation of nvdiffrast's
documented output, and, where CUDA and nvdiffrast are present, nvdiffrast on CUDA against numba on
the CPU (fragments, and whole renders of the README's example through the Synthesizer).

The CUDA tests need a fit of the astronaut without MediaPipe (absent on the GPU machine): they
read the fit cache that ``scripts/fetch_gpu_wheels.sh`` prepares in ``.whl/fits`` (or the folder
``AFFECTSYNTH_GPU_FITS`` names; ``scripts/bench_gpu.py --prepare-fits``), or fit afresh where
MediaPipe imports. Untested on a GPU so far.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from affectsynth.render import rasterize
from affectsynth.render.raster_nvdiffrast import nvdiffrast_available, rasterize_ranges
from tests.test_raster import edge_distance_px, posed_model

FITS = Path(os.environ.get("AFFECTSYNTH_GPU_FITS", Path(__file__).resolve().parents[1] / ".whl" / "fits"))
need_cuda = pytest.mark.skipif(not nvdiffrast_available(), reason="needs CUDA and nvdiffrast "
                               "(pip install affectsynth[gpu]; a GPU machine: scripts/device_check.sh)")


def emulated_nvdiffrast(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
                        ranges: torch.Tensor) -> torch.Tensor:
    """nvdiffrast's range-mode ``rasterize`` as documented, on the CPU, without its 1/16 px snapping:
    pixel (i, j) samples clip ((2j + 1) / W - 1, (2i + 1) / H - 1); a triangle covers a sample
    inside it or on its edge, either orientation; the smallest z/w wins (the first on a tie).

    Args:
        pos: [N, 4] clip-space vertices. tri: [T, 3] int32. resolution: (H, W).
        ranges: [B, 2] (start, count) into ``tri``.
    Returns:
        [B, H, W, 4] float32 (u, v, z/w, index into ``tri`` + 1), zeros where empty.
    """
    height, width = resolution
    y = (2.0 * torch.arange(height, dtype=torch.float64) + 1.0) / height - 1.0
    x = (2.0 * torch.arange(width, dtype=torch.float64) + 1.0) / width - 1.0
    fy, fx = torch.meshgrid(y, x, indexing="ij")
    out = torch.zeros(len(ranges), height, width, 4, dtype=torch.float64)
    pos = pos.double()
    for b, (start, count) in enumerate(ranges.tolist()):
        best = torch.full((height, width), torch.inf, dtype=torch.float64)
        for t in range(start, start + count):
            p = pos[tri[t].long()]
            # Edge functions of the sample, as nvdiffrast's shading kernel forms them.
            px, py = p[:, 0, None, None] - fx * p[:, 3, None, None], p[:, 1, None, None] - fy * p[:, 3, None, None]
            a = torch.stack((px[1] * py[2] - py[1] * px[2], px[2] * py[0] - py[2] * px[0],
                             px[0] * py[1] - py[0] * px[1]))
            total = a.sum(0)
            if not bool((total != 0).any()):
                continue
            w = a / total
            z = (w * p[:, 2, None, None]).sum(0)
            wins = (w >= 0).all(0) & (total != 0) & (z < best)
            best = torch.where(wins, z, best)
            out[b][wins] = torch.stack((w[0], w[1], z, torch.full_like(z, t + 1.0)), -1)[wins]
    return out.float()


def random_soup(batch: int, faces: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch, 3 * faces, 3] corners of random triangles (either orientation, some off the image) and their faces."""
    g = torch.Generator().manual_seed(seed)
    height, width = size
    xy = torch.rand(batch, 3 * faces, 2, generator=g, dtype=torch.float64) * torch.tensor([width + 20.0, height + 20.0]) - 10
    depth = torch.rand(batch, 3 * faces, 1, generator=g, dtype=torch.float64) * 50 - 25
    return torch.cat((xy, depth), -1), torch.arange(3 * faces).reshape(faces, 3)


def assert_fragments_agree(ours, theirs, verts, faces, near_px: float, share: float, depth_px: float = 0.0) -> None:
    """tri_id equal (but on at most ``share`` of the pixels) except where a pixel centre lies within
    ``near_px`` of an edge of either's triangle, or where both drew surfaces nearer in depth than
    ``depth_px`` (a crossing of two surfaces); bary and depth equal where tri_id is."""
    differ = ours.tri_id != theirs.tri_id
    assert differ.float().mean() <= share, differ.float().mean()
    if bool(differ.any()):
        near = torch.minimum(edge_distance_px(ours, verts, faces), edge_distance_px(theirs, verts, faces))
        tie = ours.mask & theirs.mask & ((ours.depth - theirs.depth).abs() <= depth_px)
        explained = (near < near_px) | tie
        assert explained[differ].all(), near[differ & ~explained].min()
    same = ~differ & ours.mask
    assert (ours.bary[same] - theirs.bary[same]).abs().max() < 1e-3
    assert (ours.depth[same] - theirs.depth[same]).abs().max() < 1e-2
    assert torch.isneginf(theirs.depth[~theirs.mask]).all() and (theirs.bary[~theirs.mask] == 0).all()


# ---------------------------------------------------------------------- on the CPU, emulated
@pytest.mark.parametrize("cull", [True, False])
def test_wrapping_matches_numba_on_random_soups(cull):
    verts, faces = random_soup(batch=3, faces=12, size=(24, 32), seed=1)
    ours = rasterize(verts, faces, (24, 32), backend="numba", cull_backfaces=cull)
    emulated = rasterize_ranges(emulated_nvdiffrast, verts, faces, (24, 32), cull)
    assert emulated[0].dtype == torch.int64 and emulated[1].dtype == torch.float32
    theirs = type(ours)(*emulated, backend="emulated")
    assert ours.mask.float().mean() > 0.2
    assert_fragments_agree(ours, theirs, verts, faces, near_px=1e-6, share=0.02)


def test_wrapping_matches_numba_on_the_posed_model(skin_model):
    verts = posed_model(skin_model, 48, yaws=(0.0, 180.0, -35.0), pitch=10.0)     # 180: seen from behind
    faces = skin_model.triangles
    ours = rasterize(verts, faces, (48, 48), backend="numba")
    theirs = type(ours)(*rasterize_ranges(emulated_nvdiffrast, verts, faces, (48, 48), True), backend="emulated")
    assert ours.mask[1].sum() <= 2 and ours.mask[0].float().mean() > 0.3
    assert_fragments_agree(ours, theirs, verts, faces, near_px=1e-6, share=0.01)


def test_wrapping_of_dropped_and_empty_elements():
    # Element 0: a front face, a back face, a NaN corner and a zero-area one (no pixel centre on an
    # edge: the emulation has no fill rule); element 1: nothing drawable.
    verts = torch.tensor([[[1.2, 1.3, 3.0], [1.2, 11.1, 3.0], [10.9, 1.3, 3.0], [float("nan"), 3.0, 0.0]],
                          [[1.0, 1.0, 3.0], [1.0, 1.0, 3.0], [1.0, 1.0, 3.0], [2.0, 2.0, 0.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 3], [0, 0, 1]])
    tri_id, bary, depth = rasterize_ranges(emulated_nvdiffrast, verts, faces, (12, 12), True)
    numba = rasterize(verts, faces, (12, 12), backend="numba")
    assert torch.equal(tri_id, numba.tri_id) and set(tri_id.unique().tolist()) == {-1, 0}
    assert (tri_id[1] == -1).all() and torch.isneginf(depth[1]).all() and (bary[1] == 0).all()
    assert torch.allclose(depth[0][tri_id[0] == 0], torch.tensor(3.0))
    assert torch.allclose(bary, numba.bary, atol=1e-6)


# ----------------------------------------------------------------------------- on CUDA
@pytest.fixture(scope="module")
def bench_gpu():
    """scripts/bench_gpu.py as a module (its fit preparation and cached fits), with scripts/ importable."""
    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    sys.path.insert(0, scripts)
    try:
        spec = importlib.util.spec_from_file_location("bench_gpu", Path(scripts) / "bench_gpu.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(scripts)


@pytest.fixture(scope="module")
def fits(bench_gpu, tmp_path_factory) -> Path:
    """The prepared fit cache, or one made here where MediaPipe imports."""
    if (FITS / "fitter.txt").is_file():
        return FITS
    pytest.importorskip("mediapipe", reason=f"no prepared fits in {FITS} (scripts/fetch_gpu_wheels.sh makes them)")
    folder = tmp_path_factory.mktemp("fits")
    bench_gpu.prepare_fits(folder, sizes=())
    return folder


@need_cuda
def test_nvdiffrast_matches_numba(default_model, astronaut, bench_gpu, fits):
    fitted = bench_gpu.cached_fit(fits, astronaut, "cpu")
    faces = default_model.triangles
    meshes = [(fitted.fit.image_points(fitted.fit.vertices(default_model)), faces, (512, 512)),
              (posed_model(default_model, 224, yaws=(-40.0, 0.0, 25.0, 180.0), pitch=10.0), faces, (224, 224)),
              (*random_soup(batch=4, faces=200, size=(100, 130), seed=2), (100, 130))]
    for verts, tris, size in meshes:
        for cull in (True, False):
            ours = rasterize(verts.cpu(), tris.cpu(), size, backend="numba", cull_backfaces=cull)
            gpu = rasterize(verts.cuda(), tris.cuda(), size, backend="auto", cull_backfaces=cull)
            assert gpu.backend == "nvdiffrast" and gpu.tri_id.is_cuda
            theirs = type(gpu)(gpu.tri_id.cpu(), gpu.bary.cpu(), gpu.depth.cpu(), gpu.backend)
            # nvdiffrast snaps corners to 1/16 px: centres within half of that of an edge may differ,
            # and so may the winner where two surfaces cross (its depth planes come from snapped corners).
            assert_fragments_agree(ours, theirs, verts.cpu(), tris.cpu(), near_px=1 / 32 + 1e-4, share=5e-3,
                                   depth_px=0.5)


@need_cuda
@pytest.mark.parametrize("spec", ["happiness", "surprise", "anger", "au:12:0.8,6:0.6"])
def test_synthesizer_renders_alike_on_cpu_and_cuda(default_model, astronaut, bench_gpu, fits, spec):
    from affectsynth.pipeline import Synthesizer, parse_target

    target = parse_target(spec)
    results = {}
    for device in ("cpu", "cuda"):
        model = default_model.to(device)
        with Synthesizer(model, detector=bench_gpu.NoDetector()) as synthesizer:
            fitted = bench_gpu.cached_fit(fits, astronaut, device)
            results[device] = next(synthesizer.render_many(astronaut, [target], fitted=fitted))
    cpu, cuda = results["cpu"], results["cuda"]
    assert cpu.rasterizer == "numba" and cuda.rasterizer == "nvdiffrast"
    face = (cpu.mask > 0) | (cuda.mask > 0)
    assert face.sum() > 5_000                 # (the astronaut's face: ~8,000 px)
    difference = np.abs(cpu.image.astype(np.float64) - cuda.image.astype(np.float64)) / 255
    assert difference[face].mean() < 1 / 255, difference[face].mean()


@need_cuda
def test_a_batch_renders_on_cuda_as_each_image_on_the_cpu(default_model, astronaut, bench_gpu, fits):
    """Synthesizer.render_tensors on CUDA (the batched path: a batch of four of the README's example,
    each its own target) against render_many on the CPU, image by image: mean difference under
    1/255 on the faces."""
    from affectsynth.affect.targets import stack_model_coeffs
    from affectsynth.fit import FitResult
    from affectsynth.pipeline import Synthesizer, parse_target
    from affectsynth.render.retarget import stacked_rows

    targets = [parse_target(t) for t in ("happiness", "surprise", "fear", "au:12:0.8,6:0.6")]
    with Synthesizer(default_model, detector=bench_gpu.NoDetector()) as synthesizer:
        fitted = bench_gpu.cached_fit(fits, astronaut, "cpu")
        alone = [next(synthesizer.render_many(astronaut, [t], fitted=fitted)) for t in targets]
    with Synthesizer(default_model.to("cuda"), detector=bench_gpu.NoDetector()) as synthesizer:
        fitted = bench_gpu.cached_fit(fits, astronaut, "cuda")
        appearance = synthesizer.appearance(astronaut, fitted)
        photo = torch.from_numpy(astronaut).cuda().permute(2, 0, 1)[None].float().div(255).expand(4, -1, -1, -1)
        coeffs, _ = stack_model_coeffs(targets, synthesizer.model)
        rendered = synthesizer.render_tensors(photo.contiguous(), FitResult.cat([fitted.fit] * 4), coeffs.cuda(),
                                              {part: stacked_rows([appearance[part]] * 4) for part in appearance})
    assert rendered.backend == "nvdiffrast" and rendered.image.is_cuda and rendered.image.shape == (4, 3, 512, 512)
    images = (rendered.image.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
    masks = rendered.mask[:, 0].cpu().numpy()
    for target, cpu, image, mask in zip(targets, alone, images, masks):
        face = (cpu.mask > 0) | (mask > 0)
        assert face.sum() > 5_000                 # (the astronaut's face: ~8,000 px)
        difference = np.abs(cpu.image.astype(np.float64) - image.astype(np.float64)) / 255
        assert difference[face].mean() < 1 / 255, (target, difference[face].mean())
