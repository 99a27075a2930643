"""Every video of a source scored against texts: the loop evaluation and retrieval share.

Every video of a split is counted (padding + validity mask); unreadable videos are excluded and listed,
never replaced."""
import functools

import jax
import numpy as np

from data_pipelines import cli, pipeline, transforms
from vifi_jax.runtime import sharding


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
