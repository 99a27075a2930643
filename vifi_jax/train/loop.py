"""The training loop: data placed on the devices ahead of the step, metrics fetched only every `log_every`
updates and before a save (a non-finite loss is never saved), Orbax checkpoints and resuming from the latest
one (the data position follows from the update count, with any number of processes), evaluation as the
official loop does it, the best model kept, and a save before exiting on SIGTERM (with several processes, at
the step they agree on through JAX's preemption service).
"""
import dataclasses
import logging
import signal

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import cli, files, pipeline, storage, transforms
from vifi_jax.evaluators import job, retrieval
from vifi_jax.models import flops
from vifi_jax.runtime import config_checks, data, encoder, sharding, workdirs
from vifi_jax.runtime import session as session_lib
from vifi_jax.train import checkpoint, optim, prefetch, step_log, steps, summaries
from vifi_jax.weights import model_dir

log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class Plan:
    """How many updates a run makes, counted as the official loop counts them."""
    iterations: int         # loader iterations per epoch (the official 8-GPU DistributedSampler's)
    updates_per_epoch: int
    total_updates: int
    leftover: int           # micro-batches per epoch the official loop drops

    @classmethod
    def of(cls, config, videos):
        t = config.train
        iterations = pipeline.iterations_per_epoch(videos, t.batch_size, t.reference_world_size)
        per_epoch = iterations // t.accumulation_steps
        total = t.epochs * per_epoch if t.max_steps <= 0 else min(t.epochs * per_epoch, t.max_steps)
        return cls(iterations, per_epoch, total, iterations - per_epoch * t.accumulation_steps)

    def consumed(self, config, start_update):
        """Micro-batches the loader has produced before update `start_update` (dropped ones included)."""
        t = config.train
        return start_update * t.accumulation_steps + max(start_update - 1, 0) // self.updates_per_epoch * self.leftover


def train_and_evaluate(config, workdir, resume_changed_config=False):
    """Run the configured training; returns the results dict that is also written to results.json.

    A workdir with checkpoints is resumed, unless its saved config differs in a field that changes results
    (`workdirs.ChangedConfigError`; `resume_changed_config=True` resumes anyway)."""
    config_checks.check(config)  # before the workdir is touched
    workdirs.claim(workdir)
    with workdirs.lock(workdir):
        workdirs.prepare_training(workdir, config, resume_changed_config)
        return _setup_and_train(config, workdir)


def _setup_and_train(config, workdir):
    t = config.train
    session = session_lib.from_config(config)
    if session.note:
        log.warning(session.note)
    if t.batch_size % session.mesh.size:
        raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the {session.mesh.size} devices")
    train = data.captioned_train_split(config) if config.task == "retrieval" else data.train_split(config)
    plan = Plan.of(config, len(train.source))
    optimizer, lr_fn = optim.make_optimizer(config, plan.iterations)
    # Placed shard by shard from host memory, then donated to the state: the parameters exist once.
    state = optim.init_state(session_lib.place(session.host_params, session.mesh), t.use, optimizer, config.seed,
                             session.mesh, donate=True)
    log.info("training %s parameters (%s mode) on %d %s, %d %s; %d updates of %d x %d clips",
             f"{sum(x.size for x in jax.tree.leaves(state['trainable'])):,}", t.use, len(train.source),
             "samples" if config.task == "retrieval" else "videos", len(train.class_names),
             "captions" if config.task == "retrieval" else "classes", plan.total_updates, t.accumulation_steps,
             t.batch_size)
    ckpt = checkpoint.manager(storage.absolute(storage.join(workdir, workdirs.CHECKPOINTS)),
                              config.checkpoint.every_steps, config.checkpoint.keep, config.checkpoint.async_save)
    # Every run saves at least once (at its end): a disk that cannot hold a checkpoint is named now, not after
    # the updates before the first save. Each save checks again (the disk may fill meanwhile).
    checkpoint.check_room(ckpt, state)
    results = {"config": config.to_dict(), "note": session.note, "model": session.weights, "history": [],
               "evaluations": {}}
    start_update = 0
    if ckpt.latest_step() is not None:
        start_update = ckpt.latest_step()
        state = checkpoint.restore(ckpt, start_update, state)
        log.info("resumed from checkpoint at update %d", start_update)
        _resume_results(results, storage.join(workdir, "results.json"), start_update)
    try:
        return _train(config, workdir, session, train, plan, optimizer, lr_fn, state, ckpt, results, start_update)
    except BaseException:
        if jax.process_count() > 1:
            # A save in flight needs every process; after a failure (often: another process died) waiting
            # for it would block until JAX aborts, so this process leaves its error at once instead.
            ckpt = None
        raise
    finally:
        if ckpt is not None:
            ckpt.wait_until_finished()
            ckpt.close()


def _train(config, workdir, session, train, plan, optimizer, lr_fn, state, ckpt, results, start_update):
    """The updates from `start_update` on, the evaluations and saves between them, and the final evaluation."""
    t, mesh, module = config.train, session.mesh, session.module
    process = (jax.process_index(), jax.process_count())
    results_path = storage.join(workdir, "results.json")
    captions = None
    if config.task == "retrieval":  # each clip's drawn caption, looked up as its batch is placed
        captions = retrieval.free_text_ids(module, train.class_names, config.retrieval.max_words)
        text, work_texts, text_length = None, t.batch_size, captions.shape[1]
    else:
        ids = session.class_token_ids(train.class_names)
        # Image-only training: the text side is constant, so its features are computed once, not every step.
        text = encoder.Encoder(module, _params(state)).text_features(ids) if t.use == "image" else jnp.asarray(ids)
        work_texts, text_length = len(train.class_names), int(ids.shape[1])
    evaluator = job.make(config, mesh, final=False)
    spec = data.clip_spec(config, True)
    ds = pipeline.train_dataset(train.source, spec, t.batch_size, config.seed, t.epochs, process,
                                t.reference_world_size, start_batch=plan.consumed(config, start_update))
    step_fn = steps.jit_train_step(module, optimizer, config, len(train.class_names), mesh, state)
    work = {"texts": work_texts, "text_length": text_length, "devices": mesh.size,
            "micro_batches": t.accumulation_steps, "use": t.use}
    bad = pipeline.BadSamples(train.source, config.data.max_bad_fraction)
    data_iter = batches = writer = preemption = bar = None
    try:
        data_iter = pipeline.iterator(ds, config.data.num_workers)
        batches = prefetch.Prefetch(_update_batches(data_iter, mesh, range(start_update, plan.total_updates),
                                                    t.accumulation_steps, plan.updates_per_epoch, plan.leftover,
                                                    spec.augment_on, captions))
        writer = summaries.writer(workdir)
        preemption = _Preemption()
        losses = step_log.StepLog(config, lr_fn, plan.total_updates, plan.updates_per_epoch, results, writer,
                                  flops.per_update(flops.model_fields(module), config, work["texts"],
                                                   work["text_length"], mesh.size))
        compiled, last_saved, bad_pending = None, start_update, []
        bar = cli.progress(plan.total_updates, "train", "update", initial=start_update, enabled=process[0] == 0)
        for done in range(start_update + 1, plan.total_updates + 1):
            with losses.waiting():
                placed, bad_samples = next(batches)
            bad_pending.append(bad_samples)
            if compiled is None:
                compiled = step_fn.lower(state, placed["frames"], placed["label"], text, placed["color"]).compile()
                losses.start(compiled, work)
            state, step_metrics = compiled(state, placed["frames"], placed["label"], text, placed["color"])
            losses.add(done, step_metrics)
            bar.update(1)
            preempted = preemption.requested or ckpt.reached_preemption(done)
            evaluates = evaluates_after(done, plan.updates_per_epoch, plan.total_updates, config.eval.every_epochs)
            saves = preempted or ckpt.should_save(done) or done == plan.total_updates
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
            with losses.paused():  # speed figures count training time only
                if evaluates:
                    _evaluate_during_training(config, workdir, session, evaluator, state, done, results, writer)
                if saves:
                    workdirs.write_json(results_path, results)  # first, so a kill after the save loses no history
                    checkpoint.save(ckpt, done, state, force=preempted or done == plan.total_updates)
                    last_saved = done
            if preempted:
                ckpt.wait_until_finished()
                results["preempted_at"] = done
                workdirs.write_json(results_path, results)
                log.warning("saved update %d after SIGTERM; rerun the same command to resume", done)
                return results
        ckpt.wait_until_finished()
        _final_evaluation(config, workdir, session, evaluator, state, results, writer)
        results["bad_videos"] = bad.summary()
        if process[0] == 0:
            bad.write(storage.join(workdir, "bad_videos.json"))
        log.info("unreadable training videos: %d of %d (%s), listed in bad_videos.json", results["bad_videos"]["count"],
                 results["bad_videos"]["dataset_size"], results["bad_videos"]["by_reason"] or "none")
        workdirs.write_json(results_path, results)
        return results
    finally:
        for resource, release in ((bar, "close"), (batches, "close"), (preemption, "restore"), (writer, "close")):
            if resource is not None:
                getattr(resource, release)()
        if data_iter is not None:
            pipeline.close(data_iter)


def _resume_results(results, results_path, start_update):
    """Keep the history, evaluations and best of the run being resumed, up to its checkpoint."""
    if not storage.exists(results_path):
        return
    previous = files.read_json(results_path, "results file of the run being resumed",
                               "delete it to resume without the earlier history")
    results["history"] = [h for h in previous.get("history", []) if h["step"] <= start_update]
    results["evaluations"] = {k: v for k, v in previous.get("evaluations", {}).items()
                              if k.startswith("step_") and int(k[len("step_"):]) <= start_update}
    if previous.get("best", {}).get("step", start_update + 1) <= start_update:
        results["best"] = previous["best"]


def _update_batches(data_iter, mesh, updates, accumulation_steps, updates_per_epoch, leftover, augment_on="device",
                    captions=None):
    """Per update: (its micro-batches stacked and placed as global arrays {frames, label, color (the colour
    parameters with augment_on="device", None when the loader applied them)}, the bad-sample reports of all
    micro-batches read for it, also as global arrays); at each epoch start, first the micro-batches the
    official loop drops. With `captions` (token ids [num_captions, L]), labels are caption indices and
    `label` holds their token ids [ACC, B, L]."""
    for update in updates:
        read = []
        if update and update % updates_per_epoch == 0:
            read += [next(data_iter) for _ in range(leftover)]
        micro = [next(data_iter) for _ in range(accumulation_steps)]
        stack = lambda keys: {k: np.stack([b[k] for b in micro]) for k in keys}
        color = stack(transforms.COLOR_PARAMS) if augment_on == "device" else None
        batch = dict(stack(("frames", "label")), color=color)
        if captions is not None:
            batch["label"] = captions[batch["label"]]
        placed = sharding.global_batch(mesh, batch, leading_axes=1)
        reports = {k: np.concatenate([b[k] for b in read + micro]) for k in ("bad_index", "bad_reason")}
        yield placed, sharding.global_batch(mesh, reports)  # gathered from every process when metrics are


def evaluates_after(done, updates_per_epoch, total_updates, every_epochs):
    """Whether the official loop validates after this update: at the end of 0-based epoch e when
    e % SAVE_FREQ == 0 (epochs 1, 11, 21, … counted from 1) and at the end of the last epoch."""
    if done == total_updates:
        return True
    return done % updates_per_epoch == 0 and (done // updates_per_epoch - 1) % every_epochs == 0


def _params(state):
    return optim.merge_params(state["trainable"], state["frozen"])


def _evaluate_during_training(config, workdir, session, evaluator, state, step, results, writer):
    """Evaluate with the training-time views; a new best (on `eval.best_set`) is exported to `best/`."""
    params = _params(state)
    found = evaluator.run(session.module, params)
    results["evaluations"][f"step_{step}"] = found
    metric = evaluator.best_metric  # top1, or t2v_R1 for retrieval
    if writer:
        for name, m in found.items():
            writer.add_scalar(f"eval/{name}/{metric}", evaluator.headline(m), step)
    best_set = config.eval.best_set or next(iter(found))
    if best_set not in found:
        raise ValueError(f"eval.best_set={best_set!r} is not one of the evaluation sets {sorted(found)}")
    if evaluator.headline(found[best_set]) > results.get("best", {}).get(metric, -1.0):
        results["best"] = {metric: evaluator.headline(found[best_set]), "step": step, "set": best_set}
        model_dir.save(storage.join(workdir, "best"), session.model_config, sharding.to_host(params))


def _final_evaluation(config, workdir, session, evaluator, state, results, writer):
    """Export `final/` and evaluate with the final views (the last epoch's evaluation, when the views agree)."""
    params = _params(state)
    model_dir.save(storage.join(workdir, "final"), session.model_config, sharding.to_host(params))
    last = results["evaluations"].get(f"step_{int(state['step'])}")
    e = config.eval
    if not (last and (e.final_num_clips, e.final_num_crops) == (e.num_clips, e.num_crops)):
        evaluator = job.make(config, session.mesh, final=True)
        last = evaluator.run(session.module, params)
    results["final"] = last
    results["summary"] = evaluator.summary(last)
    if writer:
        for name, m in last.items():
            writer.add_scalar(f"final/{name}/{evaluator.best_metric}", evaluator.headline(m), int(state["step"]))
