"""Where a run may write, and how it replaces what it wrote.

- `claim(directory, kind)`: a run writes only into a directory that is new, empty, or marked (MARKER) as
  made by a vifi_jax run of the same kind ("run", "features", ...). `/`, the home directory and their
  parents are always refused. A directory written before markers existed is accepted when everything in it
  has a name such a run writes and its own file says it is one (`legacy`).
- `Lock`: one run at a time per directory. The lock file names the holder's pid and host; a lock whose
  process is gone (same host) is stale and taken over, with a warning.
- `swap_in(staging, destination)`: a finished directory or file replaces the old one in one step
  (renameat2 RENAME_EXCHANGE where the system has it), so a kill at any moment leaves the old or the new one
  whole, never neither. Leftovers of a killed writer are named `<destination>.partial-<pid>` and removed by
  `clean_leftovers` once their process is gone.

A bucket (gs://) gets the same rules through `storage`: the marker and the lock are objects (the lock made
with create-if-absent), and a directory is a name prefix, so there is nothing to create or to protect there.
"""
import contextlib
import ctypes
import datetime
import errno
import json
import logging
import os
import socket
import time

from data_pipelines import files, storage

log = logging.getLogger(__name__)
MARKER = ".vifi_jax.json"
LOCK = ".vifi_jax.lock"


class OutputError(ValueError):
    """A place this run must not write to, or may not write to now."""


def _forbidden(real):
    home = os.path.realpath(os.path.expanduser("~"))
    for protected in ("/", home):
        if real == protected or protected.startswith(real.rstrip(os.sep) + os.sep):
            return protected
    return None


def claim(directory, kind, flag, legacy=None):
    """Make `directory` this run's (creating it), or refuse with a message naming `flag` to choose another.

    `legacy(names)` may accept an unmarked directory written by an earlier version (its listing given)."""
    directory = os.fspath(directory)
    if storage.is_remote(directory):
        if files.regular_file_problem(directory) is None:
            raise OutputError(f"{flag}={directory} exists and is an object, not a directory; choose another {flag}")
    else:
        real = os.path.realpath(directory)
        protected = _forbidden(real)
        if protected:
            raise OutputError(f"{flag}={directory} is "
                              f"{'the root directory' if protected == '/' else 'your home directory'}"
                              f"{'' if real == protected else ' or holds it'}; a run writes many files there: give "
                              "it a directory of its own")
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise OutputError(f"{flag}={directory} exists and is not a directory; choose another {flag}")
    marker = storage.join(directory, MARKER)
    if storage.exists(marker):
        found = files.read_json(marker, "vifi_jax marker", f"delete it if {directory} is yours and empty it")
        if not isinstance(found, dict) or found.get("kind") != kind:
            made = found.get("kind") if isinstance(found, dict) else None
            raise OutputError(f"{flag}={directory} was made by a vifi_jax {made or 'run of another kind'}, not a "
                              f"{kind}; choose another {flag}")
        return directory
    names = storage.listdir(directory)
    if names and not (legacy and legacy(directory, names)):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise OutputError(f"{flag}={directory} is not empty ({shown}) and was not made by a vifi_jax {kind}; "
                          f"nothing there is touched: choose a new or empty {flag}")
    storage.makedirs(directory)
    files.write_json(marker, {"kind": kind, "created": _now()}, "vifi_jax marker")
    return directory


def is_claimed(directory, kind):
    marker = storage.join(directory, MARKER)
    if not (storage.exists(marker) if storage.is_remote(marker) else os.path.isfile(marker)):
        return False
    try:
        found = files.read_json(marker, "vifi_jax marker")
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("kind") == kind


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """`with Lock(directory, flag):` holds `directory/.vifi_jax.lock` for this process, or refuses."""

    def __init__(self, directory, flag):
        self.path, self.flag, self.directory = storage.join(directory, LOCK), flag, directory
        self.held = False

    def __enter__(self):
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        for _ in range(3):
            try:
                self._create(json.dumps(holder))
            except FileExistsError:
                self._check_stale()
                continue
            self.held = True
            return self
        raise OutputError(f"cannot take the lock {self.path}; remove it if no run is using {self.directory}")

    def _create(self, text):
        """The lock file, made only if absent (O_EXCL; in a bucket, an upload that requires no object there)."""
        if storage.is_remote(self.path):
            storage.write_bytes(self.path, text.encode(), exclusive=True)
            return
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "w") as f:
            f.write(text)

    def _check_stale(self):
        try:
            found = files.read_json(self.path, "lock file")
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            found = {}
        if not isinstance(found, dict):
            found = {}
        pid, host = found.get("pid"), found.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            log.warning("removing the stale lock %s of process %d, which is gone", self.path, pid)
            remove(self.path)
            return
        who = f"process {pid} on {host}, since {found.get('started')}" if pid else "an unknown process"
        raise OutputError(f"{self.directory} is in use by another vifi_jax run ({who}); wait for it to end or "
                          f"choose another {self.flag}. If that run is no longer running, delete {self.path}")

    def __exit__(self, *unused):
        if self.held:
            remove(self.path)
            self.held = False


_RENAME_EXCHANGE = 2


def _exchange(a, b):
    """Swap two paths in one step (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap {b} for its new version: {os.strerror(code)}")


def remove(path):
    """A file or a directory tree (local or in a bucket); nothing if absent."""
    with contextlib.suppress(FileNotFoundError):
        storage.remove(path)


def remove_settled(path, quiet=0.5, limit=10.0):
    """Remove `path`, and again whenever it reappears, until it has stayed gone for `quiet` seconds: the write
    threads of a failed Orbax save outlive the error and go on creating files for a moment."""
    if storage.is_remote(path):
        return remove(path)
    deadline, gone_since = time.monotonic() + limit, None
    while time.monotonic() < deadline:
        if os.path.lexists(path):
            with contextlib.suppress(OSError):  # a thread may add a file while the tree is removed
                remove(path)
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
        elif time.monotonic() - gone_since >= quiet:
            return
        time.sleep(0.05)
    if os.path.lexists(path):
        log.warning("could not remove %s (something keeps writing into it); delete it by hand", path)


def swap_in(staging, destination):
    """Replace `destination` by the finished `staging` (a file or a directory) so that a kill at any moment
    leaves one of the two whole at `destination`; the old one is then deleted."""
    if not os.path.lexists(destination) or not os.path.isdir(staging):
        os.replace(staging, destination)  # a file, or nothing to replace: rename is atomic
        return
    if _exchange(staging, destination):
        remove(staging)  # now the old one
        return
    aside = f"{staging}.old"
    os.replace(destination, aside)
    os.replace(staging, destination)
    remove(aside)


def partial_name(destination, pid=None):
    return f"{destination}.partial-{os.getpid() if pid is None else pid}"


def clean_leftovers(destination):
    """Remove `<destination>.partial-<pid>` left by writers that were killed (their process is gone); name
    the ones a live process still writes. Returns the removed paths."""
    removed = []
    if storage.is_remote(destination):
        return removed  # nothing is staged in a bucket (see model_dir.save)
    parent, base = os.path.split(os.path.abspath(destination))
    if not os.path.isdir(parent):
        return removed
    for name in os.listdir(parent):
        prefix = base + ".partial-"
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split(".")[0]
        if not pid.isdigit():
            continue
        path = os.path.join(parent, name)
        if int(pid) != os.getpid() and _alive(int(pid)):
            log.warning("%s is being written by process %s", path, pid)
            continue
        remove(path)
        removed.append(path)
        log.warning("removed %s, left by an earlier run that was stopped before it finished", path)
    return removed
