"""ViFi-CLIP train-step speed and MFU: vifi_jax's step vs a PyTorch step on OpenAI's `clip/model.py`.

    PYTHONPATH=. python benchmarks/train_step.py            # CPU: JAX and PyTorch side by side, fp32
    PYTHONPATH=. python benchmarks/train_step.py --device --variants b8,b8+attention=xla,b32 --torch eager,compile

One step = forward + backward + AdamW over both towers ("both" mode, mixup on): every clip's T frames
through ViT-B/16, the text tower over all class prompts. The JAX step is `vifi_jax.train.steps.make_train_step`
jitted with donation, as the training loop builds it; the text runs over the prompts' exact length bucket
(16 tokens for K400-like names). The PyTorch peer is OpenAI's `clip/model.py` doing the same per clip:
on the CPU over the same 16 tokens (the same work), on an accelerator over 77 tokens, as the official
ViFi-CLIP code runs it (the official work), in bf16 autocast with fused AdamW, eager and `torch.compile`d.
MFU = model FLOPs (`vifi_jax.models.flops`: of the work each framework really does) / step time / peak.
Random weights, synthetic data. Device variants: `b<clips>` plus `+augment` (flip/jitter/grayscale in the
step, all on), `+remat`, `+attention=xla|cudnn` (the default, auto, is cuDNN's fused attention on GPUs).
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
from configs import fully_supervised, zeroshot  # noqa: E402
from data_pipelines import transforms  # noqa: E402
from vifi_jax import api  # noqa: E402
from vifi_jax.train import optim, steps  # noqa: E402
from vifi_jax.models import flops
from vifi_jax.runtime import hardware, sharding
from vifi_jax.models import clip, vifi  # noqa: E402

RECIPES = {"zeroshot": lambda: zeroshot.get_config("train"), "fully_supervised": fully_supervised.get_config}
B16 = clip.VARIANTS["ViT-B/16"]
VERBS = ("riding playing cleaning throwing juggling painting folding carrying kicking washing climbing tying "
         "shooting pushing sharpening peeling dribbling baking blowing stretching").split()
OBJECTS = ("a bicycle,the drums,wooden blocks,a paper plane,knot (not on a tie),glass,a ladder,snow,the violin,"
           "a horse,cookies,leaves,a basketball,potatoes,arm,a kite,candles,laundry,skis (not slalom),a trolley"
           ).split(",")


def class_names(n):
    """n synthetic K400-like names; the longest prompt has EOT at 15 (K400: 13): the 16-token bucket."""
    return [f"{VERBS[i % len(VERBS)]} {OBJECTS[(i // len(VERBS)) % len(OBJECTS)]}" for i in range(n)]


def worst_case_color(batch, frames, seed=0):
    """Colour parameters [1, batch, ...] with flip, jitter and grayscale all on (the most device work)."""
    rng = np.random.default_rng(seed)
    drawn = [transforms.draw_color_params(frames, rng, 1.0, 1.0, 1.0) for _ in range(batch)]
    return {k: jnp.asarray(np.stack([d[k] for d in drawn])[None]) for k in transforms.COLOR_PARAMS}


def jax_setup(recipe, batch, frames, classes, dtype, remat=False, augment=False, attention="auto"):
    """Build and compile the step as vifi_jax.train does: (result row, function running one step)."""
    config = RECIPES[recipe]()
    config.train.batch_size, config.train.accumulation_steps, config.train.reference_world_size = batch, 1, 1
    config.train.warmup_epochs = 0  # full LR from the second update on, so the timed steps visibly train
    config.data.num_frames, config.model.dtype, config.model.remat = frames, jnp.dtype(dtype).name, remat
    model = api.init("ViT-B/16", seed=0, dtype=dtype, remat=remat)
    module = model.module.clone(attention=attention)
    ids = vifi.class_token_ids(class_names(classes), "template")
    text = model.encode_text(ids) if config.train.use == "image" else jnp.asarray(ids)  # as train.py passes it
    optimizer, _ = optim.make_optimizer(config, iterations_per_epoch=1000)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    state = optim.init_state(model.params, config.train.use, optimizer, 0, mesh)
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.integers(0, 256, (1, batch, 1, frames, 224, 224, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, classes, (1, batch)), jnp.int32)
    color = worst_case_color(batch, frames) if augment else None
    step = jax.jit(steps.make_train_step(module, optimizer, config, classes, mesh), donate_argnums=(0,),
                   out_shardings=(jax.tree.map(lambda x: x.sharding, state), sharding.replicated(mesh)))
    start = time.perf_counter()
    compiled = step.lower(state, video, labels, text, color).compile()
    compile_s = time.perf_counter() - start
    xla_flops, memory = hardware.step_cost(compiled)
    fused_attention = "cudnn$fmha" in compiled.as_text()  # "auto" falls back to XLA where cuDNN refuses a shape
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], video, labels, text, color)
        jax.block_until_ready(holder[0])  # the whole update, not only the loss (ready before AdamW ends)
        return float(metrics["loss"])

    return {"framework": "jax", "recipe": recipe, "batch": batch, "frames": frames, "classes": classes,
            "text_len": int(ids.shape[1]), "dtype": jnp.dtype(dtype).name, "remat": remat, "augment_in_step": augment,
            "attention": "cudnn" if fused_attention else "xla", "compile_s": compile_s,
            "model_flops_per_step": flops.train_step(B16, batch, frames, classes, int(ids.shape[1]), config.train.use),
            "xla_flops_per_step": xla_flops, "memory_gib": memory / 2 ** 30 if memory else None}, run


def load_openai_clip_module():
    """OpenAI's `clip/model.py` by file path (the clip package itself needs torchvision)."""
    path = os.path.join(list(importlib.util.find_spec("clip").submodule_search_locations)[0], "model.py")
    spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile looks the module up by name
    spec.loader.exec_module(module)
    return module


def torch_setup(batch, frames, classes, threads, full_context=False, device="cpu", compiled=False):
    """The same step in PyTorch on OpenAI's CLIP: per-frame encode_image, mean over T, mixup, soft-target
    cross-entropy, AdamW. CPU: fp32. CUDA: bf16 autocast over fp32 parameters, fused AdamW, optionally
    `torch.compile` of the forward and loss. full_context runs the text tower at 77 tokens as ViFi-CLIP does."""
    import torch
    import torch.nn.functional as F
    from vifi_jax import tokenizer
    if device == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_openai_clip_module().CLIP(**B16).float().train().to(device)
    model.token_embedding.weight.requires_grad_(False)  # never trained, as in vifi_jax.train.is_trainable
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=8e-6, betas=(0.9, 0.98),
                                  eps=1e-8, weight_decay=1e-3, **({"fused": True} if device == "cuda" else {}))
    full = tokenizer.tokenize(vifi.class_texts(class_names(classes)))  # "a photo of a {}."
    ids = torch.from_numpy(np.asarray(full if full_context else tokenizer.truncate(full))).long().to(device)
    length = ids.shape[1]
    mask = model.build_attention_mask()[:length, :length].to(device)
    for block in model.transformer.resblocks:
        block.attn_mask = mask

    def encode_text(tokens):  # OpenAI's encode_text with the positional embedding cut to `length`
        x = model.token_embedding(tokens) + model.positional_embedding[:length]
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = model.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ model.text_projection

    mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in transforms.NORMALIZATIONS["imagenet"])
    rng = np.random.default_rng(0)
    video = torch.from_numpy(rng.integers(0, 256, (batch, frames, 224, 224, 3), dtype=np.uint8)).to(device)
    labels = torch.from_numpy(rng.integers(0, classes, batch)).to(device)

    def loss_of(x, targets):
        images = x.reshape(batch * frames, 224, 224, 3).permute(0, 3, 1, 2)
        v = F.normalize(model.encode_image(images).view(batch, frames, -1).float().mean(1), dim=-1)
        t = F.normalize(encode_text(ids).float(), dim=-1)
        return torch.sum(-targets * F.log_softmax(model.logit_scale.exp() * v @ t.T, dim=-1), dim=-1).mean()

    forward = torch.compile(loss_of) if compiled else loss_of

    def step():
        x = (video.float() - mean) / std
        lam, perm = float(rng.beta(0.8, 0.8)), torch.randperm(batch, device=device)  # Mixup (CutMix costs the same)
        targets = F.one_hot(labels, classes).float() * 0.9 + 0.1 / classes
        x, targets = lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = forward(x, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the whole step

    row = {"framework": "torch.compile" if compiled else "torch", "recipe": "zeroshot", "batch": batch,
           "frames": frames, "classes": classes, "text_len": int(length),
           "dtype": "bfloat16 autocast" if device == "cuda" else "float32", "torch": torch.__version__,
           "model_flops_per_step": flops.train_step(B16, batch, frames, classes, int(length))}
    if device == "cpu":
        row["threads"] = torch.get_num_threads()
    return row, step


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


def parse_variant(text):
    """"b8+augment+attention=xla" -> {"batch": 8, "augment": True, "attention": "xla", "remat": False}."""
    first, *options = text.split("+")
    variant = {"batch": int(first.lstrip("b")), "augment": False, "remat": False, "attention": "auto"}
    for option in options:
        key, _, value = option.partition("=")
        if key not in variant or key == "batch":
            raise ValueError(f"unknown variant option {option!r} in {text!r}")
        variant[key] = value or True
    return variant


def best_rate(fn, work, repeats=5):
    fn()
    return work / min(timeit.repeat(fn, number=1, repeat=repeats))


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
    return peak, (f"{peak / 1e9:.0f} GFLOP/s fp32 = max(nominal {cores} cores x {mhz / 1e3:.1f} GHz x {per_cycle} "
                  f"FLOP/clock = {nominal / 1e9:.0f}, measured 2048^3 matmul {measured})"), rates


def device_peak():
    """(datasheet dense bf16 peak, note, measured 8192^3 bf16 matmul rate on random data)."""
    kind = jax.devices()[0].device_kind
    peak = hardware.peak_tflops(kind)
    n = 8192 if jax.default_backend() != "cpu" else 512  # a CPU only tries the code
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x: x @ x)
    measured = best_rate(lambda: matmul(a).block_until_ready(), 2 * n ** 3, repeats=10)
    note = f"{kind}: {peak} TFLOP/s dense bf16 (hardware.PEAK_TFLOPS); measured {n}^3 bf16 matmul " \
           f"{measured / 1e12:.1f} TFLOP/s"
    return (peak * 1e12 if peak else None), note, {"xla_bf16_matmul": measured}


def finish(row, peak, measured=None):
    row.update(clips_per_s=row["batch"] / row["step_s"], achieved_flops=row["model_flops_per_step"] / row["step_s"])
    row["mfu"] = row["achieved_flops"] / peak if peak else None
    if measured and "xla" in measured:
        row["fraction_of_own_matmul"] = row["achieved_flops"] / measured["xla" if row["framework"] == "jax" else
                                                                         "torch"]
    if row.get("xla_flops_per_step"):
        row["xla_over_model_flops"] = row["xla_flops_per_step"] / row["model_flops_per_step"]
    row["cpu_busy"] = row["cpu_s_per_step"] / row["step_s"]
    return row


def print_table(rows, reference=None):
    print(f"\n{'framework':<13} {'variant':<22} {'B':>3} {'T':>3} {'txt':>4} {'step ms':>8} {'clips/s':>8} "
          f"{'TFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} {'vs ref':>7}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        ratio = f"{r['clips_per_s'] / reference['clips_per_s']:.2f}x" if reference else "-"
        print(f"{r['framework']:<13} {r.get('variant', r.get('recipe', '-')):<22} {r['batch']:>3} {r['frames']:>3} "
              f"{r['text_len']:>4} {1e3 * r['step_s']:>8.1f} {r['clips_per_s']:>8.2f} "
              f"{r['model_flops_per_step'] / 1e12:>10.3f} {r['achieved_flops'] / 1e12:>8.2f} {mfu:>6} {ratio:>7}")


def write(path, info, args, rows):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"info": info, "args": vars(args), "results": rows}, f, indent=2)


def run_device(args, info):
    """Each variant compiled and timed in turn (results written after each), then the PyTorch peers."""
    peak, note, measured = device_peak()
    info.update(peak_flops=peak, peak_note=note, measured_matmul_flops=measured)
    print(note, flush=True)
    rows = []
    for text in filter(None, args.variants.split(",")):
        variant = parse_variant(text)
        print(f"jax {text}: {variant['batch']} x {args.frames or 32} frames, {args.classes} classes ...", flush=True)
        try:
            bench = jax_setup("zeroshot", variant["batch"], args.frames or 32, args.classes, jnp.bfloat16,
                              variant["remat"], variant["augment"], variant["attention"])
            time_steps([bench], args.steps or 20, 2 if args.warmup is None else args.warmup)
            row = finish(dict(bench[0], variant=text + (f" [{args.label}]" if args.label else "")), peak)
            if args.profile and not rows:
                from benchmarks import profile_trace
                row["profile"] = profile_trace.profile(bench[1], args.profile, steps=5)
        except Exception as error:  # an out-of-memory or unsupported variant is a row, not the end of the run
            row = {"framework": "jax", "variant": text, "error": f"{type(error).__name__}: {str(error)[:400]}"}
        print(f"  {json.dumps({k: v for k, v in row.items() if k not in ('losses', 'profile')})}", flush=True)
        rows.append(row)
        bench = None
        jax.clear_caches()
        gc.collect()
        write(args.out, info, args, rows)
    for mode in filter(None, args.torch.split(",")):
        print(f"torch {mode}: batch {args.torch_batch}, text at 77 tokens ...", flush=True)
        try:
            import torch
            start = time.perf_counter()
            bench = torch_setup(args.torch_batch, args.frames or 32, args.classes, os.cpu_count(), full_context=True,
                                device="cuda", compiled=mode == "compile")
            bench[1]()  # compiles (torch.compile) and warms up
            bench[0]["compile_s"] = time.perf_counter() - start
            time_steps([bench], args.steps or 20, 2 if args.warmup is None else args.warmup)
            row = finish(dict(bench[0], variant=f"b{args.torch_batch} {mode}, 77 tokens",
                              peak_memory_gib=torch.cuda.max_memory_allocated() / 2 ** 30), peak)
            torch.cuda.reset_peak_memory_stats()
        except Exception as error:
            row = {"framework": f"torch {mode}", "error": f"{type(error).__name__}: {str(error)[:400]}"}
        print(f"  {json.dumps({k: v for k, v in row.items() if k != 'losses'})}", flush=True)
        rows.append(row)
        bench = None
        gc.collect()
        write(args.out, info, args, rows)
    good = [r for r in rows if "error" not in r]
    reference = next((r for r in good if r["framework"] == "torch.compile"), None)
    print_table(good, reference)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="store_true", help="accelerator mode: bf16 variants, PyTorch on CUDA")
    parser.add_argument("--variants", default="b8", help="device: comma-separated b<clips>[+augment][+remat]"
                        "[+attention=xla|cudnn]")
    parser.add_argument("--torch", default="eager,compile", help="device: PyTorch peers to time ('' for none)")
    parser.add_argument("--torch_batch", type=int, default=8)
    parser.add_argument("--label", default="", help="device: a note on the variants' rows (e.g. the XLA flags)")
    parser.add_argument("--profile", default="", help="device: trace the first variant into this directory")
    parser.add_argument("--recipe", choices=list(RECIPES), default="zeroshot", help="CPU mode")
    parser.add_argument("--batch", type=int, default=1, help="CPU mode: clips per step")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (CPU 8, device 32)")
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 2, device 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (CPU 1, device 2)")
    parser.add_argument("--remat", action="store_true", help="CPU mode: rematerialise each residual block")
    parser.add_argument("--augment", action="store_true", help="CPU mode: flip/jitter/grayscale inside the step")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/train_step.json")
    args = parser.parse_args()
    info = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "python": platform.python_version(), "mode": "device" if args.device else "cpu",
            "load_average_start": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M")}
    if args.device:
        run_device(args, info)
        return
    jax.config.update("jax_default_matmul_precision", "float32")
    peak, note, measured = cpu_peak(not args.no_torch)
    info.update(peak_flops=peak, peak_note=note, measured_matmul_flops=measured)
    print(f"{info['device_kind']} ({info['backend']}), jax {jax.__version__}, float32; peak: {note}", flush=True)
    frames = args.frames or 8
    benches = [jax_setup(args.recipe, args.batch, frames, args.classes, jnp.float32, args.remat, args.augment)]
    if not args.no_torch:
        benches.append(torch_setup(args.batch, frames, args.classes, os.cpu_count()))
    time_steps(benches, args.steps or 2, 1 if args.warmup is None else args.warmup)
    rows = [finish(row, peak, measured) for row, _ in benches]
    print_table(rows, rows[1] if len(rows) > 1 else None)
    print("vs ref: clips/s over PyTorch's. MFU: model FLOPs / step time / peak.")
    info["load_average_end"] = os.getloadavg()[0]
    write(args.out, info, args, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
