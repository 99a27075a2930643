"""ViFi-CLIP's CutmixMixupBlending on device: smoothed one-hot targets, then CutMix or Mixup.

With probability `switch_prob` CutMix (λ ~ Beta(cutmix_alpha), one box for all frames and samples,
pixels from a random permutation of the batch, λ recomputed from the clipped box area), otherwise
Mixup (λ ~ Beta(mixup_alpha)). Targets are mixed with the same λ and permutation, so they sum to one.
"""
import jax
import jax.numpy as jnp
import optax


def smooth_one_hot(labels, num_classes, smoothing=0.1):
    """timm's smoothed targets: 1 - s + s/C on the label, s/C elsewhere."""
    return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)


def cutmix_box(rng, lam, height, width):
    """(y0, y1, x0, x1) of timm's rand_bbox: cut = sqrt(1-λ)·size, centre uniform, clipped."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
    ky, kx = jax.random.split(rng)
    cy = jax.random.randint(ky, (), 0, height)
    cx = jax.random.randint(kx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    return y0, y1, x0, x1


def blend(rng, frames, labels, num_classes, smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5):
    """frames [B, ..., H, W, C] (any float dtype), int labels [B] -> (mixed frames, soft targets [B, C], λ)."""
    k_switch, k_mix, k_cut, k_box, k_perm = jax.random.split(rng, 5)
    targets = smooth_one_hot(labels, num_classes, smoothing)
    perm = jax.random.permutation(k_perm, frames.shape[0])
    height, width = frames.shape[-3], frames.shape[-2]
    use_cutmix = jax.random.uniform(k_switch) < switch_prob

    lam_cut = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha)
    y0, y1, x0, x1 = cutmix_box(k_box, lam_cut, height, width)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    lam_cut = 1.0 - ((y1 - y0) * (x1 - x0)) / (height * width)

    lam_mix = jax.random.beta(k_mix, mixup_alpha, mixup_alpha)
    lam = jnp.where(use_cutmix, lam_cut, lam_mix).astype(jnp.float32)
    shuffled = frames[perm]
    cut = jnp.where(inside[:, :, None], shuffled, frames)
    mixed = (lam * frames.astype(jnp.float32) + (1 - lam) * shuffled.astype(jnp.float32)).astype(frames.dtype)
    frames = jnp.where(use_cutmix, cut, mixed)
    return frames, lam * targets + (1 - lam) * targets[perm], lam


def soft_target_cross_entropy(logits, targets):
    """timm SoftTargetCrossEntropy: mean over the batch of -sum(targets * log_softmax(logits))."""
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
