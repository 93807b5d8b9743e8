"""`affectsynth render`: output naming, labels, determinism, untouched background, bad targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from affectsynth.cli import main

from .test_cli import run_cli


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("render") / "face.png"
    Image.fromarray(astronaut).save(path)
    return path


def test_va_render_names_output_and_writes_labels(photo, astronaut):
    assert main(["render", str(photo), "--va", "0.5,0.7", "--json", str(photo.with_name("meta.json"))]) == 0
    out = photo.with_name("face_va+0.50+0.70.png")
    image = np.asarray(Image.open(out))
    assert image.shape == astronaut.shape and not np.array_equal(image, astronaut)
    meta = json.loads(photo.with_name("meta.json").read_text())
    labels = meta["faces"][0]["labels"]
    assert labels["valence"] == 0.5 and labels["arousal"] == 0.7 and labels["category"] is not None
    assert abs(sum(labels["soft_label"].values()) - 1.0) < 1e-6 and meta["rasterizer"] in ("numba", "moderngl")
    assert set(labels["model_coeffs"]) >= {"AU12_L", "AU26"}


def test_background_unchanged_and_seeded_runs_identical(photo, astronaut, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.png"
        assert main(["render", str(photo), "--expression", "surprise", "--seed", "7", "-o", str(out)]) == 0
        outs.append(np.asarray(Image.open(out)))
    assert np.array_equal(outs[0], outs[1])
    changed = np.abs(outs[0].astype(int) - astronaut.astype(int)).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    # Only the face changes: the astronaut's face box is about x 170-290, y 70-250 in the 512 px photo.
    assert changed.any() and xs.min() > 150 and xs.max() < 310 and ys.min() > 50 and ys.max() < 270


@pytest.mark.parametrize("args", [["--va", "2,0"], ["--va", "nan,0"], ["--expression", "joyy"], ["--au", "99:1"],
                                  ["--intensity", "0.5", "--va", "0,0"], ["--expression", "happiness", "--intensity", "1.5"]])
def test_bad_targets_exit_2(photo, args):
    res = run_cli("render", str(photo), *args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("affectsynth: error:")
