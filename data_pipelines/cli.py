"""How our programs talk to a person: logging levels, progress bars, and one `error:` line on failure.

Every command-line program (prepare, main, predict, convert, summarize) ends a failure with one line
and exit status 1; a traceback is printed only with `--verbose` (or `VIFI_JAX_VERBOSE=1`). Progress
bars go to stderr, which terminals and notebooks both show (absl's INFO lines do not show in notebooks).
"""
import functools
import logging
import os
import sys
import traceback

from absl import app, flags

VERBOSE_ENV = "VIFI_JAX_VERBOSE"
OUR_LOGGERS = ("vifi_jax", "data_pipelines")


def configure_logging(level=logging.INFO):
    """Our loggers at `level`; every other (jax, TensorFlow, and Orbax and Grain, which log through absl) at
    WARNING, so that a console shows our progress and everyone's warnings."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)


def progress(total, description, unit, initial=0, enabled=True):
    """A tqdm bar with rate and ETA on stderr; pass `enabled=False` on all but one process of a job."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not enabled, mininterval=0.5 if sys.stderr.isatty() else 10.0)


def describe(error):
    """One line: value, OS and runtime errors speak for themselves; any other also names its type."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ValueError, OSError, RuntimeError)) and not isinstance(error, UnicodeError):
        return text
    return f"{type(error).__name__}: {text}"


def fail(error, verbose=False):
    """Print `error` as the program's last words and exit 1."""
    verbose = verbose or bool(os.environ.get(VERBOSE_ENV))
    if verbose:
        traceback.print_exception(error)
    hint = "" if verbose else " (rerun with --verbose for the traceback)"
    jax = sys.modules.get("jax")
    if jax is not None and jax.process_count() > 1:
        print(f"error: process {jax.process_index()} of {jax.process_count()} stops: {describe(error)}{hint}. When "
              "one process of a job fails or is killed, the others stop with an error like this one; the first "
              "error in the processes' logs is the cause.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # not sys.exit: JAX's shutdown would wait for the failed process, then abort
    print(f"error: {describe(error)}{hint}", file=sys.stderr)
    sys.exit(1)


def guarded(main, verbose=lambda: False):
    """Wrap `main(argv)` so that any exception (but a usage error or an exit) ends as `fail` says."""
    @functools.wraps(main)
    def run(argv):
        try:
            return main(argv)
        except (SystemExit, KeyboardInterrupt, app.UsageError):
            raise
        except Exception as error:  # noqa: BLE001 - the point: every failure becomes one line
            fail(error, verbose())
    return run


def run_absl(main):
    """`app.run(main)` for an absl program, with `--verbose` and guarded errors."""
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "Print the traceback of an error, not just its one-line summary.")
    app.run(guarded(main, lambda: flags.FLAGS.verbose))
