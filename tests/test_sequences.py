"""The build-affect input readers (affectsynth.affect.sequences) and the build on a tiny model.

The 4DFAB, BU-4DFE and CoMA layouts are tested ONLY on small synthetic files written here in the
structure their documentation describes; no real file of these datasets was available."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectsynth.affect.build import BuildOptions, build_affect
from affectsynth.affect.sequences import (SequenceLabels, discover_sequences, load_sequence, match_frames,
                                          read_labels, read_mesh_vertices)
from affectsynth.affect.targets import AU_KEYS
from affectsynth.errors import InputError
from affectsynth.model import FaceModel

NAMES = ("AU12_L", "AU12_R", "AU26", "AU4")
TRUE = {"happiness": np.array([0.8, 0.8, 0.3, 0.0]), "anger": np.array([0.0, 0.0, 0.0, 0.9])}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(a 60-vertex model saved as .npz, the model): the first 20 vertices no shape moves."""
    rng = np.random.default_rng(1)
    mean = rng.normal(0, 30, (60, 3))
    basis = rng.normal(0, 3, (len(NAMES), 60, 3))
    basis[:, :20] = 0
    model = FaceModel(mean=torch.tensor(mean, dtype=torch.float32), id_basis=torch.zeros(0, 60, 3),
                      exp_basis=torch.tensor(basis, dtype=torch.float32), exp_names=NAMES,
                      triangles=torch.tensor([[i, i + 1, i + 2] for i in range(58)]), meta={"name": "tiny"})
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    model.save(path)
    return path, model


def _frames(model: FaceModel, emotion: str, frames: int = 7, apex: int = 3, seed: int = 0) -> np.ndarray:
    """[F, V, 3] a sequence rising to ``emotion`` at ``apex``, turned a few degrees about y."""
    curve = np.sin(0.5 * np.pi * np.minimum(np.arange(frames) / apex, 1.0)) ** 2
    curve[apex + 1:] = np.linspace(1, 0, frames - apex)[1:]
    coeffs = curve[:, None] * TRUE[emotion]
    vertices = model.mean.double().numpy() + np.einsum("fe,evc->fvc", coeffs, model.exp_basis.double().numpy())
    angle = np.radians(np.linspace(0, 4, frames) + seed)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([c, 0 * c, s], 1), np.tile([0.0, 1, 0], (frames, 1)), np.stack([-s, 0 * c, c], 1)], 1)
    return np.einsum("fvi,fji->fvj", vertices, rotation) + np.array([1.0, -2.0, 3.0])


def _write_obj(path, vertices):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# 4DFAB-like frame\n" + "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)
                    + "vt 0 0\nf 1/1 2/1 3/1\n")


def _write_wrl(path, vertices):
    path.parent.mkdir(parents=True, exist_ok=True)
    points = ",\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices)
    path.write_text("#VRML V2.0 utf8\nTransform { children [ Shape { appearance Appearance { texture "
                    'ImageTexture { url "000.bmp" } }\n geometry IndexedFaceSet {\n coord Coordinate {\n point [\n'
                    f"{points}\n ]\n }}\n coordIndex [ 0, 1, 2, -1 ]\n }}\n ] }}\n")


def _write_ply(path, vertices):
    import trimesh

    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.Trimesh(vertices, [[0, 1, 2]], process=False).export(path)  # binary little-endian PLY


@pytest.mark.parametrize("layout", ["4dfab", "bu4dfe", "coma"])
def test_dataset_layouts_build_without_labels(tiny, tmp_path, layout):
    path, model = tiny
    for person in ("F001", "M002"):
        for folder, emotion in (("Happy", "happiness"), ("Angry", "anger")):
            frames = _frames(model, emotion, seed=len(person + folder) % 3)
            for i, vertices in enumerate(frames):
                if layout == "4dfab":
                    _write_obj(tmp_path / person / "session1" / folder / f"{i:06d}.obj", vertices)
                elif layout == "bu4dfe":
                    _write_wrl(tmp_path / person / folder / f"{i:03d}.wrl", vertices)
                else:  # CoMA: metres, files <expression>.<frame>.ply
                    _write_ply(tmp_path / person / folder.lower() / f"{folder.lower()}.{i:06d}.ply", vertices / 1000)
    sources = discover_sequences(tmp_path, layout)
    assert [s.person for s in sources] == ["F001", "F001", "M002", "M002"]
    assert {s.layout_category for s in sources} == {"happiness", "anger"}
    affect, report = build_affect(tmp_path, None, path, BuildOptions(layout=layout), progress=False)
    assert report.sequences_built == 4 and not report.failures
    assert [s.apex for s in report.sequences] == [3, 3, 3, 3]
    for emotion, generating in TRUE.items():
        np.testing.assert_allclose(affect.prototype_coeffs[affect.classes.index(emotion)], generating, atol=2e-3)
    assert affect.provenance["residual"]["max_mm"] < 1e-2 and affect.bank is None
    # the command line offers the same layout and gives the same model
    from affectsynth.affect.affect_model import AffectModel
    from affectsynth.cli import main

    output = tmp_path.parent / f"{layout}_affect.npz"
    assert main(["model", "build-affect", "--meshes", str(tmp_path), "--base", str(path), "-o", str(output),
                 "--layout", layout]) == 0
    np.testing.assert_array_equal(AffectModel.load(output).prototype_coeffs, affect.prototype_coeffs)


def test_vertex_map_and_unregistered_scans(tiny, tmp_path):
    path, model = tiny
    frames = _frames(model, "happiness")
    order = np.random.default_rng(0).permutation(80)[:60]  # base vertex i is source vertex order[i]
    source = np.zeros((len(frames), 80, 3))
    source[:, order] = frames
    np.save(tmp_path / "map.npy", order)
    (tmp_path / "seqs" / "s1").mkdir(parents=True)
    np.save(tmp_path / "seqs" / "s1" / "frames.npy", source)
    (tmp_path / "labels.csv").write_text("sequence,frame,category\ns1,,happy\n")
    affect, _ = build_affect(tmp_path / "seqs", tmp_path / "labels.csv", path,
                             BuildOptions(vertex_map=tmp_path / "map.npy"), progress=False)
    np.testing.assert_allclose(affect.prototype_coeffs[0], TRUE["happiness"], atol=2e-3)
    with pytest.raises(InputError, match="wrong topology: 80 vertices, the base model has 60"):
        load_sequence(discover_sequences(tmp_path / "seqs")[0], 60)
    # raw scans: a different vertex count per frame
    _write_obj(tmp_path / "raw" / "s" / "000.obj", frames[0])
    _write_obj(tmp_path / "raw" / "s" / "001.obj", frames[1, :50])
    with pytest.raises(InputError, match="unregistered scans"):
        load_sequence(discover_sequences(tmp_path / "raw")[0], 60)


def test_corrupt_meshes_are_one_line_errors(tmp_path):
    (tmp_path / "a.obj").write_text("v 1 2\nv 1 2 3\n")
    (tmp_path / "b.wrl").write_text("#VRML V2.0 utf8\nShape {}\n")
    (tmp_path / "c.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n")
    for name in ("a.obj", "b.wrl", "c.ply"):
        with pytest.raises(InputError, match=f"{name}: corrupt mesh") as e:
            read_mesh_vertices(tmp_path / name)
        assert "\n" not in str(e.value)


def test_labels(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("sequence,frame,category,valence,arousal,person\n"
                    "a,,Happy,,,p1\na,0,neutral,0,0,\na,000012,,0.5,0.4,\nb,3,Angry,-0.4,0.8,\n")
    labels = read_labels(path)
    assert labels["a"].category == "happiness" and labels["a"].person == "p1"
    assert labels["b"].sequence_category() == "anger"
    matched = match_frames(labels["a"], tuple(f"{i:06d}" for i in range(13)))
    assert sorted(matched) == [0, 12] and matched[12].va == (0.5, 0.4)
    with pytest.raises(InputError, match=r"labels refer to frames the sequence does not have \(3;"):
        match_frames(labels["b"], ("0", "1"))
    assert match_frames(SequenceLabels(), ("0",)) == {}
    for body, message in (("frame,category\n1,x\n", "'sequence' column"),
                          ("sequence,valence\na,0.5\n", r"labels.csv:2: give both valence and arousal"),
                          ("sequence,valence,arousal\na,1.5,0\n", r"must lie in \[-1, 1\]"),
                          ("sequence,valence,arousal\na,x,0\n", "are not numbers"),
                          ("sequence,frame\na,1\na,1\n", "labelled twice")):
        path.write_text(body)
        with pytest.raises(InputError, match=message):
            read_labels(path)


def test_render_uses_the_affect_model(tiny, tmp_path, astronaut):
    """``render --affect``: --expression shows the learnt prototype, --va queries the learnt bank."""
    import json

    from PIL import Image

    from affectsynth.affect.affect_model import AffectModel
    from affectsynth.cli import main

    path, model = tiny
    rows = ["sequence,frame,category,valence,arousal"]
    for emotion, angle in (("happiness", 0.3), ("anger", 1.8)):
        frames = _frames(model, emotion)
        (tmp_path / "seqs" / emotion).mkdir(parents=True)
        np.save(tmp_path / "seqs" / emotion / "frames.npy", frames)
        curve = np.linalg.norm(frames - frames[0], axis=(1, 2))
        curve /= curve.max()
        rows += [f"{emotion},{i},{emotion},{r * np.cos(angle):.4f},{r * np.sin(angle):.4f}" for i, r in enumerate(curve)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "affect.npz"
    assert main(["model", "build-affect", "--meshes", str(tmp_path / "seqs"), "--labels", str(tmp_path / "labels.csv"),
                 "--base", str(path), "-o", str(output)]) == 0
    affect = AffectModel.load(output)
    photo = tmp_path / "face.png"
    Image.fromarray(astronaut).save(photo)
    assert main(["render", str(photo), "--expression", "happiness", "--affect", str(output), "-o",
                 str(tmp_path / "happy.png"), "--json", str(tmp_path / "happy.json")]) == 0
    labels = json.loads((tmp_path / "happy.json").read_text())["faces"][0]["labels"]
    assert labels["au"]["AU12"] == pytest.approx(0.8, abs=5e-3) and labels["au"]["AU26"] == pytest.approx(0.3, abs=5e-3)
    assert labels["model_coeffs"]["AU12_L"] == pytest.approx(labels["au"]["AU12"], abs=1e-6)
    assert main(["render", str(photo), "--va", "0.9,0.2", "--affect", str(output), "-o", str(tmp_path / "va.png"),
                 "--json", str(tmp_path / "va.json")]) == 0
    labels = json.loads((tmp_path / "va.json").read_text())["faces"][0]["labels"]
    expected = affect.bank.query([[0.9, 0.2]])[0][0]
    assert labels["au"]["AU12"] == pytest.approx(float(expected[AU_KEYS.index("AU12_L")]), abs=1e-6)
    assert labels["category"] == "happiness"
