"""Images/s of hook-style synthesis with cached fits, on the CPU or a CUDA device, and the bound
that memory bandwidth puts on it.

    python scripts/bench_gpu.py --device cuda [--sizes 112,224,512] [--batches 1,4,16,64,256] [--calls 50]
    python scripts/bench_gpu.py --prepare-fits .whl/fits     # on a machine with MediaPipe, before a GPU session

Images: the astronaut's face crop (scikit-image; cropped as scripts/bench_hook.py crops it, 1.6x
the landmarks' extent) at each size S, uint8 [S, S, 3], and the fits of them. Fits are made once
on the CPU (MediaPipe) and read from a fit cache folder (``--fits``, default ``.whl/fits``, which
``scripts/fetch_gpu_wheels.sh`` prepares), so a machine without MediaPipe (the GPU machine) can run
this; the fit is not timed, as in a training run whose fits are cached.

What is timed, per size:

* ``hook``: one image per call, as ``AffectAugment`` renders a single image: ``Synthesizer.render_many(image,
  [target], fitted=..., appearance=...)`` with the model and rasteriser on ``--device``, targets
  cycling through the six basic expressions. Its time is split into stages: deform, rasterise
  (both rasterisations of each render, synchronised), the rest of render and composite, and the
  rest of the call.
* ``batch``: B images per call, for each B in ``--batches`` (B copies of the crop, each its own
  target), two ways:
  ``Synthesizer.render_tensors``: the batch [B, 3, S, S], its fits and the targets' coefficients on
  the device, the composited batch left there (a training loop whose batch is on the GPU);
  ``img_s_<S>_b<B>``, and ``img_s_224=`` the best of them at 224²; at the best batch, the shares of
  the deformation, the rasterisations and the rest (``batch_share_<stage>_<S>``).
  ``Synthesizer.render_batch``: uint8 images in and out through the host, with each image's labels
  (the hook's own call); ``numpy_img_s_<S>_b<B>``, ``numpy_img_s_224=`` the best (on the CPU in
  batches of at most ``CPU_BATCH_PIXELS``).
* ``raster``: the rasteriser alone (``rasterize``) on B copies of the fitted face at S x S, for
  each B in ``--batches``.

Launches: ``torch_calls_<S>`` and ``host_reads_<S>``, the torch calls one ``render_tensors`` call makes
(the same for any batch: no step loops over the faces) and those that read a value back to the
host; with the best batch's time they give the time a call takes, which on a GPU is mostly the
Python and launch cost of each op (on the CPU the kernels take the place of most of them).

Bandwidth bound: an estimate of the bytes one hook call moves (the photo in, the fragments of
both rasterisations, the interpolated attributes and texture taps of the drawn pixels, the
outputs; see :func:`bytes_per_image`) against a measured copy bandwidth of the device (a
device-to-device copy, counting bytes read and written): images/s no implementation of this
render path can beat on that device. The last line holds `key=value` figures, ``img_s_224=``
(the best batched images/s at 224²; nan when 224 is not among --sizes) among them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from benchlib import cpu_name, median_ms  # noqa: E402

import affectsynth.render.retarget as retarget_module  # noqa: E402
from affectsynth.affect.targets import stack_model_coeffs  # noqa: E402
from affectsynth.cache import FitCache, fitter_id, model_fingerprint  # noqa: E402
from affectsynth.deform import retarget  # noqa: E402
from affectsynth.fit import FitResult  # noqa: E402
from affectsynth.model import load_default_model  # noqa: E402
from affectsynth.pipeline import FaceFit, Synthesizer, parse_target  # noqa: E402
from affectsynth.render import rasterize  # noqa: E402
from affectsynth.render.retarget import stacked_rows  # noqa: E402

SIZES = (112, 224, 512)
BATCHES = (1, 4, 16, 64, 256)
TARGETS = ("happiness", "sadness", "surprise", "fear", "anger", "disgust")
DEFAULT_FITS = ROOT / ".whl" / "fits"


class NoDetector:
    """A stand-in for the detector where fits are precomputed (MediaPipe is not needed, nor there)."""

    scheme = "mp478"

    def __call__(self, image: np.ndarray):
        raise RuntimeError("NoDetector: fits are read from the fit cache, not detected")

    def close(self) -> None:
        pass


def face_image(fits: Path, size: int) -> np.ndarray:
    """The prepared face crop at ``size`` x ``size``, [S, S, 3] uint8 RGB."""
    from PIL import Image

    return np.array(Image.open(fits / f"face_{size}.png").convert("RGB"))  # a writable copy (torch.from_numpy)


def prepare_fits(fits: Path, sizes: tuple[int, ...] = SIZES) -> None:
    """Fit (MediaPipe, CPU) the astronaut and its face crop at each size into a fit cache at ``fits``,
    with the crops as face_S.png and the fitter's identity in fitter.txt (for :func:`cached_fit`)."""
    import cv2
    from bench_hook import face_crops
    from PIL import Image
    from skimage import data

    from affectsynth.pipeline import FaceFitter

    fits.mkdir(parents=True, exist_ok=True)
    crop = face_crops(fits / "no-such-folder")[0]  # the astronaut's crop alone
    model = load_default_model()
    with contextlib.closing(FaceFitter(model)) as face_fitter:
        identity = fitter_id(model_fingerprint(model), face_fitter.detector, face_fitter.fitter.config, False)
        cache = FitCache(fits, identity)
        images = [data.astronaut()]
        for size in sizes:
            image = np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
            Image.fromarray(image).save(fits / f"face_{size}.png")
            images.append(image)
        for image in images:
            cache.fit(image, face_fitter)
    (fits / "fitter.txt").write_text(identity)


def cached_fit(fits: Path, image: np.ndarray, device: torch.device | str) -> FaceFit:
    """The fit :func:`prepare_fits` made of ``image``, its tensors on ``device``; KeyError if there is none."""
    cache = FitCache(fits, (fits / "fitter.txt").read_text(), device)
    entry = cache.get(cache.key(image))
    if not isinstance(entry, FaceFit):
        raise KeyError(f"no fit of this image in {fits} (run scripts/bench_gpu.py --prepare-fits {fits})")
    return entry


class TorchCalls(TorchFunctionMode):
    """Counts the torch calls made within it, and those that read a tensor back to the host
    (``tolist``, ``item``, ``nonzero``, a tensor's truth or number, ``cpu``): on a GPU each call is
    a launch's worth of Python and each read a wait for the device."""

    READS = {"tolist", "item", "nonzero", "__bool__", "__int__", "__float__", "__index__", "cpu"}

    def __init__(self):
        super().__init__()
        self.calls = self.host_reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        self.host_reads += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed_rasterize(device: torch.device, spent: list[float]):
    """Within it, every rasterisation of the render path is synchronised and its seconds added to ``spent``."""
    original = retarget_module.rasterize

    def timed(*args, **kwargs):
        synchronize(device)
        start = time.perf_counter()
        out = original(*args, **kwargs)
        synchronize(device)
        spent.append(time.perf_counter() - start)
        return out

    retarget_module.rasterize = timed
    try:
        yield
    finally:
        retarget_module.rasterize = original


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large tensor copy on ``device``, counting bytes read and written (median of 10)."""
    n = (256 if device.type == "cuda" else 64) * 2 ** 20 // 4
    src, dst = torch.ones(n, device=device), torch.empty(n, device=device)

    def copy():
        dst.copy_(src)
        synchronize(device)

    return 2 * 4 * n / (median_ms(copy, repeats=10, warmup=2) / 1000)


def bytes_per_image(photo_px: int, window_px: int, drawn_px: int) -> dict[str, int]:
    """An estimate, by part, of the bytes one hook call reads and writes in device memory (each
    tensor counted once where written and once where read; caches and fusion would lower it).

    photo: the uint8 photo in (3 B/px), as float (12), cloned into the output (12 + 12), back to uint8 (3),
        the mask out (4). fragments: per window pixel, both rasterisations write nvdiffrast's output
        (16 B; none on the CPU, counted all the same) and ours (tri_id 8, bary 12, depth 4) and read them
        again (24 + the mask test 8). attributes: per drawn pixel, 3 corners x 15 float32 attributes read
        (180) and written (60), 4 bilinear texture taps of 3 float32 (48) and the colour (12 + 12).
        composite: per window pixel, the coverage and feathered mask (4 + 4 each way, 2 passes of the
        separable blur) and the colour grid and window (12 each way, twice).
    """
    return {"photo": photo_px * (3 + 12 + 24 + 3 + 4),
            "fragments": 2 * window_px * (16 + 24 + 24 + 8),
            "attributes": drawn_px * (180 + 60 + 48 + 24),
            "composite": window_px * (2 * 2 * 8 + 2 * 2 * 12)}


def bench_size(synthesizer: Synthesizer, fits: Path, size: int, batches: tuple[int, ...], calls: int,
               device: torch.device, profile: bool = False) -> dict[str, float]:
    """The figures of one size (module docstring); prints a line per measurement."""
    image = face_image(fits, size)
    fitted = cached_fit(fits, image, device)
    appearance = synthesizer.appearance(image, fitted)
    targets = [parse_target(t) for t in TARGETS]

    def render(i: int):
        return next(synthesizer.render_many(image, [targets[i % len(targets)]], fitted=fitted, appearance=appearance))

    for i in range(3):  # warm: compile, allocate
        render(i)
    spent: list[float] = []
    stages = {"deform": 0.0, "render_composite": 0.0}
    with timed_rasterize(device, spent):
        synchronize(device)
        start = time.perf_counter()
        for i in range(calls):
            result = render(i)
            for stage in stages:
                stages[stage] += result.timings_ms[stage] / 1000
        synchronize(device)
        total = time.perf_counter() - start
    raster = sum(spent)
    shares = {"deform": stages["deform"], "rasterize": raster, "render_rest": stages["render_composite"] - raster,
              "other": total - stages["deform"] - stages["render_composite"]}
    figures = {f"hook_img_s_{size}": calls / total}
    figures |= {f"share_{k}_{size}": v / total for k, v in shares.items()}
    print(f"{size}²: hook (batch 1 per call) {calls / total:.1f} img/s ({1000 * total / calls:.2f} ms); shares: "
          + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in shares.items()))

    verts = fitted.fit.image_points(fitted.fit.vertices(synthesizer.model)).float()               # [1, V, 3]
    faces = synthesizer.model.triangles.to(device)
    frags = rasterize(verts, faces, (size, size), synthesizer.backend)
    moved = bytes_per_image(size * size, size * size, int(frags.mask.sum()))
    figures[f"bytes_per_img_{size}"] = sum(moved.values())
    print(f"{size}²: bytes per image (estimate) {sum(moved.values()) / 1e6:.2f} MB: "
          + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in moved.items()))
    photo = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255               # [1, 3, S, S]
    coeffs, _ = stack_model_coeffs(targets, synthesizer.model)                                       # [6, E]

    def batch_inputs(batch: int) -> tuple:
        """render_tensors' arguments for ``batch`` copies of the crop, each its own target."""
        return (photo.expand(batch, -1, -1, -1).contiguous(), FitResult.cat([fitted.fit] * batch),
                coeffs[torch.arange(batch) % len(targets)].to(device),
                {part: stacked_rows([appearance[part]] * batch) for part in appearance})

    def tensors_call(batch: int):
        inputs = batch_inputs(batch)
        return lambda: synthesizer.render_tensors(*inputs).image

    for batch in batches:
        chosen = [targets[i % len(targets)] for i in range(batch)]
        calls = {"img_s": tensors_call(batch),
                 "numpy_img_s": lambda: synthesizer.render_batch([image] * batch, [fitted] * batch, chosen,
                                                                  [appearance] * batch)}
        for name, call in calls.items():
            try:
                ms = median_ms(lambda: (call(), synchronize(device)), repeats=3, warmup=1)
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory at the largest batches
                print(f"{size}²: {name} batch {batch}: failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
                continue
            figures[f"{name}_{size}_b{batch}"] = 1000 * batch / ms
            print(f"{size}²: {name}, batch {batch}: {1000 * batch / ms:.1f} img/s ({ms:.2f} ms per batch)")
        if f"torch_calls_{size}" not in figures:   # once: the same for any batch
            with TorchCalls() as counted:
                calls["img_s"]()
            figures[f"torch_calls_{size}"], figures[f"host_reads_{size}"] = counted.calls, counted.host_reads
    for name in ("img_s", "numpy_img_s"):
        figures[f"{name}_{size}"] = max([v for k, v in figures.items() if k.startswith(f"{name}_{size}_b")],
                                        default=float("nan"))
    best = max(batches, key=lambda b: figures.get(f"img_s_{size}_b{b}", 0.0))
    print(f"{size}²: render_tensors makes {figures[f'torch_calls_{size}']:.0f} torch calls a batch, whatever its size "
          f"({figures[f'host_reads_{size}']:.0f} read back to the host); at its best batch ({best}): "
          f"{1e6 * best / figures[f'img_s_{size}'] / figures[f'torch_calls_{size}']:.1f} us a call")
    for batch in batches:
        stacked = verts.expand(batch, -1, -1).contiguous()
        try:
            ms = median_ms(lambda: (rasterize(stacked, faces, (size, size), synthesizer.backend),
                                    synchronize(device)), repeats=5, warmup=1)
        except (RuntimeError, MemoryError) as e:  # e.g. out of memory at the largest batches
            print(f"{size}²: raster batch {batch}: failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            continue
        figures[f"raster_img_s_{size}_b{batch}"] = 1000 * batch / ms
        print(f"{size}²: raster alone, batch {batch}: {1000 * batch / ms:.1f} img/s ({ms:.2f} ms per batch)")
    figures |= batch_stage_shares(synthesizer, batch_inputs(best), device, size, best)
    if profile:
        profiled(tensors_call(best), device, f"{size}², render_tensors batch {best}")
    return figures


def batch_stage_shares(synthesizer: Synthesizer, inputs: tuple, device: torch.device, size: int,
                       batch: int) -> dict[str, float]:
    """The shares of one render_tensors call of a batch taken by the deformation (timed alone), the
    rasterisations (each synchronised: :func:`timed_rasterize`) and the rest (lookup, shading, masks,
    compositing), medians of 3 calls: ``batch_share_<stage>_<S>``."""
    runs = []
    for _ in range(4):   # (the first warms)
        spent: list[float] = []
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            retarget(synthesizer.model, inputs[1], inputs[2], synthesizer.residual_field(inputs[1].scheme))
        synchronize(device)
        deform = time.perf_counter() - start
        with timed_rasterize(device, spent):
            start = time.perf_counter()
            synthesizer.render_tensors(*inputs).image
            synchronize(device)
            total = time.perf_counter() - start
        runs.append((deform / total, sum(spent) / total))
    deform, raster = (float(np.median([r[k] for r in runs[1:]])) for k in (0, 1))
    shares = {"deform": deform, "rasterize": raster, "rest": 1.0 - deform - raster}
    print(f"{size}²: render_tensors batch {batch}, shares: "
          + ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items()))
    return {f"batch_share_{k}_{size}": v for k, v in shares.items()}


def profiled(call, device: torch.device, title: str, rows: int = 20) -> None:
    """Prints torch.profiler's table of one ``call`` (after a warm one): the ops by their own device time
    (CPU time off a GPU), which says where a batch's time goes on a device no session can watch."""
    from torch.profiler import ProfilerActivity, profile

    call()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as recorded:
        call()
        synchronize(device)
    order = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"--- profile: {title}, by {order}")
    print(recorded.key_averages().table(sort_by=order, row_limit=rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated image sizes")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    ap.add_argument("--calls", type=int, default=50, help="timed hook calls per size")
    ap.add_argument("--fits", type=Path, default=DEFAULT_FITS, help="the prepared fit cache (default .whl/fits)")
    ap.add_argument("--prepare-fits", type=Path, metavar="DIR", help="only prepare the fits in DIR (needs MediaPipe)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's table of one best batch per size")
    args = ap.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.prepare_fits is not None:
        prepare_fits(args.prepare_fits, sizes)
        print(f"prepared fits of the astronaut and its face crop at {sizes} in {args.prepare_fits}")
        return 0
    if not (args.fits / "fitter.txt").is_file():
        prepare_fits(args.fits, sizes)  # needs MediaPipe: on a machine without it, prepare them beforehand
    device = torch.device(args.device)
    synthesizer = Synthesizer(load_default_model(device), detector=NoDetector())
    bandwidth = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{name}; rasteriser {synthesizer.backend}; torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"copy bandwidth {bandwidth / 1e9:.0f} GB/s (read + write)")
    figures: dict[str, float] = {"img_s_224": float("nan"), "numpy_img_s_224": float("nan")}
    for size in sizes:
        figures |= bench_size(synthesizer, args.fits, size, tuple(int(b) for b in args.batches.split(",")),
                              args.calls, device, args.profile)
        figures[f"bound_img_s_{size}"] = bandwidth / figures[f"bytes_per_img_{size}"]
        print(f"{size}²: bandwidth bound {figures[f'bound_img_s_{size}']:.0f} img/s; measured (best batch) "
              f"{figures[f'img_s_{size}']:.1f} img/s = {100 * figures[f'img_s_{size}'] / figures[f'bound_img_s_{size}']:.2f} % of it")
    figures["bandwidth_gb_s"] = bandwidth / 1e9
    print(f"device={args.device} backend={synthesizer.backend} "
          + " ".join(f"{k}={v:.4g}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
