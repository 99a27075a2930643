"""The installed package works outside the checkout: the wheel ships every package it imports, and its configs."""
import glob
import json
import os
import shutil
import site
import subprocess
import sys

import pytest

from conftest import TINY
from data_pipelines import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the built wheel; its dependencies come from this environment by a .pth file."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy, so that no build/ left in the checkout can leak stale files into the wheel
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                "workdirs", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = glob.glob(str(root / "dist" / "vifi_jax-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=300)
    python = str(root / "venv" / "bin" / "python")
    venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(venv_site, "dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return python, elsewhere


def run(python, cwd, *args, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**environment, **(env or {})})
    return result.returncode, result.stdout, result.stderr


def test_the_wheel_holds_every_package_and_no_checkout_is_used(installed):
    python, elsewhere = installed
    code, out, err = run(python, elsewhere, "-c", "import vifi_jax, data_pipelines, configs, vifi_jax.tokenizer; "
                         "print(vifi_jax.__file__, data_pipelines.__file__, configs.__file__, "
                         "vifi_jax.tokenizer.VOCAB_PATH)")
    assert code == 0, err[-3000:]
    assert REPO not in out and "site-packages" in out and out.count("site-packages") == 4


def test_the_embedded_default_runs_offline_from_another_directory_shows_progress_and_ends_cleanly(installed):
    """Quick-start command 1 from the installed wheel (the full-size model, random weights offline), on fewer
    frames and videos (8 classes x 1 video x 2 frames instead of 4 x 8 x 8); then predict from there."""
    python, elsewhere = installed
    code, out, err = run(python, elsewhere, "-m", "vifi_jax.main", "--config=zeroshot", "--workdir=run",
                         "--config.data.num_frames=2", "--config.data.demo.videos_per_class=1",
                         env={"VIFI_JAX_OFFLINE": "1", "XLA_FLAGS": ""})  # as a user runs it: XLA's
    # defaults, not the suite's code-generation flags (conftest), which gain this full-size model nothing
    assert code == 0, err[-3000:]
    assert "WARNING: RANDOM WEIGHTS" in out and "demo: top1" in out
    assert "eval demo:demo: 100%" in err and "8/8" in err  # the progress bar: videos done, rate, ETA
    assert "leaked" not in err and "Traceback" not in err
    assert "orbax" not in err.lower() and "absl.py" not in err  # libraries' INFO lines stay out
    results = json.load(open(elsewhere / "run" / "results.json"))
    assert "RANDOM WEIGHTS" in results["note"] and "VIFI_JAX_OFFLINE" in results["note"]
    demo = results["final"]["demo"]
    assert demo["evaluated"] == demo["videos"] == 8 and demo["views"] == 1
    assert json.load(open(elsewhere / "run" / "config.json"))["data"]["source"] == "demo"
    clips = elsewhere / "clips"
    synthetic.make_dataset(str(clips), num_classes=2, videos_per_class=1, num_frames=8, height=40, width=48)
    model = elsewhere / "model"
    code, _, err = run(python, elsewhere, "-c", f"import vifi_jax; vifi_jax.init('ViT-B/16', **{TINY!r}).save("
                                                f"{str(model)!r})")
    assert code == 0, err[-3000:]
    videos = sorted(str(p) for p in (clips / "train").iterdir())
    code, out, err = run(python, elsewhere, "-m", "vifi_jax.predict", f"--weights={model}", "--labels=a,b",
                         "--num_frames=2", "--json", *videos)
    assert code == 0, err[-3000:]
    assert [json.loads(line)["video"] for line in out.splitlines()] == videos
