#!/usr/bin/env bash
# The one command of a GPU session (untested on a GPU so far): from the repository root, with .whl/
# carried (scripts/fetch_gpu_wheels.sh prepares it beforehand, on a machine with internet):
#
#   run(command="bash scripts/device_check.sh", carry=[".whl"], timeout_s=590)
#
# Steps, each with its own time limit, each logged to $OUT (a later step runs even if one fails):
#   versions.log    the GPU, the toolchain and the Python packages the render path imports
#   compile.log     nvdiffrast's CUDA plugin, compiled (JIT) for sm_90 only, timed
#   pytest.log      tests/test_gpu_parity.py (nvdiffrast on CUDA against numba on the CPU) and tests/test_raster.py
#   bench_cuda.log  scripts/bench_gpu.py --device cuda (112, 224, 512 px; batches 1 to 256; a profiler table
#                   of each size's best batch)
#   bench_cpu.log   the CPU baseline on the same machine (224 px), for a like-for-like ratio
# Worst case 9 min 30 s (the steps' limits and 10 s each to stop: under a device call's 10 minutes); typically a
# few once the plugin has compiled (its JIT build has never been timed: the compile step gives it 150 s).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/device_check}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
export AFFECTSYNTH_GPU_FITS=$PWD/.whl/fits

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, output to the terminal and $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name (limit ${limit} s)"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
    return $rc
}

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "device_check: installing the carried wheels failed" >&2; exit 1; }
export PYTHONPATH=$SITE:$PWD

cat >"$SITE.versions.py" <<'PY'
import importlib, sys, torch
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
for name in ("numpy", "numba", "llvmlite", "scipy", "cv2", "PIL", "skimage", "tqdm", "nvdiffrast"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # noqa: BLE001 - report, go on
        print(name, "FAILED:", type(e).__name__, e)
PY
step versions 30 bash -c 'nvidia-smi -L; nvcc --version | tail -n 2; command -v ninja g++ c++; "$0" "$1"' \
    "$PYTHON" "$SITE.versions.py" || exit 1
# numba is imported by the rasteriser module itself: without it nothing below can run.
"$PYTHON" -c "import numba" || { echo "device_check: numba does not import here; stop" >&2; exit 1; }

step compile 150 "$PYTHON" -c "
import time, torch, nvdiffrast.torch as dr
start = time.perf_counter()
dr.RasterizeCudaContext()  # the current CUDA device
print(f'nvdiffrast CUDA plugin ready in {time.perf_counter() - start:.1f} s')
" || exit 1
step pytest 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu_parity.py tests/test_raster.py
step bench_cuda 150 "$PYTHON" scripts/bench_gpu.py --device cuda --calls 30 --profile
step bench_cpu 40 "$PYTHON" scripts/bench_gpu.py --device cpu --sizes 224 --batches 1,16 --calls 10
echo "device_check: logs in $OUT: $(ls "$OUT" | tr '\n' ' ')"
