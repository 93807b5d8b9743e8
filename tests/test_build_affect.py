"""``affectsynth model build-affect`` on SYNTHETIC 4D sequences made from the ICT-FaceKit model
(scripts/make_synthetic_4d.py: 3 identities x 6 expressions x 20 frames, rigid head motion, vertex
noise, per-frame VA labels), generated here in tmp_path, never committed. Skipped without ../shared."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from affectsynth.affect.affect_model import AffectModel
from affectsynth.affect.bank import CIRCUMPLEX_DEG, VABank
from affectsynth.affect.build import BuildOptions, build_affect
from affectsynth.cli import _target, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_synthetic_4d", ROOT / "scripts" / "make_synthetic_4d.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ict_base(ict_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ict_base") / "ict.npz"
    ict_model.save(path)
    return path


@pytest.fixture(scope="module")
def synthetic(ict_model, tmp_path_factory):
    """(folder of synthetic sequences, what generated them)."""
    out = tmp_path_factory.mktemp("synthetic_4d")
    truth = _load_generator().make_synthetic_4d(ict_model, out, identities=3, frames=20, seed=0)
    return out, truth


@pytest.fixture(scope="module")
def built(synthetic, ict_base, tmp_path_factory):
    """(the affect model built and saved by the CLI, loaded back; the output path)."""
    folder, _ = synthetic
    output = tmp_path_factory.mktemp("affect") / "affect.npz"
    assert main(["model", "build-affect", "--meshes", str(folder), "--labels", str(folder / "labels.csv"),
                 "--base", str(ict_base), "-o", str(output)]) == 0
    return AffectModel.load(output), output


def test_apex_within_one_frame(built, synthetic):
    affect, _ = built
    _, truth = synthetic
    found = {s["name"]: s["apex"] for s in affect.provenance["sequences"]}
    assert set(found) == set(truth.apex)
    errors = {name: found[name] - apex for name, apex in truth.apex.items()}
    assert max(abs(e) for e in errors.values()) <= 1, errors


def test_class_prototypes_match_the_generating_coefficients(built, synthetic):
    affect, _ = built
    _, truth = synthetic
    assert set(affect.classes) == set(truth.prototypes)
    assert affect.prototype_people.tolist() == [3] * 6
    for name, generating in truth.prototypes.items():
        recovered = affect.prototype_coeffs[affect.classes.index(name)].astype(np.float64)
        cosine = recovered @ generating / (np.linalg.norm(recovered) * np.linalg.norm(generating))
        assert cosine >= 0.95, (name, cosine)
    # the spread across people is the spread of the drawn intensities (0.7 to 1), not noise
    spread = affect.prototype_spread.max(1)
    assert (spread > 0).all() and (spread < 0.3).all()


def test_residuals_at_the_noise_level(built):
    affect, _ = built
    residual = affect.provenance["residual"]
    # vertex noise 0.05 mm per axis in each frame and in the neutral frame subtracted: RMS 0.05 * sqrt(6)
    assert residual["mean_mm"] < 0.2 and residual["max_mm"] < 0.5, residual
    assert affect.provenance["counts"] == {"sequences_found": 18, "sequences_built": 18, "sequences_skipped": 0,
                                           "frames": 360}


def test_va_bank_loads_and_answers_at_and_between_exemplars(built):
    affect, path = built
    bank = VABank.load(path)  # the same file, through the bank's own loader
    assert torch.equal(bank.va, affect.bank.va) and len(bank) < 360
    assert bank.coverage(20).sum() == len(bank) and affect.coverage.sum() == 360
    # at an exemplar (a narrow kernel: the exemplars of one emotion lie on one ray, so its neighbours
    # share its pattern) the query gives that exemplar's AU activations
    radius = bank.va.norm(dim=1)
    for i in torch.nonzero(radius > 0.5)[:, 0].tolist()[::5]:
        au, _, _ = bank.query(bank.va[i:i + 1], bandwidth=0.05)
        assert (au[0] - bank.au[i]).abs().max() < 0.05, (i, bank.labels[i])
    # between happiness and surprise the AUs change continuously: small steps that halve when the arc
    # is sampled twice as finely (a jump would not shrink), from one emotion's face to the other's.
    # The blend keeps its peak (bank docstring), so each face fades over half the arc: the largest
    # step is 0.052 (0.027 with a plain average).
    def largest_step(n: int) -> float:
        angles = torch.linspace(math.radians(CIRCUMPLEX_DEG["happiness"]), math.radians(CIRCUMPLEX_DEG["surprise"]), n)
        au, _, _ = bank.query(0.8 * torch.stack((angles.cos(), angles.sin()), 1))
        return float((au[1:] - au[:-1]).abs().max()), au

    coarse, au = largest_step(200)
    fine, _ = largest_step(400)
    assert (au[0] - au[-1]).abs().max() > 0.5
    assert coarse < 0.07 and fine < 0.6 * coarse, (coarse, fine)


def test_render_targets_come_from_the_affect_model(built):
    affect, path = built
    parser = build_parser()
    args = parser.parse_args(["render", "x.png", "--expression", "happy", "--affect", str(path)])
    code, tag = _target(args)
    assert code.category == "happiness" and tag == "happiness"
    assert code.au_vector().tolist() == pytest.approx(affect.prototype_au[affect.classes.index("happiness")].tolist(),
                                                      abs=1e-6)
    args = parser.parse_args(["render", "x.png", "--va=0.7,0.2", "--affect", str(path)])
    code, _ = _target(args)
    assert affect.bank.meta["name"] in code.source
    assert code.au_vector().tolist() == pytest.approx(affect.bank.query([[0.7, 0.2]])[0][0].tolist(), abs=1e-6)


def test_bad_sequences_are_reported_and_skipped(synthetic, ict_base, tmp_path, capsys):
    folder, _ = synthetic
    meshes = tmp_path / "meshes"
    good = ["p000_happiness", "p001_happiness", "p000_surprise"]
    for name in good:
        shutil.copytree(folder / name, meshes / name)
    (meshes / "corrupt").mkdir()
    (meshes / "corrupt" / "frames.npy").write_bytes((folder / good[0] / "frames.npy").read_bytes()[:5000])
    (meshes / "wrong_topology").mkdir()
    np.save(meshes / "wrong_topology" / "frames.npy", np.zeros((5, 468, 3), np.float32))
    rows = [line for line in (folder / "labels.csv").read_text().splitlines()
            if line.split(",")[0] in good + ["sequence"]]
    rows += ["p000_surprise,99,p000,surprise,0.1,0.2", "corrupt,,p9,anger,,", "wrong_topology,,p9,anger,,"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "affect.npz"
    assert main(["model", "build-affect", "--meshes", str(meshes), "--labels", str(tmp_path / "labels.csv"),
                 "--base", str(ict_base), "-o", str(output)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped sequence" in line]
    assert len(lines) == 3, err
    assert any("corrupt: frames.npy: corrupt array" in line for line in lines)
    assert any("wrong_topology: wrong topology: 468 vertices, the base model has 26719" in line for line in lines)
    assert any("p000_surprise: labels refer to frames the sequence does not have (99;" in line for line in lines)
    affect = AffectModel.load(output)
    assert affect.classes == ("happiness",) and affect.provenance["counts"]["sequences_built"] == 2
    # nothing usable left: exit 2, one line
    only_bad = tmp_path / "only_bad"
    shutil.copytree(meshes / "corrupt", only_bad / "corrupt")
    assert main(["model", "build-affect", "--meshes", str(only_bad), "--labels", str(tmp_path / "labels.csv"),
                 "--base", str(ict_base), "-o", str(tmp_path / "none.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("affectsynth: error: nothing usable") and not (tmp_path / "none.npz").exists()


def test_parallel_build_equals_serial(synthetic, ict_base, tmp_path):
    folder, _ = synthetic
    meshes = tmp_path / "meshes"
    for name in ("p000_fear", "p001_fear", "p002_sadness"):
        shutil.copytree(folder / name, meshes / name)
    labels = folder / "labels.csv"
    serial, _ = build_affect(meshes, labels, ict_base, BuildOptions(jobs=1), progress=False)
    parallel, _ = build_affect(meshes, labels, ict_base, BuildOptions(jobs=2), progress=False)
    assert serial.classes == parallel.classes
    np.testing.assert_allclose(serial.prototype_coeffs, parallel.prototype_coeffs, atol=1e-6)
    assert torch.equal(serial.bank.va, parallel.bank.va)
    json.dumps(parallel.provenance)  # serialisable
