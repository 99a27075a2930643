"""The layers of ARCHITECTURE.md hold: `lint-imports` finds no upward import and no cycle between layers
(the contracts are in pyproject.toml), and the finder really looks (a planted upward import breaks it)."""
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def lint(cwd):
    return subprocess.run([LINT, "--config", os.path.join(cwd, "pyproject.toml")], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": cwd})


def test_every_layer_imports_only_downward():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and result.stdout.count("KEPT") == 2


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", ".venv", "*.pyc", "__pycache__", "workdirs",
                                                              ".before", ".whl", "notebooks", "docs"))
    model = copy / "vifi_jax" / "models" / "flops.py"
    model.write_text(model.read_text().replace("from vifi_jax.models import clip",
                                               "from vifi_jax.models import clip\nfrom vifi_jax.train import loop"))
    result = lint(str(copy))
    assert result.returncode != 0 and "vifi_jax.models.flops -> vifi_jax.train.loop" in result.stdout
