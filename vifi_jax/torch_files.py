"""Read PyTorch checkpoint files without torch, and write them with it.

`torch.save` files are a zip of one pickle (`*/data.pkl`) plus raw tensor
storages (`*/data/<key>`); TorchScript archives (OpenAI's CLIP `.pt`) use the
same layout with `__torch__.*` module objects in the pickle; files from
torch < 1.6 are a chain of plain pickles followed by the storages. We parse all
three with a restricted unpickler that can only rebuild tensors (as numpy
arrays) and plain data: any other global in the pickle raises
`UnsafeCheckpointError` before anything is called.

torch writes pickle protocol 2, where Python 3 builtins carry their Python 2
names (`__builtin__.set`); those names are mapped as Python's own unpickler maps
them (`_compat_pickle`) before the allowlist is consulted, so the mapping makes
nothing reachable that the allowlist does not name.
"""
import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from vifi_jax import torchscript
from vifi_jax.torchscript import ScriptObject

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UInt16Storage": np.uint16, "UInt32Storage": np.uint32, "UInt64Storage": np.uint64,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
    "Float8_e4m3fnStorage": ml_dtypes.float8_e4m3fn, "Float8_e5m2Storage": ml_dtypes.float8_e5m2,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpointError(ValueError):
    """The pickle asks for something other than tensors and plain containers."""


class CheckpointReadError(ValueError):
    """The file is not a readable PyTorch checkpoint (truncated, corrupt, unknown layout)."""


class StorageType:
    """Stands for `torch.<Name>Storage` inside persistent ids."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class ConfigNode(dict):
    """Stands for yacs' `CfgNode` (a dict subclass) so ViFi-CLIP's config loads without yacs."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


def _rebuild_tensor(storage, offset, size, stride, *unused):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.array(view, order="C")


def _rebuild_parameter(data, *unused):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise UnsafeCheckpointError(f"numpy reconstruct of {cls!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _encode(text, encoding="latin1"):
    return text.encode(encoding)


def _specialised_list(items):
    """torch.jit._pickle.build_{int,double,bool,tensor}list: a typed TorchScript list, here a list."""
    return list(items)


def _restore_type_tag(value, type_name):
    """torch.jit._pickle.restore_type_tag: a container plus its TorchScript type name; keeps the container."""
    return value


def _device(name):
    """torch.device("cpu"): kept as its string."""
    if not isinstance(name, str):
        raise CheckpointReadError(f"torch.device of {name!r}")
    return name


def _complex(real=0.0, imag=0.0):
    if not all(isinstance(x, (int, float)) for x in (real, imag)):
        raise CheckpointReadError(f"complex({real!r}, {imag!r})")
    return complex(real, imag)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("yacs.config", "CfgNode"): ConfigNode,
    ("builtins", "complex"): _complex,
    ("torch", "device"): _device,
    ("torch.jit._pickle", "build_intlist"): _specialised_list,
    ("torch.jit._pickle", "build_doublelist"): _specialised_list,
    ("torch.jit._pickle", "build_boollist"): _specialised_list,
    ("torch.jit._pickle", "build_tensorlist"): _specialised_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}

# Globals that torch's picklers (torch/serialization.py and the TorchScript pickler in
# torch/csrc/jit/serialization/pickler.cpp) can write, but that hold something other than plain data.
_UNSUPPORTED = {
    ("torch._utils", "_rebuild_qtensor"): "a quantized tensor",
    ("torch._utils", "_rebuild_sparse_tensor"): "a sparse tensor",
    ("torch._utils", "_rebuild_sparse_csr_tensor"): "a sparse tensor",
    ("torch._utils", "_rebuild_nested_tensor"): "a nested tensor",
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): "a device tensor",
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): "a meta tensor",
    ("torch._utils", "_rebuild_wrapper_subclass"): "a tensor subclass",
    ("torch._tensor", "_rebuild_from_type"): "a tensor subclass or a tensor with Python attributes",
    ("torch._tensor", "_rebuild_from_type_v2"): "a tensor subclass or a tensor with Python attributes",
    ("torch.jit._pickle", "build_tensor_from_id"): "a reference into a TorchScript tensor table (RPC payloads)",
    ("torch.distributed.rpc", "rref"): "a distributed RRef",
    ("__main__", "TensorID"): "a pre-1.3 TorchScript tensor reference",
    ("__main__", "IntList"): "a pre-1.3 TorchScript list",
    ("torch", "per_tensor_affine"): "a quantization scheme",
    ("torch", "per_channel_affine"): "a quantization scheme",
    ("torch", "per_tensor_symmetric"): "a quantization scheme",
    ("torch", "per_channel_symmetric"): "a quantization scheme",
    ("torch", "per_channel_affine_float_qparams"): "a quantization scheme",
}


def _protocol(stream):
    """The pickle protocol of the pickle starting at the stream's position (0 and 1 have no PROTO opcode)."""
    start = stream.tell()
    head = stream.read(2)
    stream.seek(start)
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else 0


def python3_name(module, name, protocol):
    """The global a protocol < 3 pickle means, by Python's own rule (`pickle._Unpickler.find_class`)."""
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, read_storage, path, script_declarations=None):
        self.protocol = _protocol(file)
        super().__init__(file, encoding="utf-8")
        self.read_storage = read_storage
        self.path = path
        self.storages = {}
        self.script_types = torchscript.ScriptTypes(script_declarations or {}, path)

    def find_class(self, module, name):
        written = f"{module}.{name}"
        module, name = python3_name(module, name, self.protocol)
        shown = written if f"{module}.{name}" == written else f"{written} (Python 3: {module}.{name})"
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(name)
        if module.startswith("__torch__"):
            return self.script_types(module, name)
        if (module, name) in _UNSUPPORTED or (module == "torch" and name.endswith("Storage")):
            what = _UNSUPPORTED.get((module, name), "a storage of a type without a numpy equivalent")
            raise CheckpointReadError(f"{self.path}: holds {what} ({shown}), which vifi_jax does not read; "
                                      "convert it to plain dense tensors with torch first")
        raise UnsafeCheckpointError(
            f"{self.path}: the pickle wants to call {shown}, which is neither a tensor nor plain data; "
            "refusing to load it (nothing was executed). Only load checkpoints from sources you trust, "
            "and convert them with torch itself if you do.")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointReadError(f"{self.path}: unknown persistent id {pid!r}")
        storage_type, key, _, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, StorageType):
            raise CheckpointReadError(f"{self.path}: storage of unknown type {storage_type!r}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = self.read_storage(key, storage_type.dtype, numel)
        storage = self.storages[key]
        if view is not None:
            _, offset, size = view
            return storage[offset:offset + size]
        return storage


def load(path):
    """Load a torch.save / torch.jit.save file as nested containers of numpy arrays."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def _load_zip(path):
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointReadError(f"{path} is not a readable zip archive ({e}); the file may be truncated") from e
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        raise CheckpointReadError(f"{path} is a zip archive but holds no '<name>/data.pkl': not a PyTorch file")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
    endian = "<" if byteorder == "little" else ">"

    def read_storage(key, dtype, numel):
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except (KeyError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointReadError(f"{path}: tensor storage {key} is missing or corrupt ({e})") from e
        if len(raw) < numel * dtype.itemsize:
            raise CheckpointReadError(f"{path}: tensor storage {key} holds {len(raw)} bytes, "
                                      f"expected {numel * dtype.itemsize}; the file is truncated")
        return np.frombuffer(raw, dtype.newbyteorder(endian), count=numel).astype(dtype)

    try:
        data = archive.read(pickles[0])
        code = {name[len(prefix + "code/"):-len(".py")].replace("/", "."): archive.read(name)
                for name in names if name.startswith(prefix + "code/") and name.endswith(".py")}
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointReadError(f"{path}: the archive is corrupt ({e}); the file may be truncated") from e
    return _unpickle(io.BytesIO(data), read_storage, path, torchscript.declarations(code))


def _unpickle(stream, read_storage, path, script_declarations=None):
    unpickler = _RestrictedUnpickler(stream, read_storage, path, script_declarations)
    try:
        return unpickler.load()
    except (UnsafeCheckpointError, CheckpointReadError, torchscript.ScriptError):
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt pickle
        raise CheckpointReadError(f"{path}: cannot parse the checkpoint pickle ({type(e).__name__}: {e})") from e


def _load_legacy(path):
    """torch < 1.6: magic, protocol, sys info, object pickle, storage keys, then raw storages."""
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())
    header = _RestrictedUnpickler(stream, None, path)
    try:
        magic = header.load()
    except Exception as e:  # noqa: BLE001
        raise CheckpointReadError(f"{path} is neither a zip nor a legacy PyTorch file ({e})") from e
    if magic != _LEGACY_MAGIC:
        raise CheckpointReadError(f"{path} is not a PyTorch checkpoint (bad magic number)")
    if _RestrictedUnpickler(stream, None, path).load() != _LEGACY_PROTOCOL:
        raise CheckpointReadError(f"{path}: unsupported legacy PyTorch protocol")
    _RestrictedUnpickler(stream, None, path).load()  # sys info

    start = stream.tell()
    sizes = {}

    def record_size(key, dtype, numel):
        sizes[key] = (dtype, numel)
        return np.zeros(numel, dtype)

    _unpickle(stream, record_size, path)  # first pass: learn which storages exist
    storages = {}
    for key in _RestrictedUnpickler(stream, None, path).load():
        dtype, numel = sizes[str(key)]
        header = stream.read(8)
        raw = stream.read(numel * dtype.itemsize)
        if len(header) != 8 or struct.unpack("<q", header)[0] != numel or len(raw) != numel * dtype.itemsize:
            raise CheckpointReadError(f"{path}: storage {key} is truncated or inconsistent")
        storages[str(key)] = np.frombuffer(raw, dtype)
    stream.seek(start)
    return _unpickle(stream, lambda key, dtype, numel: storages[key], path)


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

    def to_torch(value):
        if isinstance(value, dict):
            return {k: to_torch(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            if value.dtype == ml_dtypes.bfloat16:
                return torch.from_numpy(value.view(np.uint16).copy()).view(torch.bfloat16)
            return torch.from_numpy(np.array(value, order="C"))
        return value

    torch.save(to_torch(obj), os.fspath(path))
