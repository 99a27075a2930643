"""How long the train loop keeps the device waiting for the host, per update, when data are ready.

The same jitted step, the same in-memory micro-batches, three loops:
  device-only  the step on batches already placed, blocking once at the end: the device's own time;
  per-update   the earlier loop: stack and place each update's batches, run the step, fetch the loss;
  vifi_jax     the current loop: `train.loop._update_batches` in `prefetch.Prefetch` (placement in a background
               thread, two ahead), metrics fetched every `log_every` updates.
Host-wait fraction = 1 - device-only time / loop time. On a CPU the "device" is the same cores, so the
figures bound what an accelerator would see from above.

    python benchmarks/host_wait.py [--updates 60] [--batch 8] [--frames 8] [--size 64]
"""
import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import zeroshot  # noqa: E402
from vifi_jax import api  # noqa: E402
from vifi_jax.train import loop, optim, steps  # noqa: E402
from vifi_jax.runtime import sharding
from vifi_jax.train import prefetch
from vifi_jax.models import vifi  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--log_every", type=int, default=50)
    args = parser.parse_args()
    config = zeroshot.get_config("train,smoke")
    config.model.fields.image_resolution = config.data.input_size = args.size
    config.data.num_frames, config.train.batch_size = args.frames, args.batch
    model = api.from_config(config.model, seed=0)[0]
    optimizer, _ = optim.make_optimizer(config, iterations_per_epoch=1000)
    mesh = sharding.make_mesh()
    ids = jnp.asarray(vifi.class_token_ids(["a", "b", "c", "d"], "template"))
    rng = np.random.default_rng(0)
    micro = [{"frames": rng.integers(0, 256, (args.batch, 1, args.frames, args.size, args.size, 3), np.uint8),
              "label": rng.integers(0, 4, args.batch).astype(np.int32),
              "bad_index": np.full(8, -1, np.int32), "bad_reason": np.full(8, -1, np.int32)}
             for _ in range(args.updates)]
    state = optim.init_state(model.params, "both", optimizer, 0, mesh)
    step = jax.jit(steps.make_train_step(model.module, optimizer, config, 4), donate_argnums=(0,))
    place = lambda b: sharding.global_batch(mesh, {k: np.stack([b[k]]) for k in ("frames", "label")}, leading_axes=1)
    placed = [place(b) for b in micro]
    state, m = step(state, placed[0]["frames"], placed[0]["label"], ids)  # compile
    jax.block_until_ready(m)

    def device_only(state):
        start = time.perf_counter()
        for p in placed:
            state, m = step(state, p["frames"], p["label"], ids)
        jax.block_until_ready(m)
        return time.perf_counter() - start, state

    def per_update(state):
        start = time.perf_counter()
        for b in micro:
            p = place(b)
            state, m = step(state, p["frames"], p["label"], ids)
            float(m["loss"])
        return time.perf_counter() - start, state

    def current(state):
        start = time.perf_counter()
        batches = prefetch.Prefetch(loop._update_batches(iter(micro), mesh, range(args.updates), 1, 10 ** 9, 0, "host"))
        pending = []
        for update in range(args.updates):
            p, _ = next(batches)
            state, m = step(state, p["frames"], p["label"], ids)
            pending.append(m)
            if (update + 1) % args.log_every == 0 or update + 1 == args.updates:
                jax.device_get(pending)
                pending = []
        batches.close()
        return time.perf_counter() - start, state

    rows = {}
    for name, run in (("device-only", device_only), ("per-update", per_update), ("vifi_jax", current)) * 2:
        seconds, state = run(state)
        rows[name] = min(rows.get(name, float("inf")), seconds)  # best of two rounds, interleaved
    device = rows["device-only"]
    result = {"updates": args.updates, "batch": args.batch, "frames": args.frames, "size": args.size,
              "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "seconds": rows, "ms_per_update": {k: 1000 * v / args.updates for k, v in rows.items()},
              "host_wait_fraction": {k: 1 - device / v for k, v in rows.items() if k != "device-only"}}
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    name = f"host_wait_{args.size}px_{args.frames}f_b{args.batch}.json"
    with open(os.path.join(os.path.dirname(__file__), "results", name), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
