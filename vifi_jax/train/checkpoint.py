"""Orbax checkpoints of the train state.

One Orbax `CheckpointManager` (v0 API) with the item "state": asynchronous saves every N updates and at
the end, keep-last-k, written together by every process. `restore` places the saved state like the given
one (its arrays' shardings), so a run resumes on another device or process count. The data position is
not saved: it follows from the update count (see `data_pipelines.pipeline`). Callers use the manager for
the rest (`latest_step`, `should_save`, `reached_preemption`, `wait_until_finished`, `close`, `directory`).
"""
import jax
import orbax.checkpoint as ocp

from data_pipelines import files


def manager(directory, every_steps, keep=3, async_save=True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps,
                                           enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(directory, options=options, item_names=("state",))


def check_room(checkpoints, state):
    """Refuse (files.WriteError naming the directory) when its disk cannot hold one checkpoint of `state`."""
    files.check_room(checkpoints.directory, sum(x.nbytes for x in jax.tree.leaves(state)), "the checkpoint")


def save(checkpoints, step, state, force=False):
    """Save if `step` is due (or `force`); returns whether a save started. A disk without room for the state
    is refused before anything is written (one error naming the directory, not Orbax's tracebacks)."""
    if not (force or checkpoints.should_save(step)):
        return False
    check_room(checkpoints, state)
    return checkpoints.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=force)


def restore(checkpoints, step, state):
    """The saved state, placed like the arrays of `state`."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    return checkpoints.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
