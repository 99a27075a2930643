"""Checkpoint pickles as plain data: nothing in the file chooses what runs, and nothing it says is trusted.

Unpickling normally calls whatever the file names. Here, Python's pure-Python unpickler runs with:
- names resolved only through an allowlist of functions that build plain data (tensors, containers, numbers,
  numpy scalars), after Python's own protocol-2 renaming (`__builtin__.set` is `builtins.set`);
- BUILD (set an object's state) allowed only on instances of the few classes that take state, with the
  state checked, never on a function, a class or a numpy dtype's internals;
- tensors checked before any memory is touched: a view must fit its storage (offset ≥ 0, strides ≥ 0,
  offset + Σ(size−1)·stride < numel), and storages are read by the caller's `read_storage` within the
  file's real sizes and a memory budget.
"""
import _compat_pickle
import collections
import pickle

import ml_dtypes
import numpy as np

from vifi_jax.weights import torchscript

MAX_PICKLE_BYTES = 16 << 20  # a 150M-parameter training checkpoint's pickle is ~100 KB
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UInt16Storage": np.uint16, "UInt32Storage": np.uint32, "UInt64Storage": np.uint64,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
    "Float8_e4m3fnStorage": ml_dtypes.float8_e4m3fn, "Float8_e5m2Storage": ml_dtypes.float8_e5m2,
}
SCALAR_KINDS = "biufc"  # numpy dtypes a checkpoint may hold scalars of: bool, ints, floats, complex


class UnsafeCheckpointError(ValueError):
    """The pickle asks for something other than tensors and plain data."""


class CheckpointReadError(ValueError):
    """The file is not a readable PyTorch checkpoint (truncated, corrupt, unknown layout, out of bounds)."""


class StorageType:
    """Stands for `torch.<Name>Storage` inside persistent ids."""

    def __init__(self, name):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class ConfigNode(dict):
    """Stands for yacs' `CfgNode` (a dict subclass), so ViFi-CLIP's config loads without yacs; its yacs
    attributes (`__immutable__`, `__deprecated_keys__`, ...) are kept in `yacs_state`."""
    yacs_state = None


class _Dtype:
    """A numpy dtype as a pickle describes it: a plain numeric kind and a byte order, nothing else."""

    def __init__(self, name, align=False, copy=False):
        if not isinstance(name, str) or len(name) > 4 or not name or name[0] not in SCALAR_KINDS:
            raise UnsafeCheckpointError(f"numpy dtype {name!r}: only plain numeric dtypes are read")
        self.dtype = np.dtype(name)

    def set_state(self, state):
        """numpy's dtype state is (version, byte order, subarray, names, fields, elsize, alignment, flags)."""
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")
                and state[2] is None and state[3] is None and state[4] is None):
            raise UnsafeCheckpointError(f"numpy dtype state {state!r}: only plain numeric dtypes are read")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class Storage:
    """A storage a persistent id names: its key, dtype and element count (nothing read yet)."""

    def __init__(self, key, dtype, numel, offset=0, root_numel=None):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset
        self.root_numel = numel if root_numel is None else root_numel


def _int(value, what):
    if type(value) is not int:
        raise CheckpointReadError(f"{what} is {value!r}, not an integer")
    return value


def _ints(values, what):
    if type(values) not in (tuple, list) or len(values) > 64:
        raise CheckpointReadError(f"{what} is {values!r}, not a tuple of at most 64 integers")
    return tuple(_int(v, what) for v in values)


def _scalar(dtype, data=None):
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise CheckpointReadError(f"numpy scalar of {dtype!r} from {data!r}")
    return np.frombuffer(data, dtype=dtype.dtype)[0]


def _encode(text, encoding="latin1"):
    """`_codecs.encode`: how protocol 2 writes bytes (as latin-1 text)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointReadError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _specialised_list(items):
    """torch.jit._pickle.build_{int,double,bool,tensor}list: a typed TorchScript list, here a list."""
    if not isinstance(items, list):
        raise CheckpointReadError(f"TorchScript list of {type(items).__name__}")
    return items


def _restore_type_tag(value, type_name):
    """torch.jit._pickle.restore_type_tag: a container plus its TorchScript type name; keeps the container."""
    return value


def _device(name):
    """torch.device("cpu"): kept as its string."""
    if not isinstance(name, str):
        raise CheckpointReadError(f"torch.device of {name!r}")
    return name


def _complex(real=0.0, imag=0.0):
    if not all(type(x) in (int, float) for x in (real, imag)):
        raise CheckpointReadError(f"complex({real!r}, {imag!r})")
    return complex(real, imag)


def _set(items=()):
    if not isinstance(items, (list, tuple)):
        raise CheckpointReadError(f"set of {type(items).__name__}")
    return set(items)


def _ordered_dict(items=()):
    if not isinstance(items, (list, tuple)):
        raise CheckpointReadError(f"OrderedDict of {type(items).__name__}")
    return collections.OrderedDict(items)


class _Function:
    """An allowed global as the pickle sees it: callable, but with no state a BUILD could change."""
    __slots__ = ("name", "function")

    def __init__(self, name, function):
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)


# Globals that torch's picklers (torch/serialization.py and the TorchScript pickler in
# torch/csrc/jit/serialization/pickler.cpp) can write, but that hold something other than plain data.
UNSUPPORTED = {
    ("numpy", "ndarray"): "a numpy array",
    ("numpy.core.multiarray", "_reconstruct"): "a numpy array",
    ("numpy._core.multiarray", "_reconstruct"): "a numpy array",
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


def python3_name(module, name, protocol):
    """The global a protocol < 3 pickle means, by Python's own rule (`pickle._Unpickler.find_class`)."""
    if protocol < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


def protocol_at(stream):
    """The pickle protocol of the pickle starting at the stream's position (0 and 1 have no PROTO opcode)."""
    start = stream.tell()
    head = stream.read(2)
    stream.seek(start)
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else 0


class _LimitedReader:
    """The reads of a pickle from `stream`, refused past `limit` bytes and checked before they happen (a
    length field of 4 GB is refused, not read); reads nothing ahead, so the stream stays where it ends."""

    def __init__(self, stream, limit, path):
        self.stream, self.left, self.path = stream, limit, path

    def _take(self, size):
        if size > self.left:
            raise CheckpointReadError(f"{self.path}: the pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB (or "
                                      "declares a field that large); not a model checkpoint")
        self.left -= size

    def read(self, size=-1):
        self._take(self.left + 1 if size < 0 else size)
        return self.stream.read(size)

    def readinto(self, buffer):
        self._take(len(buffer))
        return self.stream.readinto(buffer)

    def readline(self):
        line = self.stream.readline(self.left + 1)
        self._take(len(line))
        return line


class Unpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD can be replaced
    """Unpickle with the rules above; `make_tensor(storage, offset, size, stride)` makes each tensor."""
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, stream, path, storage_for, make_tensor, script_declarations=None):
        self.protocol = protocol_at(stream)
        super().__init__(_LimitedReader(stream, MAX_PICKLE_BYTES, path), encoding="utf-8")
        self.path, self.storage_for, self.make_tensor = path, storage_for, make_tensor
        self.script_types = torchscript.ScriptTypes(script_declarations or {}, path)
        self.functions = {key: _Function(f"{key[0]}.{key[1]}", function) for key, function in {
            ("torch._utils", "_rebuild_tensor_v2"): self.rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): self.rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _keep_tensor,
            ("torch._utils", "_rebuild_parameter_with_state"): _keep_tensor,
            ("builtins", "complex"): _complex,
            ("builtins", "set"): _set,
            ("builtins", "frozenset"): lambda items=(): frozenset(_set(items)),
            ("collections", "OrderedDict"): _ordered_dict,
            ("_codecs", "encode"): _encode,
            ("numpy", "dtype"): _Dtype,
            ("numpy.core.multiarray", "scalar"): _scalar,
            ("numpy._core.multiarray", "scalar"): _scalar,
            ("torch", "device"): _device,
            ("torch.jit._pickle", "build_intlist"): _specialised_list,
            ("torch.jit._pickle", "build_doublelist"): _specialised_list,
            ("torch.jit._pickle", "build_boollist"): _specialised_list,
            ("torch.jit._pickle", "build_tensorlist"): _specialised_list,
            ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
        }.items()}

    def load(self):
        try:
            return super().load()
        except (UnsafeCheckpointError, CheckpointReadError, torchscript.ScriptError):
            raise
        except Exception as error:  # noqa: BLE001 - any parse failure means a corrupt or truncated pickle
            raise CheckpointReadError(f"{self.path}: cannot parse the checkpoint pickle "
                                      f"({type(error).__name__}: {error})") from error

    def find_class(self, module, name):
        written = f"{module}.{name}"
        module, name = python3_name(module, name, self.protocol)
        shown = written if f"{module}.{name}" == written else f"{written} (Python 3: {module}.{name})"
        if (module, name) in self.functions:
            return self.functions[(module, name)]
        if (module, name) == ("yacs.config", "CfgNode"):
            return ConfigNode
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        if module.startswith("__torch__"):
            return self.script_types(module, name)
        if (module, name) in UNSUPPORTED or (module == "torch" and name.endswith("Storage")):
            what = UNSUPPORTED.get((module, name), "a storage of a type without a numpy equivalent")
            raise CheckpointReadError(f"{self.path}: holds {what} ({shown}), which vifi_jax does not read; "
                                      "convert it to plain dense tensors with torch first")
        raise UnsafeCheckpointError(
            f"{self.path}: the pickle wants to call {shown}, which is neither a tensor nor plain data; "
            "refusing to load it (nothing was executed). Only load checkpoints from sources you trust, "
            "and convert them with torch itself if you do.")

    def persistent_load(self, pid):
        """('storage', type, key, location, numel[, (view key, offset, size)]) -> a Storage."""
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise CheckpointReadError(f"{self.path}: unknown persistent id {pid!r}"[:300])
        storage_type, key, _, numel = pid[1:5]
        if not isinstance(storage_type, StorageType) or type(key) not in (str, int):
            raise CheckpointReadError(f"{self.path}: storage of unknown type {storage_type!r}")
        storage = self.storage_for(str(key), storage_type.dtype, _int(numel, "storage size"))
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        _, offset, size = view if isinstance(view, tuple) and len(view) == 3 else (None, None, None)
        offset, size = _int(offset, "storage view offset"), _int(size, "storage view size")
        if offset < 0 or size < 0 or offset + size > storage.numel:
            raise CheckpointReadError(f"{self.path}: storage view [{offset}, {offset + size}) of a "
                                      f"{storage.numel}-element storage {key}")
        return Storage(storage.key, storage.dtype, size, storage.offset + offset, storage.root_numel)

    def rebuild_tensor(self, storage, offset, size, stride, *unused):
        """torch._utils._rebuild_tensor_v2: the view is checked against its storage before anything is made."""
        if not isinstance(storage, Storage):
            raise CheckpointReadError(f"{self.path}: a tensor whose storage is {type(storage).__name__}")
        offset, size, stride = _int(offset, "tensor offset"), _ints(size, "tensor size"), _ints(stride, "stride")
        if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
            raise CheckpointReadError(f"{self.path}: tensor view offset {offset}, size {size}, stride {stride} "
                                      "is malformed (negative or mismatched)")
        numel = int(np.prod(size, dtype=object))
        if numel and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel:
            raise CheckpointReadError(f"{self.path}: tensor view offset {offset}, size {size}, stride {stride} "
                                      f"reaches past its {storage.numel}-element storage {storage.key}")
        return self.make_tensor(storage, offset, size, stride)

    def load_build(self):
        """BUILD only on instances that take state, with the state checked."""
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, torchscript.ScriptObject):
            target.__setstate__(state)
        elif isinstance(target, ConfigNode) and isinstance(state, dict):
            target.yacs_state = dict(state)
        elif isinstance(target, collections.OrderedDict) and _plain_attributes(state):
            target.__dict__.update(state)  # e.g. the `_metadata` of a state dict
        elif isinstance(target, _Dtype):
            target.set_state(state)
        else:
            what = target.name if isinstance(target, _Function) else f"class {target.__name__}" if isinstance(
                target, type) else f"a {type(target).__name__}"
            raise UnsafeCheckpointError(f"{self.path}: the pickle tries to set the state of {what}; refusing to "
                                        "load it (nothing was executed)")

    dispatch[pickle.BUILD[0]] = load_build


def _keep_tensor(data, *unused):
    """torch._utils._rebuild_parameter(data, requires_grad, hooks[, state]): the tensor itself."""
    return data


def _plain_attributes(state):
    return isinstance(state, dict) and all(isinstance(k, str) and not k.startswith("__") for k in state)
