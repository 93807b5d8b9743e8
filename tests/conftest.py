from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEV_FACES = SHARED / "faces" / "dev"
EOS_DATA = SHARED / "models" / "eos-sfm" / "examples" / "data"
ICT_ARCHIVE = SHARED / "models" / "ICT-FaceKit" / "FaceXModel.tar.xz"


def need_shared(path: Path) -> Path:
    """Skip the calling test when ../shared (or the given part of it) is absent."""
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is not present on this machine)")
    return path


def read_pts(path: Path) -> np.ndarray:
    """A 300-W .pts file as [68, 2] in our pixel convention (0-based pixels, centres at +0.5).

    The files use 1-based pixel indices (MATLAB), so x_ours = x_pts - 1 + 0.5.
    """
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.asarray(lines, dtype=np.float64).reshape(-1, 2) - 0.5


@pytest.fixture(scope="session")
def default_model():
    from affectsynth.model.default import load_default_model

    return load_default_model()


@pytest.fixture(scope="session")
def skin_model(default_model):
    """The default model's skin surface alone (no mouth interior, no eyeballs)."""
    return default_model.skin()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def mp_detector():
    from affectsynth.detect import create_detector

    det = create_detector("mediapipe")
    yield det
    det.close()


@pytest.fixture(scope="session")
def ict_root(tmp_path_factory) -> Path:
    """A folder laid out like an ICT-FaceKit clone (FaceXModel/ unpacked once per session)."""
    archive = need_shared(ICT_ARCHIVE)
    root = tmp_path_factory.mktemp("ict")
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(root)], check=True)
    return root


@pytest.fixture(scope="session")
def ict_model(ict_root):
    """The ICT Face Model Light imported from ``ict_root`` (once per session: ~10-40 s)."""
    from affectsynth.model.importers import import_ict

    start = time.perf_counter()
    model = import_ict(ict_root)
    print(f"\nimport_ict: {time.perf_counter() - start:.1f} s")
    return model
