"""affectsynth batch and the fit cache, on real photos: manifest, failures, resume, a kill -9 midway,
workers and executors giving the same results, webdataset shards, SPEC parsing and balancing."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from affectsynth import cli
from affectsynth.affect.classes import class_codes
from affectsynth.batch import (MANIFEST_COLUMNS, TIMING_COLUMNS, BatchOptions, Manifest, Source, parse_spec,
                               plan_items, read_sources, run_batch)
from affectsynth.cache import CACHE_VERSION, FitCache, FitFailure
from affectsynth.errors import InputError, NoFaceError
from affectsynth.io import load_image
from affectsynth.pipeline import Synthesizer, parse_target

from .conftest import DEV_FACES, need_shared

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(default_model):
    with Synthesizer(default_model) as synthesizer:
        yield synthesizer


def variants(astronaut: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` different photos of the astronaut's face: flips and shifted crops."""
    out = []
    for i in range(count):
        top, left = 10 * (i // 2), 12 * (i // 2)
        crop = astronaut[top:top + 400, left:left + 400]
        out.append(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop))
    return out


def write_inputs(folder: Path, astronaut: np.ndarray, faces: int, broken: bool = False) -> None:
    folder.mkdir(parents=True)
    for i, image in enumerate(variants(astronaut, faces)):
        Image.fromarray(image).save(folder / f"face_{i:02d}.png")
    if broken:
        Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(folder / "grey.png")  # no face
        Image.fromarray(astronaut[:, :242]).save(folder / "half.png")  # a fit flagged unreliable: face cut off
        encoded = io.BytesIO()
        Image.fromarray(astronaut).save(encoded, format="JPEG")
        (folder / "broken.jpg").write_bytes(encoded.getvalue()[:20000])  # truncated


def read_manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as file:
        return list(csv.DictReader(file))


def without_timings(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def check_complete(out: Path, expected: int) -> list[dict[str, str]]:
    """The manifest has ``expected`` rows, one per item; every ok output decodes; no temporaries are left."""
    rows = read_manifest(out)
    assert len(rows) == expected
    assert len({(r["source"], r["target"]) for r in rows}) == expected  # no duplicates
    for row in rows:
        if row["status"] == "ok":
            assert load_image(out / row["output"]).ndim == 3
    assert not [p for p in out.rglob("*.tmp") if ".fitcache" not in p.parts]
    return rows


# ------------------------------------------------------------------------ fit cache
def test_fit_cache_round_trips_exactly_and_remembers_failures(synth, astronaut, tmp_path):
    cache = FitCache.for_fitter(tmp_path / "cache", synth.face_fitter)
    key = cache.key(astronaut)
    assert cache.get(key) is None
    fresh = synth.face_fitter(astronaut)
    cache.put(key, fresh)
    cached = cache.get(key)
    for part in ("landmarks", "fit"):
        a, b = getattr(fresh, part), getattr(cached, part)
        for name, value in vars(a).items():
            other = getattr(b, name)
            if isinstance(value, torch.Tensor):
                assert value.dtype == other.dtype and torch.equal(value.nan_to_num(-1), other.nan_to_num(-1)), name
            else:
                assert value == other, name
    assert cached.faces_found == fresh.faces_found
    targets = [parse_target("happiness"), parse_target("va:-0.5,0.6", torch.Generator().manual_seed(1))]
    from_fresh = [r.image for r in synth.render_many(astronaut, targets)]
    from_cache = [r.image for r in synth.render_many(astronaut, targets, fitted=cached)]
    assert all(np.array_equal(a, b) for a, b in zip(from_fresh, from_cache))  # byte-identical renders

    # The key is the pixels' (not a file's), and the fitter's.
    assert cache.key(astronaut.copy()) == key and cache.key(astronaut[:, ::-1].copy()) != key
    assert FitCache(tmp_path / "cache", fitter="another model").key(astronaut) != key

    # A truncated entry is a miss, and fit() writes it again.
    entry = cache.path(key)
    entry.write_bytes(entry.read_bytes()[:200])
    assert cache.get(key) is None
    assert torch.equal(cache.fit(astronaut, synth.face_fitter).fit.exp_coeffs, fresh.fit.exp_coeffs)
    assert cache.get(key) is not None

    # A file that is not an entry of this format (an older version's, another program's) is a miss.
    entry.write_bytes(b"affectsynth fit cache 1\n{}\n")
    assert cache.get(key) is None
    for damaged in (b"[1, 2]", b'{"key": "%s", "arrays": [["fit/scale", "<f4", [1], -4]]}' % key.encode()):
        entry.write_bytes(f"affectsynth fit cache {CACHE_VERSION}\n".encode() + damaged + b"\n")
        assert cache.get(key) is None                           # not an object; an array outside the file
    cache.put(key, fresh)

    # "No face" is remembered: the second time the detector is not run.
    grey = np.full((128, 128, 3), 128, np.uint8)
    calls = []

    def counting_fitter(image, **kwargs):
        calls.append(1)
        return synth.face_fitter(image, **kwargs)

    for name in ("first.png", "second.png"):
        with pytest.raises(NoFaceError, match=f"^{name}: no face found"):
            cache.fit(grey, counting_fitter, name=name)
    assert len(calls) == 1 and cache.get(cache.key(grey)) == FitFailure("no_face", "no face found")


# ------------------------------------------------------------------------ SPEC
def test_fit_cache_keeps_the_measured_appearance_beside_the_fit(synth, astronaut, tmp_path, monkeypatch):
    """The eyes', mouth's and grain's appearance stored beside a fit comes back bit for bit (renders from it
    are byte-identical), is measured once, and again when the code that measures it changed or the
    file is damaged."""
    cache = FitCache.for_fitter(tmp_path / "cache", synth.face_fitter)
    key = cache.key(astronaut)
    fitted = cache.fit(astronaut, synth.face_fitter, key=key)
    measured = []
    real = Synthesizer.appearance

    def counting(self, image, fit):
        measured.append(1)
        return real(self, image, fit)
    monkeypatch.setattr(Synthesizer, "appearance", counting)
    first = cache.appearance(key, astronaut, fitted, synth)
    again = cache.appearance(key, astronaut, fitted, synth)
    assert len(measured) == 1 and set(again) == {"eyes", "mouth", "grain"} == set(first)
    for name in first:
        for field, value in vars(first[name]).items():
            stored = getattr(again[name], field)
            assert stored.dtype == value.dtype and torch.equal(stored, value), (name, field)
    targets = [parse_target("happiness"), parse_target("surprise@0.6")]
    renders = [[r.image for r in synth.render_many(astronaut, targets, fitted=fitted, appearance=a)]
               for a in (first, again)]
    assert all(np.array_equal(a, b) for a, b in zip(*renders))

    monkeypatch.setattr(Synthesizer, "appearance_version", staticmethod(lambda: "other code"))
    cache.appearance(key, astronaut, fitted, synth)
    assert len(measured) == 2                                   # measured again, and stored under that version
    cache.appearance(key, astronaut, fitted, synth)
    assert len(measured) == 2
    stored = cache.path(key, "appearance")
    stored.write_bytes(stored.read_bytes()[:-40])               # truncated: measured again
    cache.appearance(key, astronaut, fitted, synth)
    assert len(measured) == 3

    def unwritable(*args):
        raise InputError("cannot write in a read-only folder")
    monkeypatch.setattr(FitCache, "_write", unwritable)           # a read-only cache still serves its fits
    monkeypatch.setattr(Synthesizer, "appearance_version", staticmethod(lambda: "newer code"))
    assert set(cache.appearance(key, astronaut, fitted, synth)) == {"eyes", "mouth", "grain"} and len(measured) == 4


def test_spec_expands_to_named_targets():
    spec = parse_spec("expressions=all; va-grid=5x5; va-random=3; expressions=happy,fear@0.5,happiness+surprise")
    names = [t.name for t in spec.fixed]
    assert names[:8] == ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
    assert names[-2:] == ["fear@0.50", "happiness+surprise"]  # "happy" is happiness, kept once
    grid = [t for t in spec.fixed if t.name.startswith("va")]
    points = [tuple(map(float, t.spec.removeprefix("va:").split(","))) for t in grid]
    assert len(points) == 13 and all(math.hypot(v, a) <= 1 + 1e-9 for v, a in points)  # 5x5 inside the disc
    assert (0.5, 0.5) in points and (1.0, 0.0) in points and (1.0, 0.5) not in points

    sources = [Source(Path(f"{n}.png"), f"{n}.png", n) for n in ("a", "b")]
    items = plan_items(spec, sources, seed=7)
    assert items == plan_items(spec, sources, seed=7) and len(items) == 2 * (len(spec.fixed) + 3)
    random_va = {s.name: [i.target.spec for i in items if i.source == s and "random" in i.target.name]
                 for s in sources}
    assert random_va["a.png"] != random_va["b.png"]  # drawn per source
    assert random_va != {s.name: [i.target.spec for i in plan_items(spec, sources, seed=8)
                                  if i.source == s and "random" in i.target.name] for s in sources}
    assert len({i.seed for i in items}) == len(items)


@pytest.mark.parametrize("text", ["expressions=joyy", "va-grid=5", "va-grid=1x3", "va-random=0", "bogus=1",
                                  "expressions=va:0.5,0.5", "balance=subject", ""])
def test_bad_spec_is_exit_2_before_anything_is_written(text, astronaut, tmp_path, capsys):
    write_inputs(tmp_path / "in", astronaut, 1)
    assert cli.main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--targets", text]) == 2
    assert capsys.readouterr().err.startswith("affectsynth: error:")
    assert not (tmp_path / "out").exists()


def test_balance_label_tops_every_class_up_to_the_largest():
    labels = ["happiness"] * 4 + ["sadness"] * 1 + ["fear"] * 2
    sources = [Source(Path(f"{i}.png"), f"{i}.png", str(i), label=label) for i, label in enumerate(labels)]
    items = plan_items(parse_spec("balance=label"), sources, seed=0)
    label_of = {s.name: s.label for s in sources}
    assert all(i.target.name.removeprefix("balance-") != label_of[i.source.name] for i in items)
    counts = Counter(labels) + Counter(i.target.spec for i in items)
    assert set(counts.values()) == {4}
    assert items == plan_items(parse_spec("balance=label"), sources, seed=0)
    with pytest.raises(InputError, match="label column"):
        plan_items(parse_spec("balance=label"), [Source(Path("a.png"), "a.png", "a")], seed=0)


def test_class_folders_label_their_images(tmp_path):
    """An ImageFolder layout (FER2013's train/angry/...): the folder names an expression, aliases too."""
    tile = Image.fromarray(np.zeros((4, 4), np.uint8))
    for name in ("train/angry/a.png", "train/happy/b.png", "train/happy/c.png", "train/misc/d.png", "e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        tile.save(tmp_path / name)
    sources = read_sources(tmp_path)
    assert [(s.name, s.label) for s in sources] == [("e.png", None), ("train/angry/a.png", "angry"),
                                                    ("train/happy/b.png", "happy"), ("train/happy/c.png", "happy"),
                                                    ("train/misc/d.png", None)]
    items = plan_items(parse_spec("balance=label"), sources, seed=0)
    assert [(i.source.name.split("/")[1], i.target.name) for i in items] == [("happy", "balance-anger")]


def test_numbered_labels_are_read_with_class_codes(tmp_path):
    """RAF-DB's train/1/ ... train/7/ (codes from 1) and a CSV of FER2013 codes (from 0): read with the
    dataset's class codes, a number is its class; without them a numbered folder is no label, and a
    numbered CSV label cannot be balanced."""
    tile = Image.fromarray(np.zeros((4, 4), np.uint8))
    for name in ("train/1/a.png", "train/4/b.png", "train/4/c.png", "train/9/d.png", "train/happy/e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        tile.save(tmp_path / name)
    labels = [(s.name, s.label) for s in read_sources(tmp_path / "train", class_codes=class_codes("rafdb"))]
    assert labels == [("1/a.png", "surprise"), ("4/b.png", "happiness"), ("4/c.png", "happiness"),
                      ("9/d.png", None), ("happy/e.png", "happy")]
    assert [s.label for s in read_sources(tmp_path / "train")] == [None, None, None, None, "happy"]
    (tmp_path / "train" / "labels.csv").write_text("path,label\n1/a.png,3\n4/b.png,0\n4/c.png,6.0\n")
    sources = read_sources(tmp_path / "train" / "labels.csv", class_codes=class_codes("fer2013"))
    assert [s.label for s in sources] == ["happiness", "anger", "neutral"]
    assert [s.label for s in read_sources(tmp_path / "train" / "labels.csv")] == ["3", "0", "6.0"]
    with pytest.raises(InputError, match="--class-codes"):
        plan_items(parse_spec("balance=label"), read_sources(tmp_path / "train" / "labels.csv"), seed=0)
    (tmp_path / "train" / "labels.csv").write_text("path,label\n1/a.png,happy\n")
    with pytest.raises(InputError, match=r"labels.csv:2: class code 'happy' is not a number"):
        read_sources(tmp_path / "train" / "labels.csv", class_codes=class_codes("fer2013"))


@pytest.mark.parametrize("codes", ["bogus", "happy,sad,happy", "happy,joyy"])
def test_bad_class_codes_are_exit_2_before_anything_is_written(codes, astronaut, tmp_path, capsys):
    write_inputs(tmp_path / "in", astronaut, 1)
    assert cli.main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--targets", "expressions=all",
                     "--class-codes", codes]) == 2
    err = capsys.readouterr().err
    assert err.startswith("affectsynth: error:") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ the manifest
def test_a_torn_last_line_is_cut_off(tmp_path):
    path = tmp_path / "manifest.csv"
    manifest = Manifest(path)
    manifest.append({**dict.fromkeys(MANIFEST_COLUMNS, ""), "source": "a.png", "target": "happiness", "status": "ok"})
    manifest.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b"b.png,happiness,happ")  # killed while writing the second row
    reopened = Manifest(path)
    assert [r["source"] for r in reopened.rows] == ["a.png"] and path.read_bytes() == whole
    reopened.close()


# ------------------------------------------------------------------------ runs
def test_batch_renders_reports_failures_and_resumes(astronaut, tmp_path, capsys):
    write_inputs(tmp_path / "in", astronaut, 2, broken=True)
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "-o", str(out), "--targets", "expressions=happiness,surprise;va-random=2",
            "--no-progress"]
    assert cli.main(args) == 3  # some items failed
    assert "20 items: 0 already done, 8 rendered, 12 failed" in capsys.readouterr().out
    rows = check_complete(out, 20)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert {r["reason"] for r in by_source["grey.png"]} == {"grey.png: no face found"}
    assert all("corrupt or truncated" in r["reason"] and r["status"] == "failed" for r in by_source["broken.jpg"])
    assert all(r["reason"].startswith("unreliable fit: face partly outside the image") and r["reliable"] == "False"
               and not r["output"] for r in by_source["half.png"])
    assert not (out / "half").exists() and not (out / "grey").exists()
    for name in ("face_00.png", "face_01.png"):
        source = load_image(tmp_path / "in" / name)
        for row in by_source[name]:
            assert row["status"] == "ok" and row["output"] == f"{name[:-4]}/{row['target']}.png"
            assert row["reliable"] == "True" and float(row["nme"]) < 0.06 and row["model"]
            assert json.loads(row["au"]) and row["seed"].isdigit()
            rendered = load_image(out / row["output"])
            changed = (rendered != source).any(-1)
            ys, xs = np.nonzero(changed)
            assert changed.sum() > 500 and 100 < ys.mean() < 300 and 100 < xs.mean() < 300  # the face changed
    happy = next(r for r in by_source["face_00.png"] if r["target"] == "happiness")
    assert happy["category"] == "happiness" and json.loads(happy["soft_label"]) == {"happiness": 1.0}

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    summary = run_batch(BatchOptions(input=tmp_path / "in", output=out, targets=args[5], progress=False))
    assert (summary.skipped, summary.ok, summary.failed) == (8, 0, 12)  # failures are retried, done work is not
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    assert without_timings(check_complete(out, 20)) == without_timings(rows)


#: Workers and executors are compared on this job: two faces and a photo without one.
COMPARED_TARGETS = "expressions=sadness;va-random=1"


@pytest.fixture(scope="module")
def reference_run(astronaut, tmp_path_factory) -> tuple[Path, Path, list[dict[str, str]]]:
    """(input folder, OUT, manifest rows) of the compared job run in this process."""
    root = tmp_path_factory.mktemp("reference")
    write_inputs(root / "in", astronaut, 2)
    Image.fromarray(np.full((96, 96, 3), 90, np.uint8)).save(root / "in" / "grey.png")
    summary = run_batch(BatchOptions(input=root / "in", output=root / "out", targets=COMPARED_TARGETS, seed=5,
                                     progress=False))
    assert (summary.ok, summary.failed) == (4, 2)
    return root / "in", root / "out", check_complete(root / "out", 6)


def assert_same_results(reference_run, out: Path) -> None:
    _, reference_out, reference_rows = reference_run
    rows = check_complete(out, len(reference_rows))
    assert without_timings(rows) == without_timings(reference_rows)
    for row in rows:
        if row["output"]:
            assert (out / row["output"]).read_bytes() == (reference_out / row["output"]).read_bytes()


def test_two_workers_give_the_same_manifest_and_bytes_as_one(reference_run, tmp_path):
    summary = run_batch(BatchOptions(input=reference_run[0], output=tmp_path / "out", targets=COMPARED_TARGETS,
                                     seed=5, workers=2, progress=False))
    assert (summary.ok, summary.failed) == (4, 2)
    assert_same_results(reference_run, tmp_path / "out")


def test_a_worker_that_dies_fails_its_source_only(astronaut, tmp_path, monkeypatch):
    """A worker process killed while reading crash.png (a stand-in for a native crash, injected into the
    spawned workers through a sitecustomize module): that source's rows fail, the other source renders."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "import affectsynth.io\n"
        "load_image = affectsynth.io.load_image\n"
        "def crashing(path, **kwargs):\n"
        "    if os.path.basename(path) == 'crash.png':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return load_image(path, **kwargs)\n"
        "affectsynth.io.load_image = crashing\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(hook), str(REPO))))
    write_inputs(tmp_path / "in", astronaut, 1)
    Image.fromarray(astronaut).save(tmp_path / "in" / "crash.png")
    summary = run_batch(BatchOptions(input=tmp_path / "in", output=tmp_path / "out", targets="expressions=happiness",
                                     workers=2, progress=False))
    assert (summary.ok, summary.failed) == (1, 1)
    rows = {r["source"]: r for r in check_complete(tmp_path / "out", 2)}
    assert rows["face_00.png"]["status"] == "ok"
    assert rows["crash.png"]["reason"].startswith("the worker process died rendering this source")


#: 5 sources x 5 targets: rows come per source, so a kill after the first ones leaves most to do.
KILL_TARGETS = "expressions=neutral,happiness,sadness,surprise,fear"


def test_kill_9_midway_then_resume(astronaut, tmp_path):
    write_inputs(tmp_path / "in", astronaut, 5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "affectsynth.cli", "batch", str(tmp_path / "in"), "-o", str(out),
               "--targets", KILL_TARGETS, "--workers", "2", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # its own process group: the kill takes its workers too
    try:
        deadline = time.monotonic() + 180
        # Rows come per source, when all its renders are written: kill once the first are in.
        while not (out / "manifest.csv").is_file() or len(read_manifest(out)) == 0:
            assert process.poll() is None and time.monotonic() < deadline, "the batch ended before it was killed"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done_before = len([r for r in read_manifest(out) if r["status"] == "ok"])
    assert 0 < done_before < 25
    summary = run_batch(BatchOptions(input=tmp_path / "in", output=out, targets=KILL_TARGETS, progress=False))
    assert summary.skipped == done_before and summary.ok == 25 - done_before and summary.failed == 0
    rows = check_complete(out, 25)  # no duplicates, no gaps, every file decodes
    assert all(r["status"] == "ok" for r in rows)
    assert sorted(r["output"] for r in rows) == sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.png"))


def test_csv_balance_and_webdataset_shards(astronaut, tmp_path):
    write_inputs(tmp_path / "in", astronaut, 3)
    (tmp_path / "in" / "labels.csv").write_text("path,label,subject,valence,arousal\nface_00.png,happy,s1,0.8,0.4\n"
                                                "face_01.png,happiness,s1,,\nface_02.png,sadness,s2,-0.6,-0.3\n")
    out = tmp_path / "out"
    summary = run_batch(BatchOptions(input=tmp_path / "in" / "labels.csv", output=out, format="webdataset",
                                     targets="expressions=neutral;balance=label", progress=False))
    assert (summary.ok, summary.failed, summary.shards) == (4, 0, 1)
    rows = check_complete(out, 4)
    balance = [r for r in rows if r["target"].startswith("balance-")]
    assert [(r["target"], r["source_label"]) for r in balance] in (
        [("balance-sadness", "happy")], [("balance-sadness", "happiness")])
    assert balance[0]["category"] == "sadness"
    assert {r["subject"] for r in rows} == {"s1", "s2"} and rows[0]["source_valence"] == "0.8"
    with tarfile.open(out / "shards" / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert len(names) == 8 and all("." not in n.split("/")[-1].rsplit(".", 1)[0] for n in names)
        for row in rows:
            key = row["output"].removesuffix(".png")
            meta = json.loads(tar.extractfile(f"{key}.json").read())
            assert meta["target"] == row["target"] and meta["au"] == json.loads(row["au"])
            image = Image.open(io.BytesIO(tar.extractfile(f"{key}.png").read()))
            assert np.array_equal(np.asarray(image), load_image(out / row["output"]))


def test_ray_executor_gives_the_local_results(reference_run, tmp_path):
    """Ray actors, reading the fits the reference run cached (--fit-cache shared): the same rows and bytes."""
    pytest.importorskip("ray")
    shared_cache = reference_run[1] / ".fitcache"
    entries = sorted(shared_cache.rglob("*.fit"))
    assert len(entries) == 3  # two faces and one "no face"
    summary = run_batch(BatchOptions(input=reference_run[0], output=tmp_path / "out", targets=COMPARED_TARGETS,
                                     seed=5, workers=2, executor="ray", fit_cache=shared_cache, progress=False))
    assert (summary.ok, summary.failed) == (4, 2)
    assert_same_results(reference_run, tmp_path / "out")
    assert sorted(shared_cache.rglob("*.fit")) == entries and not (tmp_path / "out" / ".fitcache").exists()


def test_dev_photos_balanced_by_their_labels(tmp_path):
    """The dev photos (less the 10-megapixel FACES ones, slow to render) topped up to the largest class,
    from other classes' photos, through a CSV of paths relative to its folder."""
    labels = need_shared(DEV_FACES / "labels.csv")
    (tmp_path / "dev").symlink_to(DEV_FACES)
    with open(labels, newline="") as file:
        rows = [row for row in csv.DictReader(file) if not row["path"].startswith("faces_")]
    with open(tmp_path / "labels.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, ("path", "label", "subject"))
        writer.writeheader()
        writer.writerows({"path": f"dev/{r['path']}", "label": r["label"], "subject": r["subject"]} for r in rows)
    counts = Counter(row["label"] for row in rows)
    summary = run_batch(BatchOptions(input=tmp_path / "labels.csv", output=tmp_path / "out", targets="balance=label",
                                     progress=False))
    rendered = check_complete(tmp_path / "out", sum(max(counts.values()) - n for n in counts.values()))
    assert summary.failed == 0, Counter(r["reason"] for r in rendered)
    assert set((counts + Counter(r["category"] for r in rendered)).values()) == {max(counts.values())}
