"""Several real JAX processes on this machine forming one job (gloo CPU collectives, a localhost
coordinator, one shared workdir), as hosts of a pod or cluster do: training, resuming with other process
counts, evaluation, preemption and a process that dies."""
import glob
import json
import os
import signal
import subprocess
import time

import numpy as np

from data_pipelines import datasets
from runs import EIGHT, REPO, free_port, job_process_command, losses, output_of, run_job, run_main, start_job
from conftest import TINY, xla_flags_with_devices
from vifi_jax import api, extract

# Two processes all-reduce the gradient across processes in another order than one process sums it over
# its batch: float reassociation, measured at ~4e-7 relative on the smoke losses.
RTOL = 1e-5


def test_two_processes_train_like_one_sigterm_saves_both_and_one_process_of_two_devices_resumes_it(tmp_path,
                                                                                                   one_device):
    """2 processes of one device train; SIGTERM to one of them saves every process at the same update; one
    process of 2 devices resumes that checkpoint (other process and device counts); the losses are the
    one-device run's throughout. Other counts are covered elsewhere: 1 process -> 2 processes of 2 devices
    each (hosts of several chips, as a TPU pod's) in test_storage (a bucket run), 2 -> 1 in
    test_retrieval_training."""
    workdir, logs = tmp_path / "two", tmp_path / "logs2"
    processes = start_job(workdir, 2, *EIGHT, logs=logs)
    # As the first update is compiled (JAX's preemption service holds SIGTERM since the job formed): the
    # processes agree to stop a few updates later (1-3 updates after the signal was seen, in trials), well
    # before the sixth and last.
    wait_for("training ", processes, logs)
    processes[1].send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=300)
    assert [p.returncode for p in processes] == [0, 0], output_of(logs, 0)[-3000:]
    stopped = json.load(open(workdir / "results.json"))["preempted_at"]
    assert 1 <= stopped < 6 and str(stopped) in os.listdir(workdir / "checkpoints")
    for i in range(2):
        assert f"saved update {stopped} after SIGTERM" in output_of(logs, i)
    np.testing.assert_allclose(losses(workdir), one_device[1][:stopped], rtol=RTOL)
    assert len(glob.glob(str(workdir / "tensorboard" / "*"))) == 1  # only process 0 writes results
    output = run_main(workdir, *EIGHT, env={"XLA_FLAGS": xla_flags_with_devices(2)})
    assert f"resumed from checkpoint at update {stopped}" in output and "1 process(es), 2 device(s)" in output
    np.testing.assert_allclose(losses(workdir), one_device[1], rtol=RTOL)


def test_evaluation_counts_every_video_once_and_equals_one_process(tmp_path):
    arguments = ["--config.eval.batch_size=6"]  # 16 videos: a batch of 12, then a short one of 4 (no padding)
    run_job(tmp_path / "two", 2, *arguments, config="--config=zeroshot:smoke", logs=tmp_path / "logs")
    run_main(tmp_path / "one", *arguments, config="--config=zeroshot:smoke")
    two, one = (json.load(open(tmp_path / run / "results.json"))["final"]["demo"] for run in ("two", "one"))
    assert two["evaluated"] == two["videos"] == 16 and two["unreadable"] == []
    for key in ("top1", "top5", "mean_class", "per_class_top1", "evaluated", "videos", "views"):
        assert two[key] == one[key], key


def wait_for(text, processes, logs):
    """Until process 0 has logged `text`."""
    deadline = time.time() + 300
    while text not in output_of(logs, 0) and time.time() < deadline:
        assert all(p.poll() is None for p in processes), output_of(logs, 0)[-3000:]  # ended early: say why
        time.sleep(0.05)


def test_when_one_process_dies_the_other_stops_with_an_error(tmp_path):
    processes = start_job(tmp_path / "run", 2, "--config.train.epochs=200", "--config.checkpoint.every_steps=1000",
                          logs=tmp_path / "logs", heartbeat_timeout=10)
    wait_for("update 2/", processes, tmp_path / "logs")
    processes[1].kill()
    start = time.time()
    processes[0].wait(timeout=120)  # not forever: the collective with the dead process fails
    output = output_of(tmp_path / "logs", 0)
    assert processes[0].returncode == 1 and time.time() - start < 60, output[-3000:]
    assert "error: process 0 of 2 stops:" in output and "Fatal Python error" not in output


def test_two_processes_extract_their_halves_into_one_manifest(tmp_path, synthetic_videos):
    root, list_file, _ = synthetic_videos
    model = api.init("ViT-B/16", seed=3, **TINY)
    model.save(str(tmp_path / "model"))
    address = f"127.0.0.1:{free_port()}"
    processes = [subprocess.Popen(
        [*job_process_command("vifi_jax.extract"), f"--weights={tmp_path / 'model'}", f"--out={tmp_path / 'out'}",
         f"--list_file={list_file}", f"--root={root}", "--num_frames=2", "--shard_size=4",
         f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    with open(tmp_path / "out" / "manifest.jsonl") as f:
        entries = [json.loads(line) for line in f]
    paths = list(datasets.read_list_file(list_file, root).paths)
    assert [e["video"] for e in entries] == paths  # input order, though each process did every other video
    assert {e["file"].split("-")[1] for e in entries} == {"p0", "p1"}
    one = extract.extract(model, paths[1:2], str(tmp_path / "one"), num_frames=2)[0]
    got = np.load(tmp_path / "out" / entries[1]["file"])[entries[1]["row"]]
    np.testing.assert_allclose(got, np.load(tmp_path / "one" / one["file"])[0], rtol=1e-5, atol=1e-6)
