"""Files a user names: only regular files are opened, and a problem is named as what it is.

A FIFO blocks a reader forever, `/dev/zero` never ends, a directory is not a file; each gets its own
message instead of "does not exist" or a hang.
"""
import os
import stat


class NotARegularFileError(OSError):
    """The path exists but is not a regular file (a missing one raises FileNotFoundError)."""


def regular_file_problem(path):
    """None for a regular file, else why it cannot be read as one (never opens or blocks on the path)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a parent of it is not a directory)"
    except PermissionError:
        return "cannot be accessed (permission denied)"
    except OSError as error:
        return f"cannot be accessed ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(
        mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
    return f"is {kind}, not a regular file"


def check_regular_file(path, what="file"):
    """Raise NotARegularFileError naming `what`, `path` and the reason, unless `path` is a regular file."""
    problem = regular_file_problem(path)
    if problem:
        error = FileNotFoundError if problem.startswith("does not exist") else NotARegularFileError
        raise error(f"{what} {os.fspath(path)} {problem}")


def open_regular(path, what="file"):
    """Open a regular file for binary reading; the check and the open see the same file (no race to a FIFO)."""
    check_regular_file(path, what)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotARegularFileError(f"{what} {os.fspath(path)} {regular_file_problem(path) or 'changed while opened'}")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
