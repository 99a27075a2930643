"""Every video of a source scored against texts: the loop both evaluators share.

Every video of a split is counted (padding + validity mask); unreadable videos are excluded and listed,
never replaced. An evaluation that reads none of its first EARLY_STOP videos stops there, and one that read
no video at all is an error, never a metric of nothing.
"""
import jax
import numpy as np

from data_pipelines import cli, pipeline
from vifi_jax.runtime import sharding

EARLY_STOP = 32


class NothingReadError(RuntimeError):
    """An evaluation could read none of its videos."""


def _nothing_read(description, seen, bad):
    found = bad.summary()
    examples = "; ".join(f"{v['file']} ({v['reason']})" for v in found["videos"][:3])
    return NothingReadError(f"{description}: none of the {'first ' if seen < len(bad.source) else ''}{seen} videos "
                            f"could be read{f', e.g. {examples}' if examples else ''}; check data.root and the list "
                            "file's paths (nothing was evaluated)")


def score_views(encoder, source, spec, text, batch_size, mesh, reduce, num_workers=0, seed=0,
                normalize_kind="imagenet", description="eval"):
    """Every video of `source` scored by `encoder` (`runtime.encoder.Encoder`) against the text features
    `text` with the views of `spec`, with a progress bar: (reduce(logits [B, V, C]) of the readable videos,
    their labels, their source indices, the unreadable ones' report). Every video is read once; padding and
    unreadable videos are left out."""
    process = (jax.process_index(), jax.process_count())
    batch_size = -(-batch_size // mesh.size) * mesh.size  # whole batches on every device
    ds = pipeline.eval_dataset(source, spec, batch_size // process[1], seed, process, multiple=mesh.size)
    bad = pipeline.BadSamples(source, max_fraction=1.0)
    scores, labels, indices, valid, seen = [], [], [], [], 0
    batches = pipeline.iterator(ds, num_workers)
    bar = cli.progress(len(source), description, "video", enabled=process[0] == 0)
    try:
        for batch in batches:
            bad.update(batch)
            placed = sharding.global_batch(mesh, {k: batch[k] for k in ("frames", "label", "index", "valid")})
            host = sharding.to_host({"logits": encoder.view_logits(placed["frames"], text, normalize_kind),
                                     **{key: placed[key] for key in ("label", "index", "valid")}})
            scores.append(reduce(host["logits"]))
            for kept, key in ((labels, "label"), (indices, "index"), (valid, "valid")):
                kept.append(host[key])
            step = min(placed["frames"].shape[0], len(source) - seen)
            seen += step
            bar.update(step)
            readable = sum(int(v.sum()) for v in valid)  # the same on every process (gathered)
            if not readable and seen >= min(EARLY_STOP, len(source)):
                raise _nothing_read(description, seen, bad)
    finally:
        pipeline.close(batches)
        bar.close()
    valid = np.concatenate(valid) if valid else np.zeros(0, bool)
    if not valid.any():
        raise _nothing_read(description, len(source), bad)
    return (np.concatenate(scores)[valid], np.concatenate(labels)[valid], np.concatenate(indices)[valid],
            bad.summary()["videos"])
