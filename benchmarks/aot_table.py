"""The paper's recipes (full-size ViT-B/16, the shipped configs as they are) compiled for every target of
`vifi_jax.aot`: memory per chip, fits or not, the cheapest lever when not, and the TPU cost model's time.

    pip install -r requirements-aot.txt && pip install --no-deps -r requirements-aot-gpu.txt
    PYTHONPATH=. python benchmarks/aot_table.py [--only zeroshot] [--targets v5e:2x4,h100x8]

Each cell is a separate compile of minutes on a CPU host; results are kept in
benchmarks/results/aot_table.json as they come (a rerun skips cells already there) and the Markdown table
for benchmarks/README.md is printed from them.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vifi_jax.runtime import targets  # noqa: E402

targets.prepare_environment("h100x8")  # before JAX starts: the CPU as backend, GPU compile flags

from data_pipelines import files  # noqa: E402
from vifi_jax.cli import experiment  # noqa: E402
from vifi_jax.train import ahead_of_time  # noqa: E402

RECIPES = {"zeroshot": "zeroshot:train", "fully_supervised": "fully_supervised",
           "few_shot": "few_shot:dataset=hmdb51,shots=16", "base2novel": "base2novel:dataset=k400,split=1"}
TARGETS = ["v4:2x2x1", "v5e:2x4", "v5p:2x2x1", "v6e:2x4", "h100x8", "h200x8"]
FIT_TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vifi_jax", "assets",
                         "fit_table.json")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "aot_table.json")
GIB = 2 ** 30


def load_config(argument):
    import importlib.util
    path, _, arg = experiment.config_path(argument).partition(":")
    spec = importlib.util.spec_from_file_location("recipe_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def markdown(results):
    rows = ["| recipe | target | train peak / chip | fits | lever if not | estimate per update (MFU) | eval peak |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, r in results.items():
        recipe, target = key.split(" @ ")
        train, evaluation = r["programs"].get("train"), r["programs"].get("eval")
        best = r.get("cheapest_fit")
        lever = "—" if r["fits"] else (f"`{best['flags']}` ({best['peak_bytes'] / GIB:.1f} GiB)" if best
                                        else "none of the single levers")
        t = train["time"]
        if t["estimate_s"]:
            speed = f"{t['estimate_s']:.2f} s ({t['estimated_mfu']:.0%})"
        else:
            speed = f"≥ {t['compute_bound_s']:.2f} s compute-bound" + (" (no cost model)" if r["platform"] == "gpu"
                                                                         else "")
        rows.append(f"| {recipe} | {target} | {train['peak_bytes'] / GIB:.1f} of {r['limit_bytes'] / GIB:.1f} GiB | "
                    f"{'yes' if train['fits'] else 'no'} | {lever} | {speed} | {evaluation['peak_bytes'] / GIB:.1f} GiB |")
    return "\n".join(rows)


def fit_table(results):
    """{recipe: {"<devices> x <device kind>": fits, peak, cheapest lever}}: what `main` prints on that accelerator
    (`runtime.hardware.fit_advice`)."""
    table = {}
    for key, r in results.items():
        recipe, target = key.split(" @ ")
        train, best = r["programs"]["train"], r.get("cheapest_fit")
        table.setdefault(recipe, {})[f"{r['devices']} x {r['device_kind']}"] = {
            "target": target, "fits": train["fits"], "peak_gib": round(train["peak_bytes"] / GIB, 2),
            "limit_gib": round(r["limit_bytes"] / GIB, 2), "lever": best["flags"] if best else None}
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(RECIPES))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    for recipe in args.only.split(","):
        for name in args.targets.split(","):
            key = f"{RECIPES[recipe]} @ {name}"
            if key in results:
                continue
            start = time.time()
            target = targets.resolve(name)
            print(f"{key} ...", flush=True)
            report = ahead_of_time.report(load_config(RECIPES[recipe]), target, RECIPES[recipe],
                                          progress=lambda message: print("  " + message, flush=True))
            report["wall_seconds"] = time.time() - start
            results[key] = report
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
            files.write_json(args.out, results, "aot table")
            print(f"  {report['verdict']} ({report['wall_seconds']:.0f} s)", flush=True)
    files.write_json(FIT_TABLE, fit_table(results), "fit table")
    print(markdown(results))


if __name__ == "__main__":
    main()
