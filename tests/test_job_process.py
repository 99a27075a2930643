"""tests/job_process.py: the processes of the tests' jobs write JAX's compilation cache whatever their process
index, on the jax installed here (if JAX's private functions change, the harness falls back and this fails)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# A process that JAX takes for process 1 of a job compiles one program with JAX's own cache write and one with
# the harness's, and prints how many entries the cache holds after each.
PROGRAM = """
import os, sys
sys.path.insert(0, {here!r})
import jax
from jax._src import distributed
import job_process
distributed.global_state.process_id = 1
def entries():
    return len([name for name in os.listdir(os.environ["JAX_COMPILATION_CACHE_DIR"]) if "-cache" in name])
x = jax.numpy.ones(5)
jax.jit(lambda x: x * 3.0 + 1.0)(x).block_until_ready()
print(entries())
job_process.write_from_every_process()
jax.jit(lambda x: x * 5.0 - 2.0)(x).block_until_ready()
print(entries())
"""


def test_a_process_other_than_0_writes_the_compilation_cache(tmp_path):
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    result = subprocess.run([sys.executable, "-c", PROGRAM.format(here=HERE)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0", "1"], (result.stdout, os.listdir(tmp_path))
