"""PyTorch CLIP / ViFi-CLIP checkpoints <-> vifi_jax parameters, by one declarative key table.

Reads OpenAI CLIP `.pt` (TorchScript) or state dicts, official ViFi-CLIP `.pth` (regular or prompting),
`.safetensors`, vifi_jax model directories and `openai:ViT-B/16`; writes model directories, `.pth`/`.pt`
in either layout and `.safetensors`. Every conversion checks every key and shape against the model the
checkpoint implies and names what is missing, unexpected or mis-shaped. `python -m vifi_jax.convert` is
the command.
"""
import os
import re

import numpy as np
from flax import traverse_util

from data_pipelines import files, outputs, storage
from vifi_jax.weights import downloads, model_dir, safetensors_file, torch_files
from vifi_jax.models import clip, vifi

# Tensor layout changes between torch and Flax; each is its own inverse's partner.
KEEP, LINEAR, CONV = "keep", "linear", "conv"
_TO_FLAX = {KEEP: lambda a: a, LINEAR: lambda a: a.T, CONV: lambda a: a.transpose(2, 3, 1, 0)}
_TO_TORCH = {KEEP: lambda a: a, LINEAR: lambda a: a.T, CONV: lambda a: a.transpose(3, 2, 0, 1)}

_BLOCK = (  # inside `<tower>.resblocks.{i}.`
    ("attn.in_proj_weight", "attn/in_proj/kernel", LINEAR),
    ("attn.in_proj_bias", "attn/in_proj/bias", KEEP),
    ("attn.out_proj.weight", "attn/out_proj/kernel", LINEAR),
    ("attn.out_proj.bias", "attn/out_proj/bias", KEEP),
    ("ln_1.weight", "ln_1/scale", KEEP),
    ("ln_1.bias", "ln_1/bias", KEEP),
    ("mlp.c_fc.weight", "mlp/c_fc/kernel", LINEAR),
    ("mlp.c_fc.bias", "mlp/c_fc/bias", KEEP),
    ("mlp.c_proj.weight", "mlp/c_proj/kernel", LINEAR),
    ("mlp.c_proj.bias", "mlp/c_proj/bias", KEEP),
    ("ln_2.weight", "ln_2/scale", KEEP),
    ("ln_2.bias", "ln_2/bias", KEEP),
    ("VPT_shallow", "VPT_shallow", KEEP),
)

# (OpenAI state-dict key, vifi_jax parameter path, layout change); `{i}` is a block index.
# `VPT`, `VPT_shallow` and `prompt_learner.ctx` are ViFi-CLIP's prompting parameters.
KEY_TABLE = (
    ("visual.conv1.weight", "visual/conv1/kernel", CONV),
    ("visual.class_embedding", "visual/class_embedding", KEEP),
    ("visual.positional_embedding", "visual/positional_embedding", KEEP),
    ("visual.VPT", "visual/VPT", KEEP),
    ("visual.ln_pre.weight", "visual/ln_pre/scale", KEEP),
    ("visual.ln_pre.bias", "visual/ln_pre/bias", KEEP),
    ("visual.ln_post.weight", "visual/ln_post/scale", KEEP),
    ("visual.ln_post.bias", "visual/ln_post/bias", KEEP),
    ("visual.proj", "visual/proj", KEEP),
    ("token_embedding.weight", "token_embedding/embedding", KEEP),
    ("positional_embedding", "positional_embedding", KEEP),
    ("prompt_learner.ctx", "prompt_learner/ctx", KEEP),
    ("ln_final.weight", "ln_final/scale", KEEP),
    ("ln_final.bias", "ln_final/bias", KEEP),
    ("text_projection", "text_projection", KEEP),
    ("logit_scale", "logit_scale", KEEP),
) + tuple(
    (f"{tower}.resblocks.{{i}}.{key}", f"{tower.replace('.', '/')}/resblocks_{{i}}/{path}", change)
    for tower in ("visual.transformer", "transformer") for key, path, change in _BLOCK)

# ViFi-CLIP module names (after `module.`) -> OpenAI names.
VIFI_PREFIXES = (
    ("image_encoder.", "visual."),
    ("text_encoder.transformer.", "transformer."),
    ("text_encoder.positional_embedding", "positional_embedding"),
    ("text_encoder.ln_final.", "ln_final."),
    ("text_encoder.text_projection", "text_projection"),
    ("prompt_learner.ctx", "prompt_learner.ctx"),
    ("logit_scale", "logit_scale"),
)
# Buffers that hold derived values, never weights.
VIFI_BUFFERS = ("prompt_learner.complete_text_embeddings", "prompt_learner.token_prefix",
                "prompt_learner.token_suffix")
OPENAI_BUFFERS = ("input_resolution", "context_length", "vocab_size")
LAYOUTS = ("openai", "vifi")


class ConversionError(ValueError):
    """A checkpoint does not fit the model it describes."""


def _compile(template):
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_RULES = tuple((_compile(key), key, _compile(path), path, change) for key, path, change in KEY_TABLE)


def as_float32(value, name):
    """A tensor as float32: floats are cast; integers and booleans only where every value is exact in
    float32 (|x| <= 2**24); anything else is refused naming the tensor and its dtype."""
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16":
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.size and np.abs(array.astype(np.float64)).max() > 2 ** 24:
            raise ConversionError(f"{name} is a {array.dtype} tensor with values beyond 2**24, which float32 cannot "
                                  "hold exactly; a CLIP parameter is a float tensor: this checkpoint is damaged")
        return array.astype(np.float32)
    raise ConversionError(f"{name} is a {array.dtype} tensor; CLIP parameters are float tensors (float16, bfloat16, "
                          "float32 or float64)")


MAX_LOGIT_SCALE = float(np.log(200.0))


def check_values(flat, source):
    """Refuse non-finite parameters (naming the first tensors) and a logit scale far beyond CLIP's: OpenAI
    clamps exp(logit_scale) to 100 in training and fine-tuning keeps it near ln 100, so a scale above 200
    (or below 1) is a damaged checkpoint whose probabilities would overflow to NaN."""
    bad = [path for path, value in flat.items() if not np.isfinite(value).all()]
    if bad:
        raise ConversionError(f"{source}: non-finite values (NaN or infinity) in {', '.join(bad[:5])}"
                              f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}; the checkpoint is damaged")
    scale = flat.get("logit_scale")
    if scale is not None and not 0.0 <= float(np.asarray(scale).reshape(-1)[0]) <= MAX_LOGIT_SCALE:
        raise ConversionError(f"{source}: logit_scale is {float(np.asarray(scale).reshape(-1)[0]):g}, so logits are "
                              "scaled by exp() of it; CLIP keeps exp(logit_scale) in [1, 100] (ln 100 = 4.6052), and "
                              "a value outside [0, ln 200] means the checkpoint is damaged")


def openai_to_flat(state):
    """{OpenAI key: array} -> ({vifi_jax path: fp32 array}, unexpected keys)."""
    flat, unexpected = {}, []
    for key, value in state.items():
        for key_re, _, _, path, change in _RULES:
            match = key_re.match(key)
            if match:
                flat[path.format(**match.groupdict())] = _TO_FLAX[change](as_float32(value, key))
                break
        else:
            unexpected.append(key)
    return flat, unexpected


def flat_to_openai(flat, dtype=np.float32):
    """{vifi_jax path: array} -> {OpenAI key: array in `dtype`} (contiguous, torch layout)."""
    state = {}
    for path, value in flat.items():
        for _, key, path_re, _, change in _RULES:
            match = path_re.match(path)
            if match:
                state[key.format(**match.groupdict())] = np.array(
                    _TO_TORCH[change](np.asarray(value)), dtype=dtype, order="C")
                break
        else:
            raise ConversionError(f"parameter {path} has no PyTorch name in the key table")
    return state


def vifi_to_openai(state):
    """Official ViFi-CLIP `model` state dict (with or without `module.`) -> OpenAI names."""
    out, unexpected = {}, []
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key in VIFI_BUFFERS:
            continue
        for official, openai in VIFI_PREFIXES:
            if key.startswith(official):
                out[openai + key[len(official):]] = value
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise ConversionError(f"unexpected keys in the ViFi-CLIP checkpoint: {', '.join(unexpected)}")
    return out


def openai_to_vifi(state):
    """OpenAI names -> the official ViFi-CLIP `model` dict (`module.` prefix, no token embedding)."""
    out = {}
    for key, value in state.items():
        if key == "token_embedding.weight":
            continue
        for official, openai in VIFI_PREFIXES:
            if key.startswith(openai):
                out["module." + official + key[len(openai):]] = value
                break
        else:
            raise ConversionError(f"{key} has no place in the ViFi-CLIP layout")
    return out


def infer_config(state):
    """Model fields (as `clip.CLIP` takes them) implied by an OpenAI-named state dict."""
    def need(key, ndim):
        if key not in state:
            raise ConversionError(f"checkpoint lacks {key}; cannot infer the model shape")
        shape = np.shape(state[key])
        if len(shape) != ndim:
            raise ConversionError(f"checkpoint's {key} has shape {shape}; a CLIP has {ndim} dimensions there")
        return shape

    vision_width, _, patch, _ = need("visual.conv1.weight", 4)
    grid = round(max(need("visual.positional_embedding", 2)[0] - 1, 0) ** 0.5)
    text_width = need("ln_final.weight", 1)[0]

    def blocks(prefix):
        found = {k.split(".")[len(prefix.split("."))] for k in state if k.startswith(prefix + ".")}
        if found != {str(i) for i in range(len(found))}:
            raise ConversionError(f"blocks of {prefix} are numbered {sorted(found)[:8]}…, not 0, 1, 2, …")
        return len(found)

    def prompt_depth(prefix):
        shallow = sorted(int(k.split(".")[-2]) for k in state
                         if k.startswith(prefix + ".") and k.endswith(".VPT_shallow"))
        if shallow != list(range(1, len(shallow) + 1)):
            raise ConversionError(f"deep prompts of {prefix} sit in blocks {shallow}; expected 1…depth-1")
        return len(shallow) + 1

    config = dict(
        embed_dim=need("text_projection", 2)[1], image_resolution=patch * grid,
        vision_layers=blocks("visual.transformer.resblocks"), vision_width=vision_width,
        vision_patch_size=patch, context_length=need("positional_embedding", 2)[0],
        vocab_size=need("token_embedding.weight", 2)[0], transformer_width=text_width,
        transformer_heads=text_width // 64, transformer_layers=blocks("transformer.resblocks"),
        vision_prompts=0, vision_prompt_depth=0, text_prompts=0, text_prompt_depth=0)
    if "visual.VPT" in state:
        config.update(vision_prompts=need("visual.VPT", 2)[0],
                      vision_prompt_depth=prompt_depth("visual.transformer.resblocks"))
    if "prompt_learner.ctx" in state:
        config.update(text_prompts=need("prompt_learner.ctx", 2)[0],
                      text_prompt_depth=prompt_depth("transformer.resblocks"))
    config = {k: int(v) for k, v in config.items()}
    clip.check_fields(config, "the model the checkpoint implies")
    return config


def check(flat, config, unexpected=()):
    """Raise one error naming every missing, unexpected and mis-shaped parameter."""
    shapes = vifi.parameter_shapes(config)
    problems = []
    missing = sorted(set(shapes) - set(flat))
    if missing:
        problems.append("missing: " + ", ".join(missing))
    extra = sorted(set(flat) - set(shapes)) + list(unexpected)
    if extra:
        problems.append("unexpected: " + ", ".join(extra))
    wrong = [f"{p} {flat[p].shape} (expected {shapes[p]})" for p in sorted(set(flat) & set(shapes))
             if tuple(flat[p].shape) != shapes[p]]
    if wrong:
        problems.append("wrong shape: " + ", ".join(wrong))
    if problems:
        raise ConversionError("checkpoint does not fit the model: " + "; ".join(problems))


def read_state_dict(path):
    """Any supported PyTorch-side file -> (OpenAI-named state dict, layout it came in)."""
    if str(path).endswith(".safetensors"):
        try:
            state = safetensors_file.load(path)
        except safetensors_file.SafetensorsError as error:
            raise ConversionError(f"{path} is not a readable safetensors file ({error})") from error
    else:
        obj = torch_files.load(path)
        if isinstance(obj, torch_files.ScriptObject):
            state = torch_files.state_dict(obj)
        elif isinstance(obj, dict):
            state = obj.get("model", obj.get("state_dict", obj))
        else:
            raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ConversionError(f"{path}: the 'model' entry is not a state dict")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith(("image_encoder.", "text_encoder.")) for k in state):
        return vifi_to_openai(state), "vifi"
    if any(k.startswith("visual.layer1.") for k in state):
        raise ConversionError(f"{path} is a ResNet CLIP checkpoint; vifi_jax implements the ViT towers only")
    if any(k.startswith("visual.") for k in state):
        return {k: v for k, v in state.items() if k not in OPENAI_BUFFERS}, "openai"
    raise ConversionError(f"{path} holds no CLIP parameters (neither OpenAI CLIP ('visual.…') nor ViFi-CLIP "
                          "('image_encoder.…') keys)")


def read(source, clip_weights=None):
    """Any checkpoint vifi_jax accepts -> (model config dict, nested fp32 params)."""
    source = os.fspath(source)
    if source.startswith("openai:"):
        source = downloads.openai_weights(source[len("openai:"):])
    if storage.isdir(source):
        config, params = model_dir.load(source)
        check_values(traverse_util.flatten_dict(params, sep="/"), source)
        return config, params
    if not storage.exists(source):
        raise FileNotFoundError(f"checkpoint {source} does not exist (give a file, a vifi_jax directory "
                                f"or one of {', '.join('openai:' + n for n in downloads.OPENAI_MODELS)})")
    with storage.local_copy(source) as local:  # a bucket's file is read from a temporary copy
        state, layout = read_state_dict(local)
    if "token_embedding.weight" not in state:
        if clip_weights is None:
            raise ConversionError(
                f"{source} has no token_embedding.weight (ViFi-CLIP checkpoints, and .pth files vifi_jax writes in "
                "the vifi layout, never store it); pass --clip_weights (convert, predict) or "
                "clip_weights= (vifi_jax.load) with the OpenAI CLIP weights it was fine-tuned from, e.g. "
                "openai:ViT-B/16")
        _, clip_params = read(clip_weights)
        state["token_embedding.weight"] = np.asarray(clip_params["token_embedding"]["embedding"])
    config = infer_config(state)
    flat, unexpected = openai_to_flat(state)
    check(flat, config, unexpected)
    check_values(flat, source)
    return config, traverse_util.unflatten_dict(flat, sep="/")


def write_pytorch(params, path, layout="vifi", dtype=np.float32):
    """Write params as a `.pth`: `openai` (for `clip.model.build_model`) or `vifi` ({"model": {"module.…"}}).

    Returns the number of parameters written. The `vifi` layout, like the official checkpoints, leaves out
    the token embedding: reading it back needs the OpenAI weights it came from (`clip_weights`).
    """
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    state = flat_to_openai(traverse_util.flatten_dict(params, sep="/"), dtype)
    if layout == "openai":
        prompts = [k for k in state if "VPT" in k or k.startswith("prompt_learner")]
        if prompts:
            raise ConversionError("OpenAI's CLIP has no deep prompts; write prompted models with --layout vifi")
    else:
        state = openai_to_vifi(state)
    torch_files.save(state if layout == "openai" else {"model": state}, path)
    return sum(np.size(v) for v in state.values())


TORCH_SUFFIXES = (".pth", ".pt")
VIFI_LAYOUT_NOTE = (" in the ViFi-CLIP layout, without the token embedding (as official checkpoints): read it back "
                    "with --clip_weights / clip_weights= naming the OpenAI weights")
FILE_SUFFIXES = TORCH_SUFFIXES + (".safetensors",)


def check_destination(dst, overwrite=False):
    """Refuse a destination whose writing would destroy something the user did not ask to replace."""
    dst = os.fspath(dst)
    suffix = os.path.splitext(dst.rstrip(os.sep))[1]
    if suffix and suffix not in FILE_SUFFIXES:
        raise ConversionError(f"{dst}: unknown destination type {suffix!r}; write a {'/'.join(FILE_SUFFIXES)} file "
                              "or a vifi_jax model directory (a path without a suffix)")
    if storage.is_remote(dst):  # an object is a file; a name prefix with objects under it, a directory
        problem = files.regular_file_problem(dst)
        absent = problem is not None and problem.startswith("does not exist") and not storage.listdir(dst)
        not_a_file = problem is not None
    else:
        absent = not os.path.lexists(dst)
        not_a_file = not os.path.isfile(dst) or os.path.islink(dst)
    if absent:
        return
    if suffix:
        if not_a_file:
            raise ConversionError(f"{dst} exists and is not a regular file; choose another destination")
        if not overwrite:
            raise ConversionError(f"{dst} exists; pass --overwrite to replace it")
    elif model_dir.is_model_dir(dst):
        if not overwrite:
            raise ConversionError(f"{dst} holds a vifi_jax model; pass --overwrite to replace it")
    elif not storage.isdir(dst) or storage.listdir(dst):
        raise ConversionError(f"{dst} exists and is not a vifi_jax model directory; choose another destination "
                              "(nothing there is replaced, even with --overwrite)")


def write_safetensors(params, path, dtype=np.float32):
    """OpenAI-named tensors (prompts included) in a `.safetensors` file; returns the number of parameters."""
    from safetensors.numpy import save_file
    state = flat_to_openai(traverse_util.flatten_dict(params, sep="/"), dtype)
    save_file(state, path)
    return sum(np.size(v) for v in state.values())


def convert(src, dst, clip_weights=None, layout="vifi", dtype="float32", overwrite=False):
    """Read `src`, write `dst` (a `.pth`/`.pt` file in `layout`, a `.safetensors` file, else a vifi_jax
    directory); returns a report. Nothing is written if reading fails; an existing destination is replaced
    only with `overwrite` and only once the new one is complete."""
    dst = os.fspath(dst).rstrip(os.sep) or os.sep
    check_destination(dst, overwrite)
    outputs.clean_leftovers(dst)
    config, params = read(src, clip_weights)
    if storage.is_remote(dst):
        return _convert_to_bucket(config, params, dst, layout, dtype)
    staging = outputs.partial_name(dst)
    note = ""
    try:
        if dst.endswith(TORCH_SUFFIXES):
            written = write_pytorch(params, staging, layout, np.dtype(dtype))
            note = VIFI_LAYOUT_NOTE if layout == "vifi" else ""
        elif dst.endswith(".safetensors"):
            written = write_safetensors(params, staging, np.dtype(dtype))
        else:
            model_dir.write(staging, config, params)
            written = sum(np.size(v) for v in traverse_util.flatten_dict(params, sep="/").values())
        outputs.swap_in(staging, dst)  # the old destination stays whole until the new one is
    except BaseException:
        outputs.remove_settled(staging)
        raise
    return f"wrote {dst}: {written:,} parameters{note}"


def _convert_to_bucket(config, params, dst, layout, dtype):
    """A file is written locally to a temporary name and uploaded whole (an object appears only complete); a
    model directory is written by `model_dir.save`, config.json last."""
    if not dst.endswith(FILE_SUFFIXES):
        model_dir.save(dst, config, params)
        return f"wrote {dst}: {sum(np.size(v) for v in traverse_util.flatten_dict(params, sep='/').values()):,} parameters"
    import tempfile
    with tempfile.TemporaryDirectory(prefix="vifi_jax-convert-") as folder:
        local = os.path.join(folder, os.path.basename(dst))
        if dst.endswith(TORCH_SUFFIXES):
            written = write_pytorch(params, local, layout, np.dtype(dtype))
        else:
            written = write_safetensors(params, local, np.dtype(dtype))
        storage.upload(local, dst)
    note = VIFI_LAYOUT_NOTE if dst.endswith(TORCH_SUFFIXES) and layout == "vifi" else ""
    return f"wrote {dst}: {written:,} parameters{note}"
