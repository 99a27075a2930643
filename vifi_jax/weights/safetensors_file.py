"""Reading a `.safetensors` file defensively: the header is read and checked first (its size, every tensor's
dtype, shape and byte range, and that the ranges tile the data exactly, as the format requires), and then
only the declared ranges are read, through a memory map. A file whose header lies (a sparse file of a few KB
on disk that claims gigabytes, overlapping or out-of-range offsets) is refused before any large read.
"""
import json
import mmap
import os
import struct

import ml_dtypes
import numpy as np

from data_pipelines import files

MAX_HEADER_BYTES = 100 << 20
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file."""


def _header(f, path, file_size):
    if file_size < 8:
        raise SafetensorsError(f"{path} is too short to be a safetensors file ({file_size} bytes)")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > min(MAX_HEADER_BYTES, file_size - 8):
        raise SafetensorsError(f"{path}: its header claims {length} bytes, more than the file holds or "
                               f"{MAX_HEADER_BYTES >> 20} MiB")
    try:
        header = json.loads(f.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SafetensorsError(f"{path}: the header is not valid JSON ({' '.join(str(error).split())[:120]})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is not a JSON object")
    header.pop("__metadata__", None)
    return 8 + length, header


def _layout(header, path, data_size):
    """[(name, dtype, shape, start, end)] sorted by start; the ranges must tile [0, data_size) exactly."""
    tensors = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has no supported dtype "
                                   f"({entry.get('dtype') if isinstance(entry, dict) else entry!r})")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 2 ** 40 for d in shape)):
            raise SafetensorsError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise SafetensorsError(f"{path}: tensor {name!r} has data_offsets {offsets!r} outside the file's "
                                   f"{data_size} data bytes")
        dtype = np.dtype(DTYPES[entry["dtype"]])
        if int(np.prod(shape, dtype=object)) * dtype.itemsize != offsets[1] - offsets[0]:
            raise SafetensorsError(f"{path}: tensor {name!r} of shape {shape} and dtype {entry['dtype']} does not "
                                   f"fill its {offsets[1] - offsets[0]} bytes")
        tensors.append((name, dtype, tuple(shape), offsets[0], offsets[1]))
    tensors.sort(key=lambda t: (t[3], t[4]))
    position = 0
    for name, _, _, start, end in tensors:
        if start != position:
            what = "overlaps the tensor before it" if start < position else f"leaves a gap at byte {position}"
            raise SafetensorsError(f"{path}: tensor {name!r} {what}; the file is damaged")
        position = end
    if position != data_size:
        raise SafetensorsError(f"{path}: the tensors cover {position} of the file's {data_size} data bytes; the "
                               "file is damaged or not a safetensors file")
    return tensors


def load(path):
    """{name: numpy array} of a `.safetensors` file (copies, so the file is closed afterwards)."""
    with files.open_regular(path, "checkpoint") as f:
        file_size = os.fstat(f.fileno()).st_size
        start, header = _header(f, path, file_size)
        tensors = _layout(header, path, file_size - start)
        if not tensors:
            return {}
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return {name: np.frombuffer(mapped, dtype, count=(end - begin) // dtype.itemsize,
                                        offset=start + begin).reshape(shape).copy() if end > begin else
                    np.zeros(shape, dtype) for name, dtype, shape, begin, end in tensors}
