"""Entry point: python -m vifi_jax.main --config=configs/<name>.py[:args] [--workdir=DIR] [--config.key=value]

`config.mode` picks the job: "train" (fine-tune, evaluating on the way and at the end) or
"eval" / "zeroshot" (score `model.init` on every `eval.sets` entry, with mean ± std over several sets
and the base/novel harmonic mean where they apply). The config is logged and saved as
`<workdir>/config.json`; results go to `<workdir>/results.json`.
"""
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from vifi_jax import api, evaluate, sharding, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config, e.g. configs/zeroshot.py or "
                                "configs/few_shot.py:dataset=hmdb51,shots=2", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go (default: workdirs/<config name>).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host TPU pods / GPU clusters).")


def default_workdir(config_argument):
    name = os.path.splitext(os.path.basename(config_argument.split(":")[0]))[0]
    arg = config_argument.partition(":")[2].replace(",", "_").replace("=", "-")
    return os.path.join("workdirs", name + (f"_{arg}" if arg else ""))


def _quiet_libraries(record):
    """Keep Orbax's, Grain's and JAX's INFO chatter out of the console; warnings still pass."""
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in ("/orbax/", "/grain/", "/jax/", "/absl/"))


def run_evaluation(config, workdir):
    """Evaluate `model.init` on every eval set; returns (and writes) the results."""
    model, note = api.from_config(config.model, jnp.dtype(config.model.dtype), seed=config.seed)
    if note:
        logging.warning(note)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    params = jax.device_put(model.params, sharding.tree_shardings(mesh, model.params))
    start = time.time()
    found = evaluate.evaluate_sets(config, model.module, params, mesh, config.eval.final_num_clips,
                                 config.eval.final_num_crops)
    results = {"config": config.to_dict(), "note": note, "model": config.model.init, "final": found,
               "summary": evaluate.summarize(found), "seconds": time.time() - start}
    evaluate.write_json(os.path.join(workdir, "results.json"), results)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/zeroshot.py")
    if FLAGS.distributed:
        jax.distributed.initialize()
    workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    os.makedirs(workdir, exist_ok=True)
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_libraries)
    logging.info("config:\n%s", config)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
    logging.info("workdir %s, %d process(es), %d device(s): %s", workdir, jax.process_count(), jax.device_count(),
                 jax.devices()[0].device_kind)
    if config.mode == "train":
        results = train.train_and_evaluate(config, workdir)
    elif config.mode in ("eval", "zeroshot"):
        results = run_evaluation(config, workdir)
    else:
        raise app.UsageError(f"config.mode must be train, eval or zeroshot, got {config.mode!r}")
    if results.get("note"):
        print(f"WARNING: {results['note']}")
    for name, m in (results.get("final") or {}).items():
        print(f"{name}: top1 {m['top1']:.2f}  top5 {m['top5']:.2f}  mean-class {m['mean_class']:.2f}  "
              f"({m['evaluated']}/{m['videos']} videos, {m['views']} view(s))")
    if results.get("summary"):
        print("summary:", json.dumps(results["summary"]))
    print(f"results: {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
    app.run(main)
