"""Classification evaluation: class texts encoded once, every video's views scored, softmax summed over views.

`evaluate` gives metrics in percent plus the counts behind them for one split, `evaluate_sets` for every
configured set, and `run_evaluation` is the evaluation job of `main`.
"""
import logging
import os
import time

import jax
import jax.numpy as jnp

from vifi_jax import api
from vifi_jax.evaluators import metrics, scoring
from vifi_jax.models import vifi
from vifi_jax.runtime import config_checks, data, sharding, workdirs

log = logging.getLogger(__name__)


def evaluate(module, params, split, spec, batch_size, mesh, text_mode="auto", num_workers=0, seed=0,
             normalize_kind="imagenet"):
    """Metrics dict for one Split (see vifi_jax.runtime.data) with the views of `spec`; shows a progress bar."""
    ids = vifi.class_token_ids(split.class_names, text_mode, module.learned_text_prompts)
    text = scoring.text_features(module, params, jnp.asarray(ids))
    start = time.time()
    scores, labels, _, unreadable = scoring.score_views(module, params, split.source, spec, text, batch_size, mesh,
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
