"""scripts/eval_judge.py's posed part without the judge: which photos it scores, and the figures it makes of
the judge's summary."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_judge.py"


def load_script():
    spec = importlib.util.spec_from_file_location("eval_judge", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_posed_rows_are_the_labelled_photos_beside_each_neutral_one(tmp_path):
    eval_judge = load_script()
    photo = Image.fromarray(np.zeros((6, 4, 3), np.uint8))
    for subject, names in {"a": ["neutral.jpg", "happiness.png", "sadness.JPG", "contempt.png", "notes.txt"],
                           "b": ["neutral.png", "fear.webp"], "c": ["anger.png"]}.items():
        (tmp_path / subject).mkdir()
        for name in names:
            if name.endswith(".txt"):
                (tmp_path / subject / name).write_text("not a photo")
            else:
                photo.save(tmp_path / subject / name, format="PNG")  # the suffix is what the script reads
    subjects = eval_judge.find_subjects(tmp_path, None)
    assert list(subjects) == ["a", "b"]  # c has no neutral photo
    rows = eval_judge.posed_rows(subjects)
    found = {(r["subject"], r["label"]): r for r in rows}
    assert sorted(found) == [("a", "happiness"), ("a", "sadness"), ("b", "fear")]  # contempt is not one of the six
    assert found[("a", "sadness")]["path"] == str(tmp_path / "a" / "sadness.JPG")
    assert found[("a", "sadness")]["reference_path"] == str(tmp_path / "a" / "neutral.jpg")
    assert all(r["part"] == "posed" and r["pixels"] == 24 for r in rows)


def test_posed_figures_average_only_the_labels_with_a_posed_photo():
    eval_judge = load_script()
    summary = {"expr": {"per_label": {"happiness": {"hit_rate": 1.0}, "anger": {"hit_rate": 0.25}}},
               "id": {"mean": 0.3, "frac_same": 1.0, "max": 0.5}}
    figures = eval_judge.posed_figures(summary)
    assert figures["posed_macro"] == 0.625
    assert figures["posed_hap"] == 1.0 and figures["posed_ang"] == 0.25
    assert math.isnan(figures["posed_dis"])
    assert figures["posed_id_mean"] == 0.3
