"""The learning rate of every update equals the official loop driving timm's CosineLRScheduler."""
import math

import numpy as np
import pytest

from vifi_jax.train import schedule


def official_rates(lr, epochs, warmup_epochs, num_steps, accumulation):
    """Replays ViFi-CLIP's train_one_epoch: lr used by each optimiser step, scheduler stepped after it."""
    total, warmup, lr_min = epochs * num_steps, warmup_epochs * num_steps, lr / 100

    def timm(t):  # CosineLRScheduler with warmup_prefix=False, cycle_limit=1, t_in_epochs=False
        if t < warmup:
            return 0 + t * (lr - 0) / warmup
        if t >= total:
            return lr_min
        return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t / total))

    current, used = 0.0, []  # the scheduler starts at warmup_lr_init = 0
    for epoch in range(epochs):
        for idx in range(num_steps):
            if (idx + 1) % accumulation == 0:
                used.append(current)
                current = timm(epoch * num_steps + idx)
    return used


@pytest.mark.parametrize("epochs,warmup,num_steps,accumulation", [(10, 5, 7, 1), (11, 5, 9, 2), (30, 5, 10, 4),
                                                                  (3, 1, 5, 3)])
def test_every_update_matches_the_reference(epochs, warmup, num_steps, accumulation):
    rates = schedule.make(8e-6, epochs, warmup, num_steps, accumulation)
    want = official_rates(8e-6, epochs, warmup, num_steps, accumulation)
    got = [float(rates(j)) for j in range(len(want))]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_drop_at_the_end_of_warmup():
    rates = schedule.make(1.0, 10, 5, 100)
    assert float(rates(500)) == pytest.approx(1.0 * 499 / 500)
    assert float(rates(501)) == pytest.approx(0.01 + 0.495 * (1 + math.cos(math.pi * 0.5)), rel=1e-5)  # ≈0.505
    with pytest.raises(ValueError, match="cannot make one update"):
        schedule.make(1.0, 10, 5, 3, accumulation_steps=4)
