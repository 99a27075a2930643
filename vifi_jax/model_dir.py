"""A vifi_jax model directory: `config.json` (model fields) + `params/` (Orbax, fp32)."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save(directory, config, params):
    """Write `config` and `params` under `directory` (created; an existing model there is replaced).

    With several JAX processes every process calls this (Orbax coordinates); process 0 writes the files.
    """
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    params = _to_numpy(params)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(directory, PARAMS_DIR), params, force=True)
    if jax.process_index() == 0:
        with open(os.path.join(directory, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)


def load(directory):
    """(config, params as nested numpy fp32 arrays) from a directory written by `save`."""
    directory = os.path.abspath(os.fspath(directory))
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory} is not a vifi_jax model directory (no {CONFIG_FILE}); "
                                "convert PyTorch weights with `python -m vifi_jax.convert SRC DIR`")
    with open(config_path) as f:
        config = json.load(f)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(directory, PARAMS_DIR))
    return config, _to_numpy(params)


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
