"""The augmentation experiment: dataset readers on tiny fixtures in each format, the metrics, and the
whole experiment in miniature (astronaut crops as subjects, 2 folds, 1 epoch)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from affectsynth.errors import InputError
from affectsynth.experiment.datasets import read_dataset
from affectsynth.experiment.protocol import (ExperimentOptions, accuracy, ccc, confusion_matrix, macro_f1,
                                             paired_comparison, run_experiment, subject_folds)

from .conftest import DEV_FACES, need_shared


def _image(path, value=128, size=(64, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)


def _labels(samples):
    return [(s.key, s.label, s.subject, s.valence, s.arousal) for s in samples]


def test_folders(tmp_path):
    for name in ("s1/neutral.png", "s1/happy_2.png", "s2/anger.jpg"):
        _image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert _labels(read_dataset(tmp_path)) == [("s1/happy_2", "happiness", "s1", None, None),
                                               ("s1/neutral", "neutral", "s1", None, None),
                                               ("s2/anger", "anger", "s2", None, None)]
    _image(tmp_path / "s3/bored.png")
    with pytest.raises(InputError, match="bored"):
        read_dataset(tmp_path, "folders")


def test_csv(tmp_path):
    _image(tmp_path / "img/a.png")
    _image(tmp_path / "img/b.png")
    (tmp_path / "labels.csv").write_text("path,label,subject,valence,arousal\nimg/a.png,happy,p1,0.5,0.2\n"
                                         "img/b.png,Sad,,,\n")
    samples = read_dataset(tmp_path)  # auto: a folder with labels.csv
    assert _labels(samples) == [("img/a", "happiness", "p1", 0.5, 0.2), ("img/b", "sadness", "img/b", None, None)]
    assert samples[0].image == tmp_path / "img/a.png"
    (tmp_path / "bad.csv").write_text("path,label\nimg/a.png,bored\n")
    with pytest.raises(InputError, match=r"bad.csv:2: .*bored"):
        read_dataset(tmp_path / "bad.csv")
    (tmp_path / "half.csv").write_text("path,label,valence,arousal\nimg/a.png,happy,0.5,\n")
    with pytest.raises(InputError, match="both valence and arousal"):
        read_dataset(tmp_path / "half.csv")


def test_rafdb(tmp_path):
    basic = tmp_path / "basic"
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 1\ntrain_00002.jpg 4\ntest_0001.jpg 7\n")
    _image(basic / "Image/aligned/train_00001_aligned.jpg")
    _image(basic / "Image/aligned/train_00002_aligned.jpg")
    _image(basic / "Image/original/test_0001.jpg")
    samples = read_dataset(tmp_path)
    assert [(s.key, s.label, s.subject) for s in samples] == [
        ("train_00001", "surprise", "train_00001"), ("train_00002", "happiness", "train_00002"),
        ("test_0001", "neutral", "test_0001")]
    assert samples[2].image.parent.name == "original"
    (basic / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(InputError, match="1..7"):
        read_dataset(tmp_path, "rafdb")


def test_affectnet(tmp_path):
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    (tmp_path / "training.csv").write_text(header + '1/a.jpg,0,0,64,64,"1;2",1,0.5,0.3\n'
                                                    '1/b.jpg,0,0,64,64,"1;2",8,-2,-2\n')
    (tmp_path / "validation.csv").write_text(header + '2/c.png,0,0,64,64,"1;2",7,-0.4,0.6\n')
    for name in ("1/a.jpg", "1/b.jpg", "2/c.png"):
        _image(tmp_path / "Manually_Annotated_Images" / name)
    assert _labels(read_dataset(tmp_path)) == [("1/a", "happiness", "1/a", 0.5, 0.3),
                                               ("2/c", "contempt", "2/c", -0.4, 0.6)]


def test_fer2013(tmp_path):
    pixels = " ".join(str(i % 256) for i in range(48 * 48))
    (tmp_path / "fer2013.csv").write_text(f"emotion,pixels,Usage\n0,{pixels},Training\n6,{pixels},PublicTest\n")
    samples = read_dataset(tmp_path)
    assert [(s.label, s.subject) for s in samples] == [("anger", "fer2013/00000"), ("neutral", "fer2013/00001")]
    assert samples[0].image.shape == (48, 48, 3) and samples[0].image.dtype == np.uint8
    assert samples[0].image[0, 5, 1] == 5
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(InputError, match="2304"):
        read_dataset(tmp_path)


def test_ckplus(tmp_path):
    for sequence, frames in (("001", 3), ("002", 2)):
        for i in range(1, frames + 1):
            _image(tmp_path / f"cohn-kanade-images/S005/{sequence}/S005_{sequence}_{i:08d}.png", value=10 * i)
    (tmp_path / "Emotion/S005/001").mkdir(parents=True)
    (tmp_path / "Emotion/S005/001/S005_001_00000003_emotion.txt").write_text("   3.0000000e+00\n")
    samples = read_dataset(tmp_path)  # sequence 002 has no label file: not used
    assert _labels(samples) == [("S005/001/S005_001_00000001", "neutral", "S005", None, None),
                                ("S005/001/S005_001_00000003", "disgust", "S005", None, None)]


def test_dev_faces_readers_agree():
    dev = need_shared(DEV_FACES)
    by_csv, by_folders = read_dataset(dev), read_dataset(dev, "folders")
    assert sorted(_labels(by_csv)) == sorted(_labels(by_folders))
    assert len({s.subject for s in by_csv}) == 7 and len({s.label for s in by_csv}) == 7


def test_metrics():
    true, predicted = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1])
    confusion = confusion_matrix(true, predicted, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert accuracy(confusion) == 0.5
    assert macro_f1(confusion) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    x = torch.linspace(-1, 1, 20)
    assert ccc(x, x) == pytest.approx(1.0) and ccc(-x, x) == pytest.approx(-1.0) and ccc(x + 1, x) < 1.0
    paired = paired_comparison([0.5, 0.6, 0.7, 0.4], [0.4, 0.5, 0.7, 0.5])
    assert (paired.wins, paired.losses, paired.ties) == (2, 1, 1)
    assert paired.sign_p == pytest.approx(1.0) and paired.mean == pytest.approx(0.025)
    # against a constant (chance), as the report tests each condition: scipy's one-sample t-test
    from scipy.stats import ttest_1samp
    per_fold = [0.214, 0.417, 0.214, 0.333, 0.167, 0.214, 0.250]
    versus = paired_comparison(per_fold, [1 / 7] * 7)
    reference = ttest_1samp(per_fold, 1 / 7)
    assert versus.t == pytest.approx(reference.statistic) and versus.t_p == pytest.approx(reference.pvalue)
    assert versus.wins == 7 and versus.sign_p == pytest.approx(2 / 2 ** 7)
    folds = subject_folds([f"s{i}" for i in range(7)] * 2, 3, seed=0)
    assert sorted(len(f) for f in folds) == [2, 2, 3] and set().union(*folds) == {f"s{i}" for i in range(7)}
    assert folds == subject_folds([f"s{i}" for i in range(7)], 3, seed=0)
    with pytest.raises(InputError, match="--folds"):
        subject_folds(["a", "b"], 3, seed=0)


def test_experiment_miniature(tmp_path, astronaut):
    """Three "subjects" (the astronaut, mirrored, and a crop), each with a "neutral" and a "happiness"
    photo (two framings), VA labels: 2 folds, 1 epoch, 32² crops."""
    data = tmp_path / "data"
    framings = {"s0": astronaut, "s1": astronaut[:, ::-1], "s2": astronaut[20:460, 40:480]}
    rows = ["path,label,subject,valence,arousal"]
    for subject, image in framings.items():
        for label, crop, va in (("neutral", image, "0.0,0.0"), ("happiness", image[10:, 10:], "0.7,0.4")):
            (data / subject).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(crop)).save(data / subject / f"{label}.png")
            rows.append(f"{subject}/{label}.png,{label},{subject},{va}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    options = ExperimentOptions(data=data, work=tmp_path / "work", folds=2, seeds=(1,), size=32, epochs=1,
                                workers=1, max_side=256)
    report = run_experiment(options)

    figures = dict(token.split("=") for token in report.key_values().split())
    for condition in ("real", "classic", "synth_aug", "synth_only"):
        for metric in ("acc", "macro_f1"):
            assert 0.0 <= float(figures[f"{metric}_{condition}"]) <= 1.0
            assert float(figures[f"{metric}_{condition}_std"]) >= 0.0
    assert all(math.isfinite(float(figures[k])) for k in ("ccc_valence", "ccc_arousal", "p_sign_acc",
                                                          "p_t_synth_only_vs_chance", "p_sign_synth_only_vs_chance"))
    assert figures["folds"] == "2" and figures["runs"] == "8"
    for heading in ("accuracy (mean ± std)", "accuracy per fold", "confusion, synth_only", "synth_aug against classic", "va regression",
                    "faces: 6 real of 3 subjects", "synthesized: 6 renders"):
        assert heading in report.text
    renders = sorted((tmp_path / "work/synth").rglob("*.png"))
    assert len(renders) == 12  # every photo as both classes; its own class is not used
    stamps = [p.stat().st_mtime_ns for p in renders]
    again = run_experiment(options)  # the rerun reuses the renders and the fits
    assert [p.stat().st_mtime_ns for p in renders] == stamps
    assert again.figures["acc_real"] == report.figures["acc_real"]
    # Another intensity renders each other class once more (a new variant draw); what exists is reused.
    more = run_experiment(replace(options, intensities=(0.6, 1.0)))
    assert "synthesized: 9 renders" in more.text
    assert len(sorted((tmp_path / "work/synth").rglob("*.png"))) == 18
    assert [p.stat().st_mtime_ns for p in renders] == stamps


def test_script_bad_folds(tmp_path):
    """The script refuses more folds than subjects in one line, exit 2, before detecting or rendering."""
    import subprocess
    import sys
    from pathlib import Path

    for subject in ("a", "b"):
        _image(tmp_path / "data" / subject / "neutral.png")
    script = Path(__file__).resolve().parents[1] / "scripts" / "augment_experiment.py"
    done = subprocess.run([sys.executable, str(script), "--data", str(tmp_path / "data"), "--folds", "3",
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["augment_experiment: error: --folds 3: give 2 to 2 (the number of "
                                                "subjects)"]
    assert not (tmp_path / "work").exists()
