"""vifi_jax: ViFi-CLIP (CVPR 2023) in JAX/Flax, exact to the official model.

The public names resolve lazily, so `python -m vifi_jax.convert` and `import vifi_jax.tokenizer`
do not import the rest of the package first.
"""
import importlib

_PUBLIC = {"Model": "vifi_jax.api", "init": "vifi_jax.api", "load": "vifi_jax.api",
           "load_video": "vifi_jax.api", "tokenize": "vifi_jax.tokenizer"}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'vifi_jax' has no attribute {name!r}")
