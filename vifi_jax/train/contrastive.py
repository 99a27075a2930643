"""The text–video contrastive loss CLIP4Clip trains with, and the gather that gives it the global batch.

CLIP4Clip (Luo et al. 2021, `modules/modeling.py`, `CrossEn`) scores every caption of a batch against every
video with exp(logit_scale)·cosine and averages two cross-entropies whose targets are the diagonal:
text→video (each caption's row over the videos) and video→text (each video's row over the captions).

Negatives come from the whole global batch. Under `jit` the features are split over the mesh's batch
axes; `gather` constrains them to be replicated, so XLA all-gathers the [B, D] features (not the frames)
and every device scores the full [B, B] matrix; the gradient of that constraint slices each device's rows
back, so the update is the exact gradient of the global-batch loss (CLIP4Clip's own all-gather passes back
only the local slice, and DDP then averages over ranks: its gradient is this one divided by the GPU count,
which Adam's normalisation all but cancels, though its gradient clipping sees the smaller norm).

Cost per device at the recipe's batch of 128 with D = 512: the two gathered feature matrices,
2·128·512·4 B = 512 KiB, and the 128×128 logits, 64 KiB. For the
projections' gradients XLA may also gather the towers' last [B, width] states (768 and 512 wide: 0.6 MiB
more) instead of all-reducing a [width, D] gradient; tests/test_contrastive.py lists every all-gather.
"""
import jax
import jax.numpy as jnp
import optax

from vifi_jax.runtime import sharding


def loss(logits):
    """Symmetric InfoNCE of video×caption logits [B, B] (row i: video i; its caption is column i): the mean
    of the video→text and text→video cross-entropies."""
    logits = logits.astype(jnp.float32)
    targets = jnp.arange(logits.shape[0])
    video_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    text_to_video = optax.softmax_cross_entropy_with_integer_labels(logits.T, targets).mean()
    return (video_to_text + text_to_video) / 2


def gather(features, mesh):
    """Features [B, D] split over the batch axes -> the whole global batch on every device (an all-gather
    under jit; unchanged without a mesh)."""
    if mesh is None or mesh.size == 1:
        return features
    return jax.lax.with_sharding_constraint(features, sharding.replicated(mesh))
