"""Entry point: python -m vifi_jax.main --config=<name>[:args] [--workdir=DIR] [--config.key=value]

`config.mode` picks the job: "train" (fine-tune, evaluating on the way and at the end) or
"eval" / "zeroshot" (score `model.init` on every `eval.sets` entry, with mean ± std over several sets
and the base/novel harmonic mean where they apply). The config is logged and saved as
`<workdir>/config.json`; results go to `<workdir>/results.json`.
"""
import ast
import importlib.util
import json
import logging
import os
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import cli
from vifi_jax.evaluators import classification, retrieval
from vifi_jax.runtime import config_checks, sharding, workdirs
from vifi_jax.train import loop

log = logging.getLogger("vifi_jax.main")

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def shipped_configs():
    return sorted(name[:-3] for name in os.listdir(CONFIGS_DIR)
                  if name.endswith(".py") and name not in ("__init__.py", "common.py"))


def configs_help():
    """Each shipped config's docstring (its arguments and examples), read without importing it."""
    parts = []
    for name in shipped_configs():
        with open(os.path.join(CONFIGS_DIR, name + ".py")) as f:
            doc = ast.get_docstring(ast.parse(f.read()), clean=False) or ""
        parts.append(f"  {name}: {doc}".replace("\n", "\n    "))
    return "\n\n".join(parts).replace("\n    \n", "\n\n")


__doc__ += "\nShipped configs (--config=<name>[:args] or --config=configs/<name>.py[:args]):\n\n" + configs_help()

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a shipped config's name or a file, with its argument after ':', e.g. "
    "zeroshot, few_shot:dataset=hmdb51,shots=2 or configs/base2novel.py:dataset=ucf101,split=2 (listed above).",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go (default: workdirs/<config name>).")
sharding.define_process_flags()
flags.DEFINE_bool("resume_changed_config", False, "Resume the checkpoints in --workdir even though this run's "
                  "config differs from theirs in fields that change results.")


def config_path(argument):
    """`zeroshot` or `few_shot:dataset=hmdb51,shots=2` -> the config file shipped with vifi_jax (argument kept);
    a path (`configs/zeroshot.py:dataset=hmdb51`) stays as it is."""
    name, colon, arg = argument.partition(":")
    if os.sep in name or "/" in name or name.endswith(".py"):
        return argument
    if name not in shipped_configs():
        raise app.UsageError(f"--config={argument}: no shipped config {name!r}; give a file path or one of "
                             f"{', '.join(shipped_configs())}")
    path = os.path.join(CONFIGS_DIR, name + ".py")
    found = importlib.util.find_spec("configs")
    where = os.path.dirname(found.origin) if found and found.origin else None
    if where and os.path.realpath(where) != os.path.realpath(CONFIGS_DIR):
        raise app.UsageError(f"a package named 'configs' in {where} shadows vifi_jax's own configs "
                             f"({CONFIGS_DIR}); run from another directory or pass a file path")
    return path + colon + arg


def resolve_config_flag(argv):
    """argv with `--config=<name>` (or `--config <name>`) replaced by the shipped file's path."""
    out = list(argv)
    for i, item in enumerate(out):
        if item.startswith("--config="):
            out[i] = "--config=" + config_path(item[len("--config="):])
        elif item == "--config" and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
    return out


def default_workdir(config_argument):
    name = os.path.splitext(os.path.basename(config_argument.split(":")[0]))[0]
    arg = config_argument.partition(":")[2].replace(",", "_").replace("=", "-")
    return os.path.join("workdirs", name + (f"_{arg}" if arg else ""))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/zeroshot.py")
    config_checks.check(config)
    sharding.join_processes_from_flags()
    workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    os.makedirs(workdir, exist_ok=True)
    cli.configure_logging()
    log.info("config:\n%s", config)
    log.info("workdir %s, %d process(es), %d device(s): %s", workdir, jax.process_count(), jax.device_count(),
                 jax.devices()[0].device_kind)
    if config.mode == "train":
        results = loop.train_and_evaluate(config, workdir, FLAGS.resume_changed_config)
    elif config.mode in ("eval", "zeroshot"):
        workdirs.save_config(workdir, config)
        results = classification.run_evaluation(config, workdir)
    elif config.mode == "retrieval":
        workdirs.save_config(workdir, config)
        results = retrieval.run_retrieval(config, workdir)
    else:
        raise app.UsageError(f"config.mode must be train, eval, zeroshot or retrieval, got {config.mode!r}")
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
    print(f"results: {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
    try:
        sys.argv = resolve_config_flag(sys.argv)
    except app.UsageError as error:
        sys.exit(f"error: {error}")
    cli.run_absl(main)
