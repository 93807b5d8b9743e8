#!/usr/bin/env bash
# Prepare .whl/ (git-excluded, never committed) for a GPU session's scripts/device_check.sh. Run it
# here, on a machine with internet and the project's environment (MediaPipe), before that session:
#
#   PYTHON=.venv/bin/python scripts/fetch_gpu_wheels.sh
#
# .whl/*.whl   what the GPU machine (Python 3.12, manylinux x86_64, no internet) lacks for the render
#              path: diffrp-nvdiffrast (import name nvdiffrast). Everything else the render path
#              imports (torch, numpy, numba + llvmlite, scipy, opencv, pillow, scikit-image, tqdm) is in
#              that machine's image (its package list in the device tool's KINDS.md); mediapipe, trimesh and kornia are
#              not on the render path. numba + llvmlite are not carried: the image has them, and
#              llvmlite's wheel alone (57 MiB for 0.50.0) would break the 60 MiB budget of a run;
#              device_check.sh prints the image's versions and stops if numba does not import.
# .whl/fits/   the fits of the benchmark's images (scripts/bench_gpu.py --prepare-fits): the GPU
#              machine has no MediaPipe to fit them.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PYTHON=${PYTHON:-python3}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

# CPython 3.12 manylinux x86_64 wheels, no dependencies (nvdiffrast needs only numpy and torch).
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl diffrp-nvdiffrast==0.3.3.1
PYTHONPATH=. "$PYTHON" scripts/bench_gpu.py --prepare-fits .whl/fits
ls -l .whl
du -sh .whl
total=$(du -sm .whl | cut -f1)
if [ "$total" -ge 60 ]; then
    echo "fetch_gpu_wheels: .whl is ${total} MiB, over the 60 MiB this project allows a GPU run" >&2
    exit 1
fi
