"""Training: a sharded, jitted train step with the official optimiser, schedule and augmentation.

State is a plain dict {"trainable", "frozen", "opt_state", "step", "rng"}: the parameters split by
the fine-tuning mode (both / image / text / prompts), AdamW on the trainable part only. One call of
the step is one optimiser update over `accumulation_steps` micro-batches (scanned, gradients averaged).
The loop places the next batches on the devices in a background thread while a step runs, fetches
losses only every `log_every` updates and before a save (a non-finite loss is never saved), saves Orbax
checkpoints and resumes from the latest one (the data position follows from the update count, with any
number of processes), evaluates as the official loop does, keeps the best model, and saves before exiting
on SIGTERM (with several processes, at the step they agree on through JAX's preemption service).
"""
import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from data_pipelines import cli, pipeline, transforms
from vifi_jax import api, augment, checkpoint, config_checks, data, evaluate, flops, metrics, mixup, model_dir, \
    prefetch, schedule, sharding, step_log, workdirs
from vifi_jax.models import clip, vifi

log = logging.getLogger(__name__)

USES = ("both", "image", "text", "prompts")
TEXT_PREFIXES = ("transformer/", "positional_embedding", "ln_final/", "text_projection")


def is_trainable(path, use):
    """Which parameters a fine-tuning mode trains (official `returnCLIP`; token embeddings never)."""
    if use not in USES:
        raise ValueError(f"train.use must be one of {USES}, got {use!r}")
    if path.startswith("token_embedding/"):
        return False
    if use == "prompts":
        return clip.is_prompt(path)
    if clip.is_prompt(path):
        return False  # prompts exist only in prompting runs
    if use == "image":
        return path.startswith("visual/")
    if use == "text":
        return path.startswith(TEXT_PREFIXES)
    return True


def split_params(params, use):
    flat = traverse_util.flatten_dict(params, sep="/")
    trainable = {k: v for k, v in flat.items() if is_trainable(k, use)}
    if not trainable:
        raise ValueError(f"train.use={use!r} leaves nothing to train (prompting needs model.*_prompts > 0)")
    frozen = {k: v for k, v in flat.items() if k not in trainable}
    return traverse_util.unflatten_dict(trainable, sep="/"), traverse_util.unflatten_dict(frozen, sep="/")


def merge_params(trainable, frozen):
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen, sep="/"),
                                         **traverse_util.flatten_dict(trainable, sep="/")}, sep="/")


def make_optimizer(config, iterations_per_epoch):
    t = config.train
    lr = schedule.make(t.lr, t.epochs, t.warmup_epochs, iterations_per_epoch, t.accumulation_steps, t.min_lr_ratio)
    return optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay), lr


def _state_builder(use, optimizer, seed):
    def build(trainable, frozen):
        return {"trainable": trainable, "frozen": frozen, "opt_state": optimizer.init(trainable),
                "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(jax.random.PRNGKey(seed))}
    return build


def state_shapes(params, use, optimizer, seed, mesh):
    """What `init_state` builds, as ShapeDtypeStructs carrying their FSDP shardings, without building it:
    `params` may be arrays or ShapeDtypeStructs, the mesh's devices abstract (a TPU topology compiled for
    from a CPU host)."""
    shapes = jax.eval_shape(_state_builder(use, optimizer, seed), *split_params(params, use))
    return jax.tree.map(lambda s, placed: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placed), shapes,
                        sharding.tree_shardings(mesh, shapes))


def init_state(params, use, optimizer, seed, mesh):
    """The train state {"trainable", "frozen", "opt_state", "step", "rng"}, built under jit straight into its
    FSDP shardings (`state_shapes`), so the optimiser state is never made unsharded."""
    shardings = jax.tree.map(lambda s: s.sharding, state_shapes(params, use, optimizer, seed, mesh))
    return jax.jit(_state_builder(use, optimizer, seed), out_shardings=shardings)(*split_params(params, use))


def global_norm(tree):
    """sqrt of the sum of squares of every element (optax renames its own between versions)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def mixing_group_size(config):
    """Clips blended together by Mixup/CutMix: the official per-GPU batch, train.batch_size over
    train.reference_world_size (each official GPU blends its own clips)."""
    return config.train.batch_size // config.train.reference_world_size


def make_input_fn(config, num_classes, mesh=None):
    """(frames [B, 1, T, H, W, 3] uint8, labels [B], colour parameters or None, key) -> (normalised, blended
    frames [B, T, H, W, 3] float32, soft targets [B, C]): flip/jitter/grayscale when the loader left them to
    the step, normalisation, Mixup/CutMix within mixing groups (`mixing_group_size`).

    Every op is per clip or per group, so with a `mesh` whose devices each hold whole groups it runs under
    shard_map on each device's own shard: no device sees another's frames (a global permutation would move
    the whole batch between devices). Groups draw from fold_in(key, group index) either way, so the result
    is the same on any number of devices."""
    t = config.train
    group = mixing_group_size(config)
    shards = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]

    def local(frames, labels, color, rng, first_group):
        x = frames[:, 0]  # views axis is 1 in training
        if color is not None:
            x = augment.augment(x, color)
        x = transforms.normalize(x, config.data.normalize)
        if not t.mixup:
            return x, mixup.smooth_one_hot(labels, num_classes, t.label_smoothing)
        return mixup.blend_groups(rng, x, labels, num_classes, group, first_group, t.label_smoothing,
                                  t.mixup_alpha, t.cutmix_alpha, t.mixup_switch_prob)

    def inputs(frames, labels, color, rng):
        if shards == 1 or (frames.shape[0] // shards) % group:
            return local(frames, labels, color, rng, 0)
        batch = P(sharding.BATCH_AXES)

        def per_shard(rng, frames, labels, color=None):
            first = jax.lax.axis_index(sharding.BATCH_AXES) * (frames.shape[0] // group)
            return local(frames, labels, color, rng, first)

        args = (rng, frames, labels) + (() if color is None else (color,))
        specs = (P(), batch, batch) + (() if color is None else (jax.tree.map(lambda _: batch, color),))
        return sharding.shard_map(per_shard, mesh, specs, (batch, batch))(*args)

    return inputs


def make_train_step(module, optimizer, config, num_classes, mesh=None):
    """The step; its `text` is class token ids [C, L] (the text tower runs and trains) or fixed text features
    [C, D] (`ViFiCLIP.text_features`: image-only training computes them once). With the `mesh` the batch is
    split over, augmentation and blending stay on each device (`make_input_fn`)."""
    inputs = make_input_fn(config, num_classes, mesh)

    def loss_fn(trainable, frozen, x, targets, text):
        logits = module.apply({"params": merge_params(trainable, frozen)}, x, text)
        return mixup.soft_target_cross_entropy(logits, targets)

    grad_fn = jax.value_and_grad(loss_fn)

    def train_step(state, frames, labels, text, color=None):
        """frames [ACC, B, 1, T, H, W, 3] uint8, labels [ACC, B], the loader's colour parameters
        (`transforms.COLOR_PARAMS`, leading axes [ACC, B]) when augmentation runs here, else None ->
        (new state, metrics): the mean loss and the global norms of the gradient, the trained parameters
        (after the update) and the update."""
        rng = jax.random.fold_in(state["rng"], state["step"])

        def micro(carry, micro_batch):
            grads_sum, loss_sum = carry
            index, x, y, c = micro_batch
            x, targets = inputs(x, y, c, jax.random.fold_in(rng, index))
            loss, grads = grad_fn(state["trainable"], state["frozen"], x, targets, text)
            return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss), None

        zeros = jax.tree.map(jnp.zeros_like, state["trainable"])
        steps = frames.shape[0]
        (grads, loss), _ = jax.lax.scan(micro, (zeros, 0.0), (jnp.arange(steps), frames, labels, color))
        grads = jax.tree.map(lambda g: g / steps, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
        trained = optax.apply_updates(state["trainable"], updates)
        new_state = dict(state, trainable=trained, opt_state=opt_state, step=state["step"] + 1)
        return new_state, {"loss": loss / steps, "grad_norm": global_norm(grads), "param_norm": global_norm(trained),
                           "update_norm": global_norm(updates)}

    return train_step


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each update. With several processes the handler is
    JAX's preemption service instead (`CheckpointManager.reached_preemption` gives every process the same
    step), so none is installed here."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle) if jax.process_count() == 1 else None

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint after this update, then exiting")
        self.requested = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _summary_writer(workdir):
    if jax.process_index() != 0:
        return None
    from tensorboardX import SummaryWriter
    return SummaryWriter(os.path.join(workdir, "tensorboard"))


def train_and_evaluate(config, workdir, resume_changed_config=False):
    """Run the configured training; returns the results dict that is also written to results.json.

    A workdir with checkpoints is resumed, unless its saved config differs in a field that changes results
    (`workdirs.ChangedConfigError`; `resume_changed_config=True` resumes anyway)."""
    config_checks.check(config)
    workdirs.prepare_training(workdir, config, resume_changed_config)
    t = config.train
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    process = (jax.process_index(), jax.process_count())
    if t.batch_size % jax.device_count():
        raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the {jax.device_count()} devices")

    train = data.train_split(config)
    num_classes = len(train.class_names)
    dtype = jnp.dtype(config.model.dtype)
    model, note = api.from_config(config.model, dtype, seed=config.seed)
    if note:
        log.warning(note)
    module = model.module
    ids = vifi.class_token_ids(train.class_names, config.text_mode, module.learned_text_prompts)

    iterations = pipeline.iterations_per_epoch(len(train.source), t.batch_size, t.reference_world_size)
    updates_per_epoch = iterations // t.accumulation_steps
    total_updates = t.epochs * updates_per_epoch
    if t.max_steps > 0:
        total_updates = min(total_updates, t.max_steps)
    optimizer, lr_fn = make_optimizer(config, iterations)
    state = init_state(model.params, t.use, optimizer, config.seed, mesh)
    # Image-only training: the text side is constant, so its features are computed once, not every step.
    text = model.encode_text(ids) if t.use == "image" else jnp.asarray(ids)
    n_trainable = sum(x.size for x in jax.tree.leaves(state["trainable"]))
    log.info("training %s parameters (%s mode) on %d videos, %d classes; %d updates of %d x %d clips",
                 f"{n_trainable:,}", t.use, len(train.source), num_classes, total_updates, t.accumulation_steps,
                 t.batch_size)

    ckpt = checkpoint.manager(os.path.abspath(os.path.join(workdir, workdirs.CHECKPOINTS)),
                              config.checkpoint.every_steps, config.checkpoint.keep, config.checkpoint.async_save)
    results_path = os.path.join(workdir, "results.json")
    results = {"config": config.to_dict(), "note": note, "history": [], "evaluations": {}}
    start_update = 0
    if ckpt.latest_step() is not None:
        start_update = ckpt.latest_step()
        state = checkpoint.restore(ckpt, start_update, state)
        log.info("resumed from checkpoint at update %d", start_update)
        _resume_results(results, results_path, start_update)

    leftover = iterations - updates_per_epoch * t.accumulation_steps  # micro-batches the official loop drops
    consumed = start_update * t.accumulation_steps + max(start_update - 1, 0) // updates_per_epoch * leftover
    ds = pipeline.train_dataset(train.source, data.clip_spec(config, True), t.batch_size, config.seed, t.epochs,
                                process, t.reference_world_size, start_batch=consumed)
    step_fn = jax.jit(make_train_step(module, optimizer, config, num_classes, mesh), donate_argnums=(0,),
                      out_shardings=(jax.tree.map(lambda x: x.sharding, state), sharding.replicated(mesh)))
    bad = pipeline.BadSamples(train.source, config.data.max_bad_fraction)
    data_iter = batches = writer = preemption = bar = None
    try:
        data_iter = pipeline.iterator(ds, config.data.num_workers)
        batches = prefetch.Prefetch(_update_batches(data_iter, mesh, range(start_update, total_updates),
                                                    t.accumulation_steps, updates_per_epoch, leftover))
        writer = _summary_writer(workdir)
        preemption = _Preemption()
        model_flops = flops.per_update(flops.model_fields(module), config, num_classes, ids.shape[1], mesh.size)
        losses = step_log.StepLog(config, lr_fn, total_updates, updates_per_epoch, results, writer, model_flops)
        compiled, last_saved, bad_pending = None, start_update, []
        bar = cli.progress(total_updates, "train", "update", initial=start_update, enabled=process[0] == 0)
        for update in range(start_update, total_updates):
            waiting = time.perf_counter()
            placed, bad_samples = next(batches)
            losses.waited += time.perf_counter() - waiting
            bad_pending.append(bad_samples)
            if compiled is None:
                compiled = step_fn.lower(state, placed["frames"], placed["label"], text, placed["color"]).compile()
                step_log.report_step_cost(compiled, config, results, model_flops, {
                    "texts": num_classes, "text_length": int(ids.shape[1]), "devices": mesh.size,
                    "micro_batches": t.accumulation_steps, "use": t.use})
                losses.restart()
            state, step_metrics = compiled(state, placed["frames"], placed["label"], text, placed["color"])
            done = update + 1
            losses.add(done, step_metrics)
            bar.update(1)
            preempted = preemption.requested or ckpt.reached_preemption(done)
            evaluates = evaluates_after(done, updates_per_epoch, total_updates, config.eval.every_epochs)
            saves = preempted or ckpt.should_save(done) or done == total_updates
            if done % config.log_every == 0 or evaluates or saves:
                try:
                    losses.fetch(bar)  # the only wait on the device: every log_every updates, or before a save
                except FloatingPointError as error:
                    ckpt.wait_until_finished()
                    raise FloatingPointError(f"{error}; nothing after update {last_saved} was saved, the last good "
                                             f"checkpoint is in {ckpt.directory} (lower train.lr or use "
                                             "model.dtype=float32)") from None
                for found in sharding.to_host(bad_pending):  # every process's reports: all stop together
                    bad.update(found)
                bad_pending = []
            if evaluates or saves:
                paused = time.time()
                if evaluates:
                    _evaluate_during_training(config, workdir, model, state, mesh, done, results, writer)
                if saves:
                    workdirs.write_json(results_path, results)  # first, so a kill after the save loses no history
                    checkpoint.save(ckpt, done, state, force=preempted or done == total_updates)
                    last_saved = done
                losses.exclude(time.time() - paused)  # speed figures count training time only
            if preempted:
                ckpt.wait_until_finished()
                results["preempted_at"] = done
                workdirs.write_json(results_path, results)
                log.warning("saved update %d after SIGTERM; rerun the same command to resume", done)
                return results
        ckpt.wait_until_finished()
        _final_evaluation(config, workdir, model, state, mesh, results, writer)
        bad_report = bad.summary()
        results["bad_videos"] = bad_report
        if process[0] == 0:
            bad.write(os.path.join(workdir, "bad_videos.json"))
        log.info("unreadable training videos: %d of %d (%s), listed in bad_videos.json", bad_report["count"],
                 bad_report["dataset_size"], bad_report["by_reason"] or "none")
        workdirs.write_json(results_path, results)
        return results
    except BaseException:
        if jax.process_count() > 1:
            # A save in flight needs every process; after a failure (often: another process died) waiting
            # for it would block until JAX aborts, so this process leaves its error at once instead.
            ckpt = None
        raise
    finally:
        for resource, release in ((bar, "close"), (batches, "close"), (preemption, "restore"), (writer, "close")):
            if resource is not None:
                getattr(resource, release)()
        if data_iter is not None:
            pipeline.close(data_iter)
        if ckpt is not None:
            ckpt.wait_until_finished()
            ckpt.close()


def _resume_results(results, results_path, start_update):
    """Keep the history, evaluations and best of the run being resumed, up to its checkpoint."""
    if not os.path.exists(results_path):
        return
    with open(results_path) as f:
        previous = json.load(f)
    results["history"] = [h for h in previous.get("history", []) if h["step"] <= start_update]
    results["evaluations"] = {k: v for k, v in previous.get("evaluations", {}).items()
                              if k.startswith("step_") and int(k[len("step_"):]) <= start_update}
    if previous.get("best", {}).get("step", start_update + 1) <= start_update:
        results["best"] = previous["best"]


def _update_batches(data_iter, mesh, updates, accumulation_steps, updates_per_epoch, leftover):
    """Per update: (its micro-batches stacked and placed as global arrays {frames, label, color (the colour
    parameters, None when the loader applied them)}, the bad-sample reports of all
    micro-batches read for it, also as global arrays); at each epoch start, first the micro-batches the
    official loop drops."""
    for update in updates:
        read = []
        if update and update % updates_per_epoch == 0:
            read += [next(data_iter) for _ in range(leftover)]
        micro = [next(data_iter) for _ in range(accumulation_steps)]
        stack = lambda keys: {k: np.stack([b[k] for b in micro]) for k in keys}
        color = stack(transforms.COLOR_PARAMS) if "order" in micro[0] else None  # None: the loader applied them
        placed = sharding.global_batch(mesh, dict(stack(("frames", "label")), color=color), leading_axes=1)
        reports = {k: np.concatenate([b[k] for b in read + micro]) for k in ("bad_index", "bad_reason")}
        yield placed, sharding.global_batch(mesh, reports)  # gathered from every process when metrics are


def evaluates_after(done, updates_per_epoch, total_updates, every_epochs):
    """Whether the official loop validates after this update: at the end of 0-based epoch e when
    e % SAVE_FREQ == 0 (epochs 1, 11, 21, … counted from 1) and at the end of the last epoch."""
    if done == total_updates:
        return True
    return done % updates_per_epoch == 0 and (done // updates_per_epoch - 1) % every_epochs == 0


def _params(state):
    return merge_params(state["trainable"], state["frozen"])


def _evaluate_during_training(config, workdir, model, state, mesh, step, results, writer):
    """Evaluate with the training-time views; a new best (on `eval.best_set`) is exported to `best/`."""
    params = _params(state)
    found = evaluate.evaluate_sets(config, model.module, params, mesh, config.eval.num_clips, config.eval.num_crops)
    results["evaluations"][f"step_{step}"] = found
    if writer:
        for name, m in found.items():
            writer.add_scalar(f"eval/{name}/top1", m["top1"], step)
    best_set = config.eval.best_set or next(iter(found))
    if best_set not in found:
        raise ValueError(f"eval.best_set={best_set!r} is not one of the evaluation sets {sorted(found)}")
    if found[best_set]["top1"] > results.get("best", {}).get("top1", -1.0):
        results["best"] = {"top1": found[best_set]["top1"], "step": step, "set": best_set}
        model_dir.save(os.path.join(workdir, "best"), model.config, sharding.to_host(params))


def _final_evaluation(config, workdir, model, state, mesh, results, writer):
    """Export `final/` and evaluate with the final views (the last epoch's evaluation, when the views agree)."""
    params = _params(state)
    model_dir.save(os.path.join(workdir, "final"), model.config, sharding.to_host(params))
    last = results["evaluations"].get(f"step_{int(state['step'])}")
    same_views = (config.eval.final_num_clips, config.eval.final_num_crops) == (config.eval.num_clips,
                                                                                 config.eval.num_crops)
    found = last if last and same_views else evaluate.evaluate_sets(
        config, model.module, params, mesh, config.eval.final_num_clips, config.eval.final_num_crops)
    results["final"] = found
    results["summary"] = metrics.summarize_sets(found)
    if writer:
        for name, m in found.items():
            writer.add_scalar(f"final/{name}/top1", m["top1"], int(state["step"]))
