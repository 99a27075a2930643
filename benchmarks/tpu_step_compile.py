"""The real train step compiled for a TPU slice from this CPU host (deviceless): what the compiler predicts.

    pip install "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"   # libtpu, ~700 MB
    PYTHONPATH=. python benchmarks/tpu_step_compile.py --topology v5e:2x2 [--old_augment .before/vifi_jax/augment.py]

The zero-shot K400 step (ViT-B/16, bf16, 32 frames, the official mixing groups of 4 clips, 8 clips per chip,
400 classes at 16 tokens) is compiled three ways: flip/jitter/grayscale left to the loader, applied in the
step, and the augmentation alone on the same sharded batch. For each: the compiler's time estimate, FLOPs,
memory per chip and the collectives of the optimized HLO (kind, count, bytes, inside the micro-batch loop or
not). The estimate is `cost_analysis()["optimal_seconds"]` with one second added back per `ConcatBitcast`
custom-call, which the TPU cost model books at -1 s each (found on matmul probes): a sum of per-op roofline
times, not a measurement. Writes benchmarks/results/tpu_step_compile.json.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import topologies

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import zeroshot  # noqa: E402
from data_pipelines import transforms  # noqa: E402
from vifi_jax.train import optim, steps  # noqa: E402
from vifi_jax.models import flops
from vifi_jax.runtime import hardware, sharding
from vifi_jax.runtime.compiled import collectives
from vifi_jax.train import augment
from vifi_jax.models import clip, vifi  # noqa: E402

def estimate(compiled):
    """(seconds: the per-op roofline sum, XLA's cost figures) of a compiled TPU program."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    bitcasts = compiled.as_text().count('custom_call_target="ConcatBitcast"')
    return float(cost["optimal_seconds"]) + bitcasts, {"flops": float(cost.get("flops", 0)),
                                                        "bytes_accessed": float(cost.get("bytes accessed", 0)),
                                                        "concat_bitcasts_added_back": bitcasts}


def summarize(found):
    table = {}
    for c in found:
        key = f"{c['kind']}{' (in loop)' if c['in_loop'] else ''}"
        count, size = table.get(key, (0, 0))
        table[key] = (count + 1, size + c["bytes"])
    return {key: {"count": count, "mbytes": size / 1e6} for key, (count, size) in table.items()}


def load_old_augment(path):
    """An earlier augment.py (its module reads transforms.LUMA, since removed) for the before figure."""
    transforms.LUMA = np.array([0.299, 0.587, 0.114], np.float32)
    spec = importlib.util.spec_from_file_location("old_augment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="v5e:2x2")
    parser.add_argument("--clips_per_chip", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--accumulation", type=int, default=2, help="micro-batches per update (a real loop)")
    parser.add_argument("--old_augment", default="", help="also estimate an earlier augment.py (before/after)")
    parser.add_argument("--out", default="benchmarks/results/tpu_step_compile.json")
    args = parser.parse_args()
    devices = topologies.get_topology_desc(topology_name=args.topology, platform="tpu").devices
    kind = devices[0].device_kind
    mesh = sharding.make_mesh(devices=devices)
    chips = len(devices)
    config = zeroshot.get_config("train")
    config.train.batch_size, config.train.accumulation_steps = args.clips_per_chip * chips, args.accumulation
    config.train.reference_world_size = config.train.batch_size // 4  # the official mixing groups of 4 clips
    config.data.num_frames, config.model.dtype = args.frames, "bfloat16"
    cfg = clip.VARIANTS["ViT-B/16"]
    module = vifi.ViFiCLIP(**cfg, dtype=jnp.bfloat16)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 1, 224, 224, 3)),
                            jnp.zeros((1, 77), jnp.int32))["params"]
    optimizer, _ = optim.make_optimizer(config, iterations_per_epoch=1000)
    state = optim.state_shapes(params, "both", optimizer, 0, mesh)
    ids = vifi.class_token_ids([f"class {i} of many" for i in range(args.classes)], "template")
    batch, acc, t = config.train.batch_size, args.accumulation, args.frames
    placed = lambda shape, dtype, lead=1: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, lead))
    frames = placed((acc, batch, 1, t, 224, 224, 3), jnp.uint8)
    labels = placed((acc, batch), jnp.int32)
    color = {k: placed((acc, batch, *np.shape(v)), np.asarray(v).dtype)
             for k, v in transforms.identity_color_params(t).items()}
    text = jax.ShapeDtypeStruct(ids.shape, jnp.int32, sharding=sharding.replicated(mesh))
    step = jax.jit(steps.make_train_step(module, optimizer, config, args.classes, mesh), donate_argnums=(0,),
                   out_shardings=(jax.tree.map(lambda s: s.sharding, state), sharding.replicated(mesh)))
    model_flops = flops.per_update(cfg, config, args.classes, ids.shape[1], chips)
    peak = hardware.peak_tflops(kind)
    result = {"topology": args.topology, "device_kind": kind, "chips": chips, "clips_per_chip": args.clips_per_chip,
              "frames": t, "micro_batches": acc, "jax": jax.__version__, "model_flops_per_update_per_chip": model_flops,
              "peak_tflops": peak, "time": time.strftime("%Y-%m-%d %H:%M")}
    for name, with_color in (("step, augmentation on the host", False), ("step, augmentation in the step", True)):
        start = time.perf_counter()
        compiled = step.lower(state, frames, labels, text, color if with_color else None).compile()
        seconds, cost = estimate(compiled)
        memory = compiled.memory_analysis()
        found = collectives(compiled.as_text())
        result[name] = dict(cost, estimated_seconds=seconds, compile_s=time.perf_counter() - start,
                            estimated_mfu=model_flops / seconds / (peak * 1e12) if peak else None,
                            peak_memory_gib=(memory.argument_size_in_bytes + memory.output_size_in_bytes
                                             + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / 2 ** 30,
                            collectives=summarize(found),
                            gathers=compiled.as_text().count(" gather("))
        print(name, json.dumps(result[name]), flush=True)
    one = {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype, sharding=sharding.batch_sharding(mesh))
           for k, v in color.items()}
    clip_batch = jax.ShapeDtypeStruct(frames.shape[1:2] + frames.shape[3:], jnp.uint8,
                                      sharding=sharding.batch_sharding(mesh))
    for name, module_ in (("augmentation alone", augment), ("augmentation alone, before", None)):
        if module_ is None:
            if not args.old_augment:
                continue
            module_ = load_old_augment(args.old_augment)
        compiled = jax.jit(module_.augment).lower(clip_batch, one).compile()
        seconds, cost = estimate(compiled)
        result[name] = dict(cost, estimated_seconds=seconds, gathers=compiled.as_text().count(" gather("),
                            per_micro_batch_share=seconds / (result["step, augmentation in the step"]
                                                             ["estimated_seconds"] / acc))
        print(name, json.dumps(result[name]), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
