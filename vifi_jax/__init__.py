"""vifi_jax: ViFi-CLIP (CVPR 2023) in JAX/Flax, exact to the official model."""
from vifi_jax.api import Model, init, load
from vifi_jax.tokenizer import tokenize

__all__ = ["Model", "init", "load", "tokenize"]
