"""Files a user names: only regular files are opened, and a problem is named as what it is.

A FIFO blocks a reader forever, `/dev/zero` never ends, a directory is not a file; each gets its own
message instead of "does not exist" or a hang.
"""
import contextlib
import errno
import io
import json
import os
import stat

import numpy as np

from data_pipelines import storage


class NotARegularFileError(OSError):
    """The path exists but is not a regular file (a missing one raises FileNotFoundError)."""


def regular_file_problem(path):
    """None for a regular file, else why it cannot be read as one (never opens or blocks on the path)."""
    return regular_file_status(path)[0]


def regular_file_status(path):
    """(`regular_file_problem`, the size of a regular file or None), from one stat (one request in a bucket)."""
    if storage.is_remote(path):
        return _object_status(path)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return "does not exist", None
    except NotADirectoryError:
        return "does not exist (a parent of it is not a directory)", None
    except PermissionError:
        return "cannot be accessed (permission denied)", None
    except OSError as error:
        return f"cannot be accessed ({error.strerror or error})", None
    mode = found.st_mode
    if stat.S_ISREG(mode):
        return None, found.st_size
    if stat.S_ISDIR(mode):
        return "is a directory, not a file", None
    kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(
        mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
    return f"is {kind}, not a regular file", None


def _object_status(path):
    """`regular_file_status` for a bucket object: every object is a regular file; a name prefix with objects
    under it is a directory."""
    try:
        found = storage.info(path)
    except FileNotFoundError as error:
        cause = storage.explain(path, error).cause
        return "does not exist" + ("" if cause == "object not found" else f" ({cause})"), None
    except Exception as error:  # noqa: BLE001 - permission, network: said as such
        return f"cannot be accessed ({storage.explain(path, error).cause})", None
    if found["type"] == "directory":
        return "is a directory, not a file", None
    return None, found["size"]


def check_regular_file(path, what="file"):
    """Raise NotARegularFileError naming `what`, `path` and the reason, unless `path` is a regular file."""
    problem = regular_file_problem(path)
    if problem:
        error = FileNotFoundError if problem.startswith("does not exist") else NotARegularFileError
        raise error(f"{what} {os.fspath(path)} {problem}")


def open_regular(path, what="file"):
    """Open a regular file for binary reading; the check and the open see the same file (no race to a FIFO)."""
    check_regular_file(path, what)
    if storage.is_remote(path):
        return storage.open_read(path)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotARegularFileError(f"{what} {os.fspath(path)} {regular_file_problem(path) or 'changed while opened'}")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


class FileContentError(ValueError):
    """A file that exists but does not hold what it should (bad JSON, wrong shape, ...), named with the fix."""


def open_text(path, what="file", encoding="utf-8", newline=None):
    """`open_regular` for text (no FIFO, device or directory is ever opened)."""
    return io.TextIOWrapper(open_regular(path, what), encoding=encoding, newline=newline)


MAX_JSON_BYTES = 256 << 20


def read_json(path, what="file", fix="", max_bytes=MAX_JSON_BYTES):
    """The JSON value in a regular file; any problem (empty, cut short, not JSON, a 5000-digit number, too
    large) is one FileContentError naming `what`, the path and `fix`."""
    with open_regular(path, what) as f:
        raw = f.read(max_bytes + 1)
    tail = f"; {fix}" if fix else ""
    if len(raw) > max_bytes:
        raise FileContentError(f"{what} {path} is larger than {max_bytes >> 20} MiB{tail}")
    if not raw.strip():
        raise FileContentError(f"{what} {path} is empty (a write that was cut short?){tail}")
    try:
        value = json.loads(raw.decode("utf-8"), parse_int=_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = " ".join(str(error).split())[:200]
        raise FileContentError(f"{what} {path} is not valid JSON ({reason}){tail}") from None
    huge = _find_huge(value)
    if huge is not None:
        field, digits = huge
        raise FileContentError(f"{what} {path}: {field or 'the value'} is a {digits}-digit number, which no field "
                               f"takes{tail}")
    return value


MAX_INT_DIGITS = 64


class _HugeInt(int):
    """A JSON integer too long to be a real value (Python refuses to parse one over 4300 digits)."""

    def __new__(cls, digits):
        number = super().__new__(cls, 0)
        number.digits = digits
        return number


def _int(text):
    return int(text) if len(text) <= MAX_INT_DIGITS else _HugeInt(len(text.lstrip("-")))


def _find_huge(value, field=""):
    """(dotted field, digits) of the first too-long integer in a parsed JSON value, or None."""
    if isinstance(value, _HugeInt):
        return field, value.digits
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _find_huge(item, f"{field}.{key}" if field else str(key))
        if found:
            return found
    return None


def load_npy(path, what="array file", dtypes=(np.float16, np.float32), ndim=2):
    """A `.npy` array read through `open_regular`; the header is checked against the file's size before
    anything is allocated, and a pickled (object) array is never loaded."""
    with open_regular(path, what) as f:
        try:
            version = np.lib.format.read_magic(f)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in header:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = header[version](f)
        except ValueError as error:
            raise FileContentError(f"{what} {path} is not a .npy array ({error})") from None
        if dtype not in [np.dtype(d) for d in dtypes] or len(shape) != ndim:
            raise FileContentError(f"{what} {path} holds a {dtype} array of shape {shape}; expected {ndim}-D "
                                   f"{'/'.join(np.dtype(d).name for d in dtypes)}")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = f.tell()
        remaining = f.seek(0, os.SEEK_END) - start
        f.seek(start)
        if remaining != size:
            raise FileContentError(f"{what} {path} declares {size} bytes of data but holds {remaining}")
        array = np.frombuffer(f.read(size), dtype).reshape(shape, order="F" if fortran else "C")
    return array


def write_problem(error):
    """A sentence for an OSError raised while writing: a full disk, a quota, a file-size limit."""
    reasons = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
               errno.EFBIG: "the file is larger than allowed (file-size limit)"}
    return reasons.get(getattr(error, "errno", None))


def _size(count):
    return f"{count / 2 ** 30:.2f} GiB" if count >= 2 ** 30 else f"{count / 2 ** 20:.1f} MiB"


def check_room(directory, size, what):
    """Refuse to start writing `size` bytes of `what` into `directory` (or the nearest existing parent) when
    the disk has no room for them or the file-size limit (ulimit -f) is smaller: a write that fails half-way
    through a library (Orbax, TensorStore) leaves partial files and pages of tracebacks."""
    import resource
    if "://" in str(directory):  # a bucket (gs://...): no local disk to ask
        return
    place = os.path.abspath(os.fspath(directory))
    while not os.path.isdir(place) and os.path.dirname(place) != place:
        place = os.path.dirname(place)
    stats = os.statvfs(place)
    free = stats.f_bavail * stats.f_frsize
    if free < size + (16 << 20):
        raise WriteError(errno.ENOSPC, f"cannot write {what} into {directory}: it needs {_size(size)} and the disk "
                                       f"holding {place} has {_size(free)} free; free space or write elsewhere")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < size:
        raise WriteError(errno.EFBIG, f"cannot write {what} into {directory}: it needs {_size(size)} and the "
                                      f"file-size limit (ulimit -f) is {_size(limit)}; raise the limit")


class WriteError(OSError):
    """A file could not be written; the message names it, why, and that nothing half-written was left."""

    def __str__(self):
        return self.strerror or super().__str__()  # the message alone, without "[Errno 28]"


@contextlib.contextmanager
def atomic_write(path, what="file", mode="w"):
    """Write `path` through a temporary file in the same directory, flushed to disk and then renamed over
    it: a reader (a rerun) sees the old file or the whole new one, never an empty or half-written one."""
    path = os.fspath(path)
    if storage.is_remote(path):
        with _upload_whole(path, what, mode) as f:
            yield f
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if os.path.lexists(temporary):
            os.remove(temporary)
        problem = write_problem(error) or (error.strerror or str(error))
        raise WriteError(getattr(error, "errno", None),
                         f"cannot write {what} {path}: {problem}; nothing was changed there") from error
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def _upload_whole(path, what, mode):
    """`atomic_write` for a bucket: written to memory, then uploaded in one request under its final name."""
    buffer = io.BytesIO() if "b" in mode else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    try:
        storage.write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"))
    except OSError as error:
        cause = getattr(error, "cause", str(error))
        raise WriteError(getattr(error, "errno", None), f"cannot write {what} {path}: {cause}; nothing was "
                                                        "changed there") from error


def finite(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN: such a file is invalid)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path, obj, what="file"):
    """`obj` as JSON, atomically; a NaN or infinity is written as null (never invalid JSON)."""
    text = json.dumps(finite(obj), indent=1, allow_nan=False)
    with atomic_write(path, what) as f:
        f.write(text)


class OutsideError(ValueError):
    """A path named inside a file (a list file, a manifest) points outside the directory it must stay in."""


def inside(base, entry, what, links_may_leave=False):
    """`entry` (relative) joined to `base`; refuses an absolute entry or one whose `..` leads out of `base`,
    and unless `links_may_leave` (a dataset tree may link to other disks), one a symbolic link leads out."""
    entry = os.fspath(entry)
    if storage.is_remote(base):
        return _inside_bucket(base, entry, what)
    if os.path.isabs(entry):
        raise OutsideError(f"{what}: {entry} is an absolute path; entries must be relative to {base}")
    if os.path.normpath(entry).split(os.sep)[0] == os.pardir:
        raise OutsideError(f"{what}: {entry} leads outside {base} (through '..')")
    path = os.path.join(base, entry)
    if not links_may_leave:
        real_base, real = os.path.realpath(base), os.path.realpath(path)
        if real != real_base and not real.startswith(real_base.rstrip(os.sep) + os.sep):
            raise OutsideError(f"{what}: {entry} leads outside {base} (a link to {real})")
    return path


def _inside_bucket(base, entry, what):
    """`inside` for a bucket: no links there, only names; `..` may not climb out of `base`."""
    import posixpath
    if entry.startswith("/") or storage.is_remote(entry):
        raise OutsideError(f"{what}: {entry} is an absolute path; entries must be relative to {base}")
    if posixpath.normpath(entry).split("/")[0] == "..":
        raise OutsideError(f"{what}: {entry} leads outside {base} (through '..')")
    return storage.join(base, posixpath.normpath(entry))
