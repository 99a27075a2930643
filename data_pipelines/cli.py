"""How our programs talk to a person: logging levels, progress bars, help and one `error:` line on failure.

Every command-line program (prepare, main, predict, convert, summarize, ...) starts through `run`: absl
parses its flags, `--help` (or -h) prints to stdout with exit status 0, a usage mistake is one `error:` line
with exit status 2, and a failure one `error:` line with exit status 1; a traceback is printed only with
`--verbose` (or `VIFI_JAX_VERBOSE=1`). Progress bars go to stderr, which terminals and notebooks both show
(absl's INFO lines do not show in notebooks).
"""
import functools
import gc
import logging
import os
import signal
import sys
import threading
import traceback

from absl import app, flags

from data_pipelines import files

# The flags this module's definers define belong to the tool that calls them: its --help lists them.
flags.disclaim_key_flags()

VERBOSE_ENV = "VIFI_JAX_VERBOSE"
# Python's cyclic garbage collector runs a young-generation pass every 700 net container allocations (its
# default). Importing JAX, Flax and Orbax and tracing a train step allocate millions of short-lived objects,
# so a smoke training run spent ~0.6 of its ~8 CPU-s collecting (gc.callbacks), mostly in full passes over
# everything the imports made; with passes every 50,000 allocations it spends ~0.15 s. Refcounting still frees
# all acyclic garbage at once; cycles wait longer: a steady training loop leaves ~55 small objects a step
# (no arrays beyond a few hundred bytes), so memory is not at stake.
GC_THRESHOLDS = (50_000, 10, 10)
OUR_LOGGERS = ("vifi_jax", "data_pipelines")


class _OrbaxErrorFilter(logging.Filter):
    """Drops Orbax's own error reports (a traceback per failed write thread: ~200 lines for a full disk).
    Every one of them is also raised to the code that saves, which ends the run with one `error:` line."""

    def filter(self, record):
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in (record.pathname or ""))


def configure_logging(level=logging.INFO):
    """Our loggers at `level`; every other (jax, TensorFlow, and Orbax and Grain, which log through absl) at
    WARNING, so that a console shows our progress and everyone's warnings. Without --verbose, Orbax's
    error tracebacks are left to the one-line error that follows them."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not _verbose():
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, _OrbaxErrorFilter) for f in handler.filters):
                handler.addFilter(_OrbaxErrorFilter())


def _verbose():
    flag = flags.FLAGS["verbose"].value if "verbose" in flags.FLAGS else False
    return bool(flag or os.environ.get(VERBOSE_ENV))


_interrupted = threading.Event()


def _on_ctrl_c(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


def _quiet_about_a_dropped_ctrl_c(unraisable, previous=sys.unraisablehook):
    """Python prints "Exception ignored in ..." with a traceback for the dropped KeyboardInterrupt; the
    interruption is reported once, as the program's last line, instead."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        previous(unraisable)


def raise_if_interrupted():
    """Raise KeyboardInterrupt if Ctrl-C was pressed. Python drops an exception raised inside a garbage-collector
    callback (JAX has one), so a Ctrl-C landing there would be lost; every progress step checks again."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


def progress(total, description, unit, initial=0, enabled=True):
    """A tqdm bar with rate and ETA on stderr; pass `enabled=False` on all but one process of a job. Each
    `update` also stops the work if Ctrl-C was pressed (see `raise_if_interrupted`)."""
    from tqdm import tqdm

    class Bar(tqdm):
        def update(self, n=1):
            raise_if_interrupted()
            return super().update(n)

    return Bar(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True,
               disable=not enabled, mininterval=0.5 if sys.stderr.isatty() else 2.0)


_ROOM_TEXTS = {"No space left on device": "no space left on the device",
               "Disk quota exceeded": "the disk quota is exceeded",
               "File too large": "the file is larger than allowed (file-size limit)"}


def _full_disk(error):
    """(the error, a sentence) for the first error in `error`'s chain that says a write ran out of room (disk,
    quota, file-size limit), however deep a library (Orbax, TensorStore) wrapped it; or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and files.write_problem(error):
            return error, files.write_problem(error)
        for text, reason in _ROOM_TEXTS.items():
            if text in str(error):
                return error, reason
        error = error.__cause__ or error.__context__
    return None


def describe(error):
    """One line: value, OS and runtime errors speak for themselves; any other also names its type. A write
    that ran out of room says so first, with the file where it is known."""
    full = _full_disk(error)
    if full is not None and not isinstance(error, files.WriteError):
        cause, reason = full
        where = getattr(cause, "filename", None)
        return (f"{reason}{f' writing {where}' if where else ''}: free space (or raise the limit) and run again; "
                f"files already complete were kept ({' '.join(str(error).split())[:160]})")
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
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _on_ctrl_c)
            sys.unraisablehook = _quiet_about_a_dropped_ctrl_c
        try:
            return main(argv)
        except (SystemExit, app.UsageError):
            raise
        except KeyboardInterrupt:
            if verbose() or os.environ.get(VERBOSE_ENV):
                raise
            print("error: interrupted (Ctrl-C); finished files were kept, the step in progress was not written",
                  file=sys.stderr)
            sys.exit(130)
        except Exception as error:  # noqa: BLE001 - the point: every failure becomes one line
            fail(error, verbose())
    return run


HELP = ("-h", "--help", "-?", "--helpshort", "--helpfull")


def _program():
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec and spec.name else sys.argv[0].rsplit("/", 1)[-1]


def _usage_error(message):
    print(f"error: {message} (see {_program()} --help)", file=sys.stderr)
    sys.exit(2)


def _message(error, argv):
    """One line for a flag that failed to parse: the innermost error of the chain (absl wraps a config file's
    own error), and for a config override naming no field, the override and what ml_collections suggests."""
    inner = error
    while inner.__cause__ is not None or (inner.__context__ is not None and not inner.__suppress_context__):
        inner = inner.__cause__ or inner.__context__
    while isinstance(inner, (KeyError, AttributeError)) and inner.args and isinstance(inner.args[0], Exception):
        inner = inner.args[0]  # ml_collections: AttributeError(KeyError("'lrr'\nDid you mean ..."))
    if isinstance(inner, (KeyError, AttributeError)) and inner.args:
        key, _, suggestion = str(inner.args[0]).strip("'\"").partition("\n")
        key = key.strip("'\"")
        given = next((a.split("=")[0] for a in argv if a.startswith("--config.") and
                      a.split("=")[0].rsplit(".", 1)[-1] == key), f"--config...{key}")
        return f"{given}: the config has no field {key!r}" + (f" ({suggestion.strip().lower()})" if suggestion else "")
    first = str(error).splitlines()[0].rstrip(": ") if str(error) else type(error).__name__
    text = " ".join(str(inner).split()) if inner is not error else ""
    return first if not text or text in first else f"{first}: {text}"


def parse(argv, resolve=None):
    """absl's flag parsing with our help and errors; `resolve(argument)` may map arguments first (main
    finds a shipped config by name: `--config=zeroshot`)."""
    if any(a in HELP for a in argv[1:]):
        app.usage(shorthelp="--helpfull" not in argv, writeto_stdout=True, exitcode=0)
    try:
        if resolve:
            argv = [argv[0]] + [resolve(a) for a in argv[1:]]
        return flags.FLAGS(argv)
    except app.UsageError as error:
        _usage_error(str(error))
    except Exception as error:  # noqa: BLE001 - a bad flag, or a config file or override that cannot be loaded
        if "--verbose" in argv:
            raise
        _usage_error(_message(error, argv))


def define_flag(kind, name, default, help_text, **options):
    """Define `--name` unless a tool in this process already did: a flag shared by several tools is defined
    by one definer (here for the data flags, in `vifi_jax.cli.flags` for the model's), never twice."""
    if name not in flags.FLAGS:  # help by keyword: DEFINE_enum takes its values before it
        getattr(flags, f"DEFINE_{kind}")(name, default, help=help_text, **options)


def verbose_flag():
    define_flag("bool", "verbose", False, "Print the traceback of an error, not just its one-line summary.")


def list_file_flags(list_help="An official list file (`<path> <label>` lines) naming the videos.",
                    root_help="Directory the list file's paths are relative to."):
    """--list_file and --root, as prepare, prepare_beam and extract read videos."""
    define_flag("string", "list_file", None, list_help)
    define_flag("string", "root", "", root_help)


def labels_file_flag(help_text="Label CSV with an 'id,name' header (the official labels/*.csv format)."):
    define_flag("string", "labels_file", None, help_text)


def run(main, resolve=None, positional=False):
    """Run `main(argv)` as a command: parse the flags, refuse positional arguments unless `positional`, and
    end any failure with one line. The command owns its process, so the garbage collector is set for it
    (`GC_THRESHOLDS`) before the heavy imports, which the tools make in `main`."""
    gc.set_threshold(*GC_THRESHOLDS)
    verbose_flag()

    def checked(argv):
        if not positional and len(argv) > 1:
            _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            return main(argv)
        except app.UsageError as error:
            _usage_error(str(error))

    app.run(guarded(checked, lambda: flags.FLAGS.verbose), flags_parser=lambda argv: parse(argv, resolve))
