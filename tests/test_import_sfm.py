"""The Surrey Face Model import (affectsynth.model.importers.sfm) on eos's real share/ files,
cross-checked against eos itself (eos-py, a dev dependency)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from affectsynth.affect.targets import model_au_keys, model_emotion_keys, parse_au, parse_expression
from affectsynth.cli import main
from affectsynth.errors import InputError
from affectsynth.model import FaceModel
from affectsynth.model.importers import import_sfm
from affectsynth.model.importers.mp478 import AREA_REGIONS, LOOP_REGIONS
from affectsynth.model.importers.sfm import BLENDSHAPES_FILE, LANDMARKS_FILE, SHAPE_FILE
from affectsynth.pipeline import parse_target

from .conftest import EOS_DATA, SHARED, need_shared, read_pts
from .mp478_checks import check_registered_mp478

EOS_SHARE = SHARED / "models" / "eos-sfm" / "share"
EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")


@pytest.fixture(scope="session")
def sfm_model() -> FaceModel:
    share = need_shared(EOS_SHARE)
    start = time.perf_counter()
    model = import_sfm(share)
    print(f"\nimport_sfm: {time.perf_counter() - start:.3f} s")
    return model


@pytest.fixture(scope="session")
def sfm_npz(tmp_path_factory) -> Path:
    """The model written by ``affectsynth model import sfm`` from the shape file's path."""
    path = tmp_path_factory.mktemp("sfm_npz") / "sfm.npz"
    assert main(["model", "import", "sfm", str(need_shared(EOS_SHARE / SHAPE_FILE)), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def eos_sfm():
    """eos's own MorphableModel of the same files: shape model + the 6 blendshapes, no colour."""
    eos = pytest.importorskip("eos")
    shape = eos.morphablemodel.load_model(str(need_shared(EOS_SHARE / SHAPE_FILE)))
    blendshapes = eos.morphablemodel.load_blendshapes(str(EOS_SHARE / BLENDSHAPES_FILE))
    return eos, shape, blendshapes, eos.morphablemodel.MorphableModel(
        shape.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel())


def test_counts_names_units_and_frame(sfm_model, eos_sfm):
    m = sfm_model
    _, shape, blendshapes, _ = eos_sfm
    assert (m.num_vertices, m.num_identity, m.num_expressions) == (3448, 63, 6)
    assert m.exp_names == tuple(b.name for b in blendshapes) == EMOTIONS
    assert m.meta["units"] == "mm" and m.materials == {}
    assert set(m.regions) == {*LOOP_REGIONS, *AREA_REGIONS}  # registered from the default model
    points = m.landmarks(m.mean[None], "ibug68")[0]
    assert 85 < (points[36] - points[45]).norm() < 100  # outer eye corners, mm
    assert 130 < m.mean[:, 0].max() - m.mean[:, 0].min() < 170  # face width, mm
    assert points[36, 0] < 0 < points[45, 0] and points[48, 0] < 0 < points[54, 0]  # iBUG 36, 48: subject's right
    assert points[8, 1] < points[57, 1] < points[30, 1] < points[27, 1]  # chin, lower lip, nose tip, nose root
    assert points[30, 2] > m.mean[:, 2].max() - 1.0  # the nose tip is the front of the face
    # Identity modes are std-scaled: mm-sized, decreasing, and as eos rescales them.
    rms = m.id_basis.square().sum(-1).mean(-1).sqrt()
    assert 1 < rms[0] < 10 and rms[-1] < 0.2 * rms[0]
    rescaled = np.asarray(shape.get_shape_model().get_rescaled_pca_basis())
    assert np.allclose(m.id_basis.reshape(63, -1).T.numpy(), rescaled, atol=1e-6)
    # Texture coordinates: eos's with v flipped up (the brows above the chin in uv too).
    eos_uv = np.asarray(shape.get_texture_coordinates())
    assert np.allclose(m.uv.numpy(), np.c_[eos_uv[:, 0], 1 - eos_uv[:, 1]], atol=1e-6)
    chin, brow = m.landmark_map("ibug68").vertices[[8, 19], 0]
    assert m.uv[brow, 1] > m.uv[chin, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vertices_match_eos_draw_sample(sfm_model, eos_sfm, seed):
    """Our std-normal identity coefficients and blendshape weights give eos's mesh (mm)."""
    _, shape, _, morphable = eos_sfm
    g = np.random.default_rng(seed)
    alpha = (1.5 * g.standard_normal(63)).astype(np.float32)
    weights = g.uniform(0, 1, 6).astype(np.float32)
    ours = sfm_model(torch.from_numpy(alpha)[None], torch.from_numpy(weights)[None])
    theirs = np.asarray(morphable.draw_sample(alpha.tolist(), weights.tolist(), []).vertices)
    error = np.abs(ours.vertices[0].numpy() - theirs).max()
    print(f"\nmax |ours - eos| = {error:.2e} mm")
    assert error < 1e-4
    identity_only = np.asarray(shape.get_shape_model().draw_sample(alpha.tolist())).reshape(-1, 3)
    assert np.abs(ours.identity_vertices[0].numpy() - identity_only).max() < 1e-4


def test_triangles_face_outward(sfm_model, eos_sfm):
    m = sfm_model
    _, shape, _, _ = eos_sfm
    eos_triangles = np.asarray(shape.get_shape_model().get_triangle_list())
    assert np.array_equal(np.sort(m.triangles.numpy(), 1), np.sort(eos_triangles, 1))
    v, f = m.mean.double(), m.triangles
    normals = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert normals.sum(0)[2] / normals.sum(0).norm() > 0.9  # the mask looks along +z
    tip = int(m.landmark_map("ibug68").vertices[30, 0])
    around = normals[(f == tip).any(1)].sum(0)
    assert around[2] / around.norm() > 0.9
    edges = torch.cat((f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]))
    assert len(edges.unique(dim=0)) == len(edges)  # consistently wound: no directed edge twice


def test_landmark_map_is_ibug_to_sfm(sfm_model, eos_sfm):
    eos = eos_sfm[0]
    mapper = eos.core.LandmarkMapper(str(EOS_SHARE / LANDMARKS_FILE))
    converted = [mapper.convert(str(i + 1)) for i in range(68)]  # 1-based iBUG names -> vertex id text or None
    expected = [None if c is None else int(c) for c in converted]
    lmap = sfm_model.landmark_map("ibug68")
    assert lmap.valid.tolist() == [e is not None for e in expected]
    assert int(lmap.valid.sum()) == 50 and not lmap.valid[list(range(8)) + list(range(9, 17)) + [60, 64]].any()
    assert [int(v) for v, ok in zip(lmap.vertices[:, 0], lmap.valid) if ok] == [e for e in expected if e is not None]
    assert (lmap.weights[:, 0] == 1).all()


def test_emotion_targets_drive_the_blendshapes(sfm_model):
    assert model_emotion_keys(sfm_model) == EMOTIONS and not any(model_au_keys(sfm_model))
    coeffs, report = parse_expression("happiness").to_model_coeffs(sfm_model)
    assert dict(zip(sfm_model.exp_names, coeffs.tolist())) == {**dict.fromkeys(EMOTIONS, 0.0), "happiness": 1.0}
    assert report.emotions == ("happiness",) and report.missing == ()
    coeffs, _ = parse_target("fear@0.5").to_model_coeffs(sfm_model)
    assert coeffs.tolist() == [0, 0, 0.5, 0, 0, 0]
    # A VA point: its emotions at r x their kernel weights, summing to the radius.
    coeffs, report = parse_target("va:0.6,0.5").to_model_coeffs(sfm_model)
    assert float(coeffs.sum()) == pytest.approx(min(np.hypot(0.6, 0.5), 1.0), abs=1e-5) and report.emotions
    coeffs, report = parse_au("12:0.8").to_model_coeffs(sfm_model)
    assert coeffs.abs().sum() == 0 and report.missing == ("AU12",)
    coeffs, report = parse_expression("contempt").to_model_coeffs(sfm_model)
    assert coeffs.abs().sum() == 0 and report.emotions_missing == ("contempt",)


def test_cli_import_saves_and_loads_the_same_model(sfm_model, sfm_npz):
    start = time.perf_counter()
    loaded = FaceModel.load(sfm_npz)
    seconds = time.perf_counter() - start
    print(f"\nload {sfm_npz.stat().st_size / 1e6:.1f} MB npz: {seconds:.3f} s")
    assert seconds < 1.0
    for name in ("mean", "id_basis", "exp_basis", "uv", "triangles"):
        assert torch.equal(getattr(loaded, name), getattr(sfm_model, name)), name
    ours, back = sfm_model.landmark_map("ibug68"), loaded.landmark_map("ibug68")
    assert all(torch.equal(getattr(back, part), getattr(ours, part)) for part in ("vertices", "weights", "valid"))
    assert loaded.exp_names == sfm_model.exp_names and loaded.meta == sfm_model.meta
    sources = {s["file"]: s for s in loaded.meta["source_files"]}
    assert sources[SHAPE_FILE]["bytes"] == (EOS_SHARE / SHAPE_FILE).stat().st_size
    assert len(sources[BLENDSHAPES_FILE]["sha256"]) == 64 and LANDMARKS_FILE in sources


def test_cli_info(sfm_npz, capsys):
    assert main(["model", "info", str(sfm_npz)]) == 0
    out = capsys.readouterr().out
    assert "vertices 3448" in out and "identity modes 63" in out and "expressions 6" in out
    assert "emotion-driven" in out and "--au targets cannot" in out and "ibug68 (50/68 points)" in out
    assert "non-commercial" in out and len(out.splitlines()) < 25


def test_bad_inputs_exit_2_one_line(tmp_path, capsys):
    out = tmp_path / "model.npz"
    assert main(["model", "import", "sfm", str(tmp_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no sfm_shape_3448.bin" in err and not out.exists()
    share = tmp_path / "share"
    share.mkdir()
    for name in (SHAPE_FILE, LANDMARKS_FILE):
        shutil.copy(need_shared(EOS_SHARE / name), share / name)
    with pytest.raises(InputError, match=f"{BLENDSHAPES_FILE}: missing"):
        import_sfm(share)
    shutil.copy(EOS_SHARE / BLENDSHAPES_FILE, share / BLENDSHAPES_FILE)
    (share / SHAPE_FILE).write_bytes((EOS_SHARE / SHAPE_FILE).read_bytes()[:100_000])
    assert main(["model", "import", "sfm", str(share), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "ends inside the shape basis" in err and not out.exists()


def test_mp478_map_is_registered(sfm_model, default_model):
    """The SFM has no eyeballs: its iris points are invalid (the fitter does not use them)."""
    check_registered_mp478(sfm_model, default_model, torch.arange(sfm_model.num_vertices), with_iris=False)


@pytest.mark.parametrize("detector", ["dlib", "mediapipe"])
def test_fit_on_image_0010(sfm_npz, tmp_path, detector):
    """The imported model fits a real photo through its 68-point map (dlib) and its registered
    478-point map (MediaPipe): the fitted model's points against the 300-W ground truth over
    the 50 points it maps, normalised by the annotated outer-eye-corner distance (the formula of
    test_cli and test_import_ict)."""
    photo = need_shared(EOS_DATA / "image_0010.png")
    out = tmp_path / "fit.json"
    assert main(["fit", str(photo), "--model", str(sfm_npz), "--detector", detector, "-o", str(out)]) == 0
    points = json.loads(out.read_text())["landmarks_68"]
    mapped = np.array([p is not None for p in points])
    assert mapped.tolist() == FaceModel.load(sfm_npz).landmark_map("ibug68").valid.tolist()
    pred = np.array([p for p in points if p is not None])
    gt = read_pts(EOS_DATA / "image_0010.pts")
    nme = np.linalg.norm(pred - gt[mapped], axis=1).mean() / np.linalg.norm(gt[36] - gt[45])
    print(f"\n{detector}: NME {nme:.4f} over {mapped.sum()}/68 points")
    assert nme <= 0.08, nme
