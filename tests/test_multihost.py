"""Several real JAX processes on this machine forming one job (gloo CPU collectives, a localhost
coordinator, one shared workdir), as hosts of a pod or cluster do: training, resuming with other process
counts, evaluation, preemption and a process that dies."""
import glob
import json
import os
import shutil
import signal
import time

import numpy as np

from runs import EIGHT, losses, output_of, run_job, run_main, start_job

# Two processes all-reduce the gradient across processes in another order than one process sums it over
# its batch: float reassociation, measured at ~4e-7 relative on the smoke losses.
RTOL = 1e-5


def test_two_processes_train_like_one_and_their_checkpoint_resumes_in_one_and_in_four(tmp_path, one_device):
    run_job(tmp_path / "two", 2, *EIGHT, "--config.train.max_steps=3", logs=tmp_path / "logs2")
    np.testing.assert_allclose(losses(tmp_path / "two"), one_device[1][:3], rtol=RTOL)
    assert "3" in os.listdir(tmp_path / "two" / "checkpoints")
    assert len(glob.glob(str(tmp_path / "two" / "tensorboard" / "*"))) == 1  # only process 0 writes results
    for count in (1, 4):
        workdir = tmp_path / f"resumed_in_{count}"
        shutil.copytree(tmp_path / "two", workdir)
        if count == 1:
            output = run_main(workdir, *EIGHT)
        else:
            output = run_job(workdir, count, *EIGHT, logs=tmp_path / f"logs{count}")[0]
        assert "resumed from checkpoint at update 3" in output
        np.testing.assert_allclose(losses(workdir), one_device[1], rtol=RTOL)


def test_evaluation_counts_every_video_once_and_equals_one_process(tmp_path):
    arguments = ["--config.eval.batch_size=6"]  # 16 videos: a batch of 12, then a short one of 4 (no padding)
    run_job(tmp_path / "two", 2, *arguments, config="--config=zeroshot:smoke", logs=tmp_path / "logs")
    run_main(tmp_path / "one", *arguments, config="--config=zeroshot:smoke")
    two, one = (json.load(open(tmp_path / run / "results.json"))["final"]["demo"] for run in ("two", "one"))
    assert two["evaluated"] == two["videos"] == 16 and two["unreadable"] == []
    for key in ("top1", "top5", "mean_class", "evaluated", "videos", "views"):
        assert two[key] == one[key], key


def test_sigterm_to_one_process_saves_every_process_at_the_same_update(tmp_path):
    processes = start_job(tmp_path, 2, "--config.train.epochs=200", "--config.checkpoint.every_steps=1000",
                          logs=tmp_path / "logs")
    deadline = time.time() + 300
    while "update 2/" not in output_of(tmp_path / "logs", 0) and time.time() < deadline:
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=300)
    assert [p.returncode for p in processes] == [0, 0], output_of(tmp_path / "logs", 0)[-3000:]
    stopped = json.load(open(tmp_path / "results.json"))["preempted_at"]
    assert 2 <= stopped < 200 and str(stopped) in os.listdir(tmp_path / "checkpoints")
    for i in range(2):
        assert f"saved update {stopped} after SIGTERM" in output_of(tmp_path / "logs", i)


def test_when_one_process_dies_the_other_stops_with_an_error(tmp_path):
    processes = start_job(tmp_path, 2, "--config.train.epochs=200", "--config.checkpoint.every_steps=1000",
                          logs=tmp_path / "logs", heartbeat_timeout=10)
    deadline = time.time() + 300
    while "update 2/" not in output_of(tmp_path / "logs", 0) and time.time() < deadline:
        time.sleep(0.2)
    processes[1].kill()
    start = time.time()
    processes[0].wait(timeout=120)  # not forever: the collective with the dead process fails
    output = output_of(tmp_path / "logs", 0)
    assert processes[0].returncode == 1 and time.time() - start < 60, output[-3000:]
    assert "error: process 0 of 2 stops:" in output and "Fatal Python error" not in output
