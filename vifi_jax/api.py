"""The public Python API: load a checkpoint, read a video, encode videos and texts, score, save.

    model = vifi_jax.load("openai:ViT-B/16")            # or a .pt/.pth/.safetensors/vifi_jax dir
    frames = vifi_jax.load_video("clip.mp4")             # the official test view, [1, 32, 224, 224, 3]
    logits = model.logits(frames, model.class_texts(["archery", "bowling"]))
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from data_pipelines import sampling, transforms, video
from vifi_jax import tokenizer
from vifi_jax.weights import convert, model_dir
from vifi_jax.models import clip, vifi


def load_video(path, num_frames=32, size=224):
    """A video file as the official single-view test input: float32 [1, num_frames, size, size, 3].

    TSN sampling (the centre frame of each of `num_frames` equal segments), short side resized to
    `size * 256 / 224`, centre crop `size`, then ImageNet statistics on 0-255 RGB values:
    (x - (123.675, 116.28, 103.53)) / (58.395, 57.12, 57.375). This is what `Model.encode_video` expects.
    """
    return transforms.normalize(read_test_view(path, num_frames, size)[0])


def read_test_view(path, num_frames=32, size=224):
    """(the official test view as uint8 crops [1, num_frames, size, size, 3], the frame indices sampled):
    what `load_video` normalises, for callers that also need the pixels or the indices."""
    chosen = {}

    def choose(n):
        chosen["indices"] = sampling.sample_frame_indices(n, num_frames, "test")
        return chosen["indices"]

    frames = video.read_sampled_frames(path, choose)
    return transforms.test_transform(frames, size, 1), chosen["indices"]


class Model:
    """A ViFi-CLIP model: its config (CLIP fields), fp32 params and jitted encoders."""

    def __init__(self, config, params, dtype=jnp.float32):
        self.config = dict(config)
        self.params = jax.tree.map(jnp.asarray, params)
        self.module = vifi.ViFiCLIP(**self.config, dtype=dtype)
        apply = self.module.apply
        self._video = jax.jit(lambda p, x, method: apply({"params": p}, x, method=method), static_argnums=2)
        self._text = jax.jit(lambda p, ids, method: apply({"params": p}, ids, method=method), static_argnums=2)
        self._logits = jax.jit(lambda p, x, text: apply({"params": p}, x, text))

    @property
    def logit_scale(self):
        return jnp.exp(self.params["logit_scale"])

    @property
    def text_prompts(self):
        """How many text tokens the learned prompts overwrite (0: not a text-prompting model)."""
        return self.module.learned_text_prompts

    def class_texts(self, names, mode=None):
        """Texts for class names: "a photo of a {}." (template), "{}" (bare) or through the learned prompts
        (prompt). The default is prompt for a model with text prompts, template otherwise."""
        return vifi.class_texts(names, mode, self.text_prompts)

    def free_texts(self, texts):
        """Free text (a query, a caption) as the model scores it: through its learned prompts for a prompting
        model, else as it is (no "a photo of a" template around a sentence)."""
        return self.class_texts(texts) if self.text_prompts else list(texts)

    def encode_video(self, frames, normalize=True):
        """float32 frames [B, T, H, W, 3], normalised as `load_video` does -> video embeddings [B, D]."""
        return self._video(self.params, self._checked_frames(frames), "video_features" if normalize else "encode_video")

    def encode_frames(self, frames):
        """float32 frames [B, T, H, W, 3] (as for `encode_video`) -> each frame's projected embedding [B, T, D],
        not normalised: their mean over T, normalised, is `encode_video`."""
        return self._video(self.params, self._checked_frames(frames), "encode_frames")

    def _checked_frames(self, frames):
        if np.asarray(frames).dtype == np.uint8:
            raise ValueError("frames are raw uint8 pixels; normalise them first (vifi_jax.load_video does: ImageNet "
                             "mean/std on 0-255 RGB, see data_pipelines.transforms.normalize)")
        frames = jnp.asarray(frames, jnp.float32)
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, T, H, W, 3], got shape {tuple(frames.shape)}")
        size = self.config["image_resolution"]
        if frames.shape[2:4] != (size, size):
            raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[3]}, the model takes {size}x{size}")
        return frames

    def encode_text(self, texts, normalize=True):
        """Texts (strings, or token ids [N, L]) -> text embeddings [N, D]; runs only the needed length."""
        ids = np.asarray(texts) if not _is_text(texts) else tokenizer.tokenize(texts)
        self._check_prompt_texts(ids)
        ids = tokenizer.truncate(ids)
        return self._text(self.params, ids, "text_features") if normalize else \
            self._text(self.params, ids, "encode_text").astype(jnp.float32)

    def _check_prompt_texts(self, ids):
        """A model with text prompts overwrites tokens 1..n: its texts must hold the prompt prefix there."""
        n = self.text_prompts
        if not n:
            return
        prefix = tokenizer.tokenize(vifi.prompt_prefix(n))[0, 1:1 + n]
        if ids.shape[1] < 1 + n or not (ids[:, 1:1 + n] == prefix).all():
            raise ValueError(f"this model has {n} learned text prompts, which replace the words "
                             f"{vifi.prompt_prefix(n)!r} at the start of every text; build texts with "
                             "model.class_texts(names) (prompt mode)")

    def logits(self, frames, texts):
        """exp(logit_scale) * cos(video, text): [B, N] (the module's scoring). `texts` are strings, token ids
        [N, L], or text features [N, D] from `encode_text` (to score many videos against the same texts)."""
        texts = texts if _is_features(texts) else self.encode_text(texts)
        return self._logits(self.params, self._checked_frames(frames), texts)

    def save(self, directory):
        """Write a vifi_jax model directory (Orbax params + config.json)."""
        model_dir.save(directory, self.config, jax.device_get(self.params))

    def save_pytorch(self, path, layout="vifi", dtype=np.float32):
        """Write a `.pth` in the official ViFi-CLIP (`vifi`) or OpenAI CLIP (`openai`) layout."""
        convert.write_pytorch(jax.device_get(self.params), path, layout, dtype)


def _is_features(texts):
    return hasattr(texts, "dtype") and jnp.issubdtype(texts.dtype, jnp.floating)


def _is_text(texts):
    return isinstance(texts, str) or (isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts))


def load(path_or_name, clip_weights=None, dtype=jnp.float32):
    """Load OpenAI `.pt`, ViFi-CLIP `.pth`, `.safetensors`, a vifi_jax directory or "openai:ViT-B/16".

    ViFi-CLIP files lack the token embedding: `clip_weights` names the OpenAI
    weights to take it from. `dtype` is the compute dtype (bf16 on accelerators).
    """
    config, params = convert.read(path_or_name, clip_weights)
    return Model(config, params, dtype)


def init(variant="ViT-B/16", seed=0, dtype=jnp.float32, **fields):
    """A randomly initialised model of a named variant (`clip.VARIANTS`), fields overridable."""
    if variant not in clip.VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(clip.VARIANTS)}")
    config = {**clip.VARIANTS[variant], **fields}
    return Model(config, init_params(config, seed), dtype)


def from_config(model_config, dtype=jnp.float32, seed=0):
    """(Model, note) from an experiment config's `model` block; note says if the weights are random.

    `init` is anything `load` accepts or "random:<variant>" (with `fields` overriding CLIP fields).
    Prompt fields add freshly initialised deep prompts (N(0, 0.02)) to loaded weights that lack them,
    which is how bridge-and-prompt starts from a fine-tuned K400 checkpoint.
    """
    prompts = {k: int(model_config[k]) for k in clip.PROMPT_FIELDS}
    extra = dict(prompts, remat=bool(model_config.get("remat", False)))
    fields = dict(model_config.get("fields", {}) or {})
    init_name = model_config.init
    if init_name.startswith("random:"):
        return init(init_name[len("random:"):], seed, dtype, **fields, **extra), "random initialisation (by config)"
    note = None
    try:
        config, params = convert.read(init_name, model_config.get("clip_weights") or None)
    except (OSError, convert.ConversionError) as error:
        if not model_config.get("allow_random_init", False):
            raise
        note = (f"RANDOM WEIGHTS: could not load {init_name} ({error}); this run uses a random "
                f"initialisation of ViT-B/16, so its accuracy is chance level and says nothing about ViFi-CLIP")
        return init("ViT-B/16", seed, dtype, **fields, **extra), note
    config = {**config, **extra}
    expected = vifi.parameter_shapes(config)  # traced, not run: nothing the checkpoint holds is initialised
    flat_loaded = traverse_util.flatten_dict(params, sep="/")
    unexpected = sorted(set(flat_loaded) - set(expected))
    if unexpected:
        raise convert.ConversionError(f"{init_name} has parameters the configured model lacks: {unexpected[:5]}")
    missing = sorted(set(expected) - set(flat_loaded))
    if any(not clip.is_prompt(path) for path in missing):
        raise convert.ConversionError(f"{init_name} lacks parameters of the configured model: {missing[:5]}")
    key = jax.random.PRNGKey(seed)
    fresh = {path: clip.PROMPT_INIT_STD * jax.random.normal(jax.random.fold_in(key, i), expected[path])
             for i, path in enumerate(missing)}
    merged = traverse_util.unflatten_dict({**fresh, **flat_loaded}, sep="/")
    if CTX_PATH not in flat_loaded:
        merged = with_initial_text_context(merged, config)
    return Model(config, merged, dtype), note


CTX_PATH = "prompt_learner/ctx"


def with_initial_text_context(params, config):
    """The official start of the text context: with at most 4 prompts, the token embeddings of the first
    words of "a photo of a" (`VLPromptLearner` with CTX_INIT); with more, the N(0, 0.02) draw as it is."""
    n = config.get("text_prompts", 0)
    if not config.get("text_prompt_depth", 0) or n > vifi.MAX_CTX_INIT_PROMPTS:
        return params
    ids = tokenizer.tokenize(vifi.CTX_INIT)[0, 1:1 + n]
    table = params["token_embedding"]["embedding"]
    return {**params, "prompt_learner": {"ctx": jnp.asarray(table)[ids]}}


def init_params(config, seed=0):
    module = vifi.ViFiCLIP(**config)
    res = config["image_resolution"]
    frames = jnp.zeros((1, 1, res, res, 3), jnp.float32)
    ids = jnp.zeros((1, config["context_length"]), jnp.int32)  # room for any number of text prompts
    return with_initial_text_context(jax.jit(module.init)(jax.random.PRNGKey(seed), frames, ids)["params"], config)
