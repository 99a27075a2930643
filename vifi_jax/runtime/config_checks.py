"""Experiment configs checked before any work starts: every bad value is named with its field.

A negative learning rate would train by gradient ascent to the end; a zero batch size would divide by
zero after the first updates; a zero frame count would make every video look unreadable. Each is an
error at start-up instead.
"""
import math

from data_pipelines import pipeline
from vifi_jax import tokenizer

MODES = ("train", "eval", "zeroshot")
TASKS = ("classification", "retrieval")  # what the model is scored on: class texts or captions
TEXT_MODES = ("auto", "template", "bare", "prompt")
USES = ("both", "image", "text", "prompts")  # train.use: which parameters fine-tuning trains (train.optim)
SOURCES = ("files", "tfds", "demo")
DTYPES = ("float32", "bfloat16", "float16")
NORMALIZATIONS = ("imagenet", "clip")


class ConfigError(ValueError):
    """Config fields with values no run can use."""


def _get(config, field):
    node = config
    for part in field.split("."):
        node = node[part]
    return node


def check(config):
    """Raise ConfigError naming every unusable field of an experiment config (see configs/common.py)."""
    problems = []

    def need(field, ok, description):
        try:
            value = _get(config, field)
        except (KeyError, AttributeError):
            problems.append(f"{field}: missing")
            return
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            problems.append(f"{field}={value!r}: {description}")

    def positive_int(value):
        return type(value) is int and value > 0

    def number(value):
        return type(value) in (int, float) and math.isfinite(value)

    for field in ("train.batch_size", "train.accumulation_steps", "train.epochs", "train.reference_world_size",
                  "log_every", "eval.every_epochs", "eval.batch_size", "checkpoint.every_steps", "checkpoint.keep",
                  "data.num_frames", "data.input_size", "eval.num_clips", "eval.num_crops",
                  "eval.final_num_clips", "eval.final_num_crops"):
        need(field, positive_int, "must be a positive integer")
    need("train.lr", lambda v: number(v) and v >= 0, "must be a finite number >= 0")
    need("train.warmup_epochs", lambda v: number(v) and v >= 0, "must be a number >= 0 (epochs, may be a fraction)")
    need("train.weight_decay", lambda v: number(v) and v >= 0, "must be a finite number >= 0")
    need("train.min_lr_ratio", lambda v: number(v) and 0 <= v <= 1, "must be in [0, 1]")
    need("train.label_smoothing", lambda v: number(v) and 0 <= v < 1, "must be in [0, 1)")
    need("train.mixup_switch_prob", lambda v: number(v) and 0 <= v <= 1, "must be in [0, 1]")
    need("train.mixup_alpha", lambda v: number(v) and v > 0, "must be > 0")
    need("train.cutmix_alpha", lambda v: number(v) and v > 0, "must be > 0")
    need("train.b1", lambda v: number(v) and 0 <= v < 1, "must be in [0, 1)")
    need("train.b2", lambda v: number(v) and 0 <= v < 1, "must be in [0, 1)")
    need("train.eps", lambda v: number(v) and v > 0, "must be > 0")
    need("train.max_steps", lambda v: type(v) is int and (v == -1 or v > 0), "must be -1 (no limit) or > 0")
    need("train.use", lambda v: v in USES, f"must be one of {USES}")
    need("data.max_bad_fraction", lambda v: number(v) and 0 <= v <= 1, "must be in [0, 1]")
    need("data.num_workers", lambda v: type(v) is int and v >= -1,
         "must be an integer >= 0, or -1 (a worker per core this process may use, less one)")
    need("data.source", lambda v: v in SOURCES, f"must be one of {SOURCES}")
    need("data.normalize", lambda v: v in NORMALIZATIONS, f"must be one of {NORMALIZATIONS}")
    need("data.augment_on", lambda v: v in pipeline.AUGMENT_ON, f"must be one of {pipeline.AUGMENT_ON}")
    need("text_mode", lambda v: v in TEXT_MODES, f"must be one of {TEXT_MODES}")
    need("model.dtype", lambda v: v in DTYPES, f"must be one of {DTYPES}")
    need("mesh.fsdp", positive_int, "must be a positive integer")
    need("mesh.data", lambda v: type(v) is int and (v == -1 or v > 0), "must be -1 (all devices) or > 0")
    need("mode", lambda v: v in MODES, f"must be one of {MODES}" + (
        " (retrieval is a task now: --config=retrieval, or --config.task=retrieval)"
        if config.get("mode") == "retrieval" else ""))
    need("task", lambda v: v in TASKS, f"must be one of {TASKS}")
    if config.get("task") == "retrieval" and "retrieval" not in config:
        problems.append("task=retrieval: this config has no retrieval group; start from --config=retrieval "
                        "(or retrieval:train to fine-tune)")
    elif config.get("task") == "retrieval":
        if config.get("mode") == "train":
            need("data.source", lambda v: v in ("files", "demo"),
                 "retrieval training reads caption files and their videos: must be files (or demo)")
        need("retrieval.max_words", lambda v: type(v) is int and 3 <= v <= tokenizer.CONTEXT_LENGTH,
             f"must be an integer in 3..{tokenizer.CONTEXT_LENGTH} (tokens per caption, start and end included)")
        need("retrieval.every_caption", lambda v: type(v) is bool, "must be true or false")
        need("retrieval.dual_softmax", lambda v: type(v) is bool, "must be true or false")
    for field in ("model.vision_prompts", "model.vision_prompt_depth", "model.text_prompts",
                  "model.text_prompt_depth"):
        need(field, lambda v: type(v) is int and v >= 0, "must be an integer >= 0")
    if not problems and config.train.batch_size % config.train.reference_world_size:
        problems.append(f"train.batch_size={config.train.batch_size}: must be a multiple of "
                        f"train.reference_world_size={config.train.reference_world_size} (the GPUs of the run being "
                        "reproduced)")
    if problems:
        raise ConfigError("config: " + "; ".join(problems))


# The config groups an evaluation job reads; the others are left out of what a run shows.
EVAL_GROUPS = ("model", "data", "eval", "mesh", "retrieval")


def relevant(config):
    """{group or field: value} of what a job of `config.mode` reads (training reads everything)."""
    values = config.to_dict()
    if values.get("mode") == "train":
        return values
    return {k: v for k, v in values.items() if k in EVAL_GROUPS or not isinstance(v, dict)}
