"""A config's train step and evaluation step compiled for a target (`runtime.targets`) from shapes alone,
with a verdict per device: what it holds against the chip's memory, its collectives, its FLOPs and (TPU)
the cost model's time. The programs are built by the code training and evaluation run: the session
(abstract: no weights read), `optim.state_shapes`, `steps.jit_train_step` with `steps.update_shapes`, and
the evaluators' `encoder.view_logits_program`.
"""
import copy
import time

import jax
import jax.numpy as jnp
import numpy as np

from vifi_jax.models import flops
from vifi_jax.runtime import compiled as compiled_lib
from vifi_jax.runtime import data, encoder, sharding
from vifi_jax.runtime import session as session_lib
from vifi_jax.train import optim, steps

GIB = 2 ** 30
# Stands in for class names when the label CSV is not on this machine: "a photo of a {}." is then 16 tokens,
# about the longest Kinetics-400 prompt (the text side is a few per cent of a step).
PLACEHOLDER_CLASS = "class name with several words in it like most"
LEVER_COSTS = {"bf16": "bfloat16 compute: faster on every accelerator; numerics differ from the fp32 reference "
                       "(parameters and optimizer state stay float32)",
               "fsdp": "parameters and optimizer state split over more devices: their all-gather and the "
                       "gradients' reduce-scatter are added to every micro-batch",
               "micro_batch": "half the micro-batch, twice the accumulation: the same effective batch and the same "
                              "updates (up to reassociation); smaller matmuls use the chip less well",
               "remat": "each residual block's forward is recomputed in the backward pass: about a third more "
                        "FLOPs"}


def _class_names(config, label_files, default_count):
    """(the largest readable class list of `label_files`, or placeholders, what they are)."""
    lists = [names for names in (data.readable_class_names(config, f) for f in label_files) if names]
    if lists:
        return max(lists, key=len), "label CSV"
    return [PLACEHOLDER_CLASS] * default_count, f"{default_count} placeholder classes (label CSV not found here)"


def _replicated(shape, dtype, mesh):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.replicated(mesh))


def bytes_per_device(tree):
    """Bytes of one device's shards of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
    return int(sum(np.prod(x.sharding.shard_shape(x.shape), dtype=np.int64) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def bytes_total(tree):
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def train_program(config, session):
    """(the jitted train step, its abstract arguments, analytic FLOPs per device and update, what the
    class texts are, the train state's shapes) as the training loop would run them."""
    mesh, module, t = session.mesh, session.module, config.train
    if t.batch_size % mesh.size:
        raise ValueError(f"train.batch_size={t.batch_size} must be a multiple of the {mesh.size} devices")
    if config.task == "retrieval":  # each clip's caption: [B, max_words] token ids in the batch, no class texts
        names, names_from, text = [], "the batch's captions", None
        texts, text_length = t.batch_size, config.retrieval.max_words
    else:
        names, names_from = _class_names(config, [config.data.labels], config.data.num_classes or 400)
        ids = session.class_token_ids(names)
        text = (_replicated((len(names), module.embed_dim), jnp.float32, mesh) if t.use == "image"
                else _replicated(ids.shape, jnp.int32, mesh))
        texts, text_length = len(names), ids.shape[1]
    optimizer, _ = optim.make_optimizer(config, iterations_per_epoch=1000)  # the schedule's length: a constant
    state = optim.state_shapes(session.param_shapes, t.use, optimizer, config.seed, mesh)
    step = steps.jit_train_step(module, optimizer, config, len(names), mesh, state)
    batch = steps.update_shapes(config, mesh)
    analytic = flops.per_update(flops.model_fields(module), config, texts, text_length, mesh.size)
    return step, (state, batch["frames"], batch["label"], text, batch["color"]), analytic, names_from, state


def eval_program(config, session):
    """(the evaluators' jitted scoring program, its abstract arguments, analytic FLOPs per device and batch,
    what the texts are) for the final views: [B, V, T, H, W, 3] uint8 frames against text features."""
    mesh, module, d, e = session.mesh, session.module, config.data, config.eval
    views = 1 if config.task == "retrieval" else e.final_num_clips * e.final_num_crops
    batch = -(-e.batch_size // mesh.size) * mesh.size  # as `scoring.score_views` rounds it
    labels = [s.labels for s in config.eval.sets.values()] if config.task != "retrieval" else []
    names, names_from = _class_names(config, labels, d.num_classes or 400)
    frames = jax.ShapeDtypeStruct((batch, views, d.num_frames, d.input_size, d.input_size, 3), jnp.uint8,
                                  sharding=sharding.batch_sharding(mesh))
    text = _replicated((len(names), module.embed_dim), jnp.float32, mesh)
    cfg = flops.model_fields(module)
    analytic = (batch * views * d.num_frames * flops.image_forward(cfg) + 2 * batch * views * len(names)
                * cfg["embed_dim"]) / mesh.size
    program = jax.jit(encoder.view_logits_program.__wrapped__, static_argnums=(0, 1))
    return program, (module, d.normalize, session.param_shapes, frames, text), analytic, names_from


def session_for(config, target):
    """The abstract session of `config` on the target's devices, with the attention the target would run:
    cuDNN's fused attention in 16-bit compute on GPUs ("auto" decides by the local backend, a CPU here)."""
    session = session_lib.from_config(config, devices=target.devices, abstract=True)
    if target.platform == "gpu" and session.module.attention == "auto":
        half = jnp.dtype(session.module.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        session.module = session.module.clone(attention="cudnn" if half else "xla")
    return session


def _compile(program, arguments):
    """(compiled or None, seconds, the out-of-memory error or None). Nothing goes into JAX's persistent cache
    (when one is set): an executable for absent devices can be written there but not read back (that needs
    their client), so a second compile of the same program would fail on it. Turning the cache off does not
    reach a process that has used it; a minimum compile time no compile reaches does."""
    setting = "jax_persistent_cache_min_compile_time_secs"
    start, cached = time.perf_counter(), getattr(jax.config, setting)
    jax.config.update(setting, float("inf"))
    try:
        return program.lower(*arguments).compile(), time.perf_counter() - start, None
    except Exception as error:  # noqa: BLE001 - only running out of memory is an answer; the rest is raised
        if compiled_lib.out_of_memory_bytes(error) is None:
            raise
        return None, time.perf_counter() - start, error
    finally:
        jax.config.update(setting, cached)


def describe(program, arguments, analytic, target, limit, loop_trips=1):
    """Compile and judge one program: memory, fit, collectives, FLOPs and time per device."""
    compiled, seconds, error = _compile(program, arguments)
    peak_tflops = target.peak_tflops * 1e12
    result = {"compile_seconds": round(seconds, 1), "flops": {"analytic": analytic, "xla": None},
              "time": {"compute_bound_s": analytic / peak_tflops, "hbm_bound_s": None, "estimate_s": None,
                       "estimated_mfu": None}}
    if compiled is None:
        needed, capacity = compiled_lib.out_of_memory_bytes(error)
        result.update(peak_bytes=needed, fits=False, memory=None, collectives=None,
                      compiler_says=f"needs {needed / GIB:.2f} GiB of the {capacity / GIB:.2f} GiB the compiler allows")
        return result
    memory = compiled_lib.memory(compiled)
    result.update(peak_bytes=memory["peak_bytes"], fits=memory["peak_bytes"] <= limit, memory=memory,
                  collectives=compiled_lib.collectives_summary(compiled_lib.collectives(compiled.as_text())))
    cost = compiled_lib.cost(compiled, target.platform, loop_trips)
    if cost:
        result["flops"]["xla"] = cost["flops"]
        result["time"]["hbm_bound_s"] = cost["bytes_accessed"] / target.hbm_bandwidth
        estimate = cost["seconds"]
        if estimate is not None and estimate < result["time"]["compute_bound_s"]:
            result["time"]["estimate_note"] = (f"the cost model's {estimate:.4f} s is below the compute-bound "
                                               "limit, so it is not shown")
            estimate = None
        if estimate is not None:
            result["time"].update(estimate_s=estimate, estimated_mfu=analytic / (estimate * peak_tflops))
    return result


def _levers(config, devices):
    """(name, --config overrides, the changed config) of each single lever that applies to `config`."""
    t, found = config.train, []

    def changed(**fields):
        c = copy.deepcopy(config)
        for path, value in fields.items():
            block, _, field = path.partition(".")
            c[block][field] = value
        flags = " ".join(f"--config.{path}={value}" for path, value in fields.items())
        return c, flags

    if config.model.dtype == "float32":
        found.append(("bf16", *changed(**{"model.dtype": "bfloat16"})))
    if devices % (config.mesh.fsdp * 2) == 0:
        found.append(("fsdp", *changed(**{"mesh.fsdp": config.mesh.fsdp * 2, "mesh.data": -1})))
    half = t.batch_size // 2
    if t.batch_size % 2 == 0 and half % devices == 0 and t.reference_world_size % 2 == 0:
        found.append(("micro_batch", *changed(**{"train.batch_size": half,
                                                 "train.accumulation_steps": t.accumulation_steps * 2,
                                                 "train.reference_world_size": t.reference_world_size // 2})))
    if not config.model.remat:
        found.append(("remat", *changed(**{"model.remat": True})))
    return found


_COMPILED_TRAIN_STEPS = {}  # (config, target) -> result: a process compiles each step once (levers, limits)


def _train(config, target, limit):
    key = (config.to_json(sort_keys=True), target.name, target.usable_bytes)
    if key not in _COMPILED_TRAIN_STEPS:
        session = session_for(config, target)
        program, arguments, analytic, names_from, state = train_program(config, session)
        result = describe(program, arguments, analytic, target, limit, loop_trips=config.train.accumulation_steps)
        result.update(texts=names_from, state_bytes_per_device=bytes_per_device(state),
                      state_bytes=bytes_total(state), micro_batch=config.train.batch_size,
                      accumulation_steps=config.train.accumulation_steps, mesh=dict(session.mesh.shape))
        _COMPILED_TRAIN_STEPS[key] = result
    result = copy.deepcopy(_COMPILED_TRAIN_STEPS[key])
    result["fits"] = result["memory"] is not None and result["peak_bytes"] <= limit
    return result


def _try_levers(config, target, limit, progress):
    """Each single lever compiled; if none fits, the levers added one after another (cheapest first)."""
    tried = []
    for name, changed, overrides in _levers(config, len(target.devices)):
        progress(f"train step with {name} ({overrides})")
        tried.append({"lever": name, "flags": overrides, "cost": LEVER_COSTS[name],
                      **_brief(_train(changed, target, limit))})
    if tried and not any(t["fits"] for t in tried):
        combined, names, flags = config, [], []
        for name, _, _ in _levers(config, len(target.devices)):
            applicable = {n: (c, f) for n, c, f in _levers(combined, len(target.devices))}
            if name not in applicable:
                continue
            combined, overrides = applicable[name]
            names.append(name)
            flags.append(overrides)
            if len(names) < 2:
                continue
            progress(f"train step with {' + '.join(names)}")
            tried.append({"lever": " + ".join(names), "flags": " ".join(flags),
                          "cost": "; ".join(LEVER_COSTS[n] for n in names), **_brief(_train(combined, target, limit))})
            if tried[-1]["fits"]:
                break
    return tried


def _brief(result):
    return {"peak_bytes": result["peak_bytes"], "fits": result["fits"],
            "estimate_s": result["time"]["estimate_s"]}


def cheapest(levers):
    """The fitting lever with the lowest time estimate, or (no estimates) the first fitting one in cost order."""
    fitting = [lever for lever in levers if lever["fits"]]
    if not fitting:
        return None
    if all(lever["estimate_s"] is not None for lever in fitting):
        return min(fitting, key=lambda lever: lever["estimate_s"])
    return fitting[0]


def report(config, target, config_name, memory_limit_gib=None, try_levers=True, progress=None,
           programs=("train", "eval")):
    """The whole report (a JSON-ready dict) of `config` on `target`: the train step (train configs) and the
    evaluation step, as `programs` selects."""
    progress = progress or (lambda message: None)
    limit = int(memory_limit_gib * GIB) if memory_limit_gib is not None else target.usable_bytes
    out = {**target.summary(), "config": config_name, "limit_bytes": limit, "jax": jax.__version__, "programs": {}}
    if config.mode == "train" and "train" in programs:
        progress(f"compiling the train step for {target.name} ({len(target.devices)} devices)")
        out["programs"]["train"] = _train(config, target, limit)
    if "eval" in programs:
        progress(f"compiling the evaluation step for {target.name}")
        session = session_for(config, target)
        program, arguments, analytic, names_from = eval_program(config, session)
        out["programs"]["eval"] = dict(describe(program, arguments, analytic, target, limit), texts=names_from,
                                       batch=arguments[3].shape[0], views=arguments[3].shape[1])
    if not out["programs"]:
        raise ValueError(f"nothing to compile: programs={programs} for a {config.mode} config")
    programs = out["programs"].values()
    out["peak_bytes"] = max(p["peak_bytes"] for p in programs)
    out["fits"] = all(p["fits"] for p in programs)
    main_program = out["programs"].get("train") or out["programs"]["eval"]
    out["flops"], out["collectives"] = main_program["flops"], main_program["collectives"]
    train = out["programs"].get("train")
    if train and not train["fits"] and try_levers:
        out["levers"] = _try_levers(config, target, limit, progress)
        out["cheapest_fit"] = cheapest(out["levers"])
    out["verdict"] = verdict(out)
    return out


def verdict(out):
    limit = out["limit_bytes"] / GIB
    parts = []
    for name, p in out["programs"].items():
        state = "fits" if p["fits"] else "does NOT fit"
        parts.append(f"{name} step {state}: {p['peak_bytes'] / GIB:.2f} of {limit:.2f} GiB per device")
    text = "; ".join(parts)
    if "levers" in out:
        best = out["cheapest_fit"]
        text += (f". Cheapest lever that fits: {best['flags']} ({best['peak_bytes'] / GIB:.2f} GiB; {best['cost']})"
                 if best else ". No lever tried fits: use more devices (a larger topology)")
    return text


def table(out):
    """The report as text for a terminal."""
    gib = lambda b: f"{b / GIB:.2f} GiB" if b is not None else "-"
    lines = [f"{out['config']} on {out['target']}: {out['devices']} x {out['device_kind']} ({out['hosts']} host(s)), "
             f"{gib(out['hbm_bytes'])} each, judged against {gib(out['limit_bytes'])}"]
    if out.get("note"):
        lines.append(f"  note: {out['note']}")
    for name, p in out["programs"].items():
        lines.append(f"{name} step: {'fits' if p['fits'] else 'does NOT fit'}, peak {gib(p['peak_bytes'])} per device"
                     + (f" ({p['compiler_says']})" if p.get("compiler_says") else ""))
        if p["memory"]:
            m = p["memory"]
            lines.append(f"  arguments {gib(m['argument_bytes'])}, outputs {gib(m['output_bytes'])}, temporaries "
                         f"{gib(m['temp_bytes'])}, donated {gib(m['alias_bytes'])}")
        if "state_bytes" in p:
            lines.append(f"  train state {gib(p['state_bytes_per_device'])} per device of {gib(p['state_bytes'])}; "
                         f"mesh {p['mesh']}, micro-batch {p['micro_batch']} x {p['accumulation_steps']} accumulated")
        f = p["flops"]
        lines.append(f"  FLOPs per device: analytic {f['analytic'] / 1e12:.3f} T"
                     + (f", XLA {f['xla'] / 1e12:.3f} T" if f["xla"] else ", XLA: not reported by this backend"))
        t = p["time"]
        lines.append(f"  lower limits: compute-bound {t['compute_bound_s'] * 1e3:.1f} ms"
                     + (f", HBM-bound {t['hbm_bound_s'] * 1e3:.1f} ms" if t["hbm_bound_s"] else ""))
        if t["estimate_s"]:
            lines.append(f"  cost-model estimate {t['estimate_s'] * 1e3:.1f} ms (MFU {t['estimated_mfu']:.1%}; a "
                         "per-op roofline sum, not a measurement)")
        for kind, c in (p["collectives"] or {}).items():
            lines.append(f"  {kind}: {c['count']} x, {c['bytes'] / 1e6:.1f} MB")
    for lever in out.get("levers", []):
        lines.append(f"lever {lever['lever']}: {'fits' if lever['fits'] else 'does not fit'} at "
                     f"{gib(lever['peak_bytes'])} ({lever['flags']})")
    lines.append(f"verdict: {out['verdict']}")
    return "\n".join(lines)
