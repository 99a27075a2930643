"""What a compiled XLA program says about itself: memory per device, the collectives of its optimized HLO,
FLOPs and bytes, and a time estimate where the backend's cost model can be trusted.

TPU cost model (checked on matmul probes and the residual block, not against hardware):
`cost_analysis()["optimal_seconds"]` is a sum of per-op roofline times, except that every
`ConcatBitcast` custom-call is booked at -1.0 s, which makes the sum negative for large programs; one second
per such op is added back. A `while` body (the scanned micro-batches) is counted once, so FLOPs, bytes and
seconds of a step with `loop_trips` micro-batches are scaled by it (the optimizer update outside the loop
is then over-counted, a few per cent of a step). GPU compiles give memory but no cost analysis.
"""
import re

import numpy as np

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s64": 8, "u64": 8, "s32": 4, "u32": 4, "s16": 2,
               "u16": 2, "s8": 1, "u8": 1, "pred": 1}
# How libtpu words a program that does not fit (two versions' wordings).
OUT_OF_MEMORY = (re.compile(r"\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)"),
                 re.compile(r"Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm"))
UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def memory(compiled):
    """Bytes per device: arguments, outputs, temporaries, aliased (donated) and the peak they add up to."""
    m = compiled.memory_analysis()
    report = {"argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
              "temp_bytes": int(m.temp_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes),
              "code_bytes": int(m.generated_code_size_in_bytes)}
    report["peak_bytes"] = (report["argument_bytes"] + report["output_bytes"] + report["temp_bytes"]
                            - report["alias_bytes"])
    return report


def out_of_memory_bytes(error):
    """(bytes needed, bytes available) from a TPU compile that ran out of HBM, or None for other errors."""
    found = next(filter(None, (pattern.search(str(error)) for pattern in OUT_OF_MEMORY)), None)
    if not found:
        return None
    used, used_unit, capacity, capacity_unit = found.groups()
    return int(float(used) * UNITS[used_unit]), int(float(capacity) * UNITS[capacity_unit])


def shape_bytes(text):
    """Bytes of an HLO result shape such as 'bf16[8,197,768]{2,1,0}' or a tuple of them."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
        if dtype in DTYPE_BYTES:
            total += DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return total


def collectives(hlo):
    """Every collective of an optimized HLO module: kind, bytes of its result, and whether it sits in the body
    of a while loop (the scanned micro-batches) or a computation called from one."""
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    calls, found, computation = {}, [], None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header:
            computation = header.group(1)
            continue
        for callee in re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", line):
            calls.setdefault(computation, set()).add(callee)
        match = re.search(r"= (.+?) (" + "|".join(COLLECTIVES) + r")(?:-start)?\(", line)
        if match:
            found.append({"kind": match.group(2), "bytes": shape_bytes(match.group(1)), "computation": computation})
    in_loop = set(bodies)
    while True:
        more = {c for parent in in_loop for c in calls.get(parent, ())} - in_loop
        if not more:
            break
        in_loop |= more
    return [{"kind": c["kind"], "bytes": c["bytes"], "in_loop": c["computation"] in in_loop} for c in found]


def collectives_summary(found):
    """{"all-reduce": {"count", "bytes"}, "all-gather (in loop)": ...} of `collectives`."""
    table = {}
    for c in found:
        key = f"{c['kind']}{' (in loop)' if c['in_loop'] else ''}"
        entry = table.setdefault(key, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += c["bytes"]
    return table


def cost(compiled, platform, loop_trips=1):
    """XLA's FLOPs, bytes accessed and (TPU) time estimate per run of the program, with the loop body counted
    `loop_trips` times; None where the backend gives no cost analysis."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without a cost model raise various errors
        return None
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    if not analysis or analysis.get("flops", 0) <= 0:
        return None
    report = {"flops": float(analysis["flops"]) * loop_trips,
              "bytes_accessed": float(analysis.get("bytes accessed", 0)) * loop_trips, "seconds": None}
    if platform == "tpu" and "optimal_seconds" in analysis:
        bitcasts = compiled.as_text().count('custom_call_target="ConcatBitcast"')
        seconds = float(analysis["optimal_seconds"]) + bitcasts
        report["seconds"] = seconds * loop_trips if seconds > 0 else None
        report["concat_bitcasts_added_back"] = bitcasts
    return report
