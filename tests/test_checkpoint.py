"""vifi_jax.train.checkpoint: a save that the disk cannot hold is refused before Orbax writes anything."""
import collections
import os

import jax.numpy as jnp
import pytest

from data_pipelines import files
from vifi_jax.train import checkpoint


def test_a_disk_that_filled_during_the_run_refuses_the_save_and_leaves_nothing(tmp_path, monkeypatch):
    manager = checkpoint.manager(str(tmp_path / "checkpoints"), every_steps=1, async_save=False)
    state = {"params": jnp.zeros((256, 256)), "step": jnp.zeros((), jnp.int32)}
    checkpoint.check_room(manager, state)  # room now
    assert checkpoint.save(manager, 1, state)
    manager.wait_until_finished()
    real = os.statvfs
    full = collections.namedtuple("Full", "f_bavail f_frsize")(0, 4096)
    monkeypatch.setattr(os, "statvfs", lambda place: full if str(tmp_path) in str(place) else real(place))
    with pytest.raises(files.WriteError, match=f"cannot write the checkpoint into {tmp_path}.*has 0.0 MiB free"):
        checkpoint.save(manager, 2, state)
    manager.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
