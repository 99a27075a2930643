"""CLIP image and text towers in Flax Linen, numerically OpenAI's `clip/model.py`.

Parameter paths mirror OpenAI's state-dict keys with `_` for `.` inside module
names (`visual/transformer/resblocks_3/attn/in_proj/kernel`), so checkpoint
conversion is one declarative table (see `vifi_jax/convert.py`).

Deep prompts ("bridge and prompt", ViFi-CLIP's IVLP variant) follow the
official code: vision prompt tokens are appended after the positional embedding
and before `ln_pre`, text context vectors sit right after SOT; blocks
1 … depth-1 replace those tokens with their own `VPT_shallow` at their input.
"""
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Every field of `CLIP`, OpenAI's `build_model` names first.
VARIANTS = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, context_length=77, vocab_size=49408,
                     transformer_width=768, transformer_heads=12, transformer_layers=12),
}


# Sane bounds of every field: a model file saying `vision_layers=1000000` is an error, not a trace of a
# million layers. ViT-L/14 at 336 px is well inside them.
FIELD_BOUNDS = {
    "embed_dim": (1, 16384), "image_resolution": (1, 4096), "vision_layers": (1, 256), "vision_width": (64, 16384),
    "vision_patch_size": (1, 1024), "context_length": (2, 4096), "vocab_size": (1, 10_000_000),
    "transformer_width": (1, 16384), "transformer_heads": (1, 1024), "transformer_layers": (1, 256),
    "vision_prompts": (0, 4096), "vision_prompt_depth": (0, 256), "text_prompts": (0, 4096),
    "text_prompt_depth": (0, 256)}
PROMPT_FIELDS = ("vision_prompts", "vision_prompt_depth", "text_prompts", "text_prompt_depth")
SWITCHES = ("remat",)  # optional booleans: how the model runs, not what it computes
PROMPT_INIT_STD = 0.02  # the official init of every prompt (nn.init.normal_(std=0.02))


class ModelConfigError(ValueError):
    """Model fields that do not describe a buildable CLIP."""


def is_prompt(path):
    """Whether a parameter path is a deep prompt (text context, vision prompts, per-layer prompts)."""
    return path.startswith("prompt_learner/") or path.endswith("/VPT") or "VPT_shallow" in path


def check_fields(config, source="model config"):
    """Raise ModelConfigError naming every field of `config` (CLIP's fields) that is missing, of the wrong
    type, out of bounds or inconsistent with another."""
    if not isinstance(config, dict):
        raise ModelConfigError(f"{source}: expected an object of model fields, found {type(config).__name__}")
    problems = [f"{key}: missing" for key in FIELD_BOUNDS if key not in PROMPT_FIELDS and key not in config]
    problems += [f"{key}: unknown field" for key in config if key not in FIELD_BOUNDS and key not in SWITCHES]
    problems += [f"{key}: {config[key]!r} is not true or false" for key in SWITCHES
                 if key in config and type(config[key]) is not bool]
    values = {}
    for key, (low, high) in FIELD_BOUNDS.items():
        value = config.get(key, 0)
        if type(value) is not int:
            problems.append(f"{key}: {value!r} is not an integer")
        elif not low <= value <= high:
            problems.append(f"{key}: {value} is outside {low}..{high}")
        else:
            values[key] = value
    if not problems:
        v = values
        if v["vision_width"] % 64:
            problems.append(f"vision_width: {v['vision_width']} is not a multiple of 64 (the head width)")
        if v["transformer_width"] % v["transformer_heads"]:
            problems.append(f"transformer_heads: {v['transformer_heads']} does not divide transformer_width "
                            f"{v['transformer_width']}")
        if v["image_resolution"] % v["vision_patch_size"]:
            problems.append(f"vision_patch_size: {v['vision_patch_size']} does not divide image_resolution "
                            f"{v['image_resolution']}")
        for tower, layers in (("vision", "vision_layers"), ("text", "transformer_layers")):
            if v[f"{tower}_prompt_depth"] > v[layers]:
                problems.append(f"{tower}_prompt_depth: {v[f'{tower}_prompt_depth']} exceeds {layers} {v[layers]}")
            if v[f"{tower}_prompt_depth"] and not v[f"{tower}_prompts"]:
                problems.append(f"{tower}_prompt_depth: {v[f'{tower}_prompt_depth']} with no {tower}_prompts")
        if v["text_prompts"] >= v["context_length"] - 1:
            problems.append(f"text_prompts: {v['text_prompts']} leaves no room in context_length {v['context_length']}")
    if problems:
        raise ModelConfigError(f"{source}: not a usable model config: " + "; ".join(problems))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, epsilon):
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _normalise(x, epsilon):
    """(x - mean) and 1/std over the last axis in float32, Flax's two-pass arithmetic in the same order."""
    centred = x.astype(jnp.float32) - jnp.mean(x.astype(jnp.float32), -1, keepdims=True)
    return centred, jax.lax.rsqrt(jnp.mean(centred * centred, -1, keepdims=True) + epsilon)


def _layer_norm_forward(x, scale, bias, epsilon):
    """Forward in float32; keeps only the input (in its own dtype, bf16 under mixed precision) for the
    backward pass, which recomputes the centring instead of storing a float32 copy of every activation."""
    centred, rstd = _normalise(x, epsilon)
    return centred * (rstd * scale) + bias, (x, scale)


def _layer_norm_backward(epsilon, residuals, g):
    x, scale = residuals
    centred, rstd = _normalise(x, epsilon)
    xhat = centred * rstd
    batch_axes = tuple(range(g.ndim - 1))
    gx = g * scale
    dx = rstd * (gx - gx.mean(-1, keepdims=True) - xhat * (gx * xhat).mean(-1, keepdims=True))
    return dx.astype(x.dtype), jnp.sum(g * xhat, batch_axes), jnp.sum(g, batch_axes)


_layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


class LayerNorm(nn.Module):
    """OpenAI's LayerNorm: eps 1e-5, two-pass variance, in fp32 whatever the input dtype; params `scale`,
    `bias` as nn.LayerNorm; float32 output.

    The backward pass is the closed form dx = rstd·(g·γ − mean(g·γ) − x̂·mean(g·γ·x̂)), which XLA runs ~1.5×
    faster on CPU than autodiff of the two-pass forward (same gradient), and it stores only the input."""
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return _layer_norm(x, scale, bias, self.epsilon)


def layer_norm(name=None):
    return LayerNorm(epsilon=1e-5, name=name)


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ATTENTION = ("auto", "xla", "cudnn")


def attention_implementation(choice, dtype):
    """`jax.nn.dot_product_attention`'s implementation for a choice of `ATTENTION`: "auto" takes cuDNN's fused
    (flash) attention on a CUDA backend in 16-bit compute (it never materialises the L x L scores), else XLA's.
    XLA's is the only one for float32 and for CPUs and TPUs, where XLA fuses attention itself."""
    if choice not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {choice!r}")
    if choice == "auto":
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        return "cudnn" if half and jax.default_backend() == "gpu" else "xla"
    return choice


def dot_product_attention(q, k, v, causal, implementation, fall_back=False):
    """softmax(q·kᵀ/√d)·v over [B, L, heads, d] by `jax.nn.dot_product_attention`. cuDNN's fused kernel trains
    only on even lengths (ViT-B/16 has 197 tokens): an odd sequence is padded by one token that a key-length
    mask hides, and the padded row is dropped, so the result is attention over the true sequence. With
    `fall_back`, a shape cuDNN refuses (it says so while tracing) runs XLA's implementation instead."""
    if implementation != "cudnn":
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=implementation)
    length = q.shape[1]
    try:
        if length % 2 == 0:
            return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
        pad = ((0, 0), (0, 1), (0, 0), (0, 0))
        lengths = jnp.full((q.shape[0],), length, jnp.int32)
        out = jax.nn.dot_product_attention(*(jnp.pad(t, pad) for t in (q, k, v)), is_causal=causal,
                                           query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                           implementation="cudnn")
        return out[:, :length]
    except (NotImplementedError, RuntimeError):
        if not fall_back:
            raise
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")


class MultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention with packed q/k/v projection (`in_proj`). When the "intermediates"
    collection is mutable it also sows its attention weights, averaged over heads (for explanations)."""
    num_heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32
    attention: str = "auto"  # see ATTENTION

    @nn.compact
    def __call__(self, x):
        batch, length, width = x.shape
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, dtype=self.dtype, name="in_proj",
                       kernel_init=nn.initializers.normal(width ** -0.5))(x)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head_dim), 3, axis=2)
        if self.is_mutable_collection("intermediates"):  # only when asked (explanations): the weights, head mean
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim)
            if self.causal:
                scores = jnp.where(jnp.tril(jnp.ones((length, length), bool)), scores, -jnp.inf)
            self.sow("intermediates", "attention", jax.nn.softmax(scores, axis=-1).mean(axis=1))
        out = dot_product_attention(q, k, v, self.causal, attention_implementation(self.attention, self.dtype),
                                    fall_back=self.attention == "auto")
        return nn.Dense(width, dtype=self.dtype, name="out_proj")(out.reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block; with `num_prompts` it first swaps in its own deep prompts."""
    num_heads: int
    causal: bool = False
    num_prompts: int = 0
    prompt_slot: str = "end"  # "end" (vision) or "after_sot" (text)
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        if self.num_prompts:
            prompts = self.param("VPT_shallow", nn.initializers.normal(PROMPT_INIT_STD), (self.num_prompts, width))
            x = replace_prompts(x, prompts, self.prompt_slot)
        h = layer_norm("ln_1")(x).astype(self.dtype)
        x = x + MultiheadAttention(self.num_heads, self.causal, self.dtype, self.attention, name="attn")(h)
        h = layer_norm("ln_2")(x).astype(self.dtype)
        return x + MLP(self.dtype, name="mlp")(h)


class MLP(nn.Module):
    """c_fc (d -> 4d), QuickGELU, c_proj (4d -> d)."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        x = nn.Dense(4 * width, dtype=self.dtype, name="c_fc",
                     kernel_init=nn.initializers.normal((2 * width) ** -0.5))(x)
        return nn.Dense(width, dtype=self.dtype, name="c_proj")(quick_gelu(x))


def replace_prompts(x, prompts, slot):
    """Put `prompts` [n, D] into every sequence of x [B, L, D] at the prompt slot."""
    n = prompts.shape[0]
    prompts = jnp.broadcast_to(prompts.astype(x.dtype), (x.shape[0], n, x.shape[-1]))
    if slot == "end":
        return jnp.concatenate([x[:, :-n], prompts], axis=1)
    return jnp.concatenate([x[:, :1], prompts, x[:, 1 + n:]], axis=1)


class Transformer(nn.Module):
    """OpenAI's residual attention stack (its width is the input's last axis)."""
    layers: int
    heads: int
    causal: bool = False
    num_prompts: int = 0
    prompt_depth: int = 0
    prompt_slot: str = "end"
    dtype: Dtype = jnp.float32
    remat: bool = False
    attention: str = "auto"

    @nn.compact
    def __call__(self, x):
        block = nn.remat(ResidualAttentionBlock) if self.remat else ResidualAttentionBlock
        for i in range(self.layers):
            prompts_here = self.num_prompts if 1 <= i < self.prompt_depth else 0
            x = block(self.heads, self.causal, prompts_here, self.prompt_slot, self.dtype, self.attention,
                      name=f"resblocks_{i}")(x)
        return x


class PatchEmbedding(nn.Module):
    """conv1 (kernel = stride = patch, no bias) as one matmul over patches: nn.Conv's arithmetic, measured
    faster (ViT-B/16, 8 frames, forward + backward on XLA:CPU: 10.0 ms against nn.Conv's 13.5 ms)."""
    patch_size: int
    width: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        p, channels = self.patch_size, images.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, channels, self.width))
        n, h, w, _ = images.shape
        patches = images.reshape(n, h // p, p, w // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, (h // p) * (w // p), p * p * channels).astype(self.dtype)
        return patches @ kernel.reshape(p * p * channels, self.width).astype(self.dtype)


class VisionTransformer(nn.Module):
    """OpenAI's ViT image tower: NHWC images [N, H, W, 3] -> projected CLS [N, output_dim]."""
    input_resolution: int
    patch_size: int
    width: int
    layers: int
    heads: int
    output_dim: int
    num_prompts: int = 0
    prompt_depth: int = 0
    dtype: Dtype = jnp.float32
    remat: bool = False
    attention: str = "auto"

    @nn.compact
    def __call__(self, images):
        scale = self.width ** -0.5
        x = PatchEmbedding(self.patch_size, self.width, self.dtype, name="conv1")(images)
        grid = self.input_resolution // self.patch_size
        cls = self.param("class_embedding", nn.initializers.normal(scale), (self.width,))
        pos = self.param("positional_embedding", nn.initializers.normal(scale), (grid * grid + 1, self.width))
        cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, self.width))
        x = jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)
        if self.prompt_depth > 0:
            prompts = self.param("VPT", nn.initializers.normal(PROMPT_INIT_STD), (self.num_prompts, self.width))
            x = jnp.concatenate([x, jnp.broadcast_to(prompts.astype(x.dtype), (x.shape[0],) + prompts.shape)], 1)
        x = layer_norm("ln_pre")(x).astype(self.dtype)
        x = Transformer(self.layers, self.heads, False, self.num_prompts, self.prompt_depth,
                        "end", self.dtype, self.remat, self.attention, name="transformer")(x)
        x = layer_norm("ln_post")(x[:, 0])
        proj = self.param("proj", nn.initializers.normal(scale), (self.width, self.output_dim))
        return x.astype(self.dtype) @ proj.astype(self.dtype)


class PromptLearner(nn.Module):
    """The learned text context vectors `prompt_learner.ctx`, placed right after SOT."""
    num_prompts: int
    width: int

    @nn.compact
    def __call__(self, token_embeddings):
        ctx = self.param("ctx", nn.initializers.normal(PROMPT_INIT_STD), (self.num_prompts, self.width))
        return replace_prompts(token_embeddings, ctx, "after_sot")


class CLIP(nn.Module):
    """Both towers. Fields are OpenAI's `build_model` arguments plus prompting and execution knobs."""
    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    vision_prompts: int = 0      # N_CTX_VISION
    vision_prompt_depth: int = 0  # PROMPT_DEPTH_VISION (0 = no vision prompts)
    text_prompts: int = 0        # N_CTX_TEXT
    text_prompt_depth: int = 0    # PROMPT_DEPTH_TEXT (0 = no text prompts)
    dtype: Dtype = jnp.float32   # compute dtype; parameters stay fp32
    remat: bool = False          # rematerialise each residual block
    attention: str = "auto"      # dot-product attention implementation (ATTENTION): how it runs, not what

    def setup(self):
        self.visual = VisionTransformer(
            self.image_resolution, self.vision_patch_size, self.vision_width, self.vision_layers,
            self.vision_width // 64, self.embed_dim, self.vision_prompts, self.vision_prompt_depth,
            self.dtype, self.remat, self.attention)
        width = self.transformer_width
        self.token_embedding = nn.Embed(self.vocab_size, width, embedding_init=nn.initializers.normal(0.02))
        self.positional_embedding = self.param(
            "positional_embedding", nn.initializers.normal(0.01), (self.context_length, width))
        self.transformer = Transformer(
            self.transformer_layers, self.transformer_heads, True, self.text_prompts,
            self.text_prompt_depth, "after_sot", self.dtype, self.remat, self.attention)
        if self.text_prompt_depth > 0:
            self.prompt_learner = PromptLearner(self.text_prompts, width)
        self.ln_final = layer_norm()
        self.text_projection = self.param(
            "text_projection", nn.initializers.normal(width ** -0.5), (width, self.embed_dim))
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())

    @property
    def learned_text_prompts(self):
        """How many text tokens the prompt learner overwrites (0 without text prompts)."""
        return self.text_prompts if self.text_prompt_depth > 0 else 0

    def encode_image(self, images):
        """Images [N, H, W, 3], already normalised -> features [N, embed_dim] (not L2-normalised)."""
        return self.visual(images)

    def encode_text(self, token_ids):
        """Token ids [N, L], L <= context_length -> features [N, embed_dim] (not L2-normalised).

        Any L that covers every EOT gives the same features as 77: the mask is
        causal and pooling reads the EOT token (see `tokenizer.truncate`).
        """
        length = token_ids.shape[1]
        x = self.token_embedding(token_ids)
        if self.text_prompt_depth > 0:
            x = self.prompt_learner(x)
        x = (x + self.positional_embedding[:length]).astype(self.dtype)
        x = self.transformer(x)
        x = self.ln_final(x)
        eot = jnp.argmax(token_ids, axis=-1)
        x = x[jnp.arange(x.shape[0]), eot]
        return x.astype(self.dtype) @ self.text_projection.astype(self.dtype)

    def text_features(self, token_ids):
        """Token ids [N, L] -> L2-normalised fp32 text features [N, embed_dim]: what `scores` compares with."""
        return l2_normalize(self.encode_text(token_ids).astype(jnp.float32))

    def scores(self, features, text_features):
        """exp(logit_scale) * features @ text_featuresᵀ for L2-normalised features: CLIP's logits (no clamp,
        as in ViFi-CLIP). Every caller scores through here."""
        return jnp.exp(self.logit_scale) * features @ text_features.T

    def __call__(self, images, token_ids):
        """OpenAI's `CLIP.forward`: (logits_per_image [N, M], logits_per_text [M, N])."""
        logits = self.scores(l2_normalize(self.encode_image(images).astype(jnp.float32)), self.text_features(token_ids))
        return logits, logits.T


def l2_normalize(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
