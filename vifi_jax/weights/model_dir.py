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

from data_pipelines import files, outputs, storage
from vifi_jax.models import clip, vifi

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
MAX_CONFIG_BYTES = 1 << 20


class ModelDirError(ValueError):
    """A directory that is not a usable vifi_jax model."""


def is_model_dir(directory):
    if storage.is_remote(directory):
        return storage.exists(storage.join(directory, CONFIG_FILE)) and storage.isdir(storage.join(directory, PARAMS_DIR))
    return os.path.isfile(os.path.join(directory, CONFIG_FILE)) and os.path.isdir(os.path.join(directory, PARAMS_DIR))


def write(directory, config, params):
    """Write `config` and `params` into the new or empty `directory` (no swap; see `save`).

    With several JAX processes every process calls this (Orbax coordinates); process 0 writes the config,
    last: a directory with a config.json holds a whole model.
    """
    directory = storage.absolute(directory)
    params = jax.tree.map(np.asarray, params)
    files.check_room(directory, sum(x.nbytes for x in jax.tree.leaves(params)), "the model's parameters")
    storage.makedirs(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(storage.join(directory, PARAMS_DIR), params, force=True)
    if jax.process_index() == 0:
        with files.atomic_write(storage.join(directory, CONFIG_FILE), "model config") as f:
            json.dump(config, f, indent=2, sort_keys=True)


def save(directory, config, params):
    """Write a model at `directory`: into `<directory>.partial` first, then swapped in whole, so a kill at
    any moment leaves the old model or the new one. Only a vifi_jax model (or an empty directory) there is
    ever replaced. In a bucket, which has no rename, see `_save_in_bucket`."""
    if storage.is_remote(directory):
        return _save_in_bucket(os.fspath(directory), config, params)
    directory = os.path.abspath(os.fspath(directory))
    if os.path.lexists(directory) and not is_model_dir(directory) and not (
            os.path.isdir(directory) and not os.path.islink(directory) and not os.listdir(directory)):
        raise ModelDirError(f"{directory} exists and is not a vifi_jax model; it is left as it is: move it away "
                            "to let the run write its model there")
    staging = directory + ".partial"
    if jax.process_index() == 0 and os.path.lexists(staging):
        outputs.remove(staging)  # a save that was killed
    _sync("vifi_jax.model_dir: staging is clear")
    try:
        write(staging, config, params)
    except BaseException:
        if jax.process_index() == 0:
            outputs.remove_settled(staging)
        raise
    if jax.process_index() == 0:
        outputs.swap_in(staging, directory)
    _sync("vifi_jax.model_dir: the model is in place")


def _save_in_bucket(directory, config, params):
    """Replace a model in a bucket: its config.json goes first, then its params, then the new params are
    written and the new config.json last. A writer stopped on the way leaves a directory without config.json,
    which no loader takes for a model (`read_config` says so) and the next save replaces; the run's
    checkpoints, from which it resumes, are elsewhere and untouched."""
    names = set(storage.listdir(directory))
    if names - {CONFIG_FILE, PARAMS_DIR}:
        raise ModelDirError(f"{directory} holds {', '.join(sorted(names - {CONFIG_FILE, PARAMS_DIR}))}, which a "
                            "vifi_jax model does not; it is left as it is: move them away to let the run write its "
                            "model there")
    if jax.process_index() == 0:
        outputs.remove(storage.join(directory, CONFIG_FILE))
        outputs.remove(storage.join(directory, PARAMS_DIR))
    _sync("vifi_jax.model_dir: the old model is gone")
    write(directory, config, params)
    _sync("vifi_jax.model_dir: the model is in place")


def _sync(name):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _refuse_links(directory):
    """A model directory whose files are symbolic links would read other files or models: refused."""
    for root, dirs, names in os.walk(directory):
        for name in dirs + names:
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise ModelDirError(f"{path} is a symbolic link (to {os.readlink(path)}); a model directory must "
                                    "hold its own files: copy the target in place of the link")


def read_config(directory):
    """The model fields of a model directory, checked (`clip.check_fields`)."""
    path = storage.join(directory, CONFIG_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"{directory} is not a vifi_jax model directory (no {CONFIG_FILE}); "
                                "convert PyTorch weights with `python -m vifi_jax.convert SRC DIR`")
    config = files.read_json(path, "model config", "convert the weights again", MAX_CONFIG_BYTES)
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
    directory = storage.absolute(directory)
    if not storage.is_remote(directory):
        if os.path.islink(directory.rstrip(os.sep)):
            directory = os.path.realpath(directory)  # the directory itself may be a link; nothing inside it may
        _refuse_links(directory)
    config = read_config(directory)
    params_dir = storage.join(directory, PARAMS_DIR)
    if not storage.isdir(params_dir):
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
