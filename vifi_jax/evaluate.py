"""Evaluation of a set: class texts encoded once, every video's views scored, softmax summed over views.

Every video of the split is counted (padding + validity mask); unreadable videos are excluded and
listed, never replaced. Returns metrics in percent plus the counts behind them.
"""
import functools
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from data_pipelines import cli, pipeline, transforms
from vifi_jax import data, metrics, sharding, tokenizer
from vifi_jax.models import clip, vifi

log = logging.getLogger(__name__)


def normalize_frames(frames_uint8, kind="imagenet"):
    """uint8 [..., 3] -> float32 (x - mean) / std on the accelerator."""
    mean, std = transforms.NORMALIZATIONS[kind]
    return (frames_uint8.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def class_token_ids(class_names, text_mode, text_prompts=0):
    """Tokenised class texts, cut to the shortest exact length bucket (see tokenizer.truncate).

    `text_mode` "auto" (or None) is the model's own: prompt with text prompts, template otherwise."""
    mode = None if text_mode in (None, "auto") else text_mode
    return tokenizer.truncate(tokenizer.tokenize(vifi.class_texts(class_names, mode, text_prompts)))


@functools.partial(jax.jit, static_argnums=0)
def text_features(module, params, ids):
    """L2-normalised class text embeddings [C, D]."""
    return clip.l2_normalize(module.apply({"params": params}, ids, method="encode_text").astype(jnp.float32))


@functools.partial(jax.jit, static_argnums=(0, 1))
def view_logits(module, normalize_kind, params, frames, text):
    """uint8 frames [B, V, T, H, W, 3] -> logits [B, V, C] of every view."""
    batch, views = frames.shape[:2]
    x = normalize_frames(frames.reshape(batch * views, *frames.shape[2:]), normalize_kind)
    video = clip.l2_normalize(module.apply({"params": params}, x, method="encode_video"))
    logits = jnp.exp(params["logit_scale"]) * video @ text.T
    return logits.reshape(batch, views, -1)


def to_host(tree):
    """Full numpy copies of (possibly sharded, multi-host) arrays."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def evaluate(module, params, split, spec, batch_size, mesh, text_mode="auto", num_workers=0, seed=0,
             normalize_kind="imagenet"):
    """Metrics dict for one Split (see vifi_jax.data) with the views of `spec`; shows a progress bar."""
    ids = class_token_ids(split.class_names, text_mode, module.learned_text_prompts)
    text = text_features(module, params, jnp.asarray(ids))
    process = (jax.process_index(), jax.process_count())
    batch_size = -(-batch_size // jax.device_count()) * jax.device_count()  # whole batches on every device
    local_batch = batch_size // jax.process_count()
    ds = pipeline.eval_dataset(split.source, spec, local_batch, seed, process)
    bad = pipeline.BadSamples(split.source, max_fraction=1.0)
    scores, labels, valid, start = [], [], [], time.time()
    batches = pipeline.iterator(ds, num_workers)
    bar = cli.progress(len(split.source), f"eval {split.description}", "video", enabled=process[0] == 0)
    try:
        for batch in batches:
            bad.update(batch)
            placed = sharding.global_batch(mesh, {k: batch[k] for k in ("frames", "label", "valid")})
            logits = to_host(view_logits(module, normalize_kind, params, placed["frames"], text))
            scores.append(metrics.aggregate_views(logits))
            labels.append(to_host(placed["label"]))
            valid.append(to_host(placed["valid"]))
            bar.update(min(batch_size, len(split.source) - bar.n))
    finally:
        pipeline.close(batches)
        bar.close()
    scores, labels, valid = np.concatenate(scores), np.concatenate(labels), np.concatenate(valid)
    result = metrics.accuracy(scores[valid], labels[valid], len(split.class_names))
    result.update(videos=len(split.source), evaluated=int(valid.sum()), views=spec.num_views,
                  unreadable=bad.summary()["videos"], seconds=time.time() - start)
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


def summarize(found):
    """Base/novel sets: their harmonic mean. Several other sets (e.g. the three zero-shot splits): mean ± std
    of top-1, with the std's convention named in the result."""
    if "base" in found and "novel" in found:
        return {"harmonic_mean": metrics.harmonic_mean(found["base"]["top1"], found["novel"]["top1"])}
    if len(found) > 1:
        mean, std = metrics.mean_std([m["top1"] for m in found.values()])
        return {"top1_mean": mean, "top1_std": std, "std": metrics.STD_CONVENTION}
    return {}


def write_json(path, obj):
    """Write results atomically (process 0 only)."""
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(path + ".tmp", path)
