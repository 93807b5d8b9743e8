"""`affectsynth fit` end to end: outputs, exit codes, awkward and bad inputs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from affectsynth.cli import main

from .conftest import EOS_DATA, need_shared, read_pts


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "affectsynth.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory, astronaut) -> Path:
    path = tmp_path_factory.mktemp("in") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def astronaut_fit(astronaut_png, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("out")
    assert main(["fit", str(astronaut_png), "-o", str(out / "fit.json"), "--overlay", str(out / "overlay.png")]) == 0
    overlay = np.asarray(Image.open(out / "overlay.png"))
    return {"doc": json.loads((out / "fit.json").read_text()), "overlay": overlay}


def test_fit_json_content(astronaut_fit, default_model):
    doc = astronaut_fit["doc"]
    assert doc["faces_found"] == 1 and doc["image_size"] == [512, 512]
    assert set(doc["pose_deg"]) == {"yaw", "pitch", "roll"}
    assert abs(doc["pose_deg"]["yaw"]) < 30 and doc["reliable"] is True
    assert set(doc["expression"]) == set(default_model.exp_names)
    assert len(doc["identity"]) == default_model.num_identity
    lm68 = np.asarray(doc["landmarks_68"])
    assert lm68.shape == (68, 2)
    # The astronaut's face lies at x in ~[160, 300], y in ~[60, 250] of the 512 x 512 photo.
    assert 150 < lm68[:, 0].min() and lm68[:, 0].max() < 320 and 50 < lm68[:, 1].min() and lm68[:, 1].max() < 260
    # iBUG order: 36 = subject's right outer eye corner, on the image's left; 30 nose tip; 8 chin.
    assert lm68[36, 0] < lm68[45, 0] and lm68[30, 1] < lm68[8, 1] and lm68[19, 1] < lm68[30, 1]
    assert doc["error"]["nme"] < 0.05


def test_overlay_draws_mesh_on_face_only(astronaut_fit, astronaut):
    changed = np.abs(astronaut_fit["overlay"].astype(int) - astronaut.astype(int)).sum(-1) > 30
    face, elsewhere = changed[80:240, 170:300], changed[300:, :]
    assert face.mean() > 0.2 and elsewhere.mean() < 0.001


def test_smile_estimated_on_astronaut(astronaut_fit):
    # Eileen Collins smiles with her lips closed in this photo.
    exp = astronaut_fit["doc"]["expression"]
    assert max(v for k, v in exp.items() if k.startswith("AU12")) > 0.2


def test_exif_rotated_photo_gives_upright_landmarks(tmp_path, astronaut, astronaut_fit):
    # Stored rotated 90 degrees clockwise, with EXIF orientation 8 saying "rotate back".
    stored = np.rot90(astronaut, k=-1)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert main(["fit", str(tmp_path / "rot.jpg"), "-o", str(tmp_path / "fit.json")]) == 0
    rot = np.asarray(json.loads((tmp_path / "fit.json").read_text())["landmarks_68"])
    upright = np.asarray(astronaut_fit["doc"]["landmarks_68"])
    assert np.abs(rot - upright).mean() < 2.0


@pytest.mark.parametrize("kind", ["rgba", "gray", "png16", "huge"])
def test_awkward_images_are_fitted(tmp_path, astronaut, astronaut_fit, kind):
    ref = np.asarray(astronaut_fit["doc"]["landmarks_68"])
    path, factor = tmp_path / f"{kind}.png", 1.0
    if kind == "rgba":
        Image.fromarray(np.dstack((astronaut, np.full(astronaut.shape[:2], 200, np.uint8)))).save(path)
    elif kind == "gray":
        Image.fromarray(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)).save(path)
    elif kind == "png16":
        cv2.imwrite(str(path), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    else:  # 12,000 x 9,000: the astronaut scaled up 16x in a large canvas, a 108-megapixel portrait
        path = tmp_path / "huge.jpg"
        big = cv2.resize(astronaut, (8192, 8192), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((9000, 12000, 3), 90, np.uint8)
        canvas[400:8592, 1500:9692] = big
        cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        ref, factor = ref * 16.0 + [1500, 400], 16.0
    assert main(["fit", str(path), "-o", str(tmp_path / "fit.json")]) == 0
    got = np.asarray(json.loads((tmp_path / "fit.json").read_text())["landmarks_68"])
    assert np.abs(got - ref).mean() < 2.5 * factor


def _bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> None:
    """A tiny, valid PNG header that declares a huge image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _bad_inputs(tmp: Path, astronaut: np.ndarray) -> dict[str, Path]:
    ok = tmp / "ok.jpg"
    Image.fromarray(astronaut).save(ok, quality=95)
    data = ok.read_bytes()
    (tmp / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp / "text.jpg").write_text("this is not an image\n")
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tmp / "one_pixel.png")
    Image.fromarray((np.random.default_rng(0).random((480, 640, 3)) * 60 + 100).astype(np.uint8)).save(tmp / "noface.png")
    _bomb_png(tmp / "bomb.png")
    return {name: tmp / name for name in ("truncated.jpg", "text.jpg", "one_pixel.png", "noface.png", "bomb.png",
                                          "missing.jpg")}


@pytest.mark.parametrize("name", ["truncated.jpg", "text.jpg", "one_pixel.png", "noface.png", "bomb.png",
                                  "missing.jpg"])
def test_bad_input_exit_2_one_line_no_output(tmp_path, astronaut, name):
    path = _bad_inputs(tmp_path, astronaut)[name]
    out, overlay = tmp_path / "out" / "fit.json", tmp_path / "out" / "overlay.png"
    out.parent.mkdir()
    res = run_cli("fit", str(path), "-o", str(out), "--overlay", str(overlay))
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("affectsynth: error:") and name in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert list(out.parent.iterdir()) == []


def test_refuses_to_overwrite_input(tmp_path, astronaut_png):
    target = tmp_path / "a.png"
    target.write_bytes(astronaut_png.read_bytes())
    before = target.read_bytes()
    res = run_cli("fit", str(target), "-o", str(tmp_path / "fit.json"), "--overlay", str(target))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert target.read_bytes() == before and not (tmp_path / "fit.json").exists()


def test_several_similar_faces_need_all_faces(tmp_path, astronaut):
    face = astronaut[40:300, 120:360]
    canvas = np.full((300, 520, 3), 120, np.uint8)
    canvas[20:280, 10:250] = face
    canvas[20:280, 270:510] = face[:, ::-1]
    Image.fromarray(canvas).save(tmp_path / "two.png")
    res = run_cli("fit", str(tmp_path / "two.png"), "-o", str(tmp_path / "fit.json"))
    assert res.returncode == 2 and "--all-faces" in res.stderr and not (tmp_path / "fit.json").exists()
    assert main(["fit", str(tmp_path / "two.png"), "-o", str(tmp_path / "fit.json"), "--all-faces"]) == 0
    doc = json.loads((tmp_path / "fit.json").read_text())
    assert len(doc["faces"]) == 2 and doc["faces"][0]["landmarks_68"] == doc["landmarks_68"]


def test_image_0010_cli_nme(tmp_path):
    path = need_shared(EOS_DATA / "image_0010.png")
    assert main(["fit", str(path), "-o", str(tmp_path / "fit.json")]) == 0
    pred = np.asarray(json.loads((tmp_path / "fit.json").read_text())["landmarks_68"])
    gt = read_pts(EOS_DATA / "image_0010.pts")
    nme = np.linalg.norm(pred - gt, axis=1).mean() / np.linalg.norm(gt[36] - gt[45])
    assert nme <= 0.06


def test_model_option(tmp_path, astronaut_png, astronaut_fit, default_model):
    default_model.save(tmp_path / "model.npz")
    assert main(["fit", str(astronaut_png), "-o", str(tmp_path / "fit.json"), "--model", str(tmp_path / "model.npz")]) == 0
    doc = json.loads((tmp_path / "fit.json").read_text())
    assert np.allclose(doc["landmarks_68"], astronaut_fit["doc"]["landmarks_68"], atol=1e-3)
    (tmp_path / "bad.npz").write_text("not a model")
    res = run_cli("fit", str(astronaut_png), "-o", str(tmp_path / "fit2.json"), "--model", str(tmp_path / "bad.npz"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "bad.npz" in res.stderr
    assert not (tmp_path / "fit2.json").exists()


def test_dlib_detector_option(tmp_path, astronaut_png, astronaut_fit):
    assert main(["fit", str(astronaut_png), "-o", str(tmp_path / "fit.json"), "--detector", "dlib"]) == 0
    doc = json.loads((tmp_path / "fit.json").read_text())
    assert doc["scheme"] == "ibug68" and len(doc["error"]["per_landmark_px"]) == 68
    ours, mp = np.asarray(doc["landmarks_68"]), np.asarray(astronaut_fit["doc"]["landmarks_68"])
    eye_distance = np.linalg.norm(mp[36] - mp[45])
    assert np.linalg.norm(ours - mp, axis=1).mean() < 0.06 * eye_distance
