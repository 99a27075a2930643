"""ViFi-CLIP train-step speed and MFU: vifi_jax's step vs a PyTorch step on OpenAI's `clip/model.py`.

    PYTHONPATH=. python benchmarks/train_step.py                 # CPU: JAX and PyTorch side by side, fp32
    PYTHONPATH=. python benchmarks/train_step.py --device        # one GPU: both recipes in bf16, JAX only

One step = forward + backward + AdamW over both towers ("both" mode, mixup on): every clip's T frames
through ViT-B/16, the text tower over all class prompts (the template, truncated to the longest one's
bucket). The JAX step is `vifi_jax.train.make_train_step` jitted with donation, as the training loop
builds it. MFU = analytic train FLOPs (3 x forward) / step time / peak. Random weights, synthetic data.
"""
import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
import time
import timeit

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import fully_supervised, zeroshot
from data_pipelines import transforms
from vifi_jax import api, sharding, train
from vifi_jax.models import clip, vifi

RECIPES = {  # name: (config, frames, batch tried first on the device)
    "zeroshot": (lambda: zeroshot.get_config("train"), 32, 8),
    "fully_supervised": (fully_supervised.get_config, 16, 16),
}
PEAKS_BF16 = {"H200": 989e12, "H100": 989.4e12, "A100": 312e12}  # dense, shared/reference/performance.md §5.1
VERBS = ("riding playing cleaning throwing juggling painting folding carrying kicking washing climbing tying "
         "shooting pushing sharpening peeling dribbling baking blowing stretching").split()
OBJECTS = ("a bicycle,the drums,wooden blocks,a paper plane,knot (not on a tie),glass,a ladder,snow,the violin,"
           "a horse,cookies,leaves,a basketball,potatoes,arm,a kite,candles,laundry,skis (not slalom),a trolley"
           ).split(",")


def class_names(n):
    """n synthetic K400-like names; the longest prompt has EOT at 15 (K400: 13): the 16-token bucket."""
    return [f"{VERBS[i % len(VERBS)]} {OBJECTS[(i // len(VERBS)) % len(OBJECTS)]}" for i in range(n)]


def forward_flops(cfg, frames, batch, prompts, text_len):
    """Analytic forward FLOPs (2 per MAC) of one step: batch*frames images + prompts texts of text_len."""
    p, d, w, e = cfg["vision_patch_size"], cfg["vision_width"], cfg["transformer_width"], cfg["embed_dim"]
    n = (cfg["image_resolution"] // p) ** 2 + 1
    image = 2 * (n - 1) * p * p * 3 * d + cfg["vision_layers"] * (24 * n * d * d + 4 * n * n * d) + 2 * d * e
    text = cfg["transformer_layers"] * (24 * text_len * w * w + 4 * text_len ** 2 * w) + 2 * w * e
    return batch * frames * image + prompts * text + 2 * batch * prompts * e


def worst_case_color(batch, frames, seed=0):
    """Colour parameters [1, batch, ...] with flip, jitter and grayscale all on (the most device work)."""
    rng = np.random.default_rng(seed)
    drawn = [transforms.draw_color_params(frames, rng, 1.0, 1.0, 1.0) for _ in range(batch)]
    return {k: jnp.asarray(np.stack([d[k] for d in drawn])[None]) for k in transforms.COLOR_PARAMS}


def jax_setup(recipe, batch, frames, classes, dtype, remat, augment=False):
    """Build and compile the step as vifi_jax.train does: (result row, function running one step).

    augment: the step also applies flip, colour jitter and grayscale (`data.augment_on="device"`, every op on)."""
    config = RECIPES[recipe][0]()
    config.train.batch_size, config.train.accumulation_steps = batch, 1
    config.train.warmup_epochs = 0  # full LR from the second update on, so the timed steps visibly train
    config.data.num_frames, config.model.dtype, config.model.remat = frames, jnp.dtype(dtype).name, remat
    model = api.init("ViT-B/16", seed=0, dtype=dtype, remat=remat)
    ids = vifi.class_token_ids(class_names(classes), "template")
    text_len = ids.shape[1]
    ids = model.encode_text(ids) if config.train.use == "image" else jnp.asarray(ids)  # as train.py passes text
    optimizer, _ = train.make_optimizer(config, iterations_per_epoch=1000)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    state = train.init_state(model.params, config.train.use, optimizer, 0, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.integers(0, 256, (1, batch, 1, frames, 224, 224, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, classes, (1, batch)), jnp.int32)
    color = worst_case_color(batch, frames) if augment else None
    step = jax.jit(train.make_train_step(model.module, optimizer, config, classes),
                   donate_argnums=(0,), out_shardings=(shardings, sharding.replicated(mesh)))
    start = time.perf_counter()
    compiled = step.lower(state, video, labels, ids, color).compile()
    compile_s = time.perf_counter() - start
    try:  # the XLA cross-check: not every backend and version reports these
        cost, memory = compiled.cost_analysis(), compiled.memory_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        xla_flops = float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None
        temp_gib = memory.temp_size_in_bytes / 2 ** 30
    except Exception:
        xla_flops = temp_gib = None
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], video, labels, ids, color)
        jax.block_until_ready(holder[0])  # the whole update, not only the loss (ready before AdamW ends)
        return float(metrics["loss"])

    return {"framework": "jax", "recipe": recipe, "batch": batch, "frames": frames, "classes": classes,
            "text_len": int(text_len), "dtype": jnp.dtype(dtype).name, "remat": remat, "augment_in_step": augment,
            "compile_s": compile_s,
            "xla_flops_per_step": xla_flops, "temp_gib": temp_gib}, run


def time_steps(benches, steps, warmup):
    """Run the benches' steps in turn (background load then hits each alike); record wall and CPU seconds."""
    for row, _ in benches:
        row.update(wall=[], cpu=[], losses=[])
    for i in range(warmup + steps):
        for row, run in benches:
            wall, cpu = time.perf_counter(), time.process_time()
            row["losses"].append(run())
            if i >= warmup:
                row["wall"].append(time.perf_counter() - wall)
                row["cpu"].append(time.process_time() - cpu)
    for row, _ in benches:
        row.update(step_s=float(np.median(row["wall"])), step_s_min=float(np.min(row["wall"])),
                   cpu_s_per_step=float(np.median(row.pop("cpu"))), steps_timed=len(row.pop("wall")))


def jax_bench_fitting(recipe, batch, frames, classes, dtype, remat, steps, warmup, augment=False):
    """Set up and time one recipe, halving the batch on out-of-memory until it fits (device mode)."""
    requested = batch
    while True:
        try:
            bench = jax_setup(recipe, batch, frames, classes, dtype, remat, augment)
            time_steps([bench], steps, warmup)
            print(f"  compiled in {bench[0]['compile_s']:.0f} s, XLA temp memory {bench[0]['temp_gib'] or 0:.1f} GiB, "
                  f"step {bench[0]['step_s'] * 1e3:.1f} ms", flush=True)
            return dict(bench[0], batch_requested=requested)
        except Exception as error:  # XlaRuntimeError / JaxRuntimeError on OOM, at compile or at run
            text = str(error)
            if batch == 1 or not ("RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()):
                raise
            print(f"  {recipe}: batch {batch} ran out of memory ({text.splitlines()[0][:120]}); "
                  f"retrying with batch {batch // 2}", flush=True)
        bench, batch = None, batch // 2  # free the failed attempt's buffers before the next one
        jax.clear_caches()
        gc.collect()


def load_openai_clip_module():
    """OpenAI's `clip/model.py` by file path (the clip package itself needs torchvision)."""
    path = os.path.join(list(importlib.util.find_spec("clip").submodule_search_locations)[0], "model.py")
    spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_setup(batch, frames, classes, threads, full_context=False):
    """The same step in PyTorch fp32 on OpenAI's CLIP: per-frame encode_image, mean over T, mixup, AdamW.

    full_context runs the text tower at 77 tokens as the reference ViFi-CLIP does (~20 GB RAM at B=1, T=8).
    """
    import torch
    import torch.nn.functional as F
    from vifi_jax import tokenizer
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_openai_clip_module().CLIP(**clip.VARIANTS["ViT-B/16"]).float().train()
    model.token_embedding.weight.requires_grad_(False)  # never trained, as in vifi_jax.train.is_trainable
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=8e-6,
                                  betas=(0.9, 0.98), eps=1e-8, weight_decay=1e-3)
    full = tokenizer.tokenize(vifi.class_texts(class_names(classes)))  # "a photo of a {}."
    ids = torch.from_numpy(np.asarray(full if full_context else tokenizer.truncate(full))).long()
    length = ids.shape[1]
    mask = model.build_attention_mask()[:length, :length]
    for block in model.transformer.resblocks:
        block.attn_mask = mask

    def encode_text(tokens):  # OpenAI's encode_text with the positional embedding cut to `length`
        x = model.token_embedding(tokens) + model.positional_embedding[:length]
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = model.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection

    mean, std = (torch.tensor(v, dtype=torch.float32) for v in transforms.NORMALIZATIONS["imagenet"])
    rng = np.random.default_rng(0)
    video = torch.from_numpy(rng.integers(0, 256, (batch, frames, 224, 224, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, classes, batch))

    def step():
        x = (video.float() - mean) / std
        lam, perm = float(rng.beta(0.8, 0.8)), torch.randperm(batch)  # Mixup (the CutMix branch costs the same)
        targets = F.one_hot(labels, classes).float() * 0.9 + 0.1 / classes
        x, targets = lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]
        images = x.reshape(batch * frames, 224, 224, 3).permute(0, 3, 1, 2)
        v = F.normalize(model.encode_image(images).view(batch, frames, -1).mean(1), dim=-1)
        t = F.normalize(encode_text(ids), dim=-1)
        loss = torch.sum(-targets * F.log_softmax(model.logit_scale.exp() * v @ t.T, dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return {"framework": "torch", "recipe": "-", "batch": batch, "frames": frames, "classes": classes,
            "text_len": int(length), "dtype": "float32", "threads": torch.get_num_threads()}, step


def best_rate(fn, flops, repeats=5):
    fn()
    return flops / min(timeit.repeat(fn, number=1, repeat=repeats))


def cpu_peak(with_torch):
    """CPU peak = max(nominal fp32 FMA rate at the listed clock, best measured 2048^3 fp32 matmul (XLA, torch))."""
    cores, cpuinfo = os.cpu_count(), open("/proc/cpuinfo").read()
    mhz = max(float(line.split(":")[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz"))
    per_cycle = 64 if "avx512f" in cpuinfo else 32  # 2 FMA units x (16 | 8) fp32 lanes x 2
    x, matmul = jnp.ones((2048, 2048), jnp.float32), jax.jit(lambda a: a @ a)
    rates = {"xla": best_rate(lambda: matmul(x).block_until_ready(), 2 * 2048 ** 3)}
    if with_torch:
        import torch
        torch.set_num_threads(cores)
        y = torch.ones(2048, 2048)
        rates["torch"] = best_rate(lambda: y @ y, 2 * 2048 ** 3)
    nominal = cores * mhz * 1e6 * per_cycle  # turbo clocks can beat it; a busy machine measures below it
    peak = max(nominal, *rates.values())
    measured = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
    note = (f"{peak / 1e9:.0f} GFLOP/s fp32 = max(nominal {cores} cores x {mhz / 1e3:.1f} GHz x {per_cycle} FLOP/clock"
            f" = {nominal / 1e9:.0f}, measured 2048^3 matmul {measured})")
    return (peak, note), rates


def device_peak():
    kind = jax.devices()[0].device_kind
    for name, peak in PEAKS_BF16.items():
        if name in kind.upper():
            return peak, f"{name} dense bf16 (performance.md §5.1)"
    return None, f"no peak known for {kind!r}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="store_true", help="accelerator mode: both recipes, bf16, JAX only")
    parser.add_argument("--recipe", choices=[*RECIPES, "all"], default=None)
    parser.add_argument("--batch", type=int, default=None, help="clips per step (device: first try)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default: the recipe's)")
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 2, device 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (CPU 1, device 2)")
    parser.add_argument("--remat", action="store_true", help="rematerialise each residual block")
    parser.add_argument("--augment", action="store_true", help="flip/jitter/grayscale inside the step (all on)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/train_step.json")
    args = parser.parse_args()
    device = args.device
    dtype = jnp.dtype("bfloat16" if device else "float32")
    steps = args.steps or (20 if device else 2)
    warmup = args.warmup if args.warmup is not None else (2 if device else 1)
    recipe = args.recipe or ("all" if device else "zeroshot")
    recipes = list(RECIPES) if recipe == "all" else [recipe]
    if not device:
        jax.config.update("jax_default_matmul_precision", "float32")
    threads = os.cpu_count()
    info = {"machine": platform.processor() or platform.machine(), "cpu_count": threads,
            "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "python": platform.python_version(), "mode": "device" if device else "cpu", "dtype": dtype.name,
            "load_average_start": os.getloadavg()[0]}
    if info["load_average_start"] > 0.5 * threads:
        print(f"WARNING: load average {info['load_average_start']:.1f} on {threads} cores: other processes may slow "
              "this run (see the cores column)", flush=True)
    (peak, peak_note), measured = (device_peak(), None) if device else cpu_peak(not args.no_torch)
    info.update(peak_flops=peak, peak_note=peak_note, measured_matmul_flops=measured)
    print(f"{info['device_kind']} ({info['backend']}), jax {jax.__version__}, {dtype.name}; peak: {peak_note}",
          flush=True)

    rows = []
    for recipe in recipes:
        frames = args.frames or (RECIPES[recipe][1] if device else 8)
        batch = args.batch or (RECIPES[recipe][2] if device else 1)
        print(f"jax {recipe}: batch {batch} x {frames} frames, {args.classes} classes ...", flush=True)
        if device:
            rows.append(jax_bench_fitting(recipe, batch, frames, args.classes, dtype, args.remat, steps, warmup,
                                          args.augment))
            continue
        benches = [jax_setup(recipe, batch, frames, args.classes, dtype, args.remat, args.augment)]
        if not args.no_torch:
            import torch
            info["torch"] = torch.__version__
            print(f"torch {torch.__version__}: {threads} threads (= the {threads} cores XLA:CPU uses); "
                  f"JAX and PyTorch steps alternate ...", flush=True)
            benches.append(torch_setup(batch, frames, args.classes, threads))
        time_steps(benches, steps, warmup)
        for row, _ in benches[1:]:
            row["jax_over_torch_speed"] = row["step_s"] / benches[0][0]["step_s"]
        rows += [row for row, _ in benches]

    cfg = clip.VARIANTS["ViT-B/16"]
    for r in rows:
        flops = 3 * forward_flops(cfg, r["frames"], r["batch"], r["classes"], r["text_len"])
        r.update(model_flops_per_step=flops, model_flops_per_clip=flops / r["batch"],
                 clips_per_s=r["batch"] / r["step_s"], achieved_flops=flops / r["step_s"])
        r["mfu"] = r["achieved_flops"] / peak if peak else None
        if measured:
            r["fraction_of_own_matmul"] = r["achieved_flops"] / measured["xla" if r["framework"] == "jax" else "torch"]
        if r.get("xla_flops_per_step"):
            r["xla_over_analytic"] = r["xla_flops_per_step"] / r["model_flops_per_step"]
        r["cpu_busy"] = r["cpu_s_per_step"] / r["step_s"]

    print(f"\n{'framework':<9} {'recipe':<16} {'B':>3} {'T':>3} {'txt':>4} {'step s':>8} {'clips/s':>8} "
          f"{'TFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} {'XLA/an.':>7} {'cores':>5} {'%mm':>5} {'JAX/torch':>9}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        xla = f"{r['xla_over_analytic']:.2f}" if r.get("xla_over_analytic") else "-"
        ratio = f"{r['jax_over_torch_speed']:.2f}x" if "jax_over_torch_speed" in r else "-"
        own = f"{100 * r['fraction_of_own_matmul']:.0f}%" if "fraction_of_own_matmul" in r else "-"
        print(f"{r['framework']:<9} {r['recipe']:<16} {r['batch']:>3} {r['frames']:>3} {r['text_len']:>4} "
              f"{r['step_s']:>8.3f} {r['clips_per_s']:>8.3f} {r['model_flops_per_step'] / 1e12:>10.3f} "
              f"{r['achieved_flops'] / 1e12:>8.3f} {mfu:>6} {xla:>7} {r['cpu_busy']:>5.2f} {own:>5} {ratio:>9}")
    print(f"step s: median of timed steps after warm-up. TFLOP/step: analytic, 3 x forward of the images and "
          f"{args.classes} prompts of txt tokens. MFU: vs {peak_note}. XLA/an.: cost_analysis flops / analytic. cores: "
          "process CPU s / wall s. %mm: of the framework's own matmul rate. JAX/torch: torch step s / JAX step s.")
    print("device mode: JAX only, bf16 compute, fp32 params and AdamW state." if device else
          f"CPU mode: fp32; PyTorch uses {threads} threads, as many as the cores XLA:CPU uses.")
    info["load_average_end"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"info": info, "args": vars(args), "results": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
