"""A run's working directory: its saved config, its results files, and whether a rerun may resume the
checkpoints there.

Rerunning the same command resumes. A rerun whose config differs in a field that changes results (the
model, the data, the schedule, ...) would silently continue another run, so it is refused, naming each
such field; fields that only change how the run executes may differ freely.
"""
import contextlib
import json

import jax
from flax import traverse_util

from data_pipelines import files, outputs, storage

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
# Fields (or groups, by prefix) that never change what a run computes, only how or how visibly.
FREE_FIELDS = ("data.num_workers", "data.check_files", "data.max_bad_fraction", "log_every", "eval.batch_size",
               "checkpoint.", "mesh.", "train.max_steps", "model.remat")


RUN_NAMES = {CONFIG_FILE, "results.json", CHECKPOINTS, "tensorboard", "best", "final", "bad_videos.json",
             outputs.LOCK}


def write_json(path, obj):
    """Write a results file atomically (process 0 only): a reader never sees half of it."""
    if jax.process_index() == 0:
        storage.makedirs(storage.dirname(path) or ".")
        files.write_json(path, obj, "results file")


def legacy_run(directory, names):
    """Whether an unmarked directory is a workdir an earlier vifi_jax wrote: only names a run writes, and a
    config.json that is a vifi_jax experiment config."""
    if not set(names) <= RUN_NAMES or CONFIG_FILE not in names:
        return False
    try:
        saved = files.read_json(storage.join(directory, CONFIG_FILE), "saved config")
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"mode", "model", "data"} <= set(saved)


def claim(workdir):
    """Make `workdir` this run's (process 0; the others wait for it): see `data_pipelines.outputs.claim`."""
    if jax.process_index() == 0:
        outputs.claim(workdir, "run", "--workdir", legacy_run)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("vifi_jax.workdirs: the workdir is claimed")


def lock(workdir):
    """One run at a time in `workdir` (held by process 0 of a job)."""
    return outputs.Lock(workdir, "--workdir") if jax.process_index() == 0 else contextlib.nullcontext()


def read_saved_config(workdir):
    path = storage.join(workdir, CONFIG_FILE)
    return files.read_json(path, "saved config", f"delete it to start {workdir} afresh, or choose another --workdir")


class ChangedConfigError(ValueError):
    """The workdir holds checkpoints of a run with a different config."""


def flatten(tree):
    """{"a.b": value}; an empty group (no eval sets, no field overrides) is the value {}."""
    flat = traverse_util.flatten_dict(tree, keep_empty_nodes=True, sep=".")
    return {key: {} if value is traverse_util.empty_node else value for key, value in flat.items()}


# Fields added to the configs after runs were saved without them, with the value those runs had: an old
# config.json still resumes.
ADDED_FIELDS = {"task": "classification"}


def changed_fields(saved, current):
    """[(field, saved value, current value)] of result-changing fields that differ (JSON-normalised)."""
    old, new = {**ADDED_FIELDS, **flatten(saved)}, flatten(json.loads(json.dumps(current)))
    missing = object()
    changed = []
    for field in sorted(set(old) | set(new)):
        if field.startswith(FREE_FIELDS) or field in FREE_FIELDS:
            continue
        before, after = old.get(field, missing), new.get(field, missing)
        if before != after:
            changed.append((field, "(absent)" if before is missing else before, "(absent)" if after is missing else after))
    return changed


def has_checkpoints(workdir):
    return any(name.isdigit() for name in storage.listdir(storage.join(workdir, CHECKPOINTS)))


def prepare_training(workdir, config, resume_changed=False):
    """Refuse to resume another run's checkpoints in `workdir`, then save this run's config there."""
    path = storage.join(workdir, CONFIG_FILE)
    if has_checkpoints(workdir) and storage.exists(path) and not resume_changed:
        saved = read_saved_config(workdir)
        changed = changed_fields(saved, config.to_dict())
        if changed:
            listing = "; ".join(f"{field}: {before!r} -> {after!r}" for field, before, after in changed)
            raise ChangedConfigError(
                f"{workdir} holds checkpoints of a run with another config ({listing}). Resuming would mix two "
                "runs. Give this run its own --workdir, or pass --resume_changed_config to resume anyway")
    save_config(workdir, config)


def save_config(workdir, config):
    """Write `workdir/config.json` (process 0; the directory is created)."""
    storage.makedirs(workdir)
    path = storage.join(workdir, CONFIG_FILE)
    if jax.process_index() == 0:
        with files.atomic_write(path, "saved config") as f:
            f.write(config.to_json_best_effort(indent=1))
