"""Entry point: python -m vifi_jax.main --config=<name>[:args] [--workdir=DIR] [--config.key=value]

`config.mode` picks the job: "train" (fine-tune, evaluating on the way and at the end) or
"eval" / "zeroshot" (score `model.init` on every `eval.sets` entry, with mean ± std over several sets
and the base/novel harmonic mean where they apply); `config.task` what is scored: "classification"
(class texts) or "retrieval" (captions; configs/retrieval.py). The config is logged and saved as
`<workdir>/config.json`; results go to `<workdir>/results.json`.
"""
import json
import logging
import os

from absl import flags

from data_pipelines import cli, storage

from vifi_jax.cli import experiment
from vifi_jax.cli import flags as cli_flags

log = logging.getLogger("vifi_jax.main")

__doc__ += ("\nShipped configs (--config=<name>[:args] or --config=configs/<name>.py[:args]):\n\n"
            + experiment.configs_help())

FLAGS = flags.FLAGS
experiment.define()
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go (default: workdirs/<config name>).")
cli_flags.processes()
flags.DEFINE_bool("resume_changed_config", False, "Resume the checkpoints in --workdir even though this run's "
                  "config differs from theirs in fields that change results.")


def default_workdir(config_argument):
    name = os.path.splitext(os.path.basename(config_argument.split(":")[0]))[0]
    arg = config_argument.partition(":")[2].replace(",", "_").replace("=", "-")
    return os.path.join("workdirs", name + (f"_{arg}" if arg else ""))


def main(argv):
    config = experiment.required()
    cli.configure_logging()  # before Orbax is imported: its import-time INFO lines stay out
    import jax
    from vifi_jax.evaluators import job
    from vifi_jax.runtime import config_checks
    from vifi_jax.train import loop
    config_checks.check(config)
    cli_flags.join_processes()
    workdir = FLAGS.workdir or default_workdir(experiment.config_argument())
    log.info("config:\n%s", "\n".join(f"  {key}: {json.dumps(value, sort_keys=True)}"
                                       for key, value in config_checks.relevant(config).items()))
    log.info("workdir %s, %d process(es), %d device(s): %s", workdir, jax.process_count(), jax.device_count(),
             jax.devices()[0].device_kind)
    from vifi_jax.runtime import hardware
    advice = hardware.fit_advice(experiment.recipe_name(experiment.config_argument()), jax.devices()[0].device_kind, jax.device_count())
    if advice:
        (log.info if advice.startswith("this recipe fits") else log.warning)(advice)
    if config.mode == "train":
        results = loop.train_and_evaluate(config, workdir, FLAGS.resume_changed_config)
    else:
        results = job.run(config, workdir)
    if results.get("note"):
        print(f"WARNING: {results['note']}")
    for name, m in (results.get("final") or {}).items():
        if "t2v" in m:
            print(f"{name}: " + "  ".join(f"{way} R@1 {m[way]['R1']:.1f} R@5 {m[way]['R5']:.1f} R@10 {m[way]['R10']:.1f} "
                                          f"MdR {m[way]['MdR']:.1f}" for way in ("t2v", "v2t"))
                  + f"  ({m['videos'] - len(m['unreadable'])}/{m['videos']} videos, {m['captions']} captions)")
            continue
        print(f"{name}: top1 {m['top1']:.2f}  top5 {m['top5']:.2f}  mean-class {m['mean_class']:.2f}  "
              f"({m['evaluated']}/{m['videos']} videos, {m['views']} view(s))")
    if results.get("summary"):
        print("summary:", json.dumps(results["summary"]))
    print(f"results: {storage.join(workdir, 'results.json')}")


if __name__ == "__main__":
    cli.run(main, resolve=experiment.resolve_config)
