"""The ICT Face Model Light import (affectsynth.model.importers.ict) on the real ICT files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from affectsynth.affect.targets import model_au_keys, parse_expression
from affectsynth.cli import main
from affectsynth.model import FaceModel
from affectsynth.model.importers.ict import ICT_UNIT_MM, PARTS
from affectsynth.render.eyes import IRIS_LANDMARKS, IRIS_RADIUS_MM

from .conftest import EOS_DATA, need_shared, read_pts
from .mp478_checks import check_registered_mp478


@pytest.fixture(scope="session")
def ict_npz(ict_root, tmp_path_factory) -> Path:
    """The model written by ``affectsynth model import ict``."""
    path = tmp_path_factory.mktemp("ict_npz") / "ict.npz"
    assert main(["model", "import", "ict", str(ict_root), "-o", str(path)]) == 0
    return path


def _obj_vertex(path: Path, index: int) -> np.ndarray:
    """Vertex ``index`` of an OBJ, read line by line (independently of the importer's parser)."""
    with path.open() as f:
        vertices = (line for line in f if line.startswith("v "))
        line = next(line for i, line in enumerate(vertices) if i == index)
    return np.array(line.split()[1:], dtype=np.float64)


def test_counts_parts_and_names(ict_root, ict_model):
    m = ict_model
    assert (m.num_vertices, m.num_identity, m.num_expressions) == (26_719, 100, 53)
    names = json.loads((ict_root / "FaceXModel" / "vertex_indices.json").read_text())["expressions"]
    assert m.exp_names == tuple(names)
    # The skin (face, head and neck) comes first in ICT's own order, the interior after it.
    assert m.skin().num_vertices == 11_248 and m.regions["skin"].tolist() == list(range(11_248))
    for material, parts in {"mouth_socket": ["mouth_socket"], "gums": ["gums_tongue"], "teeth": ["teeth"],
                            "eyeball": ["eyeball_L", "eyeball_R"]}.items():
        allowed = torch.cat([m.regions[p] for p in parts] + [m.regions["skin"]])  # interior rims may be skin
        assert torch.isin(m.triangles[m.materials[material]], allowed).all(), material
    assert m.uv.shape == (26_719, 2) and 0 <= m.uv.min() and m.uv.max() <= 1
    # The eyelash strips, eye films and eye sockets keep their vertices but have no triangles.
    assert not torch.isin(m.triangles, torch.arange(24_591, 26_719)).any()


@pytest.mark.parametrize("name", ["generic_neutral_mesh", "identity007", "mouthSmile_L"])
def test_vertex_order_is_the_files(ict_root, ict_model, name):
    folder = ict_root / "FaceXModel"
    for index in (0, 1225, 11_248, 17_039, 21_451, 26_718):
        neutral = _obj_vertex(folder / "generic_neutral_mesh.obj", index) * ICT_UNIT_MM
        assert np.allclose(ict_model.mean[index].numpy(), neutral, atol=1e-4)
        if name == "generic_neutral_mesh":
            continue
        basis = ict_model.id_basis[7] if name.startswith("identity") else \
            ict_model.exp_basis[ict_model.exp_index(name)]
        assert np.allclose(basis[index].numpy(), _obj_vertex(folder / f"{name}.obj", index) * ICT_UNIT_MM - neutral,
                           atol=1e-4)


def test_triangles_face_outward(ict_model):
    m = ict_model
    v, f = m.mean.double(), m.triangles
    normals = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    tip = int(m.landmark_map("ibug68").vertices[30, 0])
    around = normals[(f == tip).any(1)].sum(0)
    assert around[2] / around.norm() > 0.9  # the nose tip looks along +z
    # Each surface is consistently wound: no directed edge is used twice.
    material = m.triangle_materials()
    for k in material.unique():
        t = f[material == k]
        edges = torch.cat((t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]))
        assert len(edges.unique(dim=0)) == len(edges)
    for side in "LR":  # every sclera triangle faces away from its eyeball's centre
        sclera = f[torch.isin(f, m.regions["sclera_" + side]).all(1)]
        n = torch.linalg.cross(v[sclera[:, 1]] - v[sclera[:, 0]], v[sclera[:, 2]] - v[sclera[:, 0]])
        out = v[sclera].mean(1) - v.new_tensor(m.meta["eyeballs"][side]["centre_mm"])
        assert ((n * out).sum(1) > 0).all()


def test_units_sides_and_landmarks(ict_model):
    m = ict_model
    points = m.landmarks(m.mean[None], "ibug68")[0]
    assert 85 < (points[36] - points[45]).norm() < 100  # outer eye corners, mm
    assert points[36, 0] < 0 < points[45, 0] and points[48, 0] < 0 < points[54, 0]  # iBUG: 36, 48 subject's right
    assert points[8, 1] < points[57, 1] < points[30, 1] < points[27, 1]  # chin, lower lip, nose tip, nose root
    assert points[30, 2] > m.mean[:, 2].max() - 1.0  # the nose tip is the front of the face (mm)
    assert m.mean[m.regions["eyeball_L"], 0].mean() > 0 > m.mean[m.regions["eyeball_R"], 0].mean()
    for name, side in (("mouthSmile_L", 1), ("mouthSmile_R", -1), ("eyeBlink_L", 1)):
        weight = m.exp_basis[m.exp_index(name)].norm(dim=1)  # mm
        assert (weight * m.mean[:, 0]).sum() / weight.sum() * side > 10, name  # its side's half moves
    assert m.meta["units"] == "mm" and "centimetres" in m.meta["unit_conversion"]
    # Identity modes are std-scaled PCA modes: mm-sized, decreasing.
    rms = m.id_basis[:, :11_248].square().sum(-1).mean(-1).sqrt()
    assert 1 < rms[0] < 10 and rms[-1] < 0.2 * rms[0]


def test_au_map_drives_named_expressions(ict_model):
    keys = dict(zip(ict_model.exp_names, model_au_keys(ict_model)))
    assert keys["mouthSmile_L"] == "AU12_L" and keys["browInnerUp_R"] == "AU1_R" and keys["jawForward"] is None
    assert set(ict_model.meta["unmapped_expressions"]) == {n for n, k in keys.items() if k is None}
    coeffs, report = parse_expression("happiness").to_model_coeffs(ict_model)
    named = dict(zip(ict_model.exp_names, coeffs.tolist()))
    assert named["mouthSmile_L"] > 0 and named["mouthSmile_R"] > 0 and named["cheekSquint_L"] > 0
    assert {n for n, c in named.items() if c} <= {"mouthSmile_L", "mouthSmile_R", "cheekSquint_L", "cheekSquint_R",
                                                   "jawOpen"}
    assert "AU12" not in report.missing and "AU6" not in report.missing


def test_cli_import_saves_and_loads_the_same_model(ict_model, ict_npz):
    start = time.perf_counter()
    loaded = FaceModel.load(ict_npz)
    print(f"\nload {ict_npz.stat().st_size / 1e6:.1f} MB npz: {time.perf_counter() - start:.2f} s")
    for name in ("mean", "id_basis", "exp_basis", "uv"):
        assert torch.equal(getattr(loaded, name), getattr(ict_model, name)), name
    assert torch.equal(loaded.triangles, ict_model.triangles) and loaded.exp_names == ict_model.exp_names
    assert loaded.regions.keys() == ict_model.regions.keys()
    assert all(torch.equal(loaded.regions[k], r) for k, r in ict_model.regions.items())
    assert all(torch.equal(loaded.materials[k], r) for k, r in ict_model.materials.items())
    assert torch.equal(loaded.landmark_map("ibug68").vertices, ict_model.landmark_map("ibug68").vertices)
    assert loaded.meta == ict_model.meta


def test_cli_info(ict_npz, capsys):
    assert main(["model", "info", str(ict_npz)]) == 0
    out = capsys.readouterr().out
    assert "vertices 26719" in out and "identity modes 100" in out and "expressions 53" in out
    assert "mouthSmile_L=AU12_L" in out and "ibug68 (68/68 points)" in out and "MIT" in out
    assert len(out.splitlines()) < 25


def test_cli_bad_path_exit_2_one_line(tmp_path, capsys):
    out = tmp_path / "model.npz"
    assert main(["model", "import", "ict", str(tmp_path / "missing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not an ICT-FaceKit folder" in err
    assert not out.exists()
    assert main(["model", "info", str(out)]) == 2


def test_mp478_map_is_registered(ict_model, default_model):
    m = ict_model
    face = torch.arange(PARTS["face"][1] + 1)
    points = check_registered_mp478(m, default_model, face, with_iris=True)
    # The iris points lie on the eyeballs: the centre at the front, the rim about an iris radius
    # around it, in MediaPipe's order (image right, up, left, down).
    for side, first in zip("LR", IRIS_LANDMARKS):
        ids = m.landmark_map("mp478").vertices[first:first + 5]
        assert torch.isin(ids, m.regions["eyeball_" + side]).all()
        centre, rim = points[first], points[first + 1:first + 5]
        assert centre[2] > m.meta["eyeballs"][side]["centre_mm"][2] + 0.8 * m.meta["eyeballs"][side]["radius_mm"]
        radius = (rim[:, :2] - centre[:2]).norm(dim=1)
        assert (radius > 0.7 * IRIS_RADIUS_MM).all() and (radius < 1.05 * IRIS_RADIUS_MM).all(), radius
        assert rim[0, 0] > rim[2, 0] and rim[1, 1] > rim[3, 1]
    # Each lip's inner-edge points lie on that lip: a jaw drop carries the lower ones far down,
    # the upper ones little (on the closed mouth the nearest surface is often the other lip).
    drop = -m.landmarks(m.exp_basis[m.exp_index("jawOpen")][None].double(), "mp478")[0, :, 1]
    upper, lower = (torch.tensor([i for i in default_model.regions[name].tolist()[1:-1] if i < 468])
                    for name in ("lip_inner_upper", "lip_inner_lower"))
    assert drop[lower].min() > 2 * drop[upper].max(), (drop[upper], drop[lower])
    rim_drop = -m.exp_basis[m.exp_index("jawOpen")][:, 1]
    assert rim_drop[m.regions["lip_inner_lower"][1:-1]].min() > 2 * rim_drop[m.regions["lip_inner_upper"][1:-1]].max()


@pytest.mark.parametrize("detector", ["dlib", "mediapipe"])
def test_fit_on_image_0010(ict_npz, tmp_path, detector):
    """The imported model fits a real photo through its 68-point map (dlib) and its registered
    478-point map (MediaPipe): the fitted model's 68 points against the 300-W ground truth (the
    default model's test_cli formula)."""
    photo = need_shared(EOS_DATA / "image_0010.png")
    out = tmp_path / "fit.json"
    assert main(["fit", str(photo), "--model", str(ict_npz), "--detector", detector, "-o", str(out)]) == 0
    record = json.loads(out.read_text())
    pred = np.asarray(record["landmarks_68"])
    gt = read_pts(EOS_DATA / "image_0010.pts")
    nme = np.linalg.norm(pred - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45])
    print(f"\n{detector}: NME {nme:.4f}")
    assert nme <= 0.06 and record["reliable"] and record["scheme"] == ("mp478" if detector == "mediapipe" else "ibug68")


def test_render_changes_the_face_only(ict_npz, astronaut, tmp_path):
    """Rendering with ICT (its mouth interior and eyeballs included) re-expresses the face and
    leaves the photo's far pixels byte for byte."""
    photo = tmp_path / "face.png"
    Image.fromarray(astronaut).save(photo)
    fit_json, out = tmp_path / "fit.json", tmp_path / "surprise.png"
    assert main(["fit", str(photo), "--model", str(ict_npz), "-o", str(fit_json)]) == 0
    assert main(["render", str(photo), "--model", str(ict_npz), "--expression", "surprise", "-o", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == astronaut.shape
    changed = (image != astronaut).any(-1)
    points = np.asarray(json.loads(fit_json.read_text())["landmarks_68"])
    lo, hi = points.min(0), points.max(0)
    # ICT renders the whole head's skin, so "far" is a face size beyond the 68 points' box.
    far = np.ones_like(changed)
    (x0, y0), (x1, y1) = (lo - (hi - lo)).astype(int).clip(0), (hi + (hi - lo)).astype(int)
    far[y0:y1, x0:x1] = False
    assert not changed[far].any() and far.mean() > 0.3
    mouth = points[48:60]
    (mx0, my0), (mx1, my1) = mouth.min(0).astype(int), mouth.max(0).astype(int)
    assert changed[my0:my1, mx0:mx1].mean() > 0.5  # the mouth opened
    # ... onto the drawn mouth interior: darker than the photo's smile (teeth) there
    assert image[my0:my1, mx0:mx1].mean() < astronaut[my0:my1, mx0:mx1].mean() - 10


@pytest.mark.parametrize("aus, shapes, landmarks, axes", [
    # nose tip, wings, alar base, upper lip, inner brows: up and down
    (("AU9",), ("noseSneer_L", "noseSneer_R"), ((1,), (64, 294), (98, 327), (0,), (13,), (55, 285)), (1,)),
    # the mouth corners: out, down and back
    (("AU20_L", "AU20_R"), ("mouthStretch_L", "mouthStretch_R"), ((61,), (291,)), (0, 1, 2)),
])
def test_the_default_models_action_unit_moves_as_icts(ict_model, default_model, aus, shapes, landmarks, axes):
    # AU9's and AU20's magnitudes come from the ICT shapes its README maps them to
    # (affectsynth/affect/facs.py): measured at the same MediaPipe landmarks, the motion at full
    # weight agrees within 1.5 mm along each axis checked.
    def motion(model, names):
        field = sum(model.exp_basis[model.exp_index(n)] for n in names)[None].double()
        return model.landmarks(field, "mp478")[0][:, list(axes)]

    ict, ours = motion(ict_model, shapes), motion(default_model, aus)
    for ids in landmarks:
        difference = ict[list(ids)].mean(0) - ours[list(ids)].mean(0)
        assert difference.abs().max() < 1.5, (ids, ict[list(ids)], ours[list(ids)])
