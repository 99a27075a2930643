"""Combine the results.json of several runs, as the paper reports them.

    python -m vifi_jax.summarize base2novel RUN_S1 RUN_S2 RUN_S3   base/novel averaged over the 3 splits, then HM
    python -m vifi_jax.summarize mean RUN...                       mean ± std of every set's top-1 over runs
                                                                   (retrieval runs: of each recall and rank)

A RUN is a run's workdir or its results.json.
"""
import json
import os

from absl import app

from data_pipelines import cli
from vifi_jax.evaluators import metrics

MODES = ("base2novel", "mean")
BASE2NOVEL_SPLITS = 3


class SummaryError(ValueError):
    """The runs given cannot be combined as asked."""


def results_path(run):
    return run if run.endswith(".json") else os.path.join(run, "results.json")


def load(run):
    """The final metrics of one run: {set name: metrics}."""
    path = results_path(run)
    if not os.path.isfile(path):
        raise SummaryError(f"{run}: no {'file' if run.endswith('.json') else 'results.json in that directory'}; "
                           "give a run's workdir (or its results.json) after it has finished")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SummaryError(f"{path} is not a readable results file ({error})") from error
    if not isinstance(results, dict) or not isinstance(results.get("final"), dict) or not results["final"]:
        raise SummaryError(f"{path} holds no final evaluation (the run may have stopped early or been preempted)")
    return results["final"]


def base2novel(finals, runs=None):
    """Base and novel top-1 averaged over the splits, then their harmonic mean (the paper's protocol)."""
    runs = runs or [f"run {i + 1}" for i in range(len(finals))]
    if len(finals) != BASE2NOVEL_SPLITS:
        raise SummaryError(f"base2novel combines the {BASE2NOVEL_SPLITS} splits of one dataset (runs of "
                           f"configs/base2novel.py:split=1, 2 and 3); got {len(finals)} run(s)")
    for run, final in zip(runs, finals):
        if not {"base", "novel"} <= set(final):
            raise SummaryError(f"{run} has evaluation sets {sorted(final)}, not 'base' and 'novel': it is not a "
                               "base-to-novel run")
    base = sum(f["base"]["top1"] for f in finals) / len(finals)
    novel = sum(f["novel"]["top1"] for f in finals) / len(finals)
    return {"base": base, "novel": novel, "harmonic_mean": metrics.harmonic_mean(base, novel), "runs": len(finals)}


RETRIEVAL_METRICS = ("R1", "R5", "R10", "MdR", "MnR")


def mean_over_runs(finals, runs=None):
    """Mean ± std over runs of each set's top-1 (retrieval sets: of each recall and rank, both ways); every
    run must have the same sets."""
    runs = runs or [f"run {i + 1}" for i in range(len(finals))]
    if not finals:
        raise SummaryError("give at least one run")
    for run, final in zip(runs[1:], finals[1:]):
        if set(final) != set(finals[0]):
            raise SummaryError(f"{run} evaluated {sorted(final)} but {runs[0]} evaluated {sorted(finals[0])}: "
                               "runs of different kinds cannot be averaged")
    out = {}
    for name in finals[0]:
        if "t2v" in finals[0][name]:
            out[name] = {way: {m: dict(zip(("mean", "std"), metrics.mean_std([f[name][way][m] for f in finals])))
                               for m in RETRIEVAL_METRICS} for way in ("t2v", "v2t")}
        else:
            mean, std = metrics.mean_std([f[name]["top1"] for f in finals])
            out[name] = {"top1_mean": mean, "top1_std": std}
        out[name].update(std=metrics.STD_CONVENTION, runs=len(finals))
    return out


def main(argv):
    if len(argv) < 3 or argv[1] not in MODES:
        raise app.UsageError(f"give a mode ({' or '.join(MODES)}) and one or more runs")
    mode, runs = argv[1], argv[2:]
    seen = {}
    for run in runs:
        same = seen.setdefault(os.path.realpath(results_path(run)), run)
        if same != run:
            raise SummaryError(f"{same} and {run} are the same run; give each run once")
    finals = [load(run) for run in runs]
    print(json.dumps(base2novel(finals, runs) if mode == "base2novel" else mean_over_runs(finals, runs), indent=1))


if __name__ == "__main__":
    cli.run(main, positional=True)
