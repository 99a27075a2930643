"""The main job as a user starts it: the embedded default, shipped config names, safe workdirs, error lines."""
import json
import os
import subprocess
import sys

import pytest

from configs import zeroshot
from vifi_jax import main
from vifi_jax.runtime import workdirs
from vifi_jax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The embedded default's code path on fewer frames and videos (2 x 8 classes x 2 frames instead of 4 x 8 x 8).
SMALLER = ["--config.data.num_frames=2", "--config.data.demo.videos_per_class=2"]


def run(*args, env=None, cwd=REPO):
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    return result.returncode, result.stdout, result.stderr


def test_embedded_default_runs_offline_shows_progress_and_ends_cleanly(tmp_path):
    code, out, err = run("vifi_jax.main", "--config=configs/zeroshot.py", f"--workdir={tmp_path}", *SMALLER,
                         env={"VIFI_JAX_OFFLINE": "1"})
    assert code == 0, err[-3000:]
    assert "WARNING: RANDOM WEIGHTS" in out and "demo: top1" in out
    assert "eval demo:demo: 100%" in err and "16/16" in err  # the progress bar: videos done, rate, ETA
    assert "leaked" not in err and "Traceback" not in err
    assert "orbax" not in err.lower() and "absl.py" not in err  # libraries' INFO lines stay out
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert "RANDOM WEIGHTS" in results["note"] and "VIFI_JAX_OFFLINE" in results["note"]
    demo = results["final"]["demo"]
    assert demo["evaluated"] == demo["videos"] == 16 and demo["views"] == 1
    assert json.load(open(tmp_path / "config.json"))["data"]["source"] == "demo"


def test_configs_are_named_by_file_or_by_shipped_name(tmp_path):
    assert main.config_path("configs/zeroshot.py:dataset=hmdb51") == "configs/zeroshot.py:dataset=hmdb51"
    assert main.config_path("few_shot:dataset=hmdb51,shots=2") == \
        os.path.join(main.CONFIGS_DIR, "few_shot.py") + ":dataset=hmdb51,shots=2"
    assert main.shipped_configs() == ["base2novel", "few_shot", "fully_supervised", "retrieval", "zeroshot"]
    # --help prints the module docstring: every shipped config with its arguments and examples
    for line in ("  few_shot: Few-shot", "few_shot.py:dataset=hmdb51,shots=2", "  zeroshot: Zero-shot",
                 "zeroshot.py:dataset=hmdb51", "base2novel.py:dataset=ucf101,split=2,prompting"):
        assert line in main.__doc__
    code, _, err = run("vifi_jax.main", "--config=zero_shot", f"--workdir={tmp_path}")
    assert code != 0 and "no shipped config 'zero_shot'" in err and "zeroshot" in err


def test_a_workdir_never_resumes_a_different_run(tmp_path):
    config = zeroshot.get_config("train,smoke")
    config.train.max_steps = 2
    loop.train_and_evaluate(config, str(tmp_path))
    assert workdirs.has_checkpoints(str(tmp_path))
    workdirs.prepare_training(str(tmp_path), config)  # the same config resumes
    changed = zeroshot.get_config("train,smoke")
    changed.train.max_steps, changed.data.num_workers, changed.log_every = 9, 2, 7  # free to differ
    workdirs.prepare_training(str(tmp_path), changed)
    changed.train.lr, changed.model.init = 1e-3, "random:ViT-B/32"
    with pytest.raises(workdirs.ChangedConfigError) as error:
        workdirs.prepare_training(str(tmp_path), changed)
    message = str(error.value)
    assert "model.init: 'random:ViT-B/16' -> 'random:ViT-B/32'" in message and "train.lr: 8e-06 -> 0.001" in message
    assert "--workdir" in message and "--resume_changed_config" in message and "max_steps" not in message
    workdirs.prepare_training(str(tmp_path), changed, resume_changed=True)  # saves the changed config
    code, _, err = run("vifi_jax.main", "--config=zeroshot:train,smoke", f"--workdir={tmp_path}",
                       "--config.train.lr=0.5")
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith("error: ") and "train.lr: 0.001 -> 0.5" in lines[-1], err[-2000:]
    assert "Traceback" not in err


def test_cli_failures_are_one_line_and_verbose_shows_the_traceback(tmp_path):
    code, _, err = run("vifi_jax.main", "--config=zeroshot:smoke", f"--workdir={tmp_path}",
                       "--config.model.init=/nowhere/model.pth")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("error: checkpoint /nowhere/model.pth does not exist")
    assert "Traceback" not in err
    code, _, err = run("vifi_jax.main", "--config=zeroshot:smoke", f"--workdir={tmp_path}", "--verbose",
                       "--config.model.init=/nowhere/model.pth")
    assert code == 1 and "Traceback" in err
