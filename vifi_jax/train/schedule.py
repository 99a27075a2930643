"""The official learning-rate schedule, per optimiser update.

timm `CosineLRScheduler(t_initial=epochs*N, lr_min=lr/100, warmup_lr_init=0, warmup_t=warmup_epochs*N,
cycle_limit=1, t_in_epochs=False)` as ViFi-CLIP drives it: t counts data-loader iterations
(micro-batches, N per epoch), the cosine is evaluated at the absolute t (so the rate drops at the end
of warmup), `step_update(t)` runs after each optimiser update, so update 0 uses lr 0 and update j uses
the rate at the iteration of update j-1's last micro-batch.
timm's own scheduler is not optax's: optax's warmup_cosine_decay_schedule has no drop at the end of warmup.
"""
import jax.numpy as jnp


def timm_cosine(t, base_lr, total_t, warmup_t, min_lr):
    """timm's rate at iteration t (works on Python numbers and jax arrays)."""
    t = jnp.asarray(t, jnp.float32)
    warm = base_lr * t / max(warmup_t, 1)
    progress = t / max(total_t, 1)
    cosine = min_lr + 0.5 * (base_lr - min_lr) * (1 + jnp.cos(jnp.pi * jnp.minimum(progress, 1.0)))
    cosine = jnp.where(progress >= 1.0, min_lr, cosine)
    return jnp.where(t < warmup_t, warm, cosine)


def make(base_lr, epochs, warmup_epochs, iterations_per_epoch, accumulation_steps=1, min_lr_ratio=0.01):
    """optax schedule: optimiser update count -> learning rate, matching the official training loop."""
    updates_per_epoch = iterations_per_epoch // accumulation_steps
    if updates_per_epoch < 1:
        raise ValueError(f"{iterations_per_epoch} iterations per epoch cannot make one update of "
                         f"{accumulation_steps} accumulated micro-batches")
    total_t, warmup_t = epochs * iterations_per_epoch, warmup_epochs * iterations_per_epoch

    def schedule(update):
        previous = jnp.maximum(update - 1, 0)
        epoch, within = previous // updates_per_epoch, previous % updates_per_epoch
        t = epoch * iterations_per_epoch + (within + 1) * accumulation_steps - 1
        rate = timm_cosine(t, base_lr, total_t, warmup_t, base_lr * min_lr_ratio)
        return jnp.where(update == 0, 0.0, rate)

    return schedule
