"""The torch-free reader returns exactly what torch.load / torch.jit.load return, and refuses the rest."""
import collections
import os
import pickle
import sys
import zipfile
from typing import Dict, List, Optional, Tuple

import ml_dtypes
import numpy as np
import pytest
import torch

import official
from conftest import perturbed_reference, write_openai_jit_archive, write_openai_script_archive
from vifi_jax.weights import safe_pickle, torch_files


def assert_same(ours, theirs, where="root"):
    if isinstance(theirs, torch.Tensor):
        want = theirs.detach()
        if want.dtype == torch.bfloat16:
            assert ours.dtype == ml_dtypes.bfloat16, where
            want, ours = want.float(), ours.astype(np.float32)
        want = want.numpy()
        assert ours.dtype == want.dtype and ours.shape == want.shape, where
        np.testing.assert_array_equal(ours, want, err_msg=where)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, where


def varied_checkpoint():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    tensors = collections.OrderedDict(
        fp32=torch.randn(3, 4, generator=g), fp16=torch.randn(7, generator=g).half(),
        bf16=torch.randn(2, 3, generator=g).bfloat16(), fp64=torch.randn(2, generator=g).double(),
        int64=torch.arange(5), int32=torch.arange(3, dtype=torch.int32), boolean=torch.tensor([True, False]),
        scalar=torch.tensor(4.6052), transposed=base.t(), view=base[2:4, 1:], shared=base,
        conv=torch.randn(8, 3, 4, 4, generator=g).permute(0, 2, 3, 1), empty=torch.zeros(0, 3))
    return {"model": tensors, "epoch": 9, "max_accuracy": 0.5,
            "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                          "param_groups": [{"lr": 8e-6, "betas": (0.9, 0.98), "params": [0]}]}}


@pytest.mark.parametrize("zip_format", [True, False])
def test_reader_equals_torch_load(tmp_path, zip_format):
    path = tmp_path / "ckpt.pth"
    torch.save(varied_checkpoint(), path, _use_new_zipfile_serialization=zip_format)
    assert_same(torch_files.load(path), torch.load(path, weights_only=True))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("write", [write_openai_jit_archive, write_openai_script_archive], ids=["trace", "script"])
def test_reader_equals_torch_jit_load_on_openai_style_archives(tmp_path, openai_model, write, dtype):
    path = write(perturbed_reference(openai_model), openai_model, tmp_path / "ViT-tiny.pt", dtype)
    ours = torch_files.state_dict(torch_files.load(path))
    theirs = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert set(ours) == set(theirs)
    assert ours["visual.conv1.weight"].dtype == np.dtype(dtype)
    for key, value in theirs.items():
        assert_same(ours[key], value, key)


class ScriptAttributes(torch.nn.Module):
    """Module state of every kind the TorchScript pickler writes as plain data."""
    ints: List[int]
    floats: List[float]
    bools: List[bool]
    tensors: List[torch.Tensor]
    named: Dict[str, torch.Tensor]
    counts: Dict[str, int]
    pair: Tuple[int, str]
    nothing: Optional[torch.Tensor]

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.ints, self.floats, self.bools = [1, -2, 1 << 40], [1.5, -0.25], [True, False]
        self.tensors, self.named = [torch.ones(2), torch.arange(3)], {"a": torch.zeros(1, 2)}
        self.counts, self.pair, self.nothing = {"a": 1}, (7, "x"), None
        self.number, self.device = 1 + 2j, torch.device("cpu")
        self.register_buffer("steps", torch.arange(4))

    def forward(self, x):
        return self.linear(x) * self.ints[0] + self.floats[0]


def test_every_plain_data_global_of_the_torchscript_pickler_is_read(tmp_path):
    path = tmp_path / "attributes.pt"
    torch.jit.script(ScriptAttributes()).save(str(path))
    theirs = torch.jit.load(str(path))
    ours = torch_files.load(path).attributes
    for name in ("ints", "floats", "bools", "counts", "pair", "nothing", "number"):
        assert ours[name] == getattr(theirs, name), name
    assert ours["device"] == "cpu" and isinstance(ours["linear"], torch_files.ScriptObject)
    assert_same(ours["tensors"], theirs.tensors)
    assert_same(ours["named"], dict(theirs.named))
    assert_same(torch_files.state_dict(torch_files.load(path)), dict(theirs.state_dict()))


def plain(node):
    """A yacs CfgNode (or our stand-in) as nested plain dicts."""
    return {k: plain(v) if isinstance(v, dict) else v for k, v in node.items()}


def test_official_yacs_config_loads_without_importing_yacs(tmp_path, monkeypatch):
    config = official.yacs_config(prompting=True)
    torch.save({"model": {"module.logit_scale": torch.tensor(4.6)}, "config": config}, tmp_path / "v.pth")
    monkeypatch.setitem(sys.modules, "yacs", None)  # any import of yacs would now fail
    monkeypatch.setitem(sys.modules, "yacs.config", None)
    loaded = torch_files.load(tmp_path / "v.pth")["config"]
    assert isinstance(loaded, torch_files.ConfigNode) and plain(loaded) == plain(config)
    assert loaded["AUG"]["SCALES"] == (1, 0.875, 0.75, 0.66) and loaded["MODEL"]["PRETRAINED"] is None
    assert loaded.yacs_state["__deprecated_keys__"] == set()  # written as protocol 2's `__builtin__.set`


def zip_checkpoint(path, data_pkl):
    """A torch.save-style zip whose pickle is `data_pkl`, for pickles torch would not write itself."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
    return path


def global_pickle(module, name, protocol=2):
    """A pickle that names one global (GLOBAL opcode) and stops; loading it must refuse at the name."""
    return bytes([0x80, protocol]) + f"c{module}\n{name}\n".encode() + b"."


def test_protocol_2_names_map_as_python_maps_them(tmp_path):
    set_pickle = pickle.dumps({"s": {1, 2}}, protocol=2)
    assert b"__builtin__" in set_pickle
    assert torch_files.load(zip_checkpoint(tmp_path / "set.pth", set_pickle)) == {"s": {1, 2}}
    for module, name, meant in (("__builtin__", "eval", "builtins.eval"),
                                ("copy_reg", "_reconstructor", "copyreg._reconstructor")):
        path = zip_checkpoint(tmp_path / f"{name}.pth", global_pickle(module, name))
        with pytest.raises(torch_files.UnsafeCheckpointError, match=rf"{module}\.{name} \(Python 3: {meant}\)"):
            torch_files.load(path)
    newer = zip_checkpoint(tmp_path / "p4.pth", global_pickle("__builtin__", "set", protocol=4))
    with pytest.raises(torch_files.UnsafeCheckpointError, match=r"call __builtin__\.set,"):
        torch_files.load(newer)  # protocol >= 3 pickles mean names literally, as in Python


@pytest.mark.parametrize("module,name", sorted(safe_pickle.UNSUPPORTED) + [("torch", "QInt8Storage")])
def test_torch_globals_without_plain_data_are_refused_by_name(tmp_path, module, name):
    path = zip_checkpoint(tmp_path / "x.pth", global_pickle(module, name))
    with pytest.raises(torch_files.CheckpointReadError, match=rf"{path}: holds .*\({module}\.{name}\)"):
        torch_files.load(path)


def tensor_with_an_attribute():
    tensor = torch.ones(2)
    tensor.note = "x"  # torch.save writes such a tensor with torch._tensor._rebuild_from_type_v2
    return tensor


@pytest.mark.parametrize("make,rebuild", [
    (lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8), "_rebuild_qtensor"),
    (lambda: torch.eye(3).to_sparse(), "_rebuild_sparse_tensor"),
    (tensor_with_an_attribute, "_rebuild_from_type_v2")], ids=["quantized", "sparse", "attribute"])
def test_real_quantized_sparse_and_decorated_tensors_are_refused_by_name(tmp_path, make, rebuild):
    torch.save({"w": make()}, tmp_path / "x.pth")
    with pytest.raises(torch_files.CheckpointReadError, match=rebuild):
        torch_files.load(tmp_path / "x.pth")


class _Hostile:
    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("zip_format", [True, False])
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, zip_format):
    sentinel = tmp_path / "pwned"
    hostile = _Hostile()
    hostile.sentinel = sentinel
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "payload": hostile}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(torch_files.UnsafeCheckpointError, match=r"(posix|os)\.system.*nothing was executed"):
        torch_files.load(path)
    assert not sentinel.exists()


def test_hostile_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": __import__("subprocess").Popen}, protocol=2))
    with pytest.raises(torch_files.CheckpointReadError):
        torch_files.load(path)


def test_truncated_archive_raises_a_clear_error(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"w": torch.randn(1000)}, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        broken = tmp_path / f"cut{cut}.pth"
        broken.write_bytes(data[:cut])
        with pytest.raises(torch_files.CheckpointReadError, match=str(broken)):
            torch_files.load(broken)


def test_missing_storage_and_missing_file_are_named(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"w": torch.randn(10)}, path)
    damaged = tmp_path / "damaged.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("/data/0"):
                dst.writestr(item, src.read(item.filename))
    with pytest.raises(torch_files.CheckpointReadError, match="storage 0 is missing"):
        torch_files.load(damaged)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        torch_files.load(tmp_path / "nope.pth")


def test_save_round_trips_through_torch_load(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(1.5, np.float32),
              "h": np.ones(3, np.float16), "b": np.ones(2, ml_dtypes.bfloat16)}
    torch_files.save({"model": arrays}, tmp_path / "out.pth")
    loaded = torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    assert loaded["s"].shape == () and loaded["b"].dtype == torch.bfloat16
    np.testing.assert_array_equal(loaded["a"].numpy(), arrays["a"])
    assert_same(torch_files.load(tmp_path / "out.pth")["model"], loaded)
