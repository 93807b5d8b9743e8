"""scripts/measure_expression_motion.py on a face whose "posed" photo is our own render of it: the
posed and rendered motion must then agree exactly, and the smile must show as motion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from affectsynth.affect.targets import parse_expression
from affectsynth.pipeline import Synthesizer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "measure_expression_motion.py"


def test_a_posed_photo_that_is_the_render_measures_no_difference(tmp_path, default_model, astronaut):
    subject = tmp_path / "faces" / "astronaut"
    subject.mkdir(parents=True)
    Image.fromarray(astronaut).save(subject / "neutral.png")
    with Synthesizer(default_model) as synthesizer:
        Image.fromarray(synthesizer(astronaut, parse_expression("happiness")).image).save(subject / "happiness.png")
    done = subprocess.run([sys.executable, str(SCRIPT), "--faces", str(tmp_path / "faces")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = dict(token.split("=") for token in lines[-1].split())
    assert figures == {"rms_posed_happiness": figures["rms_posed_happiness"], "rms_diff_happiness": "0.00",
                       "n_happiness": "1"}
    assert float(figures["rms_posed_happiness"]) > 1.0  # the smile moves the landmarks by millimetres
    posed = next(line for line in lines if line.startswith("happiness posed")).split()[2:]
    rendered = next(line for line in lines if line.startswith("happiness rendered")).split()[2:]
    assert posed == rendered
    corner_up = lines[1].split().index("corner_y")
    assert float(posed[corner_up]) < -2.0  # the lip corners rise (image y is down)
