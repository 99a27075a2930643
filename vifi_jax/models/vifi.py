"""ViFi-CLIP: CLIP on every frame, mean over time, cosine logits against class texts.

Parameters are exactly CLIP's (`clip.CLIP`), so any CLIP or ViFi-CLIP checkpoint
loads into it. Frames go through the image tower with a lifted `vmap` over T,
which keeps the batch axis leading for sharding and equals folding T into it.
"""
import flax.linen as nn
import jax.numpy as jnp

from vifi_jax.models import clip

# The text modes of the official `VLPromptLearner`.
TEMPLATE = "a photo of a {}."   # every fine-tuned model, train and test
BARE = "{}"                    # vanilla-CLIP zero-shot (TRAINER.ViFi_CLIP.ZS_EVAL)
TEXT_MODES = ("template", "bare", "prompt")


def class_texts(names, mode="template", num_prompts=0):
    """The prompt text per class name, as the official code builds it for `mode`."""
    if mode == "template":
        return [TEMPLATE.format(name) for name in names]
    if mode == "bare":
        return [BARE.format(name) for name in names]
    if mode == "prompt":
        if num_prompts <= 0:
            raise ValueError("text mode 'prompt' needs a model with text prompts (text_prompts > 0)")
        prefix = " ".join(["X"] * num_prompts)
        return [f"{prefix} {name.replace('_', ' ')}." for name in names]
    raise ValueError(f"unknown text mode {mode!r}; use one of {TEXT_MODES}")


class ViFiCLIP(clip.CLIP):
    """CLIP with video methods; frames are [B, T, H, W, 3], already normalised."""

    def encode_video(self, frames):
        """Frames [B, T, H, W, 3] -> mean over T of projected frame embeddings [B, D] (not normalised)."""
        per_frame = nn.vmap(
            lambda model, x: model.encode_image(x),
            variable_axes={"params": None}, split_rngs={"params": False},
            in_axes=1, out_axes=1)(self, frames)
        return per_frame.astype(jnp.float32).mean(axis=1)

    def __call__(self, frames, token_ids):
        """Video logits [B, N] = exp(logit_scale) * cos(video, class text); no clamp, as in ViFi-CLIP."""
        video = clip.l2_normalize(self.encode_video(frames))
        text = clip.l2_normalize(self.encode_text(token_ids).astype(jnp.float32))
        return jnp.exp(self.logit_scale) * video @ text.T
