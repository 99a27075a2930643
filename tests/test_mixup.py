"""Mixup/CutMix targets: smoothed one-hot, sum to one, mixed with the λ the pixels used."""
import jax
import jax.numpy as jnp
import numpy as np

from vifi_jax import mixup


def test_smoothing_values():
    t = np.asarray(mixup.smooth_one_hot(jnp.array([2]), 4, 0.1))
    np.testing.assert_allclose(t, [[0.025, 0.025, 0.925, 0.025]], rtol=1e-6)


def test_targets_sum_to_one_and_match_lambda():
    frames = jnp.broadcast_to(jnp.arange(6, dtype=jnp.float32)[:, None, None, None, None], (6, 2, 16, 20, 3))
    labels = jnp.arange(6) % 3
    kinds = set()
    for seed in range(12):
        mixed, targets, lam = mixup.blend(jax.random.PRNGKey(seed), frames, labels, 3)
        mixed, targets, lam = np.asarray(mixed), np.asarray(targets), float(lam)
        np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
        own = np.asarray(mixup.smooth_one_hot(labels, 3))
        for i in range(6):
            values = np.unique(mixed[i])
            if len(values) <= 2 and np.isin(values, np.arange(6)).all():  # CutMix: whole pixels from one partner
                kinds.add("cutmix")
                partner = [v for v in values if v != i]
                j = int(partner[0]) if partner else i  # a video paired with itself stays whole
                if partner:
                    assert abs((mixed[i] == i).mean() - lam) < 1e-6  # λ recomputed from the box area
            else:  # Mixup: λ·x + (1-λ)·x[perm], the partner is where the blend points
                kinds.add("mixup")
                j = int(round((mixed[i].mean() - lam * i) / (1 - lam)))
                np.testing.assert_allclose(mixed[i], lam * i + (1 - lam) * j, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(targets[i], lam * own[i] + (1 - lam) * own[j], rtol=1e-5, atol=1e-6)
    assert kinds == {"cutmix", "mixup"}


def test_soft_target_cross_entropy():
    logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    targets = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    want = np.mean([-np.log(np.exp(2) / (np.exp(2) + 1)), np.log(2)])
    np.testing.assert_allclose(float(mixup.soft_target_cross_entropy(logits, targets)), want, rtol=1e-6)
