"""Training end to end: learning a synthetic task, exact resume after a kill, SIGTERM, 8 devices."""
import json
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest

from configs import zeroshot
from runs import EIGHT, losses, run_main
from vifi_jax.evaluators import job
from vifi_jax.train import loop
from conftest import xla_flags_with_devices


def test_tiny_clip_learns_the_synthetic_task_through_the_pipeline(tmp_path):
    c = zeroshot.get_config("train,smoke")
    c.data.demo.videos_per_class = 16
    c.train.batch_size, c.train.accumulation_steps, c.train.lr = 8, 1, 1e-3
    c.train.epochs, c.train.warmup_epochs = 20, 2
    c.eval.every_epochs, c.checkpoint.every_steps, c.log_every = 100, 80, 40
    before = job.run(c, str(tmp_path / "before"))["final"]["val"]["top1"]
    results = loop.train_and_evaluate(c, str(tmp_path / "run"))
    after = results["final"]["val"]["top1"]
    assert len(results["history"]) == 160
    assert before <= 50 and after >= 90, (before, after)  # 4 classes: chance is 25%
    assert sorted(results["evaluations"]) == ["step_160", "step_8"]  # after epoch 1 and the last (SAVE_FREQ 100)
    assert results["final"] == results["evaluations"]["step_160"]  # the same views: the last epoch's evaluation
    assert results["best"] == {"top1": after, "step": 160, "set": "val"}  # the last evaluation counts for best
    assert os.path.isdir(tmp_path / "run" / "final") and os.path.isdir(tmp_path / "run" / "best")
    assert os.listdir(tmp_path / "run" / "tensorboard")


def official_evaluation_epochs(epochs, save_freq):
    """main.py: `if epoch % config.SAVE_FREQ == 0 or epoch == (config.TRAIN.EPOCHS - 1): validate`."""
    return [epoch + 1 for epoch in range(epochs) if epoch % save_freq == 0 or epoch == epochs - 1]


@pytest.mark.parametrize("epochs,every,updates_per_epoch", [(50, 10, 3), (11, 10, 5), (30, 1, 2), (10, 4, 1)])
def test_evaluations_follow_the_official_epochs(epochs, every, updates_per_epoch):
    total = epochs * updates_per_epoch
    ours = [done // updates_per_epoch for done in range(1, total + 1)
            if loop.evaluates_after(done, updates_per_epoch, total, every)]
    assert ours == official_evaluation_epochs(epochs, every)


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    process = run_main(tmp_path, "--config.train.epochs=50", "--config.checkpoint.every_steps=1000", wait=False)
    deadline = time.time() + 300
    for line in process.stdout:
        if "update 1/" in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    with open(tmp_path / "results.json") as f:
        stopped = json.load(f)["preempted_at"]
    assert str(stopped) in os.listdir(tmp_path / "checkpoints") and 1 <= stopped < 100


def test_killed_run_resumes_with_identical_losses(tmp_path, one_device):
    process = run_main(tmp_path, *EIGHT, "--config.checkpoint.every_steps=1", "--config.checkpoint.async_save=false",
                       wait=False)
    checkpoints = tmp_path / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (checkpoints.is_dir() and any(p.isdigit() for p in os.listdir(checkpoints))):
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    output = run_main(tmp_path, *EIGHT, "--config.checkpoint.every_steps=1", "--config.checkpoint.async_save=false")
    resumed_at = int(output.split("resumed from checkpoint at update ")[1].split()[0])
    assert 1 <= resumed_at < 6, output[-3000:]  # killed before the end: the rest really ran after the resume
    np.testing.assert_array_equal(losses(tmp_path), one_device[1])


def test_a_one_device_checkpoint_resumes_on_eight_devices_with_fsdp_and_follows_its_losses(tmp_path, one_device):
    """8 devices (batch over all 8, parameters and optimizer state split 4 ways) continue the one-device run
    where it stopped and give its losses: the state moves between device counts and shardings, and the
    sharded step computes what one device does."""
    shutil.copytree(one_device[0], tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "checkpoints" / "6")  # as if the one-device run had stopped after update 3
    output = run_main(tmp_path, *EIGHT, "--config.mesh.data=2", "--config.mesh.fsdp=4",
                      env={"XLA_FLAGS": xla_flags_with_devices(8)})
    assert "resumed from checkpoint at update 3" in output and "8 device(s)" in output
    np.testing.assert_allclose(losses(tmp_path), one_device[1], rtol=2e-4)


def test_non_finite_loss_stops_without_saving_it(tmp_path):
    c = zeroshot.get_config("train,smoke")
    c.train.lr, c.train.warmup_epochs = 1e38, 0
    c.checkpoint.every_steps, c.checkpoint.async_save = 1, False
    with pytest.raises(FloatingPointError, match=r"(loss|grad norm|update norm|param norm) became (nan|inf)") as error:
        loop.train_and_evaluate(c, str(tmp_path))
    failed = int(re.search(r"became \S+ at update (\d+)", str(error.value)).group(1))
    saved = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
    assert saved and max(saved) < failed
