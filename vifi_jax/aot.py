"""Will it fit, and how fast? Compile a config's real train and evaluation steps for a TPU slice or a GPU
system from any machine (no accelerator needed), and read what the chips will hold and do.

    python -m vifi_jax.aot --config=zeroshot:train --target=v5e:2x4 [--json] [--out=report.json]

Targets: TPU topologies (v4:2x2x1, v5e:2x2, v5e:2x4, v5p:2x2x1, v6e:2x4, multi-host ones such as v5e:4x4 or
v5p:4x4x4) and GPU systems (h100x8, a100x8, h200x8); `pip install -r requirements-aot.txt` first. The
programs are built by the same code `main` runs (session, train state, step, evaluator), from shapes only:
no weights are read and nothing runs. Per device it reports arguments, outputs, temporaries and the peak
against the chip's memory, the collectives of the optimized HLO, XLA's FLOPs next to the analytic count
and, on TPU, the cost model's time with the MFU it implies (a per-op roofline sum, not a measurement) and
the compute- and HBM-bound lower limits. A train step that does not fit is compiled again with each lever
(bf16, FSDP over more chips, a smaller micro-batch with more accumulation, remat) to show which fits.
"""
import json
import logging
import os

from absl import app, flags

from data_pipelines import cli, files
from vifi_jax.cli import experiment
from vifi_jax.cli import flags as cli_flags

log = logging.getLogger("vifi_jax.aot")
FLAGS = flags.FLAGS
experiment.define()
flags.DEFINE_string("target", None, "What to compile for: a TPU topology (v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4, "
                    "v5e:4x4, ...) or a GPU system (h100x8, a100x8, h200x8).")
flags.DEFINE_float("memory_limit_gib", None, "Judge the fit against this many GiB per device instead of the "
                   "chip's memory (e.g. to keep headroom).", lower_bound=0)
flags.DEFINE_bool("levers", True, "When the train step does not fit, also compile it with each lever that could "
                  "make it fit.")
cli_flags.out(None, "Also write the report to this JSON file (an existing file is replaced only if it is an earlier "
              "report of this tool).")
cli_flags.json_output("Print the report as one JSON object on stdout instead of a table.")

REPORT_KIND = "vifi_jax.aot report"


def main(argv):
    config = experiment.required()
    if not FLAGS.target:
        raise app.UsageError("--target is required, e.g. --target=v5e:2x4 or --target=h100x8")
    cli.configure_logging(logging.WARNING if FLAGS.json else logging.INFO)
    from vifi_jax.runtime import targets
    targets.prepare_environment(FLAGS.target)  # before JAX starts its backends
    from vifi_jax.runtime import config_checks
    config_checks.check(config)
    if FLAGS.out:
        _check_out(FLAGS.out)
    try:
        target = targets.resolve(FLAGS.target)
    except targets.TargetError as error:
        raise app.UsageError(str(error)) from None
    from vifi_jax.train import ahead_of_time as ahead
    argument = experiment.config_argument()
    report = ahead.report(config, target, experiment.recipe_name(argument) or argument,
                          FLAGS.memory_limit_gib, FLAGS.levers,
                          progress=None if FLAGS.json else log.info)
    report["kind"] = REPORT_KIND
    if FLAGS.out:
        files.write_json(FLAGS.out, report, "aot report")
    if FLAGS.json:
        print(json.dumps(files.finite(report)))
    else:
        print(ahead.table(report))
        if FLAGS.out:
            print(f"report: {FLAGS.out}")


def _check_out(path):
    """Refuse to replace a file this tool did not write."""
    if os.path.isdir(path):
        raise ValueError(f"--out={path} is a directory; give a file name such as {os.path.join(path, 'aot.json')}")
    if os.path.exists(path):
        try:
            with open(path) as f:
                ours = json.load(f).get("kind") == REPORT_KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"--out={path} exists and is not an aot report; it was left as it is: give another path")


if __name__ == "__main__":
    cli.run(main, resolve=experiment.resolve_config)
