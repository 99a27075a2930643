"""Local paths and bucket URLs (gs://, s3://) behind one small set of functions.

A local path goes to `os`; a URL goes to its fsspec filesystem (gcsfs for gs://). etils.epath, which Orbax
uses for checkpoint directories, is pointed at the same fsspec backend (EPATH_USE_TF=false), so one client
and one set of credentials serve every file, and an emulator (STORAGE_EMULATOR_HOST) reaches all of them:
tf.io.gfile, epath's other backend, cannot be pointed at one. fsspec and not epath for our own files
because a run needs what epath does not expose: create-if-absent (the workdir lock), an object's
generation (the frame-count cache key) and one-request uploads (atomic results files).

Object stores have no rename. A file is made safe against a preempted writer by uploading it whole, in one
request, under its final name: GCS shows an object only once its upload is complete, so a reader sees the
old object or the new one, never a part.
"""
import contextlib
import io
import os
import posixpath
import tempfile

SCHEMES = ("gs://", "gcs://", "s3://")

os.environ.setdefault("EPATH_USE_TF", "false")
if os.environ.get("STORAGE_EMULATOR_HOST"):
    # gcsfs first asks a bucket's layout over gRPC, which an emulator does not serve (60 s per bucket);
    # TensorStore (Orbax's array writes) and google-cloud-cpp (ArrayRecord's own gs:// reader and writer,
    # under TFDS datasets) read their own variables for the endpoint. Without the last, ArrayRecord looks
    # for credentials on a metadata server and waits.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", os.environ["STORAGE_EMULATOR_HOST"])
    os.environ.setdefault("CLOUD_STORAGE_EMULATOR_ENDPOINT", os.environ["STORAGE_EMULATOR_HOST"])


class StorageError(OSError):
    """A bucket path that cannot be read or written; the message names the path and the cause (`cause`
    alone, for messages that name the path their own way)."""

    def __init__(self, code, message, cause):
        super().__init__(code, message)
        self.cause = cause

    def __str__(self):
        return self.strerror or super().__str__()


def is_remote(path):
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(SCHEMES)


def _fs(path):
    import fsspec
    try:
        return fsspec.core.url_to_fs(os.fspath(path))
    except ImportError as error:
        raise ImportError(f"{os.fspath(path)} is in a bucket, which needs gcsfs (s3fs for s3://): pip install -r "
                          f"requirements-gcs.txt ({error})") from None


def bucket_of(path):
    return os.fspath(path).split("://", 1)[1].split("/", 1)[0]


def join(base, *parts):
    return posixpath.join(os.fspath(base), *parts) if is_remote(base) else os.path.join(base, *parts)


def absolute(path):
    """An absolute local path; a URL as it is."""
    return os.fspath(path) if is_remote(path) else os.path.abspath(path)


def dirname(path):
    return posixpath.dirname(os.fspath(path).rstrip("/")) if is_remote(path) else os.path.dirname(path)


def explain(path, error, doing="read"):
    """A StorageError for `error` met while `doing` `path`: a missing bucket, a missing object, no
    permission or a network failure, each said as such."""
    path = os.fspath(path)
    status = getattr(error, "code", None)
    if isinstance(error, PermissionError) or status in (401, 403):
        cause = ("no permission: the credentials in use (gcloud auth application-default login, or "
                 "GOOGLE_APPLICATION_CREDENTIALS) may not " + doing + " it")
    elif isinstance(error, FileNotFoundError) or status == 404:
        cause = "object not found"
        try:
            fs, _ = _fs(path)
            if not fs.exists(bucket_of(path)):
                cause = f"the bucket {bucket_of(path)} does not exist (or is not visible to these credentials)"
        except Exception:  # noqa: BLE001 - the original cause stands if the bucket cannot be asked
            pass
    elif isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower():
        cause = "the storage service did not answer in time (network timeout); check the connection and retry"
    else:
        cause = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    return StorageError(getattr(error, "errno", None), f"cannot {doing} {path}: {cause}", cause)


def _call(path, doing, operation):
    try:
        return operation()
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - every client error becomes one message naming the path
        if isinstance(error, FileExistsError):
            raise
        raise explain(path, error, doing) from error


def exists(path):
    if not is_remote(path):
        return os.path.lexists(path)
    fs, inner = _fs(path)
    return _call(path, "look for", lambda: fs.exists(inner))


def isdir(path):
    if not is_remote(path):
        return os.path.isdir(path)
    fs, inner = _fs(path)
    return _call(path, "look for", lambda: fs.isdir(inner))


def info(path):
    """{"type": "file"|"directory", "size", "version"} of a bucket path (FileNotFoundError if absent)."""
    fs, inner = _fs(path)
    fs.invalidate_cache(inner)
    found = fs.info(inner)
    return {"type": found.get("type"), "size": int(found.get("size") or 0),
            "version": str(found.get("generation") or found.get("ETag") or found.get("mtime") or "")}


def listdir(path):
    """Names (not paths) inside a directory; [] where there is none."""
    if not is_remote(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs, inner = _fs(path)
    fs.invalidate_cache(inner)
    try:
        entries = fs.ls(inner, detail=False)
    except FileNotFoundError:
        return []
    except Exception as error:  # noqa: BLE001
        raise explain(path, error, "list") from error
    return sorted({posixpath.basename(entry.rstrip("/")) for entry in entries} - {""})


def makedirs(path):
    """A local directory (and its parents); nothing for a bucket, where directories are name prefixes."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def remove(path):
    """A file or a whole directory tree, local or in a bucket; nothing if absent."""
    if not is_remote(path):
        import shutil
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        return
    fs, inner = _fs(path)
    fs.invalidate_cache(inner)
    if fs.exists(inner):
        _call(path, "delete", lambda: fs.rm(inner, recursive=True))


def read_bytes(path):
    fs, inner = _fs(path)
    return _call(path, "read", lambda: fs.cat_file(inner))


def write_bytes(path, data, exclusive=False):
    """Upload `data` as `path` in one request (all or nothing); `exclusive`: FileExistsError if it exists."""
    fs, inner = _fs(path)
    _call(path, "write", lambda: fs.pipe_file(inner, data, mode="create" if exclusive else "overwrite"))
    fs.invalidate_cache(inner)


class _Readable(io.BufferedIOBase):
    """A bucket object as the buffered binary stream OpenCV's VideoCapture and zipfile take: fsspec reads
    it in ranged requests of `block_size`, so a reader seeking around a large file never copies all of it."""

    def __init__(self, handle, name):
        super().__init__()
        self._handle, self.name = handle, name

    def readable(self):
        return True

    def seekable(self):
        return True

    def read(self, size=-1):
        return self._handle.read(-1 if size is None else size)

    read1 = read

    def readinto(self, buffer):
        data = self._handle.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset, whence=0):
        return self._handle.seek(offset, whence)

    def tell(self):
        return self._handle.tell()

    def close(self):
        if not self.closed:
            self._handle.close()
        super().close()


BLOCK_SIZE = 8 << 20  # bytes per ranged read: a few-second clip is one request


def open_read(path, block_size=BLOCK_SIZE):
    """A bucket object opened for binary reading, as a seekable buffered stream."""
    fs, inner = _fs(path)
    handle = _call(path, "read", lambda: fs.open(inner, "rb", block_size=block_size, cache_type="readahead"))
    return _Readable(handle, os.fspath(path))


@contextlib.contextmanager
def local_copy(path):
    """A local path holding `path`'s bytes while the block runs: the file itself, or a bucket object downloaded
    to a temporary file that is removed afterwards (readers that need a real file: mmap, torch.load)."""
    if not is_remote(path):
        yield os.fspath(path)
        return
    fs, inner = _fs(path)
    descriptor, local = tempfile.mkstemp(prefix="vifi_jax-", suffix=posixpath.splitext(inner)[1])
    os.close(descriptor)
    try:
        _call(path, "read", lambda: fs.get_file(inner, local))
        yield local
    finally:
        os.remove(local)


def upload(local, path):
    """Copy a finished local file to `path` in a bucket; the object appears only once the upload is whole."""
    fs, inner = _fs(path)
    _call(path, "write", lambda: fs.put_file(local, inner))
    fs.invalidate_cache(inner)
