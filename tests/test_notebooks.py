"""The notebooks in notebooks/ run top to bottom in a fresh kernel (nbclient, CPU, small inputs),
and their widget handlers do what the sliders would: each test appends cells that call the
handler functions and check the rendered image and its labels, then executes the whole notebook.
A cell that raises fails the test with the cell's traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")   # run by RUNNER, in a process of its own

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Seconds a notebook may take (the issue's budget is 2 minutes on this 2-core CPU; the timeout is looser
#: so that a loaded CI machine fails on a real hang, not on contention).
CELL_TIMEOUT_S = 300


#: Runs a notebook with nbclient and writes the executed notebook: a process of its own for each
#: notebook. Inside the test process (after some 450 tests), 1 run in 2 to 7 lost a message between
#: nbclient and the kernel: both sat idle until the 300 s limit (py-spy), with ipykernel 7.4 and
#: 6.31 alike; a client in a fresh process did not (0 of 23 runs with 6.31).
RUNNER = """
import sys, time, nbclient, nbformat
notebook = nbformat.read(sys.argv[1], as_version=4)
client = nbclient.NotebookClient(notebook, timeout=int(sys.argv[3]), kernel_name="python3",
                                 resources={"metadata": {"path": sys.argv[4]}})
start = time.perf_counter()
client.execute()
notebook.metadata["test_seconds"] = time.perf_counter() - start
nbformat.write(notebook, sys.argv[2])
"""


def run_notebook(name: str, extra_cells: list[str]) -> tuple[object, float]:
    """Execute notebooks/<name> with ``extra_cells`` appended; -> (the executed notebook, seconds)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{name} is stored with outputs; clear them before committing"
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in extra_cells]
    with tempfile.TemporaryDirectory() as work:
        source, executed = Path(work) / name, Path(work) / ("executed_" + name)
        nbformat.write(notebook, source)
        # run from notebooks/, as Jupyter does (the notebooks find scripts/ beside it); the temp dirs they
        # write go under this one (TMPDIR), so a test run leaves none behind
        run = subprocess.run([sys.executable, "-c", RUNNER, str(source), str(executed), str(CELL_TIMEOUT_S),
                              str(NOTEBOOKS)], env={**os.environ, "AFFECTSYNTH_NB_SMALL": "1", "TMPDIR": work},
                             capture_output=True, text=True)
        if run.returncode != 0:
            pytest.fail(f"{name} failed:\n{run.stderr[-6000:]}", pytrace=False)
        notebook = nbformat.read(executed, as_version=4)
    return notebook, notebook.metadata["test_seconds"]


def test_01_explore_sliders_rerender():
    checks = [
        # valence-arousal: the labels follow the sliders, and the picture changes with them
        """valence.value, arousal.value = 0.8, 0.2
first = on_va_change()
assert current["labels"]["valence"] == 0.8 and current["labels"]["arousal"] == 0.2
assert current["labels"]["category"] == "happiness", current["labels"]
valence.value, arousal.value = -0.6, 0.6
second = on_va_change()
assert current["labels"]["valence"] == -0.6 and current["labels"]["category"] != "happiness"
assert (first.image != second.image).any() and picture.value[:4] == b"\\x89PNG"
""",
        # expression and intensity
        """expression.value, intensity.value = "surprise", 1.0
full = on_expression_change()
assert current["labels"]["category"] == "surprise" and abs(current["labels"]["au"]["AU26"] - 1.0) < 1e-6
intensity.value = 0.0
none = on_expression_change()
face = full.mask > 0
assert np.abs(full.image.astype(int) - photo.astype(int))[face].mean() > np.abs(none.image.astype(int) - photo.astype(int))[face].mean()
""",
        # action units: one slider drives exactly that AU; all at zero is neutral
        """for s in au_sliders.values():
    s.value = 0.0
au_sliders[12].value = 0.8
on_au_change()
assert current["labels"]["au"] == {"AU12": 0.8}, current["labels"]["au"]
au_sliders[12].value = 0.0
on_au_change()
assert current["labels"]["category"] == "neutral"
""",
    ]
    notebook, seconds = run_notebook("01_explore.ipynb", checks)
    assert seconds < CELL_TIMEOUT_S
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the fit overlay figure was not drawn"


def test_02_affect_model():
    checks = [
        """assert magnitude.shape == (model.num_expressions, model.num_vertices) and (magnitude.max(1) > 1).all()
assert affect.bank is not None and affect.coverage.sum() == report.frames
assert set(affect.classes) == {"happiness", "sadness", "surprise", "fear", "anger", "disgust"}
""",
    ]
    notebook, seconds = run_notebook("02_affect_model.ipynb", checks)
    figures = sum("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))
    assert figures >= 5, f"{figures} figures drawn"


def test_03_augment():
    checks = [
        """assert hook.stats["synthesized"] == len(shown) and not any(k.startswith("failed") for k in hook.stats)
assert summary.failed == 0 and summary.ok == int(added.sum()) > 0
assert (after == after.max()).all(), after          # every class filled up to the largest
assert not manifest.output.duplicated().any() and (manifest.status == "ok").all()
assert all(Image.open(work / "batch" / p).size == (SIZE, SIZE) for p in manifest.output)
""",
    ]
    notebook, seconds = run_notebook("03_augment.ipynb", checks)
    figures = sum("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))
    assert figures == 2, f"{figures} figures drawn"
