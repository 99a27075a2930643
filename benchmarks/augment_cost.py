"""What flip, colour jitter and grayscale cost inside the train step (`data.augment_on="device"`).

    PYTHONPATH=. python benchmarks/augment_cost.py [--frames 8] [--batch 1] [--steps 3]

In one run, alternating: the ViT-B/16 train step as `benchmarks/train_step.py` builds it (zero-shot recipe,
400 classes, fp32) without augmentation and with every op on for every clip (flip, per-frame jitter with
all four ops, grayscale: the most work the device path can do; the official probabilities make it 0.5, 0.8
and 0.2 of that), and the augmentation alone, jitted on the same batch. Reports the augmentation's share of
the step: alone / plain step (the headline; a step's own run-to-run spread is larger than the difference)
and (step with - step without) / step without. Writes benchmarks/results/augment_cost.json.
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
from benchmarks import train_step  # noqa: E402
from vifi_jax.train import augment  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/augment_cost.json")
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "float32")
    benches = [train_step.jax_setup("zeroshot", args.batch, args.frames, args.classes, jnp.float32, False, augment)
               for augment in (False, True)]
    color = {k: v[0] for k, v in train_step.worst_case_color(args.batch, args.frames).items()}
    clip = jnp.asarray(np.random.default_rng(1).integers(0, 256, (args.batch, args.frames, 224, 224, 3), np.uint8))
    apply = jax.jit(augment.augment).lower(clip, color).compile()

    def augment_only():
        return float(apply(clip, color).sum())  # blocks until done

    rows = [*benches, ({"framework": "jax", "recipe": "augmentation alone"}, augment_only)]
    train_step.time_steps(rows, args.steps, warmup=1)
    plain, augmented, alone = (row for row, _ in rows)
    result = {"batch": args.batch, "frames": args.frames, "classes": args.classes, "backend": jax.default_backend(),
              "cpu_count": os.cpu_count(), "step_s": plain["step_s"], "step_with_augment_s": augmented["step_s"],
              "augment_alone_s": alone["step_s"], "alone_over_step": alone["step_s"] / plain["step_s"],
              "difference_over_step": (augmented["step_s"] - plain["step_s"]) / plain["step_s"],
              "step_spread_s": float(plain["step_s"] - plain["step_s_min"]), "time": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
