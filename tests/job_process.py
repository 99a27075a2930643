"""`python tests/job_process.py MODULE ARGS...` runs `python -m MODULE ARGS...` as one process of a JAX job that
the tests start, with one difference: every process writes what it compiles to JAX's persistent compilation
cache, not only process 0.

JAX writes cache entries only from process 0 (`jax._src.compiler._cache_write`: on a pod, many hosts writing one
bucket contend). A process's cache keys hold its own view of the job's devices, so the keys of processes 1, 2, ...
differ from process 0's and never get an entry: each of them compiled every program afresh in every run of the
suite (~20 CPU-s a run on 2 cores). Written under their own keys, they are read back in the next run like process
0's. What the programs compute and how the job forms are untouched; only the tests' processes do this, users' jobs
keep JAX's rule. On a jax whose private functions differ from those this was written against (jax 0.10), the
processes simply run as `python -m` (and compile as before).
"""
import inspect
import os
import runpy
import sys
import warnings

CACHE_WRITE = ("cache_key", "compile_time_secs", "module_name", "backend", "executable", "host_callbacks")
PUT_EXECUTABLE = ("cache_key", "module_name", "executable", "backend", "compile_time")


def _parameters(function):
    return tuple(inspect.signature(function).parameters) if callable(function) else None


def write_from_every_process():
    """Replace JAX's cache write with the same write minus its process-0 rule (host callbacks and the minimum
    compile time are still respected)."""
    from jax._src import compilation_cache, compiler, config
    if (_parameters(getattr(compiler, "_cache_write", None)) != CACHE_WRITE
            or _parameters(getattr(compilation_cache, "put_executable_and_time", None)) != PUT_EXECUTABLE):
        return

    def cache_write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks):
        if host_callbacks or compile_time_secs < config.persistent_cache_min_compile_time_secs.value:
            return
        try:
            compilation_cache.put_executable_and_time(cache_key, module_name, executable, backend,
                                                      int(compile_time_secs))
        except Exception as error:  # as JAX's own write: a cache that cannot be written does not end the run
            warnings.warn(f"Error writing persistent compilation cache entry for '{module_name}': "
                          f"{type(error).__name__}: {error}")

    compiler._cache_write = cache_write


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # as `python -m` has it: the working directory, not this file's folder
    write_from_every_process()
    module = sys.argv.pop(1)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
