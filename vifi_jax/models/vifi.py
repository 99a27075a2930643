"""ViFi-CLIP: CLIP on every frame, mean over time, cosine logits against class texts.

Parameters are exactly CLIP's (`clip.CLIP`), so any CLIP or ViFi-CLIP checkpoint
loads into it. The B·T frames of a batch go through the image tower as one batch.
Also here: the class texts (and their token ids) the official code builds for each text mode.
"""
import functools

import jax
import jax.numpy as jnp
from flax import traverse_util

from vifi_jax import tokenizer
from vifi_jax.models import clip

# The text modes of the official `VLPromptLearner`.
TEMPLATE = "a photo of a {}."   # every fine-tuned model, train and test
BARE = "{}"                    # vanilla-CLIP zero-shot (TRAINER.ViFi_CLIP.ZS_EVAL)
TEXT_MODES = ("template", "bare", "prompt")
# The official TRAINER.ViFi_CLIP.CTX_INIT (no config changes it). With at most this many text prompts
# the prompt text starts with it and the prompts start as its token embeddings; with more, "X X … X".
CTX_INIT = "a photo of a"
MAX_CTX_INIT_PROMPTS = 4


def default_text_mode(num_prompts):
    """A model with learned text prompts reads class names through them; any other uses the template."""
    return "prompt" if num_prompts > 0 else "template"


def prompt_prefix(num_prompts):
    """The words the learned text context stands in for (official `prompt_prefix`)."""
    return CTX_INIT if num_prompts <= MAX_CTX_INIT_PROMPTS else " ".join(["X"] * num_prompts)


def class_texts(names, mode=None, num_prompts=0):
    """The text per class name, as the official code builds it for `mode` (None: the model's default)."""
    mode = mode or default_text_mode(num_prompts)
    if mode not in TEXT_MODES:
        raise ValueError(f"unknown text mode {mode!r}; use one of {TEXT_MODES}")
    if mode == "prompt" and num_prompts <= 0:
        raise ValueError("text mode 'prompt' needs a model with learned text prompts (text_prompts > 0); this "
                         "model has none: use 'template' (fine-tuned models) or 'bare' (vanilla CLIP)")
    if mode != "prompt" and num_prompts > 0:
        raise ValueError(f"text mode {mode!r} cannot work with this model: its {num_prompts} learned text prompts "
                         f"replace tokens 1-{num_prompts} of every class text, so the texts must be built in "
                         "'prompt' mode (the default for such models)")
    if mode == "template":
        return [TEMPLATE.format(name) for name in names]
    if mode == "bare":
        return [BARE.format(name) for name in names]
    return [f"{prompt_prefix(num_prompts)} {name.replace('_', ' ')}." for name in names]


def class_token_ids(names, mode=None, num_prompts=0):
    """Tokenised class texts (`class_texts`), cut to the shortest exact length bucket (`tokenizer.truncate`).
    `mode` "auto" or None is the model's own."""
    return tokenizer.truncate(tokenizer.tokenize(class_texts(names, None if mode == "auto" else mode, num_prompts)))


class ViFiCLIP(clip.CLIP):
    """CLIP with video methods; frames are [B, T, H, W, 3], already normalised."""

    def encode_frames(self, frames):
        """Frames [B, T, H, W, 3] -> projected embeddings of every frame [B, T, D] fp32 (not normalised).

        The B·T frames go through the image tower as one batch (B leading, so a batch split over devices
        stays split): one [B·T, L, ...] array per layer gives the matmuls and the fused attention a single
        batch axis."""
        batch, length = frames.shape[:2]
        per_frame = self.encode_image(frames.reshape(batch * length, *frames.shape[2:]))
        return per_frame.reshape(batch, length, -1).astype(jnp.float32)

    def encode_video(self, frames):
        """Frames [B, T, H, W, 3] -> mean over T of projected frame embeddings [B, D] (not normalised)."""
        return self.encode_frames(frames).mean(axis=1)

    def video_features(self, frames):
        """Frames [B, T, H, W, 3] -> L2-normalised fp32 video features [B, D]."""
        return clip.l2_normalize(self.encode_video(frames))

    def __call__(self, frames, text):
        """Video logits [B, N] (`scores`). `text` is class token ids [N, L], or fixed features [N, D] from
        `text_features` (computed once when the text side does not change: evaluation, image-only training)."""
        if jnp.issubdtype(text.dtype, jnp.integer):
            text = self.text_features(text)
        return self.scores(self.video_features(frames), text)


def parameter_shapes(config):
    """{path: shape} of every parameter of the model `config` (CLIP's fields) describes: traced, nothing
    allocated. Checkpoint readers check what a file holds against it."""
    return dict(_parameter_shapes(tuple(sorted(config.items()))))


@functools.lru_cache(maxsize=16)
def _parameter_shapes(fields):
    """Traced once per model config in a process: every checkpoint read checks against it (0.1-0.2 s a trace)."""
    config = dict(fields)
    model = ViFiCLIP(**config)
    res = config["image_resolution"]
    frames = jax.ShapeDtypeStruct((1, 1, res, res, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, config["context_length"]), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), frames, ids)["params"]
    return tuple((path, tuple(leaf.shape)) for path, leaf in traverse_util.flatten_dict(shapes, sep="/").items())
