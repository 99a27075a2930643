"""Evaluation: class texts encoded once, every video's views scored, softmax summed over views.

Every video of a split is counted (padding + validity mask); unreadable videos are excluded and listed,
never replaced. `evaluate` gives metrics in percent plus the counts behind them for one split,
`evaluate_sets` for every configured set, and `run_evaluation` is the evaluation job of `main`.
"""
import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import cli, pipeline, transforms
from vifi_jax import api, config_checks, data, metrics, sharding, workdirs
from vifi_jax.models import vifi

log = logging.getLogger(__name__)


@functools.partial(jax.jit, static_argnums=0)
def text_features(module, params, ids):
    return module.apply({"params": params}, ids, method="text_features")


@functools.partial(jax.jit, static_argnums=(0, 1))
def view_logits(module, normalize_kind, params, frames, text):
    """uint8 frames [B, V, T, H, W, 3] -> logits [B, V, C] of every view."""
    batch, views = frames.shape[:2]
    x = transforms.normalize(frames.reshape(batch * views, *frames.shape[2:]), normalize_kind)
    return module.apply({"params": params}, x, text).reshape(batch, views, -1)


def score_views(module, params, source, spec, text, batch_size, mesh, reduce, num_workers=0, seed=0,
                normalize_kind="imagenet", description="eval"):
    """Every video of `source` scored against the text features `text` with the views of `spec`, with a
    progress bar: (reduce(logits [B, V, C]) of the readable videos, their labels, their source indices,
    the unreadable ones' report). Every video is read once; padding and unreadable videos are left out."""
    process = (jax.process_index(), jax.process_count())
    batch_size = -(-batch_size // jax.device_count()) * jax.device_count()  # whole batches on every device
    ds = pipeline.eval_dataset(source, spec, batch_size // jax.process_count(), seed, process,
                               multiple=jax.device_count())
    bad = pipeline.BadSamples(source, max_fraction=1.0)
    scores, labels, indices, valid = [], [], [], []
    batches = pipeline.iterator(ds, num_workers)
    bar = cli.progress(len(source), description, "video", enabled=process[0] == 0)
    try:
        for batch in batches:
            bad.update(batch)
            placed = sharding.global_batch(mesh, {k: batch[k] for k in ("frames", "label", "index", "valid")})
            host = sharding.to_host({"logits": view_logits(module, normalize_kind, params, placed["frames"], text),
                                     **{key: placed[key] for key in ("label", "index", "valid")}})
            scores.append(reduce(host["logits"]))
            for kept, key in ((labels, "label"), (indices, "index"), (valid, "valid")):
                kept.append(host[key])
            bar.update(min(placed["frames"].shape[0], len(source) - bar.n))
    finally:
        pipeline.close(batches)
        bar.close()
    valid = np.concatenate(valid)
    return (np.concatenate(scores)[valid], np.concatenate(labels)[valid], np.concatenate(indices)[valid],
            bad.summary()["videos"])


def evaluate(module, params, split, spec, batch_size, mesh, text_mode="auto", num_workers=0, seed=0,
             normalize_kind="imagenet"):
    """Metrics dict for one Split (see vifi_jax.data) with the views of `spec`; shows a progress bar."""
    ids = vifi.class_token_ids(split.class_names, text_mode, module.learned_text_prompts)
    text = text_features(module, params, jnp.asarray(ids))
    start = time.time()
    scores, labels, _, unreadable = score_views(module, params, split.source, spec, text, batch_size, mesh,
                                                metrics.aggregate_views, num_workers, seed, normalize_kind,
                                                f"eval {split.description}")
    result = metrics.accuracy(scores, labels, len(split.class_names))
    result.update(videos=len(split.source), evaluated=len(labels), views=spec.num_views, unreadable=unreadable,
                  seconds=time.time() - start)
    return result


def evaluate_sets(config, module, params, mesh, num_clips, num_crops):
    """{set name: metrics} for every entry of config.eval.sets, with num_clips x num_crops views."""
    spec = data.clip_spec(config, False, num_clips, num_crops)
    out = {}
    for name, split in data.eval_splits(config).items():
        out[name] = evaluate(module, params, split, spec, config.eval.batch_size, mesh, config.text_mode,
                             config.data.num_workers, config.seed, config.data.normalize)
        log.info("eval %s (%d views): top1 %.2f top5 %.2f mean-class %.2f on %d/%d videos", name,
                 spec.num_views, out[name]["top1"], out[name]["top5"], out[name]["mean_class"],
                 out[name]["evaluated"], out[name]["videos"])
    return out


def run_evaluation(config, workdir):
    """Evaluate `model.init` on every eval set with the final views; returns (and writes) the results."""
    config_checks.check(config)
    model, note = api.from_config(config.model, jnp.dtype(config.model.dtype), seed=config.seed)
    if note:
        log.warning(note)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    params = jax.device_put(model.params, sharding.tree_shardings(mesh, model.params))
    start = time.time()
    found = evaluate_sets(config, model.module, params, mesh, config.eval.final_num_clips, config.eval.final_num_crops)
    results = {"config": config.to_dict(), "note": note, "model": config.model.init, "final": found,
               "summary": metrics.summarize_sets(found), "seconds": time.time() - start}
    workdirs.write_json(os.path.join(workdir, "results.json"), results)
    return results
