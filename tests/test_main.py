"""The main job as a user starts it: shipped config names, safe workdirs, error lines (the embedded default runs
from the installed wheel in test_packaging)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import runs
from configs import common, zeroshot
from data_pipelines import outputs
from vifi_jax import main
from vifi_jax.cli import experiment
from vifi_jax.evaluators import job
from vifi_jax.runtime import workdirs
from vifi_jax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None, cwd=REPO):
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    return result.returncode, result.stdout, result.stderr


def test_configs_are_named_by_file_or_by_shipped_name(tmp_path):
    assert experiment.config_path("configs/zeroshot.py:dataset=hmdb51") == "configs/zeroshot.py:dataset=hmdb51"
    assert experiment.config_path("few_shot:dataset=hmdb51,shots=2") == \
        os.path.join(experiment.CONFIGS_DIR, "few_shot.py") + ":dataset=hmdb51,shots=2"
    assert experiment.shipped_configs() == ["base2novel", "few_shot", "fully_supervised", "retrieval", "zeroshot"]
    # --help prints the module docstring: every shipped config with its arguments and examples
    for line in ("  few_shot: Few-shot", "few_shot.py:dataset=hmdb51,shots=2", "  zeroshot: Zero-shot",
                 "zeroshot.py:dataset=hmdb51", "base2novel.py:dataset=ucf101,split=2,prompting"):
        assert line in main.__doc__
    code, _, err = run("vifi_jax.main", "--config=zero_shot", f"--workdir={tmp_path}")
    assert code != 0 and "no shipped config 'zero_shot'" in err and "zeroshot" in err


def the_one_device_config():
    """The config of conftest's one_device run: the smoke train config with `runs.EIGHT`."""
    return runs.config_with(zeroshot.get_config("train,smoke"), runs.EIGHT)


def test_a_workdir_never_resumes_a_different_run(tmp_path, one_device):
    workdir = tmp_path / "run"  # a copy of a whole training run's workdir: its checkpoints, config, results
    shutil.copytree(one_device[0], workdir)
    config = the_one_device_config()
    assert workdirs.has_checkpoints(str(workdir))
    workdirs.prepare_training(str(workdir), config)  # the same config resumes
    changed = the_one_device_config()
    changed.train.max_steps, changed.data.num_workers, changed.log_every = 9, 2, 7  # free to differ
    workdirs.prepare_training(str(workdir), changed)
    changed.train.lr, changed.model.init = 1e-3, "random:ViT-B/32"
    with pytest.raises(workdirs.ChangedConfigError) as error:
        workdirs.prepare_training(str(workdir), changed)
    message = str(error.value)
    assert "model.init: 'random:ViT-B/16' -> 'random:ViT-B/32'" in message and "train.lr: 8e-06 -> 0.001" in message
    assert "--workdir" in message and "--resume_changed_config" in message and "max_steps" not in message
    workdirs.prepare_training(str(workdir), changed, resume_changed=True)  # saves the changed config
    code, _, err = run("vifi_jax.main", "--config=zeroshot:train,smoke", f"--workdir={workdir}",
                       "--config.train.lr=0.5")
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith("error: ") and "train.lr: 0.001 -> 0.5" in lines[-1], err[-2000:]
    assert "Traceback" not in err
    os.remove(workdir / outputs.MARKER)  # a workdir written before markers existed is still this run's
    workdirs.claim(str(workdir))
    assert outputs.is_claimed(str(workdir), "run")
    (workdir / "config.json").write_text('{"train": {"lr": ' + "9" * 5000 + "}}")
    with pytest.raises(ValueError, match=r"saved config .*config.json: train.lr is a 5000-digit number.*delete it"):
        workdirs.prepare_training(str(workdir), changed)


def test_cli_failures_are_one_line_and_verbose_shows_the_traceback(tmp_path):
    code, _, err = run("vifi_jax.main", "--config=zeroshot:smoke", f"--workdir={tmp_path}",
                       "--config.model.init=/nowhere/model.pth")
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("error: checkpoint /nowhere/model.pth does not exist")
    assert "Traceback" not in err
    code, _, err = run("vifi_jax.main", "--config=zeroshot:smoke", f"--workdir={tmp_path}", "--verbose",
                       "--config.model.init=/nowhere/model.pth")
    assert code == 1 and "Traceback" in err


def test_a_workdir_holding_other_files_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "config.json").write_text('{"my": "experiment"}')
    (tmp_path / "results.json").write_text("[1, 2, 3]")
    code, out, err = run("vifi_jax.main", "--config=zeroshot:smoke", f"--workdir={tmp_path}")
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith(f"error: --workdir={tmp_path} is not empty"), err
    assert sorted(os.listdir(tmp_path)) == ["config.json", "results.json"]
    assert (tmp_path / "config.json").read_text() == '{"my": "experiment"}'
    with pytest.raises(outputs.OutputError, match="is the root directory"):
        loop.train_and_evaluate(zeroshot.get_config("train,smoke"), "/")
    with pytest.raises(outputs.OutputError, match="is the root directory"):
        job.run(zeroshot.get_config("smoke"), "/")


def test_a_second_run_on_a_workdir_in_use_is_refused_at_start(tmp_path):
    config = zeroshot.get_config("smoke")
    outputs.claim(tmp_path, "run", "--workdir")
    with outputs.Lock(str(tmp_path), "--workdir"):
        for start in (lambda: job.run(config, str(tmp_path)),
                      lambda: loop.train_and_evaluate(zeroshot.get_config("train,smoke"), str(tmp_path))):
            with pytest.raises(outputs.OutputError, match=rf"in use by another vifi_jax run \(process {os.getpid()}"):
                start()
    assert sorted(os.listdir(tmp_path)) == [outputs.MARKER]  # nothing written by the refused runs


def unreadable_set(tmp_path, synthetic_videos, count):
    _, _, labels = synthetic_videos
    (tmp_path / "list.txt").write_text("".join(f"gone/video{i}.mp4 {i % 4}\n" for i in range(count)))
    config = zeroshot.get_config("smoke")
    config.data.source, config.data.root = "files", str(tmp_path)
    config.eval.sets = {"val": common.eval_set(str(tmp_path / "list.txt"), labels)}
    return config


@pytest.mark.parametrize("count, expect", [(5, "none of the 5 videos could be read"),
                                           (400, "none of the first 32 videos could be read")])
def test_an_evaluation_that_reads_no_video_fails_early_and_writes_no_results(tmp_path, synthetic_videos, caplog,
                                                                             count, expect):
    import logging

    from vifi_jax.evaluators import scoring
    config = unreadable_set(tmp_path, synthetic_videos, count)
    with caplog.at_level(logging.WARNING), pytest.raises(scoring.NothingReadError, match=rf"val.*{expect}, e\.g\. "
                                                                                          r".*gone/video0\.mp4"):
        job.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "results.json")
    assert len(caplog.records) <= 25  # a bounded number of warnings, not one per video


def test_ctrl_c_is_one_line_and_the_interrupted_evaluation_is_marked_partial(tmp_path):
    import signal
    import time
    workdir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "vifi_jax.main", "--config=zeroshot:smoke",
                                f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 300
    while not (workdir / "config.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert process.returncode == 130 and lines[-1].startswith("error: interrupted (Ctrl-C)"), err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    results = json.loads((workdir / "results.json").read_text())
    assert results["partial"] is True and results["final"] == {} and "Ctrl-C" in results["interrupted"]
    assert "no results: no set had finished" in err
    assert not (workdir / outputs.LOCK).exists()  # released: the next run is not refused


def test_no_room_for_a_checkpoint_is_one_line_before_training_starts(tmp_path):
    """A file-size limit below the train state's size stands in for a full disk: the run is refused as soon
    as its state exists, before the first update (not after the updates before its first save), and nothing
    is written (no partial checkpoint, no pages of tracebacks). A disk that fills later: test_checkpoint."""
    import resource
    import signal

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))  # the tiny model's state is ~40 MB

    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    result = subprocess.run([sys.executable, "-m", "vifi_jax.main", "--config=zeroshot:train,smoke",
                             f"--workdir={tmp_path}", "--config.train.max_steps=2"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, preexec_fn=limited, env=env)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and last.startswith(f"error: cannot write the checkpoint into {tmp_path}"), \
        result.stderr[-3000:]
    assert "file-size limit (ulimit -f) is 8.0 MiB" in last and "Traceback" not in result.stderr
    assert not os.listdir(tmp_path / "checkpoints") and not (tmp_path / "tensorboard").exists()  # never trained


def test_a_config_saved_before_a_field_was_added_resumes_as_the_run_it_was():
    """config.json of runs saved before `task` existed: they were classification runs, so they resume."""
    config = zeroshot.get_config("train,smoke")
    saved = json.loads(config.to_json_best_effort())
    del saved["task"]
    assert workdirs.changed_fields(saved, config.to_dict()) == []
    config.task = "retrieval"
    assert workdirs.changed_fields(saved, config.to_dict()) == [("task", "classification", "retrieval")]
