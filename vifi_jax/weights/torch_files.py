"""Read PyTorch checkpoint files without torch, safely; write them with torch.

`torch.save` files are a zip of one pickle (`*/data.pkl`) plus raw tensor storages (`*/data/<key>`);
TorchScript archives (OpenAI's CLIP `.pt`) use the same layout with `__torch__.*` module objects in the
pickle; files from torch < 1.6 are a chain of plain pickles followed by the storages. All three are read
by `safe_pickle`, which runs nothing the file names and checks every tensor view against its storage.

What a file can make the reader do is bounded: only regular files are opened; the pickle may not exceed
16 MiB; a storage is read only after its declared size is checked against what the file really holds;
and the tensors made from the storages may not exceed twice their bytes plus 256 MiB (views that
repeat elements, e.g. stride 0, would otherwise turn a few bytes into gigabytes).
"""
import io
import os
import struct
import zipfile

import numpy as np

from data_pipelines import files
from vifi_jax.weights import safe_pickle, torchscript
from vifi_jax.weights.safe_pickle import CheckpointReadError, ConfigNode, UnsafeCheckpointError  # noqa: F401 - public
from vifi_jax.weights.torchscript import ScriptObject  # noqa: F401 - public

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
EXPANSION_SLACK = 256 << 20  # bytes of tensors beyond twice the storages that views may make
MAX_INFLATION = 16  # a compressed entry may inflate this many times (torch itself stores entries uncompressed)


class _Tensors:
    """Makes tensors from storages read through `read(key, dtype, numel)`, within a memory budget."""

    def __init__(self, path, read, storage_bytes):
        self.path, self.read = path, read
        self.budget = 2 * storage_bytes + EXPANSION_SLACK
        self.storages, self.arrays = {}, {}

    def storage_for(self, key, dtype, numel):
        known = self.storages.setdefault(key, safe_pickle.Storage(key, dtype, numel))
        if (known.dtype, known.numel) != (dtype, numel):
            raise CheckpointReadError(f"{self.path}: storage {key} is declared twice, as {known.numel} x "
                                      f"{known.dtype} and as {numel} x {dtype}")
        return known

    def make(self, storage, offset, size, stride):
        if storage.key not in self.arrays:  # checks the declared size against the file before it allocates
            self.arrays[storage.key] = self.read(storage.key, storage.dtype, storage.root_numel)
        nbytes = int(np.prod(size, dtype=object)) * storage.dtype.itemsize
        if nbytes > self.budget:
            raise CheckpointReadError(f"{self.path}: a tensor of shape {size} ({nbytes:,} bytes) over the "
                                      f"{storage.root_numel}-element storage {storage.key} would exceed the memory "
                                      "a checkpoint of this size may need; not a model checkpoint")
        self.budget -= nbytes
        base = self.arrays[storage.key][storage.offset + offset:]
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * itemsize for s in stride),
                                               writeable=False)
        return np.array(view, order="C")


def load(path):
    """Load a torch.save / torch.jit.save file as nested containers of numpy arrays and plain data."""
    path = os.fspath(path)
    with files.open_regular(path, "checkpoint") as f:
        is_zip = f.read(4) == _ZIP_MAGIC or zipfile.is_zipfile(f)
        f.seek(0)
        return _load_zip(f, path) if is_zip else _load_legacy(f, path)


def _load_zip(f, path):
    try:
        archive = zipfile.ZipFile(f)
        entries = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointReadError(f"{path} is a zip archive but truncated or corrupt ({e})") from e
    pickles = [n for n in entries if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        raise CheckpointReadError(f"{path} is a zip archive but holds no '<name>/data.pkl': not a PyTorch file")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = _read_entry(archive, entries, prefix + "byteorder", 16, path).decode("ascii", "replace").strip() \
        if prefix + "byteorder" in entries else "little"
    if byteorder not in ("little", "big"):
        raise CheckpointReadError(f"{path}: byteorder is {byteorder!r}, neither 'little' nor 'big'")
    endian = "<" if byteorder == "little" else ">"

    def read_storage(key, dtype, numel):
        name = f"{prefix}data/{key}"
        if name not in entries:
            raise CheckpointReadError(f"{path}: tensor storage {key} is missing")
        raw = _read_entry(archive, entries, name, numel * dtype.itemsize, path, exact=True)
        return np.frombuffer(raw, dtype.newbyteorder(endian), count=numel).astype(dtype)

    storage_bytes = sum(info.file_size for name, info in entries.items() if name.startswith(prefix + "data/"))
    tensors = _Tensors(path, read_storage, storage_bytes)
    data = _read_entry(archive, entries, pickles[0], safe_pickle.MAX_PICKLE_BYTES, path)
    code = {name[len(prefix + "code/"):-len(".py")].replace("/", "."):
            _read_entry(archive, entries, name, safe_pickle.MAX_PICKLE_BYTES, path)
            for name in entries if name.startswith(prefix + "code/") and name.endswith(".py")}
    unpickler = safe_pickle.Unpickler(io.BytesIO(data), path, tensors.storage_for, tensors.make,
                                      torchscript.declarations(code))
    return unpickler.load()


def _read_entry(archive, entries, name, limit, path, exact=False):
    """The bytes of one zip entry, refused when its declared size is over `limit` (or, `exact`, not it)."""
    info = entries[name]
    if info.file_size > limit or (exact and info.file_size < limit):
        raise CheckpointReadError(f"{path}: {name} declares {info.file_size:,} bytes where "
                                  f"{'exactly ' if exact else 'at most '}{limit:,} are expected")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATION * info.compress_size + (1 << 20):
        raise CheckpointReadError(f"{path}: {name} inflates from {info.compress_size:,} to {info.file_size:,} bytes; "
                                  "refusing a compression bomb (torch writes checkpoints uncompressed)")
    try:
        with archive.open(info) as entry:
            data = entry.read(limit)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise CheckpointReadError(f"{path}: {name} is corrupt ({e}); the file may be truncated") from e
    if exact and len(data) != limit:
        raise CheckpointReadError(f"{path}: {name} holds {len(data):,} bytes, expected {limit:,}; "
                                  "the file is truncated")
    return data


def _load_legacy(f, path):
    """torch < 1.6: magic, protocol, sys info, object pickle, storage keys, then raw storages.

    The object pickle is parsed twice: once to learn which storages exist (checking every view, allocating
    nothing), then, after the storages are read from the stream within the file's size, to make tensors."""
    size = os.fstat(f.fileno()).st_size

    def header():
        return safe_pickle.Unpickler(f, path, _no_storage, _no_storage).load()

    def _no_storage(*unused):
        raise CheckpointReadError(f"{path}: a legacy header holds a tensor")

    try:
        magic = header()
    except (CheckpointReadError, UnsafeCheckpointError) as e:
        raise CheckpointReadError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a legacy "
                                  f"file: its first bytes do not parse as one)") from e
    if magic != _LEGACY_MAGIC:
        raise CheckpointReadError(f"{path} is not a PyTorch checkpoint (bad magic number)")
    if header() != _LEGACY_PROTOCOL:
        raise CheckpointReadError(f"{path}: unsupported legacy PyTorch protocol")
    sys_info = header()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)

    start = f.tell()
    declared = _Tensors(path, None, 0)
    safe_pickle.Unpickler(f, path, declared.storage_for, lambda *unused: None).load()
    keys = safe_pickle.Unpickler(f, path, _no_storage, _no_storage).load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(declared.storages):
        raise CheckpointReadError(f"{path}: the storage list does not match the storages the tensors use")
    storages = {}
    for key in map(str, keys):
        storage = declared.storages[key]
        nbytes = storage.numel * storage.dtype.itemsize
        head = f.read(8)
        if len(head) != 8 or struct.unpack("<q", head)[0] != storage.numel or nbytes > size - f.tell():
            raise CheckpointReadError(f"{path}: storage {key} is truncated or inconsistent (declares "
                                      f"{storage.numel:,} elements; the file has {size - f.tell():,} bytes left)")
        raw = f.read(nbytes)
        storages[key] = np.frombuffer(raw, storage.dtype.newbyteorder("<" if little else ">")).astype(storage.dtype)
    f.seek(start)
    tensors = _Tensors(path, lambda key, dtype, numel: storages[key], sum(a.nbytes for a in storages.values()))
    return safe_pickle.Unpickler(f, path, tensors.storage_for, tensors.make).load()


def state_dict(obj):
    """The flat {dotted name: array} of a loaded object (a TorchScript module's parameters and buffers)."""
    if isinstance(obj, ScriptObject):
        return torchscript.state_dict(obj, lambda value: isinstance(value, np.ndarray))
    if isinstance(obj, dict):
        return obj
    raise CheckpointReadError(f"expected a state dict or a TorchScript module, found {type(obj).__name__}")


def save(obj, path):
    """torch.save a nested dict of numpy arrays; needs torch (`pip install torch`)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("writing PyTorch files needs torch: pip install torch") from e
    import ml_dtypes

    def to_torch(value):
        if isinstance(value, dict):
            return {k: to_torch(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            if value.dtype == ml_dtypes.bfloat16:
                return torch.from_numpy(value.view(np.uint16).copy()).view(torch.bfloat16)
            return torch.from_numpy(np.array(value, order="C"))
        return value

    torch.save(to_torch(obj), os.fspath(path))
