"""Orbax checkpoints of the train state together with the Grain iterator's position.

One `CheckpointManager` (v0 API, behind this small module so a switch to Orbax v1 stays local):
asynchronous saves every N updates and at the end, keep-last-k, restore onto the current mesh from an
abstract tree of ShapeDtypeStructs with shardings (so a different device count works).
"""
import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory, every_steps, keep=3, async_save=True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps,
                                               enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data_iter"))

    def latest_step(self):
        return self.manager.latest_step()

    def should_save(self, step):
        return self.manager.should_save(step)

    def save(self, step, state, data_iter, force=False):
        """Save if `step` is due (or `force`); returns whether a save started."""
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(data_iter)), force=force)

    def restore(self, step, state, shardings, data_iter):
        """The saved state, placed like `shardings`; `data_iter` is moved to the saved position in place."""
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
        return restored.state

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
