"""The device run's table: every train_step.py result file of one run, one markdown row per variant.

    python benchmarks/device_table.py OUT/before.json OUT/jax.json OUT/torch.json [...] > table.md

Speed ratios are clips/s over the `torch.compile` row of the same batch (the official work: text at 77
tokens); MFU is each row's own model FLOPs (`vifi_jax.models.flops`) over the datasheet peak.
"""
import json
import sys

PEAK_BF16 = {"H200": 989e12, "H100": 989.4e12, "A100": 312e12}


def rows_of(path):
    with open(path) as f:
        found = json.load(f)
    info = found.get("info", {})
    label = "before: " if "before" in path.rsplit("/", 1)[-1] else ""
    for row in found.get("results", []):
        yield dict(row, label=label + row.get("variant", f"b{row.get('batch')}"), info=info)


def peak_of(info):
    if info.get("peak_flops"):
        return info["peak_flops"]
    return next((peak for name, peak in PEAK_BF16.items() if name in info.get("device_kind", "")), None)


def main(paths):
    rows = [row for path in paths for row in rows_of(path)]
    good = [r for r in rows if "error" not in r and r.get("step_s")]
    compiled = {r["batch"]: r for r in good if r.get("framework") == "torch.compile"}
    eager = {r["batch"]: r for r in good if r.get("framework") == "torch"}
    print("| step | B x T | text tokens | ms / step | clips/s | model TFLOP / step | MFU | vs torch.compile | "
          "vs eager |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in good:
        model_flops = r.get("model_flops_per_step") or 3 * r.get("model_flops_per_step_forward", 0)
        if not model_flops and r.get("achieved_flops"):
            model_flops = r["achieved_flops"] * r["step_s"]
        peak = peak_of(r["info"])
        clips = r["batch"] / r["step_s"]
        mfu = f"{100 * model_flops / r['step_s'] / peak:.1f}%" if peak and model_flops else "-"
        versus = [f"{clips / (ref[r['batch']]['batch'] / ref[r['batch']]['step_s']):.2f}x" if r["batch"] in ref
                  else "-" for ref in (compiled, eager)]
        print(f"| {r.get('framework')} {r['label']} | {r['batch']} x {r['frames']} | {r['text_len']} | "
              f"{1e3 * r['step_s']:.1f} | {clips:.1f} | {model_flops / 1e12:.2f} | {mfu} | {versus[0]} | "
              f"{versus[1]} |")
    for r in rows:
        if "error" in r:
            print(f"\nfailed: {r.get('framework')} {r['label']}: {r['error']}")


if __name__ == "__main__":
    main(sys.argv[1:])
