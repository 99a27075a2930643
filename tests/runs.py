"""`python -m vifi_jax.main` runs as the tests start them: one process, or several forming one JAX job."""
import ast
import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--config=configs/zeroshot.py:train,smoke"
# Six updates of a global batch of 8 (divisible by 1, 2, 4 and 8 devices), checkpoints after updates 3 and 6.
EIGHT = ["--config.train.batch_size=8", "--config.train.epochs=6", "--config.checkpoint.every_steps=3"]


def config_with(config, overrides):
    """`config` with `--config.<path>=<value>` overrides (such as EIGHT) applied, as the runs' command lines do."""
    for flag in overrides:
        path, value = flag.removeprefix("--config.").split("=", 1)
        config.update_from_flattened_dict({path: ast.literal_eval(value)})
    return config


JOB_PROCESS = os.path.join(REPO, "tests", "job_process.py")


def job_process_command(module):
    """The command that runs `python -m module` as one process of a job (tests/job_process.py: every process
    writes JAX's compilation cache, so processes other than 0 stop compiling afresh in every run)."""
    return [sys.executable, JOB_PROCESS, module]


def start(workdir, *args, env=None, config=SMOKE, log=None, cwd=REPO, job=False):
    """`cwd` other than the checkout: the config is named as a shipped one (`zeroshot:...`) and the checkout
    is put on PYTHONPATH. `job`: a process of a job (`job_process_command`)."""
    program = job_process_command("vifi_jax.main") if job else [sys.executable, "-m", "vifi_jax.main"]
    command = [*program, config, f"--workdir={workdir}", *args]
    env = {**os.environ, **(env or {})}
    if cwd != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def run_main(workdir, *overrides, env=None, wait=True, config=SMOKE, cwd=REPO):
    process = start(workdir, *overrides, env=env, config=config, cwd=cwd)
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_job(workdir, count, *overrides, logs, config=SMOKE, heartbeat_timeout=100, cwd=REPO, env=None):
    """`count` processes joined into one job on this machine (gloo collectives, a localhost coordinator),
    sharing `workdir`; process i writes its output to logs/i.log."""
    os.makedirs(logs, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    processes = []
    for i in range(count):
        log = open(os.path.join(logs, f"{i}.log"), "w")
        processes.append(start(workdir, f"--coordinator_address={address}", f"--num_processes={count}",
                               f"--process_id={i}", f"--heartbeat_timeout={heartbeat_timeout}", *overrides,
                               env=env, config=config, log=log, cwd=cwd, job=True))
    return processes


def output_of(logs, i):
    with open(os.path.join(logs, f"{i}.log")) as f:
        return f.read()


def run_job(workdir, count, *overrides, logs, config=SMOKE, cwd=REPO, env=None):
    processes = start_job(workdir, count, *overrides, logs=logs, config=config, cwd=cwd, env=env)
    for i, process in enumerate(processes):
        process.wait(timeout=600)
        assert process.returncode == 0, f"process {i}: " + output_of(logs, i)[-3000:]
    return [output_of(logs, i) for i in range(count)]


def losses(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return [h["loss"] for h in json.load(f)["history"]]
