"""What the accelerator can do: peak dense bf16 TFLOP/s per chip (for MFU) and memory per device.

Peaks are the vendors' datasheet figures for dense bf16 (NVIDIA's H100/H200 and A100 datasheets, Google Cloud's
TPU system-architecture pages); a device not listed has an unknown peak, and MFU is then not reported rather
than guessed.
"""
import json
import os

import jax

# (substring of jax's device_kind, peak dense bf16 TFLOP/s); the first match wins, so specific names first.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0),
               ("TPU v6 lite", 918.0), ("TPU v6e", 918.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0),
               ("TPU v5p", 459.0), ("TPU v5", 459.0), ("TPU v4", 275.0), ("TPU v3", 123.0))


def peak_tflops(device_kind):
    """Peak dense bf16 TFLOP/s of one device of this kind, or None when unknown (CPUs, unlisted chips)."""
    for name, peak in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def memory_limit(device=None):
    """Bytes the runtime lets one device use, or None where it does not say (CPU)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
        return None
    return stats.get("bytes_limit")


def step_cost(compiled):
    """(FLOPs per device, bytes of device memory) of a compiled step, from XLA's own analyses (None where
    the backend does not report them)."""
    flops = memory = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None
    except Exception:  # noqa: BLE001 - not every backend and version implements it
        pass
    try:
        m = compiled.memory_analysis()
        memory = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                      - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001
        pass
    return flops, memory


FIT_TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "fit_table.json")


def fit_advice(recipe, device_kind, devices):
    """What the compiled fit table says about a shipped recipe (`zeroshot:train`, as `experiment.recipe_name`
    names it; None for a config file of one's own) on this accelerator (None when it has no entry):
    whether the official recipe fits, and the cheapest lever when it does not."""
    if recipe is None:
        return None
    try:
        with open(FIT_TABLE) as f:
            table = json.load(f)
    except (OSError, ValueError):
        return None
    entry = table.get(recipe, {}).get(f"{devices} x {device_kind}")
    if entry is None:
        return None
    where = f"{devices} x {device_kind} ({entry['target']}, compiled ahead of time: benchmarks/README.md)"
    if entry["fits"]:
        return f"this recipe fits {where}: {entry['peak_gib']:.1f} of {entry['limit_gib']:.1f} GiB per device"
    if entry["lever"]:
        return (f"this recipe does not fit {where} ({entry['peak_gib']:.1f} GiB per device); the cheapest lever "
                f"that fits: {entry['lever']}")
    return f"this recipe does not fit {where} ({entry['peak_gib']:.1f} GiB per device) with any single lever"
