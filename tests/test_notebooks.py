"""Every notebook runs top to bottom in a real kernel, on 8 (virtual CPU) devices as on a Colab TPU, in a
temporary directory, with its SMOKE switch on (a tiny random model, generated clips); and it is committed
without outputs, with its Colab badge. One device (a Colab GPU) is left to the rest of the suite, which
runs the library's one-device paths throughout: the notebooks' own code rounds batch sizes up to a multiple
of the device count, which one device leaves as they are."""
import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient
from conftest import xla_flags_with_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_the_three_notebooks_are_committed_clean():
    assert [os.path.basename(p) for p in NOTEBOOKS] == ["features_and_search.ipynb", "few_shot_finetune.ipynb",
                                                        "zero_shot.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert "colab.research.google.com" in notebook.cells[0].source
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_on_eight_devices(path, tmp_path, monkeypatch):
    monkeypatch.setenv("VIFI_JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("VIFI_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VIFI_JAX_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", REPO)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XLA_FLAGS", xla_flags_with_devices(8))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any failing cell
    printed = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.outputs if o.output_type == "stream")
    assert "8 device(s)" in printed
    if os.path.basename(path) == "features_and_search.ipynb":  # retrieval fine-tuning: 8 captions, chance 12.5%
        before, after = map(float, re.search(r"R@1 ([0-9.]+) before, ([0-9.]+) after", printed).groups())
        assert before <= 37.5 and after >= 62.5, (before, after)
