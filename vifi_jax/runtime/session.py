"""A model ready to run on a mesh, built from an experiment config: what training, evaluation, retrieval and
ahead-of-time compilation share.

Construction touches no device: the parameters stay in host memory (or, for an abstract session, are only
shapes) until `params` is first read, and then each device receives only its own shard, straight from host
memory. So an FSDP model is never whole on one device, and a session over the abstract devices of a TPU
topology (`devices=`) compiles without any.
"""
import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from vifi_jax.models import vifi
from vifi_jax.runtime import config_checks, encoder, sharding
from vifi_jax.weights import loading

log = logging.getLogger(__name__)


def place(host_params, mesh):
    """Host arrays -> global arrays in their FSDP shardings (`sharding.tree_shardings`), each device given
    only its own shard (also across processes, which all hold the same host arrays)."""
    def put(value, placement):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, placement, lambda index: value[index])
    return jax.tree.map(put, host_params, sharding.tree_shardings(mesh, host_params))


@dataclasses.dataclass(eq=False)
class Session:
    config: object       # the experiment config (configs/common.py)
    model_config: dict   # the model's CLIP fields (what a model directory's config.json holds)
    module: vifi.ViFiCLIP
    host_params: dict    # numpy arrays, or ShapeDtypeStructs for an abstract session
    mesh: jax.sharding.Mesh
    note: str | None = None  # says when the weights are random

    @property
    def abstract(self):
        return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(self.host_params))

    @functools.cached_property
    def params(self):
        """The parameters on the mesh, placed on first use."""
        if self.abstract:
            raise ValueError("an abstract session (built for compiling only) has no parameter values")
        return place(self.host_params, self.mesh)

    @property
    def param_shapes(self):
        """The parameters as ShapeDtypeStructs carrying their shardings."""
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), jnp.float32, sharding=s),
                            self.host_params, sharding.tree_shardings(self.mesh, self.host_params))

    @functools.cached_property
    def encoder(self):
        return encoder.Encoder(self.module, self.params)

    @property
    def weights(self):
        """What the parameters are: the config's `model.init`, or the random stand-in used instead of it."""
        init = self.config.model.init
        if self.note and not init.startswith(loading.RANDOM_PREFIX):
            return f"random:ViT-B/16 (in place of {init}, which could not be loaded)"
        return init

    def class_token_ids(self, names):
        """Token ids of the class texts the config's text mode builds for this model."""
        return vifi.class_token_ids(names, self.config.text_mode, self.module.learned_text_prompts)


def from_config(config, devices=None, abstract=False):
    """The Session of an experiment config: its checked fields, its weights (`weights.loading.read_model`;
    shapes only when `abstract`), its compute dtype and its ("data", "fsdp") mesh over `devices` (default:
    every device of the job)."""
    config_checks.check(config)
    log.info("model: %s%s", config.model.init, " (shapes only)" if abstract else "")
    model_config, host_params, note = loading.read_model(config.model, seed=config.seed, abstract=abstract)
    if model_config["image_resolution"] != config.data.input_size:
        raise config_checks.ConfigError(
            f"data.input_size={config.data.input_size} but the model ({config.model.init}) takes "
            f"{model_config['image_resolution']}x{model_config['image_resolution']} frames; set "
            f"--config.data.input_size={model_config['image_resolution']}")
    module = vifi.ViFiCLIP(**model_config, dtype=jnp.dtype(config.model.dtype))
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    return Session(config, model_config, module, host_params, mesh, note)
