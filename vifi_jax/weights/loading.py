"""The weights an experiment config names, as host arrays: a checkpoint, a random initialisation, and the
fresh deep prompts bridge-and-prompt adds to a fine-tuned checkpoint.

Everything here stays in host memory (numpy), so a caller places the parameters straight into their
shardings; with `abstract=True` nothing is read or drawn at all, only the shapes are traced.
"""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vifi_jax import tokenizer
from vifi_jax.models import clip, vifi
from vifi_jax.weights import convert

log = logging.getLogger(__name__)
CTX_PATH = "prompt_learner/ctx"
RANDOM_PREFIX = "random:"


def variant_config(variant, **fields):
    """CLIP fields of a named variant (`clip.VARIANTS`), fields overridable."""
    if variant not in clip.VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(clip.VARIANTS)}")
    return {**clip.VARIANTS[variant], **fields}


def init_params(config, seed=0):
    """A random initialisation of the model `config` describes, as numpy arrays."""
    res = config["image_resolution"]
    frames = jnp.zeros((1, 1, res, res, 3), jnp.float32)
    ids = jnp.zeros((1, config["context_length"]), jnp.int32)  # room for any number of text prompts
    params = _jitted_init(tuple(sorted(config.items())))(jax.random.PRNGKey(seed), frames, ids)["params"]
    return jax.tree.map(np.asarray, with_initial_text_context(params, config))


@functools.lru_cache(maxsize=8)
def _jitted_init(fields):
    """One traced and compiled initialiser per model config in a process (seeds differ by argument only)."""
    return jax.jit(vifi.ViFiCLIP(**dict(fields)).init)


def abstract_params(config):
    """The parameters of the model `config` describes as float32 ShapeDtypeStructs (nothing allocated)."""
    shapes = vifi.parameter_shapes(config)
    return traverse_util.unflatten_dict({path: jax.ShapeDtypeStruct(shape, jnp.float32)
                                         for path, shape in shapes.items()}, sep="/")


def with_initial_text_context(params, config):
    """The official start of the text context: with at most 4 prompts, the token embeddings of the first
    words of "a photo of a" (`VLPromptLearner` with CTX_INIT); with more, the N(0, 0.02) draw as it is."""
    n = config.get("text_prompts", 0)
    if not config.get("text_prompt_depth", 0) or n > vifi.MAX_CTX_INIT_PROMPTS:
        return params
    ids = tokenizer.tokenize(vifi.CTX_INIT)[0, 1:1 + n]
    table = params["token_embedding"]["embedding"]
    return {**params, "prompt_learner": {"ctx": np.asarray(table)[ids]}}


def read_model(model_config, seed=0, abstract=False):
    """(CLIP fields, host params, note) from an experiment config's `model` block; the note says when the
    weights are random.

    `init` is anything `vifi_jax.load` accepts or "random:<variant>" (with `fields` overriding CLIP fields).
    Prompt fields add freshly initialised deep prompts (N(0, 0.02)) to loaded weights that lack them,
    which is how bridge-and-prompt starts from a fine-tuned K400 checkpoint. `abstract`: the params are
    ShapeDtypeStructs and no file is read beyond what the model's fields need.
    """
    prompts = {k: int(model_config[k]) for k in clip.PROMPT_FIELDS}
    extra = dict(prompts, remat=bool(model_config.get("remat", False)))
    fields = dict(model_config.get("fields", {}) or {})
    init_name = model_config.init

    def random_model(variant, note):
        log.info("random initialisation of %s%s", variant, " (shapes only)" if abstract else "")
        config = variant_config(variant, **fields, **extra)
        return config, abstract_params(config) if abstract else init_params(config, seed), note

    if init_name.startswith(RANDOM_PREFIX):
        return random_model(init_name[len(RANDOM_PREFIX):], "random initialisation (by config)")
    variant = init_name[len("openai:"):] if init_name.startswith("openai:") else None
    if abstract and variant in clip.VARIANTS:  # OpenAI's released models have the variant's shapes: no download
        config = variant_config(variant, **extra)
        return config, abstract_params(config), None
    try:
        config, params = convert.read(init_name, model_config.get("clip_weights") or None)
    except (OSError, convert.ConversionError) as error:
        if not model_config.get("allow_random_init", False):
            raise
        return random_model("ViT-B/16", f"RANDOM WEIGHTS: could not load {init_name} ({error}); this run uses a "
                            "random initialisation of ViT-B/16, so its accuracy is chance level and says nothing "
                            "about ViFi-CLIP")
    config = {**config, **extra}
    expected = vifi.parameter_shapes(config)  # traced, not run: nothing the checkpoint holds is initialised
    flat_loaded = traverse_util.flatten_dict(params, sep="/")
    unexpected = sorted(set(flat_loaded) - set(expected))
    if unexpected:
        raise convert.ConversionError(f"{init_name} has parameters the configured model lacks: {unexpected[:5]}")
    missing = sorted(set(expected) - set(flat_loaded))
    if any(not clip.is_prompt(path) for path in missing):
        raise convert.ConversionError(f"{init_name} lacks parameters of the configured model: {missing[:5]}")
    key = jax.random.PRNGKey(seed)
    fresh = {path: np.asarray(clip.PROMPT_INIT_STD * jax.random.normal(jax.random.fold_in(key, i), expected[path]))
             for i, path in enumerate(missing)}
    merged = traverse_util.unflatten_dict({**fresh, **flat_loaded}, sep="/")
    if CTX_PATH not in flat_loaded:
        merged = with_initial_text_context(merged, config)
    if abstract:
        merged = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.float32), merged)
    return config, merged, None
