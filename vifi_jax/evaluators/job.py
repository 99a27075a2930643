"""Evaluators behind one interface, and the evaluation job of `main`.

An evaluator is built once from the config and a mesh and then `run(module, params)` any number of times
(after each epoch during training, once for a checkpoint) -> {name: metrics}; `summary(found)` condenses
several sets (mean ± std over splits, base/novel harmonic mean) or is None.
"""
import logging
import os
import time

from vifi_jax.evaluators.classification import ClassificationEvaluator
from vifi_jax.evaluators.retrieval import RetrievalEvaluator
from vifi_jax.runtime import session as session_lib
from vifi_jax.runtime import workdirs

log = logging.getLogger(__name__)


def make(config, mesh, final=True):
    """The evaluator of `config.mode`: retrieval, or classification with the final views (`final`) or the
    views used during training."""
    if config.mode == "retrieval":
        return RetrievalEvaluator(config, mesh)
    e = config.eval
    clips, crops = (e.final_num_clips, e.final_num_crops) if final else (e.num_clips, e.num_crops)
    return ClassificationEvaluator(config, mesh, clips, crops)


def run(config, workdir):
    """Evaluate `model.init` with the config's evaluator; returns (and writes) the results."""
    session = session_lib.from_config(config)
    if session.note:
        log.warning(session.note)
    evaluator = make(config, session.mesh)
    start = time.time()
    found = evaluator.run(session.module, session.params)
    results = {"config": config.to_dict(), "note": session.note, "model": session.weights, "final": found,
               "summary": evaluator.summary(found), "seconds": time.time() - start}
    if results["summary"] is None:
        del results["summary"]
    workdirs.write_json(os.path.join(workdir, "results.json"), results)
    return results
