"""Evaluators behind one interface, and the evaluation job of `main`.

An evaluator is built once from the config and a mesh and then `run(module, params)` any number of times
(after each epoch during training, once for a checkpoint) -> {name: metrics}; `headline(metrics)` is the
number training keeps its best model by (named `best_metric`); `summary(found)` condenses several sets
(mean ± std over splits, base/novel harmonic mean) or is None.
"""
import logging
import time

from data_pipelines import storage

from vifi_jax.evaluators.classification import ClassificationEvaluator
from vifi_jax.evaluators.retrieval import RetrievalEvaluator
from vifi_jax.runtime import config_checks
from vifi_jax.runtime import session as session_lib
from vifi_jax.runtime import workdirs

log = logging.getLogger(__name__)


def make(config, mesh, final=True):
    """The evaluator of `config.task`: retrieval, or classification with the final views (`final`) or the
    views used during training."""
    if config.task == "retrieval":
        return RetrievalEvaluator(config, mesh)
    e = config.eval
    clips, crops = (e.final_num_clips, e.final_num_crops) if final else (e.num_clips, e.num_crops)
    return ClassificationEvaluator(config, mesh, clips, crops)


def run(config, workdir):
    """Evaluate `model.init` with the config's evaluator; returns (and writes) the results."""
    config_checks.check(config)  # before the workdir is touched
    workdirs.claim(workdir)
    with workdirs.lock(workdir):
        return _evaluate(config, workdir)


def _evaluate(config, workdir):
    start, found = time.time(), {}
    results = {"config": config.to_dict(), "note": None, "model": None, "final": found}
    path = storage.join(workdir, "results.json")
    try:
        workdirs.save_config(workdir, config)
        session = session_lib.from_config(config)
        if session.note:
            log.warning(session.note)
        results.update(note=session.note, model=session.weights)
        evaluator = make(config, session.mesh)
        evaluator.run(session.module, session.params, found)
    except KeyboardInterrupt:
        results.update(partial=True, interrupted="by Ctrl-C; final holds only the sets finished before",
                       seconds=time.time() - start)
        workdirs.write_json(path, results)
        log.warning("interrupted: %s holds %s (marked partial)", path,
                    f"the finished sets {sorted(found)}" if found else "no results: no set had finished")
        raise
    summary = evaluator.summary(found)
    if summary is not None:
        results["summary"] = summary
    results["seconds"] = time.time() - start
    workdirs.write_json(path, results)
    return results
