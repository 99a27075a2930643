"""Where a jitted step spends device time: a `jax.profiler` trace of a few steps, summed per kernel.

    profile(run_one_step, "/tmp/trace", steps=5)        # -> dict, also printed as a table
    python benchmarks/profile_trace.py TRACE.xplane.pb  # the same table from a saved trace

Kernel events of the device planes ("/device:GPU:0" streams) are summed by name and sorted, and grouped by
what they are: matrix multiplies (cuBLAS/CUTLASS/Triton GEMMs), cuDNN attention, XLA's fused elementwise
and reduction kernels, copies and other. Without a device plane (CPU) every event is counted.
"""
import collections
import glob
import json
import os
import sys

import jax

GROUPS = (("attention (cuDNN)", ("cudnn", "fmha", "flash", "sdpa")),
          ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "triton", "cublas", "dot")),
          ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
          ("reduction fusion", ("reduce",)),
          ("elementwise fusion", ("fusion", "loop_", "convert", "multiply", "add")))


def group_of(name):
    lowered = name.lower()
    for group, keys in GROUPS:
        if any(key in lowered for key in keys):
            return group
    return "other"


def summarize(path, steps, top=25):
    """Per-kernel and per-group device milliseconds per step from one .xplane.pb file."""
    from jax.profiler import ProfileData
    data = ProfileData.from_file(path)
    planes = [p for p in data.planes if p.name.startswith("/device:")] or list(data.planes)
    kernels = collections.Counter()
    ops = collections.Counter()
    for plane in planes:
        for line in plane.lines:
            target = ops if "XLA Ops" in line.name else kernels if (
                "Stream" in line.name or not plane.name.startswith("/device:")) else None
            if target is None:
                continue
            for event in line.events:
                target[event.name] += event.duration_ns / 1e6 / steps
    groups = collections.Counter()
    for name, ms in kernels.items():
        groups[group_of(name)] += ms
    return {"device_planes": [p.name for p in planes], "kernel_ms_per_step": sum(kernels.values()),
            "groups_ms_per_step": dict(groups.most_common()),
            "top_kernels_ms_per_step": dict(kernels.most_common(top)),
            "top_xla_ops_ms_per_step": dict(ops.most_common(top))}


def print_summary(summary):
    print(f"device kernel time per step: {summary['kernel_ms_per_step']:.1f} ms ({summary['device_planes']})")
    for name, ms in summary["groups_ms_per_step"].items():
        print(f"  {name:<22} {ms:8.2f} ms  {100 * ms / max(summary['kernel_ms_per_step'], 1e-9):5.1f}%")
    for title, key in (("kernels", "top_kernels_ms_per_step"), ("XLA ops", "top_xla_ops_ms_per_step")):
        if summary[key]:
            print(f" top {title}:")
            for name, ms in summary[key].items():
                print(f"  {ms:8.2f} ms  {name[:110]}")


def profile(run, directory, steps=5):
    """Trace `steps` calls of `run` (already compiled and warm) into `directory`; return the summary."""
    jax.profiler.start_trace(directory)
    try:
        for _ in range(steps):
            run()
    finally:
        jax.profiler.stop_trace()
    path = max(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    summary = dict(summarize(path, steps), trace=path, steps=steps)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    found = summarize(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print_summary(found)
    print(json.dumps(found)[:2000])
