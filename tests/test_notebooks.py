"""The Colab notebook's Python cells run as written (its shell and pip lines are Colab setup)."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_colab_quickstart_runs(tmp_path):
    with open(os.path.join(REPO, "notebooks", "colab_quickstart.ipynb")) as f:
        notebook = json.load(f)
    cells = ["".join(line for line in cell["source"] if not line.lstrip().startswith(("!", "%")))
             for cell in notebook["cells"] if cell["cell_type"] == "code"]
    script = "\n".join(cells)
    default_workdir = 'WORKDIR = "/tmp/vifi_demo"'
    assert default_workdir in script
    script = script.replace(default_workdir, f"WORKDIR = {str(tmp_path / 'runs')!r}")
    (tmp_path / "notebook.py").write_text(script + "\n")
    result = subprocess.run([sys.executable, str(tmp_path / "notebook.py")], cwd=REPO, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "VIFI_JAX_OFFLINE": "1", "PYTHONPATH": REPO,
                                                      "VIFI_JAX_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top1" in result.stdout and ".mp4" in result.stdout
    trained = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    assert len(trained["history"]) > 0, "the fine-tuning cell trained nothing"
