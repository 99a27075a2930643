"""Orbax checkpoints of the train state together with the Grain iterator's position.

One Orbax `CheckpointManager` (v0 API) with items "state" and "data_iter": asynchronous saves every N
updates and at the end, keep-last-k. `restore` places the saved state like the given one (its arrays'
shardings), so a run resumes on a different device count. Callers use the manager for the rest
(`latest_step`, `should_save`, `wait_until_finished`, `close`, `directory`).
"""
import grain
import jax
import orbax.checkpoint as ocp


def manager(directory, every_steps, keep=3, async_save=True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps,
                                           enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "data_iter"))


def save(checkpoints, step, state, data_iter, force=False):
    """Save if `step` is due (or `force`); returns whether a save started."""
    return checkpoints.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(data_iter)), force=force)


def restore(checkpoints, step, state, data_iter):
    """The saved state, placed like the arrays of `state`; `data_iter` moves to the saved position in place."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = checkpoints.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    return restored.state
