"""Mixup/CutMix targets: smoothed one-hot, sum to one, mixed with the λ the pixels used."""
import jax
import jax.numpy as jnp
import numpy as np

from vifi_jax.train import mixup


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


def test_both_lambdas_follow_their_beta_distributions():
    """Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); the two draws independent of each other."""
    mix, cut = jax.vmap(lambda k: mixup.beta_pair(k, 0.8, 3.0))(jax.random.split(jax.random.PRNGKey(0), 20000))
    for lam, a in ((np.asarray(mix), 0.8), (np.asarray(cut), 3.0)):
        assert 0 <= lam.min() and lam.max() <= 1
        assert abs(lam.mean() - 0.5) < 0.01 and abs(lam.var() / (1 / (4 * (2 * a + 1))) - 1) < 0.05, (a, lam.var())
    assert abs(np.corrcoef(mix, cut)[0, 1]) < 0.03


def test_soft_target_cross_entropy():
    logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    targets = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    want = np.mean([-np.log(np.exp(2) / (np.exp(2) + 1)), np.log(2)])
    np.testing.assert_allclose(float(mixup.soft_target_cross_entropy(logits, targets)), want, rtol=1e-6)


def test_groups_blend_only_within_themselves_with_their_own_draws():
    """Like each official GPU blending its own clips: partners come from the same group of 3, and the
    groups' λ differ; group i draws with fold_in(key, first_group + i), so a device holding groups 2-3
    gets what the whole batch gives them."""
    frames = jnp.eye(12, dtype=jnp.float32)[:, None, None, None, :]  # sample i is the one-hot e_i: [12, 1, 1, 1, 12]
    labels = jnp.arange(12) % 4
    rng = jax.random.PRNGKey(7)
    mixed, targets = mixup.blend_groups(rng, frames, labels, 4, group_size=3, switch_prob=0.0)  # Mixup only
    mixed = np.asarray(mixed).reshape(12, 12)
    lams = {}
    for i in range(12):
        partners = [j for j in np.flatnonzero(mixed[i] > 1e-6) if j != i]
        assert set(partners) <= set(range(3 * (i // 3), 3 * (i // 3) + 3)), (i, partners)
        lam = mixed[i, i] if partners else None
        if lam is not None:
            lams.setdefault(i // 3, set()).add(round(float(lam), 5))
    assert all(len(v) == 1 for v in lams.values()) and len({v.pop() for v in lams.values()}) > 1
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, rtol=1e-6)
    half, half_targets = mixup.blend_groups(rng, frames[6:], labels[6:], 4, group_size=3, first_group=2,
                                            switch_prob=0.0)
    np.testing.assert_array_equal(np.asarray(half).reshape(6, 12), mixed[6:])
    np.testing.assert_array_equal(np.asarray(half_targets), np.asarray(targets)[6:])
