"""The public Python API: load a checkpoint, read a video, encode videos and texts, score, save.

    model = vifi_jax.load("openai:ViT-B/16")            # or a .pt/.pth/.safetensors/vifi_jax dir
    frames = vifi_jax.load_video("clip.mp4")             # the official test view, [1, 32, 224, 224, 3]
    logits = model.logits(frames, model.class_texts(["archery", "bowling"]))
"""
import functools
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vifi_jax import tokenizer
from vifi_jax.models import vifi
from vifi_jax.runtime import encoder, session
from vifi_jax.runtime.encoder import load_video, read_test_view  # noqa: F401 - public (vifi_jax.load_video)
from vifi_jax.weights import convert, loading, model_dir


class Model:
    """A ViFi-CLIP model: its config (CLIP fields), fp32 params and its encoders (`runtime.encoder`).

    The parameters stay in host memory until the model first encodes something; then they go to the default
    device, or with a `mesh` straight into their shardings, each device receiving only its shard."""

    def __init__(self, config, params, dtype=jnp.float32, mesh=None):
        self.config = dict(config)
        self.host_params = params
        self.module = vifi.ViFiCLIP(**self.config, dtype=dtype)
        self.mesh = mesh

    @functools.cached_property
    def params(self):
        if self.mesh is None:  # the default device, uncommitted: a computation over several devices may take them
            return jax.tree.map(jnp.asarray, self.host_params)
        return session.place(self.host_params, self.mesh)

    @functools.cached_property
    def fingerprint(self):
        """A hash of the CLIP fields and every parameter's path and float32 bytes: the same for the same weights,
        wherever they were loaded from."""
        digest = hashlib.blake2b(json.dumps(self.config, sort_keys=True).encode(), digest_size=16)
        for path, value in sorted(traverse_util.flatten_dict(self.host_params, sep="/").items()):
            digest.update(path.encode())
            digest.update(np.ascontiguousarray(np.asarray(value, np.float32)).tobytes())
        return digest.hexdigest()

    @functools.cached_property
    def encoder(self):
        return encoder.Encoder(self.module, self.params)

    @property
    def logit_scale(self):
        return jnp.exp(self.params["logit_scale"])

    @property
    def text_prompts(self):
        """How many text tokens the learned prompts overwrite (0: not a text-prompting model)."""
        return self.module.learned_text_prompts

    def class_texts(self, names, mode=None):
        """Texts for class names: "a photo of a {}." (template), "{}" (bare) or through the learned prompts
        (prompt). The default is prompt for a model with text prompts, template otherwise."""
        return vifi.class_texts(names, mode, self.text_prompts)

    def free_texts(self, texts):
        """Free text (a query, a caption) as the model scores it: through its learned prompts for a prompting
        model, else as it is (no "a photo of a" template around a sentence)."""
        return self.class_texts(texts) if self.text_prompts else list(texts)

    def encode_video(self, frames, normalize=True):
        """float32 frames [B, T, H, W, 3], normalised as `load_video` does -> video embeddings [B, D]."""
        return self.encoder.video_features(self._checked_frames(frames), normalize)

    def encode_frames(self, frames):
        """float32 frames [B, T, H, W, 3] (as for `encode_video`) -> each frame's projected embedding [B, T, D],
        not normalised: their mean over T, normalised, is `encode_video`."""
        return self.encoder.frame_embeddings(self._checked_frames(frames))

    def _checked_frames(self, frames):
        if np.asarray(frames).dtype == np.uint8:
            raise ValueError("frames are raw uint8 pixels; normalise them first (vifi_jax.load_video does: ImageNet "
                             "mean/std on 0-255 RGB, see data_pipelines.transforms.normalize)")
        frames = jnp.asarray(frames, jnp.float32)
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, T, H, W, 3], got shape {tuple(frames.shape)}")
        size = self.config["image_resolution"]
        if frames.shape[2:4] != (size, size):
            raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]}, the model takes {size}x{size}")
        return frames

    def encode_text(self, texts, normalize=True):
        """Texts (strings, or token ids [N, L]) -> text embeddings [N, D]; runs only the needed length."""
        ids = np.asarray(texts) if not _is_text(texts) else tokenizer.tokenize(texts)
        self._check_prompt_texts(ids)
        return self.encoder.text_features(ids, normalize)

    def _check_prompt_texts(self, ids):
        """A model with text prompts overwrites tokens 1..n: its texts must hold the prompt prefix there."""
        n = self.text_prompts
        if not n:
            return
        prefix = tokenizer.tokenize(vifi.prompt_prefix(n))[0, 1:1 + n]
        if ids.shape[1] < 1 + n or not (ids[:, 1:1 + n] == prefix).all():
            raise ValueError(f"this model has {n} learned text prompts, which replace the words "
                             f"{vifi.prompt_prefix(n)!r} at the start of every text; build texts with "
                             "model.class_texts(names) (prompt mode)")

    def logits(self, frames, texts):
        """exp(logit_scale) * cos(video, text): [B, N] (the module's scoring). `texts` are strings, token ids
        [N, L], or text features [N, D] from `encode_text` (to score many videos against the same texts)."""
        texts = texts if _is_features(texts) else self.encode_text(texts)
        return self.encoder.logits(self._checked_frames(frames), texts)

    def save(self, directory):
        """Write a vifi_jax model directory (Orbax params + config.json)."""
        model_dir.save(directory, self.config, self.host_params)

    def save_pytorch(self, path, layout="vifi", dtype=np.float32):
        """Write a `.pth` in the official ViFi-CLIP (`vifi`) or OpenAI CLIP (`openai`) layout."""
        convert.write_pytorch(self.host_params, path, layout, dtype)


def _is_features(texts):
    return hasattr(texts, "dtype") and jnp.issubdtype(texts.dtype, jnp.floating)


def _is_text(texts):
    return isinstance(texts, str) or (isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts))


def load(path_or_name, clip_weights=None, dtype=jnp.float32):
    """Load OpenAI `.pt`, ViFi-CLIP `.pth`, `.safetensors`, a vifi_jax directory or "openai:ViT-B/16".

    ViFi-CLIP files lack the token embedding: `clip_weights` names the OpenAI
    weights to take it from. `dtype` is the compute dtype (bf16 on accelerators).
    """
    config, params = convert.read(path_or_name, clip_weights)
    return Model(config, params, dtype)


def init(variant="ViT-B/16", seed=0, dtype=jnp.float32, **fields):
    """A randomly initialised model of a named variant (`clip.VARIANTS`), fields overridable."""
    config = loading.variant_config(variant, **fields)
    return Model(config, loading.init_params(config, seed), dtype)


def from_config(model_config, dtype=jnp.float32, seed=0):
    """(Model, note) from an experiment config's `model` block (`weights.loading.read_model`); the note says
    when the weights are random."""
    config, params, note = loading.read_model(model_config, seed)
    return Model(config, params, dtype), note
