"""Combine the results.json of several runs, as the paper reports them.

    python -m vifi_jax.summarize base2novel RUN_S1 RUN_S2 RUN_S3   base/novel averaged over splits, then HM
    python -m vifi_jax.summarize mean RUN...                       mean ± std of every set's top-1
"""
import json
import os
import sys

from vifi_jax import metrics


def load(run):
    path = run if run.endswith(".json") else os.path.join(run, "results.json")
    with open(path) as f:
        return json.load(f)["final"]


def base2novel(finals):
    base = sum(f["base"]["top1"] for f in finals) / len(finals)
    novel = sum(f["novel"]["top1"] for f in finals) / len(finals)
    return {"base": base, "novel": novel, "harmonic_mean": metrics.harmonic_mean(base, novel), "runs": len(finals)}


def mean_over_runs(finals):
    out = {}
    for name in finals[0]:
        mean, std = metrics.mean_std([f[name]["top1"] for f in finals])
        out[name] = {"top1_mean": mean, "top1_std": std, "runs": len(finals)}
    return out


def main(argv):
    if len(argv) < 3 or argv[1] not in ("base2novel", "mean"):
        sys.exit(__doc__)
    finals = [load(run) for run in argv[2:]]
    print(json.dumps(base2novel(finals) if argv[1] == "base2novel" else mean_over_runs(finals), indent=1))


if __name__ == "__main__":
    main(sys.argv)
