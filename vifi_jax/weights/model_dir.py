"""A vifi_jax model directory: `config.json` (model fields) + `params/` (Orbax, fp32).

Reading one checks the config's fields and the stored array shapes against the model they describe
before anything is allocated, so a damaged or hostile directory ends in an error naming the field or the
parameter, not in a million-layer trace or a 50 GB allocation.
"""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from data_pipelines import files
from vifi_jax.models import clip, vifi

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
MAX_CONFIG_BYTES = 1 << 20


class ModelDirError(ValueError):
    """A directory that is not a usable vifi_jax model."""


def is_model_dir(directory):
    return os.path.isfile(os.path.join(directory, CONFIG_FILE)) and os.path.isdir(os.path.join(directory, PARAMS_DIR))


def save(directory, config, params):
    """Write `config` and `params` under `directory` (created; an existing model there is replaced).

    With several JAX processes every process calls this (Orbax coordinates); process 0 writes the files.
    """
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    params = jax.tree.map(np.asarray, params)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, PARAMS_DIR), params, force=True)
    if jax.process_index() == 0:
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)


def read_config(directory):
    """The model fields of a model directory, checked (`clip.check_fields`)."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{directory} is not a vifi_jax model directory (no {CONFIG_FILE}); "
                                "convert PyTorch weights with `python -m vifi_jax.convert SRC DIR`")
    with files.open_regular(path, "model config") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelDirError(f"{path} is larger than {MAX_CONFIG_BYTES >> 10} KiB; not a model config")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDirError(f"{path} is not valid JSON ({error})") from error
    clip.check_fields(config, path)
    return config


def _stored_shapes(params_dir):
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(params_dir)
    tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", getattr(metadata, "item_metadata", metadata))
    return {path: (tuple(leaf.shape), np.dtype(leaf.dtype))
            for path, leaf in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def load(directory):
    """(config, params as nested numpy fp32 arrays) from a directory written by `save`."""
    directory = os.path.abspath(os.fspath(directory))
    config = read_config(directory)
    params_dir = os.path.join(directory, PARAMS_DIR)
    if not os.path.isdir(params_dir):
        raise ModelDirError(f"{directory} has a {CONFIG_FILE} but no {PARAMS_DIR}/ directory")
    expected = vifi.parameter_shapes(config)
    try:
        stored = _stored_shapes(params_dir)
    except Exception as error:  # noqa: BLE001 - Orbax/tensorstore raise many kinds on a damaged directory
        raise ModelDirError(f"{params_dir} is not a readable Orbax checkpoint ({type(error).__name__}: "
                            f"{error})") from error
    problems = [f"{p}: stored {stored[p][0]}, config implies {expected[p]}" for p in sorted(set(stored) & set(expected))
                if stored[p][0] != expected[p] or stored[p][1] != np.float32]
    problems += [f"{p}: missing" for p in sorted(set(expected) - set(stored))]
    problems += [f"{p}: not in the model" for p in sorted(set(stored) - set(expected))]
    if problems:
        raise ModelDirError(f"{directory}: parameters do not match {CONFIG_FILE}: " + "; ".join(problems[:10]))
    abstract = traverse_util.unflatten_dict(
        {p: jax.ShapeDtypeStruct(shape, np.float32) for p, shape in expected.items()}, sep="/")
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(params_dir, abstract)
    return config, jax.tree.map(np.asarray, params)
