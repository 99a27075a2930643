"""Every command starts, shows its help and fails the same way: --help exits 0 with the flags on stdout, a
usage mistake (an unknown flag, a stray argument, a config that does not load) is one `error:` line with exit
status 2, and a model that cannot take the configured frames is refused by name before any work."""
import ast
import collections
import glob
import os
import re
import subprocess
import sys

import pytest

from configs import zeroshot
from vifi_jax.runtime import config_checks, session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["vifi_jax." + name for name in ("main", "aot", "predict", "extract", "search", "tsne", "explain", "convert",
                                             "summarize")] + ["data_pipelines.prepare"]


def run(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero_and_an_unknown_flag_is_one_line(command):
    code, out, err = run(command, "--help")
    assert code == 0 and f"python -m {command}" in out and err == "", (out[-500:], err[-2000:])
    code, out, err = run(command, "--no_such_flag=1")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err[-2000:]
    assert err.startswith("error: Unknown command line flag 'no_such_flag'") and f"python -m {command} --help" in err


@pytest.mark.parametrize("command", ["vifi_jax.predict", "vifi_jax.extract", "vifi_jax.explain", "vifi_jax.convert",
                                     "data_pipelines.prepare"])
def test_help_describes_every_flag_its_usage_names(command):
    """Shared flags too (defined in data_pipelines.cli and vifi_jax.cli.flags). The other commands' texts also
    name flags of other programs (extract's --level in search, CLIP4Clip's in main)."""
    usage, _, described = run(command, "--help")[1].partition("\nflags:\n")
    named = set(re.findall(r"--([a-z][a-z_]*)", usage))
    assert len(named) >= 3 and named <= set(re.findall(r"^  --(?:\[no\])?([a-z][a-z_-]*)", described, re.M))


def test_each_flag_is_defined_in_one_place():
    """A flag several tools take has one definer (data_pipelines.cli, vifi_jax.cli.flags) that each calls."""
    places = collections.defaultdict(list)
    for path in glob.glob(os.path.join(REPO, "vifi_jax", "**", "*.py"), recursive=True) + \
            glob.glob(os.path.join(REPO, "data_pipelines", "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(path).read())):
            if not isinstance(node, ast.Call):
                continue
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if called in ("DEFINE_alias", "alias"):  # an earlier spelling, kept working
                continue
            position = 0 if called.startswith("DEFINE_") else 1 if called in ("define_flag", "_define") else None
            if position is not None and len(node.args) > position and isinstance(node.args[position], ast.Constant):
                places[node.args[position].value].append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    assert len(places) > 40 and "overwrite" in places and "list_file" in places
    assert {name: where for name, where in places.items() if len(where) > 1} == {}


@pytest.mark.parametrize("arguments,message", [
    (["--config=few_shot:dataset=hmdb5,shots=2"], "dataset='hmdb5': this config offers hmdb51"),
    (["--config=zeroshot", "--config.train.lrr=1"], "--config.train.lrr: the config has no field 'lrr'"),
    (["--config=nosuch"], "no shipped config 'nosuch'"),
    (["--config=zeroshot", "stray"], "unexpected arguments: stray")])
def test_config_mistakes_are_one_line(arguments, message):
    code, out, err = run("vifi_jax.main", *arguments)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_model_that_takes_other_frames_than_the_data_is_refused_at_load():
    config = zeroshot.get_config("smoke")  # a 32-pixel model
    config.data.input_size = 48
    with pytest.raises(config_checks.ConfigError, match=r"data.input_size=48 but the model .* takes 32x32 frames"):
        session.from_config(config, abstract=True)


@pytest.mark.parametrize("command", ["main", "aot", "predict", "extract", "search", "tsne", "explain", "convert", "summarize"])
def test_help_does_not_import_jax(command):
    """--help starts at once: the commands import jax (a second or more) only when there is work."""
    script = ("import runpy, sys\nsys.argv = [sys.argv[1], '--help']\n"
              "try:\n    runpy.run_module('vifi_jax.' + sys.argv[0], run_name='__main__')\n"
              "except SystemExit:\n    pass\nprint('\\nIMPORTED', sorted({'jax', 'flax'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script, command], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "IMPORTED []", result.stdout[-500:] + result.stderr[-2000:]


LOST_CTRL_C = """
import gc, os, signal, sys
from data_pipelines import cli

def main(argv):
    def callback(phase, info):
        gc.callbacks.remove(callback)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):  # the handler runs here, inside the callback, where Python drops its exception
            pass
    gc.callbacks.append(callback)
    gc.collect()
    print("the interrupt was lost", flush=True)
    with cli.progress(3, "work", "item") as bar:
        for _ in range(3):
            bar.update(1)
    print("all done")

cli.guarded(main)(sys.argv)
"""


def test_a_ctrl_c_dropped_by_a_garbage_collector_callback_still_stops_at_the_next_progress_step():
    """JAX runs Python code in a gc callback; a Ctrl-C landing there is dropped by Python ("Exception
    ignored in ...") and an evaluation used to run to its end (seen as a flaky Ctrl-C test)."""
    result = subprocess.run([sys.executable, "-c", LOST_CTRL_C], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    code, out, err = result.returncode, result.stdout, result.stderr
    assert "the interrupt was lost" in out, (out, err)
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert code == 130 and "all done" not in out and err.strip().splitlines()[-1].startswith("error: interrupted")
