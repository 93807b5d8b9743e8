"""The FLAME importer (affectsynth.model.importers.flame) on SYNTHETIC files.

No real FLAME file is available here (they need registration with MPI-IS): these fixtures
are small pickles built in the test with the structure FLAME's loaders read (a latin1 pickle
of a dict, arrays as chumpy ``Ch`` objects, a scipy sparse J_regressor, the landmark
embeddings' fields). chumpy is not installed: a stand-in class named ``chumpy.ch.Ch`` is
registered in sys.modules only while a fixture is pickled, so the files name it as the real
ones do, and the importer must read them without it. They check the reader against the
module docstring's description of the format, not against the real files.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from affectsynth.cli import main
from affectsynth.errors import InputError
from affectsynth.model import FaceModel
from affectsynth.model.importers import import_flame
from affectsynth.model.importers.flame import FLAME_AU26_JAW_DEG, FLAME_NUM_SHAPE, load_pickle

N_EXP = 4
PARENTS = np.array([2 ** 32 - 1, 0, 1, 1, 1], np.uint32)  # FLAME's: global <- neck <- jaw, eyes


class Ch:
    """Stands for chumpy.ch.Ch: the array in ``x`` plus some of chumpy's bookkeeping state."""

    def __init__(self, x):
        self._status = "undefined"
        self._dirty_vars = set()
        self.x = x


Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"


class LegacyCsc:
    """Stands for an old scipy's scipy.sparse.csc.csc_matrix, pickled with its __dict__."""

    def __init__(self, m: scipy.sparse.csc_matrix):
        self._shape, self.data, self.indices, self.indptr = m.shape, m.data, m.indices, m.indptr
        self.format, self.maxprint = "csc", 50


LegacyCsc.__module__, LegacyCsc.__qualname__, LegacyCsc.__name__ = "scipy.sparse.csc", "csc_matrix", "csc_matrix"


@contextlib.contextmanager
def fake_modules():
    """chumpy.ch (and the old scipy.sparse.csc) in sys.modules while a fixture is pickled."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    chumpy, ch, csc = (types.ModuleType(name) for name in saved)
    ch.Ch, csc.csc_matrix, chumpy.ch = Ch, LegacyCsc, ch
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch, "scipy.sparse.csc": csc})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def head_mesh_m() -> tuple[np.ndarray, np.ndarray]:
    """A closed head-sized ellipsoid (metres), 12 rings x 16 + 2 poles = 194 vertices, and its
    triangles counter-clockwise from outside."""
    rings, around = 12, 16
    theta = np.linspace(0, np.pi, rings + 2)[1:-1]
    phi = np.linspace(0, 2 * np.pi, around, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack((0.075 * np.sin(t) * np.sin(p), 0.11 * np.cos(t), 0.09 * np.sin(t) * np.cos(p)), -1).reshape(-1, 3)
    vertices = np.concatenate((body, [[0, 0.11, 0], [0, -0.11, 0]]))
    top, bottom = len(body), len(body) + 1
    tris = []
    for j in range(around):
        k = (j + 1) % around
        tris.append((top, j, k))
        tris.append((bottom, (rings - 1) * around + k, (rings - 1) * around + j))
        for i in range(rings - 1):
            a, b, c, d = i * around + j, i * around + k, (i + 1) * around + k, (i + 1) * around + j
            tris += [(a, d, c), (a, c, b)]
    vertices, tris = vertices, np.array(tris, dtype=np.int64)
    v = vertices[tris]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert ((normals * v.mean(1)).sum(1) > 0).all()  # the fixture itself is wound outward
    return vertices, tris


def flame_fields(seed: int = 0) -> dict:
    """The fields of a FLAME model pickle, as plain numpy/scipy values (metres)."""
    vertices, tris = head_mesh_m()
    n = len(vertices)
    rng = np.random.default_rng(seed)
    regressor = np.zeros((5, n))
    for joint, (y, z) in enumerate([(-0.02, 0.0), (-0.06, -0.02), (-0.03, -0.01), (0.02, 0.04), (0.02, 0.04)]):
        near = np.argsort(np.linalg.norm(vertices[:, 1:] - (y, z), axis=1))[:4]
        regressor[joint, near] = 0.25
    weights = np.zeros((n, 5))
    jaw = np.clip((-vertices[:, 1] - 0.02) / 0.04, 0, 1) * (vertices[:, 2] > -0.03)  # lower face follows the jaw
    weights[:, 2], weights[:, 1] = jaw, 1 - jaw
    return {
        "v_template": vertices,
        "shapedirs": rng.normal(0, 2e-3, (n, 3, FLAME_NUM_SHAPE + N_EXP)),
        "posedirs": rng.normal(0, 2e-4, (n, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights,
        "kintree_table": np.stack((PARENTS, np.arange(5, dtype=np.uint32))),
        "f": tris.astype(np.uint32),
        "J": regressor @ vertices,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame(path, fields: dict, protocol: int = 2) -> None:
    """Pickle ``fields`` as FLAME's file is: shapedirs (and v_template, posedirs) as chumpy
    objects. Protocols 0 and 2 (Python 2's) write Python 2 names (copy_reg, __builtin__) and the
    old scipy.sparse.csc class, as a Python 2 era file has them; 4 today's scipy class."""
    legacy = protocol < 3
    out = dict(fields)
    for name in {"shapedirs", "v_template", "posedirs"} & set(fields):
        out[name] = Ch(fields[name])
    if legacy:
        out["J_regressor"] = LegacyCsc(fields["J_regressor"])
    with fake_modules(), open(path, "wb") as f:
        pickle.dump(out, f, protocol=protocol)


@pytest.fixture(scope="module", params=[2, 0, 4], ids=["protocol2", "protocol0", "protocol4"])
def flame(request, tmp_path_factory):
    fields = flame_fields()
    path = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    write_flame(path, fields, protocol=request.param)
    return path, fields


def test_pickle_names_chumpy_and_loads_without_it(flame):
    path, _ = flame
    assert b"chumpy.ch" in path.read_bytes()
    assert "chumpy" not in sys.modules
    import_flame(path)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules


def test_round_trip(flame, tmp_path):
    path, fields = flame
    model = import_flame(path)
    n = len(fields["v_template"])
    assert (model.num_vertices, model.num_identity) == (n, FLAME_NUM_SHAPE)
    assert model.exp_names == tuple(f"exp_pca_{k:03d}" for k in range(N_EXP)) + ("AU26",)
    assert np.allclose(model.mean.numpy(), fields["v_template"] * 1000.0, atol=1e-4)  # metres -> mm
    for k in (0, 7, FLAME_NUM_SHAPE - 1):  # identity columns kept as they are (betas ~ N(0, 1)), in mm
        assert np.allclose(model.id_basis[k].numpy(), fields["shapedirs"][:, :, k] * 1000.0, atol=1e-5)
    for k in range(N_EXP):
        assert np.allclose(model.exp_basis[k].numpy(), fields["shapedirs"][:, :, FLAME_NUM_SHAPE + k] * 1000.0,
                           atol=1e-5)
    assert torch.equal(model.triangles, torch.from_numpy(fields["f"].astype(np.int64)))
    meta = model.meta
    assert meta["units"] == "mm" and meta["converted_from"] == "metres" and meta["tested_on_real_files"] is False
    assert "UNTESTED" in meta["provenance"] and not meta["checks"]["triangles_flipped"]
    first_rms = np.sqrt(((fields["shapedirs"][:, :, 0] * 1000.0) ** 2).sum(1).mean())
    assert meta["checks"]["id_mode_rms_mm"][0] == pytest.approx(first_rms, rel=1e-3)
    model.save(tmp_path / "m.npz")
    loaded = FaceModel.load(tmp_path / "m.npz")
    for name in ("mean", "id_basis", "exp_basis", "triangles"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    assert loaded.exp_names == model.exp_names and loaded.meta == model.meta


def _rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(axis_angle)
    if angle == 0:
        return np.eye(3)
    k = axis_angle / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _flame_lbs(fields: dict, pose: np.ndarray) -> np.ndarray:
    """FLAME's forward pass at zero shape and expression for a full pose [5, 3] (axis-angle per
    joint), written out as FLAME_PyTorch's lbs does it: pose correctives, joints from the
    regressor, 4x4 transforms down the kinematic chain, skinning. Metres."""
    v = fields["v_template"]
    rotations = np.stack([_rodrigues(p) for p in pose])
    posed = v + np.einsum("vcp,p->vc", fields["posedirs"], (rotations[1:] - np.eye(3)).ravel())
    joints = fields["J_regressor"].toarray() @ v
    parents = fields["kintree_table"][0].astype(np.int64)
    world = []
    for k in range(5):
        local = np.eye(4)
        local[:3, :3] = rotations[k]
        local[:3, 3] = joints[k] - (joints[parents[k]] if k else 0)
        world.append(local if k == 0 else world[parents[k]] @ local)
    skin = []
    for k in range(5):
        g = world[k].copy()
        g[:3, 3] -= g[:3, :3] @ joints[k]  # relative to the rest pose
        skin.append(g)
    t = np.einsum("vk,kij->vij", fields["weights"], np.stack(skin))
    return np.einsum("vij,vj->vi", t[:, :3, :3], posed) + t[:, :3, 3]


def test_au26_is_flame_with_the_jaw_turned(flame):
    path, fields = flame
    model = import_flame(path)
    pose = np.zeros((5, 3))
    pose[2, 0] = np.radians(FLAME_AU26_JAW_DEG)
    expected = (_flame_lbs(fields, pose) - fields["v_template"]) * 1000.0
    au26 = model.exp_basis[model.exp_index("AU26")].double().numpy()
    assert np.abs(au26 - expected).max() < 1e-3  # mm
    # Turning about +x with +y up and the face along +z drops the chin: the jaw's front part moves down.
    chin = np.argmin(fields["v_template"][:, 1] - 0.5 * fields["v_template"][:, 2])
    assert fields["weights"][chin, 2] == 1.0 and au26[chin, 1] < -5.0
    still = fields["weights"][:, 2] == 0
    assert np.abs(au26[still]).max() < 0.2  # only pose correctives (0.2 mm scale) move what the jaw does not
    assert model.meta["au_map_note"] and model.meta["checks"]["au26_jaw_deg"] == FLAME_AU26_JAW_DEG


def test_au26_drives_from_the_expression_targets(flame):
    from affectsynth.affect.targets import model_au_keys, parse_au

    model = import_flame(flame[0])
    assert model_au_keys(model) == (None,) * N_EXP + ("AU26",)
    coeffs, _ = parse_au("26:0.5").to_model_coeffs(model)
    assert coeffs.tolist() == [0.0] * N_EXP + [0.5]


def test_no_jaw_motion_no_au26(tmp_path):
    fields = flame_fields()
    fields["weights"] = np.zeros_like(fields["weights"])
    fields["weights"][:, 1] = 1.0
    fields["posedirs"] = np.zeros_like(fields["posedirs"])
    write_flame(tmp_path / "flame2023_no_jaw.pkl", fields)
    model = import_flame(tmp_path / "flame2023_no_jaw.pkl")
    assert "AU26" not in model.exp_names and model.num_expressions == N_EXP and model.name == "flame2023"


def test_inward_winding_is_flipped_and_landmarks_keep_the_files_corners(tmp_path):
    fields = flame_fields()
    fields["f"] = fields["f"][:, [0, 2, 1]]
    write_flame(tmp_path / "inward.pkl", fields)
    faces = np.arange(0, 3 * 51, 3)
    bary = np.random.default_rng(1).dirichlet((1, 1, 1), 51)
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": faces.astype(np.uint32), "lmk_b_coords": bary}, f, protocol=2)
    model = import_flame(tmp_path / "inward.pkl", landmarks=tmp_path / "flame_static_embedding.pkl")
    assert model.meta["checks"]["triangles_flipped"]
    assert torch.equal(model.triangles, torch.from_numpy(fields["f"][:, [0, 2, 1]].astype(np.int64)))
    points = model.landmarks(model.mean[None].double(), "ibug68")[0].numpy()
    v = fields["v_template"] * 1000.0
    expected = np.einsum("lj,ljc->lc", bary, v[fields["f"][faces].astype(np.int64)])
    assert np.allclose(points[17:], expected, atol=1e-3)


def _embeddings(tmp_path, f: np.ndarray) -> dict:
    """The three landmark embedding files (their structure as FLAME_PyTorch, DECA and MICA read them)."""
    rng = np.random.default_rng(2)
    static_faces, full_faces = rng.choice(len(f), 51, replace=False), rng.choice(len(f), 68, replace=False)
    static_bary, full_bary = rng.dirichlet((1, 1, 1), 51), rng.dirichlet((1, 1, 1), 68)
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as out:
        pickle.dump({"lmk_face_idx": static_faces.astype(np.uint32), "lmk_b_coords": static_bary}, out, protocol=2)
    np.save(tmp_path / "landmark_embedding.npy", {
        "static_lmk_faces_idx": static_faces, "static_lmk_bary_coords": static_bary,
        "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.int64),  # DECA's file holds torch tensors here
        "dynamic_lmk_bary_coords": torch.zeros(79, 17, 3),
        "full_lmk_faces_idx": full_faces[None], "full_lmk_bary_coords": full_bary[None]}, allow_pickle=True)
    mp_ids = rng.choice(478, 105, replace=False)
    mp_faces, mp_bary = full_faces.repeat(2)[:105], full_bary.repeat(2, 0)[:105]
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=mp_faces, lmk_b_coords=mp_bary,
             landmark_indices=mp_ids)
    return {
        "flame_static_embedding.pkl": ("ibug68", np.arange(17, 68), static_faces, static_bary),
        "landmark_embedding.npy": ("ibug68", np.arange(68), full_faces, full_bary),
        "mediapipe_landmark_embedding.npz": ("mp478", mp_ids, mp_faces, mp_bary),
    }


def test_landmark_embeddings(flame, tmp_path):
    path, fields = flame
    v = fields["v_template"] * 1000.0
    for name, (scheme, rows, faces, bary) in _embeddings(tmp_path, fields["f"]).items():
        model = import_flame(path, landmarks=tmp_path / name)
        lmap = model.landmark_map(scheme)
        assert np.flatnonzero(lmap.valid.numpy()).tolist() == sorted(rows.tolist()), name
        points = model.landmarks(model.mean[None].double(), scheme)[0].numpy()
        expected = np.einsum("lj,ljc->lc", bary, v[fields["f"][faces].astype(np.int64)])
        assert np.allclose(points[rows], expected, atol=1e-3), name
        assert name in model.meta["provenance"]


def test_cli_import_and_info(flame, tmp_path, capsys):
    path, fields = flame
    _embeddings(tmp_path, fields["f"])
    out = tmp_path / "flame.npz"
    assert main(["model", "import", "flame", str(path), "--landmarks", str(tmp_path / "flame_static_embedding.pkl"),
                 "-o", str(out)]) == 0
    assert f"194 vertices, {FLAME_NUM_SHAPE} identity modes, {N_EXP + 1} expressions" in capsys.readouterr().out
    assert main(["model", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "ibug68 (51/68 points)" in info and "exp_pca_003, AU26" in info and "UNTESTED" in info
    assert FaceModel.load(out).landmark_map("ibug68").valid.sum() == 51


def _cli_error(tmp_path, capsys, source, *extra: str) -> str:
    out = tmp_path / "out.npz"
    assert main(["model", "import", "flame", str(source), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("affectsynth: error: "), err
    assert not out.exists() and not list(tmp_path.glob("out.npz*"))
    return err


def test_a_pickle_naming_os_system_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "generic_model.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # protocol 0: os.system(...)
    assert "the pickle names os.system" in _cli_error(tmp_path, capsys, evil)
    assert not marker.exists()
    for module, name in (("builtins", "eval"), ("builtins", "getattr"), ("numpy", "load"), ("subprocess", "Popen")):
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(f"c{module}\n{name}\n(S'1'\ntR.".encode())
        assert f"names {module}.{name}" in _cli_error(tmp_path, capsys, bad)
    # Smuggled through copyreg: only the shims may be rebuilt that way.
    bad.write_bytes(b"ccopy_reg\n_reconstructor\n(cos\n_wrap_close\nc__builtin__\nobject\nNtR.")
    assert "names os._wrap_close" in _cli_error(tmp_path, capsys, bad)


def test_bad_files(flame, tmp_path, capsys):
    from PIL import Image

    path, fields = flame
    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    assert "not a readable pickle" in _cli_error(tmp_path, capsys, png)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "not a readable pickle" in _cli_error(tmp_path, capsys, truncated)
    missing = tmp_path / "missing_fields.pkl"
    write_flame(missing, {k: v for k, v in fields.items() if k not in ("posedirs", "weights")})
    assert "no posedirs, weights (not a FLAME model pickle)" in _cli_error(tmp_path, capsys, missing)
    few = tmp_path / "few_joints.pkl"
    write_flame(few, {**fields, "kintree_table": fields["kintree_table"][:, :4]})
    assert "FLAME has 5 joints, this file 4" in _cli_error(tmp_path, capsys, few)
    short = tmp_path / "short_shapedirs.pkl"
    write_flame(short, {**fields, "shapedirs": fields["shapedirs"][..., :100]})
    assert "shapedirs has 100 columns" in _cli_error(tmp_path, capsys, short)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2, 3]))
    assert "not a FLAME model (a dict)" in _cli_error(tmp_path, capsys, listed)
    # Landmark files: a photo, the wrong count, a model pickle.
    assert "not a readable pickle" in _cli_error(tmp_path, capsys, path, "--landmarks", str(png))
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"lmk_face_idx": np.arange(40), "lmk_b_coords": np.full((40, 3), 1 / 3)}))
    assert "40 landmarks; a FLAME iBUG embedding has 51 or 68" in _cli_error(tmp_path, capsys, path, "--landmarks",
                                                                              str(wrong))
    assert "not a FLAME landmark embedding" in _cli_error(tmp_path, capsys, path, "--landmarks", str(path))


def test_load_pickle_refuses_as_input_error(tmp_path):
    bad = tmp_path / "x.pkl"
    bad.write_bytes(b"cposix\nsystem\n(S'true'\ntR.")
    with pytest.raises(InputError, match="names posix.system"):
        load_pickle(bad)
