"""How the command-line programs end: one `error:` line and exit status 1 on any failure.

A traceback is for developers: it is printed only with `--verbose` (or `VIFI_JAX_VERBOSE=1`).
"""
import functools
import os
import sys
import traceback

from absl import app, flags

VERBOSE_ENV = "VIFI_JAX_VERBOSE"


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
