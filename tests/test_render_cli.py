"""`affectsynth render` and `affectsynth sheet`: output naming, labels, determinism, untouched background,
bad targets, VA-path clips, contact sheets, devices."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from affectsynth.cli import SHEET_TARGETS, main

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


def test_a_greyscale_photo_renders_to_a_greyscale_file(astronaut, tmp_path):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert main(["render", str(tmp_path / "grey.png"), "--expression", "happiness"]) == 0
    with Image.open(tmp_path / "grey_happiness.png") as out:
        assert out.mode == "L" and out.size == (grey.shape[1], grey.shape[0])
        rendered = np.asarray(out)
    assert (rendered != grey).sum() > 1000 and np.array_equal(rendered[:40], grey[:40])


def test_background_unchanged_and_seeded_runs_identical(photo, astronaut, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"s{i}.png"
        assert main(["render", str(photo), "--expression", "surprise", "--seed", "7", "-o", str(out)]) == 0
        outs.append(np.asarray(Image.open(out)))
    assert (tmp_path / "s0.png").read_bytes() == (tmp_path / "s1.png").read_bytes()
    changed = np.abs(outs[0].astype(int) - astronaut.astype(int)).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    # Only the face changes: the astronaut's face box is about x 170-290, y 70-250 in the 512 px photo.
    assert changed.any() and xs.min() > 150 and xs.max() < 310 and ys.min() > 50 and ys.max() < 270


PATH = "0,0;0.6,0.4;0.8,-0.2"


@pytest.mark.parametrize("args", [
    ["--va", "2,0"], ["--va", "nan,0"], ["--expression", "joyy"], ["--au", "99:1"],
    ["--intensity", "0.5", "--va", "0,0"], ["--expression", "happiness", "--intensity", "1.5"],
    ["--va-path", "0,0;2,0"], ["--va-path", "0,0;nan,0"], ["--va-path", "0.5,0.5"], ["--va-path", "0,0;1"],
    ["--va-path", PATH, "--frames", "1"], ["--va", "0,0", "--frames", "5"],
    ["--va-path", PATH, "-o", "clip.avi"], ["--va-path", PATH, "-o", "frames/", "--fps", "10"],
    ["--expression", "happiness", "--device", "tpu"]])
def test_bad_targets_and_options_exit_2(photo, capsys, args):
    before = sorted(photo.parent.iterdir())
    assert main(["render", str(photo), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("affectsynth: error:")
    assert sorted(photo.parent.iterdir()) == before  # nothing written


def test_bad_target_is_one_line_from_the_console_script(photo):
    res = run_cli("render", str(photo), "--va", "nan,0")  # native libraries' log lines must not show either
    assert res.returncode == 2 and res.stderr.strip() == "affectsynth: error: valence nan is not in [-1, 1]"


def read_clip(path: str) -> list[np.ndarray]:
    if path.endswith("/"):
        return [np.asarray(Image.open(f)) for f in sorted(Path(path).iterdir())]
    if path.endswith(".gif"):
        with Image.open(path) as gif:
            return [np.asarray(gif.seek(i) or gif.convert("RGB")) for i in range(gif.n_frames)]
    video, frames = cv2.VideoCapture(path), []
    while (frame := video.read()[1]) is not None:
        frames.append(frame[..., ::-1])
    return frames


@pytest.mark.parametrize("name", ["clip.gif", "clip.mp4", "frames/"])
def test_va_path_writes_every_frame_with_labels(photo, astronaut, tmp_path, name):
    output = f"{tmp_path}/{name}"
    assert main(["render", str(photo), "--va-path", PATH, "--frames", "5", "-o", output,
                 "--json", str(tmp_path / "clip.json")]) == 0
    frames = read_clip(output)
    assert len(frames) == 5 and all(f.shape == astronaut.shape for f in frames)
    if name == "frames/":  # lossless: the first frame is the neutral face, the last the end point's expression
        assert sorted(p.name for p in Path(output).iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
        assert not np.array_equal(frames[0], frames[-1])
    meta = json.loads((tmp_path / "clip.json").read_text())
    assert meta["frames"] == 5 and meta["kind"] == {"clip.gif": "gif", "clip.mp4": "mp4", "frames/": "dir"}[name]
    va = [(f["labels"]["valence"], f["labels"]["arousal"]) for f in meta["frame_labels"]]
    assert va[0] == (0.0, 0.0) and va[-1] == (0.8, -0.2) and len(va) == 5
    assert meta["frame_labels"][0]["labels"]["category"] == "neutral"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.json", name.rstrip("/")])  # no temporaries


def test_va_path_with_a_seed_is_reproducible_and_labels_its_draw(photo, tmp_path):
    def clip(seed, folder):
        assert main(["render", str(photo), "--va-path", PATH, "--frames", "4", "--seed", str(seed), "-o",
                     f"{tmp_path}/{folder}/", "--json", str(tmp_path / f"{folder}.json")]) == 0
        return read_clip(f"{tmp_path}/{folder}/"), json.loads((tmp_path / f"{folder}.json").read_text())

    (first, meta), (again, _), (other, other_meta) = clip(3, "a"), clip(3, "b"), clip(4, "c")
    assert all(np.array_equal(x, y) for x, y in zip(first, again)) and meta["seed"] == 3
    # another seed draws other weights and variants (the path's start, the origin, is neutral either way)
    labels = [f["labels"]["au"] for f in meta["frame_labels"]]
    assert labels != [f["labels"]["au"] for f in other_meta["frame_labels"]] and labels[0] == {}
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


@pytest.mark.parametrize("name", ["clip.mp4", "frames/"])
def test_va_path_failure_leaves_nothing(photo, tmp_path, monkeypatch, name):
    from affectsynth.pipeline import Synthesizer

    real_render, calls = Synthesizer._render, []

    def failing_render(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure in the third frame")
        return real_render(self, *args)

    monkeypatch.setattr(Synthesizer, "_render", failing_render)
    assert main(["render", str(photo), "--va-path", PATH, "--frames", "5", "-o", f"{tmp_path}/{name}"]) == 1
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_va_path_refuses_a_full_directory(photo, tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "keep.txt").write_text("mine")
    assert main(["render", str(photo), "--va-path", PATH, "-o", f"{tmp_path}/frames/"]) == 2
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["keep.txt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("command", [["render", "--expression", "happiness"], ["fit", "-o", "fit.json"]])
def test_cuda_without_cuda_exits_2(photo, capsys, tmp_path, command):
    args = [command[0], str(photo), *command[1:], "--device", "cuda"]
    assert main([a if a != "fit.json" else str(tmp_path / a) for a in args]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_auto_is_the_default_and_renders_on_the_cpu(photo, tmp_path):
    meta = tmp_path / "meta.json"
    assert main(["render", str(photo), "--expression", "happiness", "-o", str(tmp_path / "out.png"),
                 "--json", str(meta)]) == 0
    assert json.loads(meta.read_text())["device"] == "cpu"


def test_sheet_renders_the_default_targets(photo, tmp_path):
    assert main(["sheet", str(photo), "-o", str(tmp_path / "sheet.png"), "--json", str(tmp_path / "sheet.json")]) == 0
    meta = json.loads((tmp_path / "sheet.json").read_text())
    assert [t["target"] for t in meta["tiles"]] == list(SHEET_TARGETS)
    assert [t["labels"][0]["category"] for t in meta["tiles"]] == list(SHEET_TARGETS)
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    # input + 7 targets: two rows of four 256 px tiles, each with its caption strip
    assert 2 * 256 < sheet.shape[0] < 3 * 256 and 4 * 256 < sheet.shape[1] < 5 * 256


def test_sheet_bad_target_exits_2(photo, tmp_path, capsys):
    assert main(["sheet", str(photo), "-o", str(tmp_path / "s.png"), "--targets", "happiness", "va:2,0"]) == 2
    assert "valence 2.0 is not in [-1, 1]" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_negative_va_values_are_values_not_options():
    from affectsynth.cli import _attach_signed_values, build_parser

    args = build_parser().parse_args(_attach_signed_values(["render", "f.png", "--va", "-0.5,0.3"]))
    assert args.va == "-0.5,0.3"
    argv = ["render", "f.png", "--va-path", "-.5,0;0,-1", "-o", "c.gif"]
    args = build_parser().parse_args(_attach_signed_values(argv))
    assert args.va_path == "-.5,0;0,-1" and args.output == "c.gif"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "f.png", "--va"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("affectsynth: error:")
