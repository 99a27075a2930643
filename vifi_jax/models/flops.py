"""Model FLOPs of ViFi-CLIP, counted from the architecture (2 FLOPs per multiply-add), for MFU.

XLA's `cost_analysis()` is no substitute: on GPU it reported 0.05-0.06 of these counts, and it counts the
body of a `scan` (gradient accumulation) once. MFU counts the model's work only: a rematerialised forward is
not counted again.
"""
from vifi_jax.models import clip

# Work per forward FLOP, by what a tower's backward pass computes: gradients of its weights and of its
# activations (3 = forward + 2 backward), of its activations only (2: frozen weights that prompts below
# them still need gradients through), or nothing (1: forward only).
TRAINED, PASSED_THROUGH, FROZEN = 3, 2, 1


def image_forward(cfg):
    """One image through the image tower: patch embedding, the residual blocks (QKV/out projections and
    the MLP: 24·N·d², scores and weighted values: 4·N²·d per block, N tokens with the class token and any
    vision prompts) and the projection."""
    p, d = cfg["vision_patch_size"], cfg["vision_width"]
    patches = (cfg["image_resolution"] // p) ** 2
    prompts = cfg.get("vision_prompts", 0) if cfg.get("vision_prompt_depth", 0) > 0 else 0
    tokens = patches + 1 + prompts
    return (2 * patches * p * p * 3 * d + cfg["vision_layers"] * (24 * tokens * d * d + 4 * tokens * tokens * d)
            + 2 * d * cfg["embed_dim"])


def text_forward(cfg, length):
    """One text of `length` tokens through the text tower (the same terms; the causal mask does not
    shrink the dense computation)."""
    w = cfg["transformer_width"]
    return cfg["transformer_layers"] * (24 * length * w * w + 4 * length * length * w) + 2 * w * cfg["embed_dim"]


def multipliers(use, texts_in_step=False):
    """(image tower, text tower) work per forward FLOP in a train step of fine-tuning mode `use`. Image-only
    classification scores fixed class-text features (no text tower in the step); with `texts_in_step` (the
    batch's captions in retrieval training) the frozen text tower runs forward."""
    return {"both": (TRAINED, TRAINED), "image": (TRAINED, FROZEN if texts_in_step else 0), "text": (FROZEN, TRAINED),
            "prompts": (PASSED_THROUGH, PASSED_THROUGH)}[use]


def train_step(cfg, clips, frames, texts, text_length, use="both", texts_in_step=False):
    """Model FLOPs of one forward + backward over `clips` x `frames` images and `texts` texts of
    `text_length` tokens (see `multipliers`)."""
    image, text = multipliers(use, texts_in_step)
    logits = 2 * clips * texts * cfg["embed_dim"]
    return (image * clips * frames * image_forward(cfg) + text * texts * text_forward(cfg, text_length)
            + 3 * logits)


def per_update(cfg, config, texts, text_length, devices):
    """Model FLOPs per device of one optimiser update of an experiment config: every micro-batch of
    `train.accumulation_steps`, split over `devices`."""
    t = config.train
    step = train_step(cfg, t.batch_size, config.data.num_frames, texts, text_length, t.use,
                      texts_in_step=config.get("task") == "retrieval")
    return t.accumulation_steps * step / devices


def model_fields(module):
    """The CLIP fields of a module, the dict the counts above read."""
    return {field: getattr(module, field) for field in (*clip.FIELD_BOUNDS,)}
