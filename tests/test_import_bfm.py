"""The BFM 2009 and BFM 2017 importers (affectsynth.model.importers.bfm) on SYNTHETIC files.

No real BFM file is available here (they need registration with the University of Basel):
these fixtures are small files built in the test with the official structure (field names,
shapes, units, 1-based MATLAB triangles, statismo HDF5 groups) as the module docstring
describes it. They check the reader against that description, not against the real files.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.io
import torch

from affectsynth.cli import main
from affectsynth.errors import InputError
from affectsynth.model import FaceModel
from affectsynth.model.importers import import_bfm2009, import_bfm2017
from affectsynth.model.importers.bfm import BFM2009_UNIT_MM

ROWS, COLS = 10, 20  # 200 vertices


def face_mask_mm() -> tuple[np.ndarray, np.ndarray]:
    """A face-sized spherical cap looking along +z (vertices [200, 3] mm) and its triangles,
    counter-clockwise seen from +z (from outside)."""
    x, y = np.meshgrid(np.linspace(-60, 60, COLS), np.linspace(-80, 80, ROWS))
    z = np.sqrt(130.0 ** 2 - x ** 2 - y ** 2) - 80.0
    vertices = np.stack((x, y, z), -1).reshape(-1, 3)
    tris = []
    for i in range(ROWS - 1):
        for j in range(COLS - 1):
            a, b, c, d = i * COLS + j, i * COLS + j + 1, (i + 1) * COLS + j + 1, (i + 1) * COLS + j
            tris += [(a, b, c), (a, c, d)]  # x right, y up: a -> b -> c turns counter-clockwise
    return vertices, np.array(tris, dtype=np.int64)


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q


# ------------------------------------------------------------------------------ BFM 2009
@pytest.fixture(scope="module")
def bfm2009(tmp_path_factory):
    """(path, fields) of a synthetic 01_MorphableModel.mat: micrometres, 1-based tl, 5 modes."""
    vertices, tris = face_mask_mm()
    n, k = len(vertices), 5
    rng = np.random.default_rng(0)
    seg = np.zeros((n, 4), np.uint8)
    seg[np.arange(n) % 4, np.arange(n) // 50] = 1
    fields = {
        "shapeMU": (vertices * 1000.0).reshape(-1, 1).astype(np.float32),               # [3N, 1] um
        "shapePC": orthonormal(3 * n, k, 1).astype(np.float32),                          # [3N, K]
        "shapeEV": np.array([[9000.0], [6000.0], [4000.0], [2500.0], [1000.0]], np.float32),  # [K, 1] um
        "texMU": rng.uniform(0, 255, (3 * n, 1)).astype(np.float32),
        "texPC": orthonormal(3 * n, k, 2).astype(np.float32),
        "texEV": np.ones((k, 1), np.float32),
        "tl": (tris + 1).astype(np.float64),                                             # [F, 3] 1-based
        "segbin": seg,
    }
    path = tmp_path_factory.mktemp("bfm2009") / "01_MorphableModel.mat"
    scipy.io.savemat(path, fields)
    return path, fields, tris


def test_bfm2009_round_trip(bfm2009, tmp_path):
    path, fields, tris = bfm2009
    model = import_bfm2009(path)
    n = len(fields["shapeMU"]) // 3
    assert (model.num_vertices, model.num_identity, model.num_expressions) == (n, 5, 0)
    expected_mean = fields["shapeMU"].reshape(n, 3).astype(np.float64) / 1000.0
    assert np.allclose(model.mean.numpy(), expected_mean, atol=1e-4)
    for k in range(5):  # mode k = PC k times its standard deviation, um -> mm
        expected = fields["shapePC"][:, k].reshape(n, 3) * fields["shapeEV"][k, 0] * BFM2009_UNIT_MM
        assert np.allclose(model.id_basis[k].numpy(), expected, atol=1e-5)
    assert torch.equal(model.triangles, torch.from_numpy(tris))
    assert model.mean[:, 0].max() - model.mean[:, 0].min() == pytest.approx(120.0, abs=1e-3)  # mm
    assert [model.regions[f"bfm_segment_{s}"].tolist() for s in range(4)] == \
        [np.flatnonzero(fields["segbin"][:, s]).tolist() for s in range(4)]
    meta = model.meta
    assert meta["units"] == "mm" and meta["converted_from"] == "micrometres" and meta["tested_on_real_files"] is False
    assert "UNTESTED" in meta["provenance"] and meta["checks"]["triangles_flipped"] is False
    assert meta["checks"]["facing"][2] > 0.9
    model.save(tmp_path / "m.npz")
    loaded = FaceModel.load(tmp_path / "m.npz")
    for name in ("mean", "id_basis", "exp_basis", "triangles"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    assert loaded.exp_names == () and loaded.meta == model.meta and loaded.regions.keys() == model.regions.keys()


def test_bfm2009_inward_winding_and_transposed_segbin(bfm2009, tmp_path):
    """A file wound the other way gets outward triangles (and says so); segbin as [4, N] is read too."""
    path, fields, tris = bfm2009
    other = tmp_path / "inward.mat"
    scipy.io.savemat(other, {**fields, "tl": fields["tl"][:, [0, 2, 1]], "segbin": fields["segbin"].T})
    model = import_bfm2009(other)
    assert torch.equal(model.triangles, torch.from_numpy(tris))  # the file's corners 1 and 2 swapped back
    assert model.meta["checks"]["triangles_flipped"] is True
    assert model.regions["bfm_segment_3"].tolist() == np.flatnonzero(fields["segbin"][:, 3]).tolist()


def test_bfm2009_cli_import_and_info(bfm2009, tmp_path, capsys):
    path, _, _ = bfm2009
    out = tmp_path / "bfm.npz"
    assert main(["model", "import", "bfm2009", str(path), "-o", str(out)]) == 0
    assert "bfm2009: 200 vertices, 5 identity modes, 0 expressions" in capsys.readouterr().out
    assert main(["model", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "vertices 200" in info and "identity modes 5" in info and "units mm" in info and "UNTESTED" in info
    assert torch.equal(FaceModel.load(out).mean, import_bfm2009(path).mean)


def _cli_error(tmp_path, capsys, fmt: str, source, *extra: str) -> str:
    out = tmp_path / "out.npz"
    assert main(["model", "import", fmt, str(source), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("affectsynth: error: "), err
    assert not out.exists() and not list(tmp_path.glob("out.npz*"))
    return err


def _png(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def test_bfm2009_bad_files(bfm2009, tmp_path, capsys):
    path, fields, _ = bfm2009
    assert "not a readable MATLAB .mat" in _cli_error(tmp_path, capsys, "bfm2009", _png(tmp_path))
    assert "no such file" in _cli_error(tmp_path, capsys, "bfm2009", tmp_path / "missing.mat")
    partial = tmp_path / "partial.mat"
    scipy.io.savemat(partial, {"shapeMU": fields["shapeMU"]})
    assert "no shapePC, shapeEV, tl" in _cli_error(tmp_path, capsys, "bfm2009", partial)
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(path.read_bytes()[:2000])
    assert "error" in _cli_error(tmp_path, capsys, "bfm2009", truncated)
    cases = {
        # a basis already scaled by the standard deviations would be scaled twice: refused
        "scaled_pc.mat": ({"shapePC": fields["shapePC"] * fields["shapeEV"].T}, "not orthonormal"),
        "zero_based.mat": ({"tl": fields["tl"] - 1}, "1-based vertex indices"),
        "short_ev.mat": ({"shapeEV": fields["shapeEV"][:3]}, "expected [600, 3]"),
    }
    for name, (change, message) in cases.items():
        scipy.io.savemat(tmp_path / name, {**fields, **change})
        assert message in _cli_error(tmp_path, capsys, "bfm2009", tmp_path / name), name
    assert "--landmarks goes with flame" in _cli_error(tmp_path, capsys, "bfm2009", path, "--landmarks", str(path))


# ------------------------------------------------------------------------------ BFM 2017
def _write_bfm2017(path, groups: dict, points: np.ndarray, cells: np.ndarray, skip: tuple[str, ...] = ()):
    import h5py

    with h5py.File(path, "w") as f:
        for group, (mean, basis, variance) in groups.items():
            if group in skip:
                continue
            f[f"{group}/model/mean"] = mean.astype(np.float32)
            f[f"{group}/model/pcaBasis"] = basis.astype(np.float32)
            f[f"{group}/model/pcaVariance"] = variance.astype(np.float32)
            f[f"{group}/model/noiseVariance"] = np.float32(1e-4)
            f[f"{group}/representer/points"] = points.astype(np.float32)
            f[f"{group}/representer/cells"] = cells.astype(np.uint32)


@pytest.fixture(scope="module")
def bfm2017(tmp_path_factory):
    """(path, groups, triangles) of a synthetic model2017-1_bfm_nomouth.h5: mm, 6 shape and 4
    expression modes (orthonormal basis + variances), points [3, N], cells [3, F]."""
    pytest.importorskip("h5py", reason="h5py (the optional extra affectsynth[bfm]) is not installed")
    vertices, tris = face_mask_mm()
    n = len(vertices)
    rng = np.random.default_rng(3)
    groups = {
        "shape": (vertices.ravel(), orthonormal(3 * n, 6, 4), np.array([90.0, 40.0, 20.0, 9.0, 4.0, 1.0])),
        "color": (rng.uniform(0, 1, 3 * n), orthonormal(3 * n, 3, 5), np.array([0.1, 0.05, 0.01])),
        "expression": (rng.normal(0, 0.5, 3 * n), orthonormal(3 * n, 4, 6), np.array([25.0, 9.0, 4.0, 1.0])),
    }
    path = tmp_path_factory.mktemp("bfm2017") / "model2017-1_bfm_nomouth.h5"
    _write_bfm2017(path, groups, vertices.T, tris.T)
    return path, groups, tris


def test_bfm2017_round_trip(bfm2017, tmp_path):
    path, groups, tris = bfm2017
    model = import_bfm2017(path)
    n = model.num_vertices
    assert (model.num_vertices, model.num_identity, model.num_expressions) == (200, 6, 4)
    (s_mean, s_basis, s_var), (e_mean, e_basis, e_var) = groups["shape"], groups["expression"]
    assert np.allclose(model.mean.numpy(), (s_mean + e_mean).reshape(n, 3), atol=1e-4)  # expression mean added
    for k in range(6):  # orthonormal column times sqrt(variance)
        assert np.allclose(model.id_basis[k].numpy(), s_basis[:, k].reshape(n, 3) * np.sqrt(s_var[k]), atol=1e-5)
    for k in range(4):
        assert np.allclose(model.exp_basis[k].numpy(), e_basis[:, k].reshape(n, 3) * np.sqrt(e_var[k]), atol=1e-5)
    # The modes' RMS over the vertices is the standard deviation / sqrt(N): unit-norm columns.
    rms = model.id_basis.square().sum((1, 2)).sqrt()
    assert np.allclose(rms.numpy(), np.sqrt(s_var), rtol=1e-4)
    assert model.exp_names == ("exp_pca_000", "exp_pca_001", "exp_pca_002", "exp_pca_003")
    assert "au_map" not in model.meta and "--expression/--au cannot drive them" in model.meta["what_it_is_not"]
    assert torch.equal(model.triangles, torch.from_numpy(tris))
    assert model.meta["name"] == "bfm2017-bfm" and model.meta["tested_on_real_files"] is False
    assert model.meta["checks"]["expression_mean_rms_mm"] == pytest.approx(
        np.sqrt((e_mean.reshape(n, 3) ** 2).sum(1).mean()), rel=1e-3)
    model.save(tmp_path / "m.npz")
    loaded = FaceModel.load(tmp_path / "m.npz")
    for name in ("mean", "id_basis", "exp_basis", "triangles"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    assert loaded.exp_names == model.exp_names and loaded.meta == model.meta


def test_bfm2017_expression_modes_drive_no_action_unit(bfm2017):
    from affectsynth.affect.targets import model_au_keys, parse_expression

    model = import_bfm2017(bfm2017[0])
    assert model_au_keys(model) == (None,) * 4
    coeffs, report = parse_expression("happiness").to_model_coeffs(model)
    assert not coeffs.any() and "AU12" in report.missing


def test_bfm2017_cli_import_and_info(bfm2017, tmp_path, capsys):
    out = tmp_path / "bfm17.npz"
    assert main(["model", "import", "bfm2017", str(bfm2017[0]), "-o", str(out)]) == 0
    assert "200 vertices, 6 identity modes, 4 expressions" in capsys.readouterr().out
    assert main(["model", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "exp_pca_000, exp_pca_001" in info and "UNTESTED" in info and "landmark schemes: none" in info


def test_bfm2017_bad_files(bfm2017, tmp_path, capsys):
    path, groups, tris = bfm2017
    vertices = groups["shape"][0].reshape(-1, 3)
    assert "not a readable HDF5 file" in _cli_error(tmp_path, capsys, "bfm2017", _png(tmp_path))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "error" in _cli_error(tmp_path, capsys, "bfm2017", truncated)
    no_expression = tmp_path / "no_expression.h5"
    _write_bfm2017(no_expression, groups, vertices.T, tris.T, skip=("expression",))
    assert "no expression/model/mean" in _cli_error(tmp_path, capsys, "bfm2017", no_expression)
    scaled = tmp_path / "scaled.h5"  # a basis stored already scaled by sqrt(variance) is refused
    mean, basis, variance = groups["shape"]
    _write_bfm2017(scaled, {**groups, "shape": (mean, basis * np.sqrt(variance), variance)}, vertices.T, tris.T)
    assert "shape/model/pcaBasis columns are not orthonormal" in _cli_error(tmp_path, capsys, "bfm2017", scaled)
    transposed = tmp_path / "transposed.h5"  # cells [F, 3] instead of [3, F]
    _write_bfm2017(transposed, groups, vertices.T, tris)
    assert "expected [3, F]" in _cli_error(tmp_path, capsys, "bfm2017", transposed)
    assert "not a readable HDF5" in _cli_error(tmp_path, capsys, "bfm2017", bfm2017_mat_like(tmp_path))


def bfm2017_mat_like(tmp_path):
    """A BFM 2009 .mat given to the 2017 reader."""
    path = tmp_path / "model.mat"
    scipy.io.savemat(path, {"shapeMU": np.zeros((3, 1))})
    return path


def test_bfm2017_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    path = tmp_path / "model2017-1_bfm_nomouth.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(InputError, match=r"needs h5py: pip install 'affectsynth\[bfm\]'"):
        import_bfm2017(path)
