"""The torch-free reader returns exactly what torch.load / torch.jit.load return, and refuses the rest."""
import collections
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from conftest import fake_yacs, perturbed_reference, write_openai_jit_archive
from vifi_jax import torch_files


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


def test_reader_equals_torch_jit_load_on_an_openai_style_archive(tmp_path, openai_model):
    path = write_openai_jit_archive(perturbed_reference(openai_model), openai_model, tmp_path / "ViT-tiny.pt")
    ours = torch_files.state_dict(torch_files.load(path))
    theirs = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert set(ours) == set(theirs)
    assert ours["visual.conv1.weight"].dtype == np.float16
    for key, value in theirs.items():
        assert_same(ours[key], value, key)


def test_yacs_config_loads_without_yacs(tmp_path):
    with fake_yacs() as CfgNode:
        config = CfgNode({"TRAIN": CfgNode({"LR": 8e-6, "EPOCHS": 10}), "DATA": CfgNode({"NUM_FRAMES": 32})})
        torch.save({"model": {"module.logit_scale": torch.tensor(4.6)}, "config": config}, tmp_path / "v.pth")
    loaded = torch_files.load(tmp_path / "v.pth")
    assert loaded["config"]["TRAIN"]["LR"] == 8e-6 and loaded["config"]["DATA"]["NUM_FRAMES"] == 32
    assert isinstance(loaded["config"], torch_files.ConfigNode)


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
