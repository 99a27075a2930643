"""One encoder for every tool: a video file's official test view, frames, sliding windows and texts through
the model, and the scores between them. `vifi_jax.Model`, evaluation, retrieval, extract, search, predict and
explain all encode through here, so a feature means the same thing wherever it was made.

Texts are encoded in chunks of a fixed number of rows and a window's frames in chunks of a fixed number of
frames (the last chunk padded), so memory stays bounded and each shape compiles once.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import sampling, transforms, video
from vifi_jax import tokenizer
from vifi_jax.models import clip

TEXT_CHUNK = 512  # texts encoded at a time
FRAMES_PER_CHUNK = 64  # window level: frames decoded and encoded at a time


def read_test_view(path, num_frames=sampling.NUM_FRAMES, size=224):
    """(the official test view as uint8 crops [1, num_frames, size, size, 3], the frame indices sampled):
    TSN sampling (the centre frame of each of `num_frames` equal segments), short side resized to
    `size * 256 / 224`, centre crop `size`."""
    chosen = {}

    def choose(n):
        chosen["indices"] = sampling.sample_frame_indices(n, num_frames, "test")
        return chosen["indices"]

    frames = video.read_sampled_frames(path, choose)
    return transforms.test_transform(frames, size, 1), chosen["indices"]


def load_video(path, num_frames=sampling.NUM_FRAMES, size=224):
    """A video file as the official single-view test input: normalised float32 [1, num_frames, size, size, 3]."""
    return transforms.normalize(read_test_view(path, num_frames, size)[0])


@functools.lru_cache(maxsize=64)
def _jitted(module, method, mutable=False):
    """module.apply(method=...) jitted once per module and method."""
    if mutable:
        return jax.jit(lambda p, *x: module.apply({"params": p}, *x, method=method, mutable=["intermediates"]))
    return jax.jit(lambda p, *x: module.apply({"params": p}, *x, method=method))


@functools.partial(jax.jit, static_argnums=(0, 1))
def view_logits_program(module, normalize_kind, params, frames, text):
    """uint8 views [B, V, T, H, W, 3] -> logits [B, V, N]: the jitted program of `Encoder.view_logits`."""
    batch, views = frames.shape[:2]
    x = transforms.normalize(frames.reshape(batch * views, *frames.shape[2:]), normalize_kind)
    return module.apply({"params": params}, x, text).reshape(batch, views, -1)


def _pad_rows(x, rows):
    """x with its leading axis padded to `rows` by repeating row 0 (the padding is dropped after)."""
    missing = rows - x.shape[0]
    return x if missing == 0 else np.concatenate([x, np.repeat(x[:1], missing, axis=0)])


def out_of_memory(error):
    """Whether `error` is XLA running out of device (or host) memory: a per-input failure a tool can report
    for that input, or retry in smaller pieces, instead of ending the run."""
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(
        mark in str(error) for mark in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")))


class Encoder:
    """A module and its parameters (placed on devices, or host arrays) as the encoders every tool uses."""

    def __init__(self, module, params):
        self.module, self.params = module, params

    def _run(self, method, *inputs):
        return _jitted(self.module, method)(self.params, *inputs)

    def frame_embeddings(self, frames):
        """Normalised float frames [B, T, H, W, 3] -> each frame's projected embedding [B, T, D] float32, not
        L2-normalised (their mean over T, normalised, is the video feature)."""
        return self._run("encode_frames", frames)

    def video_features(self, frames, normalize=True):
        """Normalised float frames [B, T, H, W, 3] -> video features [B, D] (L2-normalised by default)."""
        return self._run("video_features" if normalize else "encode_video", frames)

    def text_features(self, ids, normalize=True):
        """Token ids [N, L] -> text features [N, D] float32, in chunks of TEXT_CHUNK texts, each cut to the
        exact length its texts need (`tokenizer.truncate`)."""
        ids = np.asarray(ids)
        method = "text_features" if normalize else "encode_text"
        chunks = []
        for start in range(0, len(ids), TEXT_CHUNK):
            part = tokenizer.truncate(ids[start:start + TEXT_CHUNK])
            rows = len(part)
            size = TEXT_CHUNK if len(ids) > TEXT_CHUNK else rows
            chunks.append(jnp.asarray(self._run(method, _pad_rows(part, size)), jnp.float32)[:rows])
        return jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    def scores(self, video_features, text_features):
        """exp(logit_scale) · video_features · text_featuresᵀ for L2-normalised features (`CLIP.scores`)."""
        return self._run("scores", video_features, text_features)

    def logits(self, frames, text_features):
        """Normalised float frames [B, T, H, W, 3] against text features [N, D] -> logits [B, N]."""
        return self._run("__call__", frames, text_features)

    def view_logits(self, frames, text_features, normalize_kind="imagenet"):
        """uint8 views [B, V, T, H, W, 3] (normalised here, on the device) against text features -> logits
        [B, V, N] of every view: the batch path of evaluation."""
        return view_logits_program(self.module, normalize_kind, self.params, frames, text_features)

    def frames_with_attention(self, frames):
        """Frames [T, H, W, 3] (normalised) through the image tower once -> (projected embeddings [T, D]
        float32, each layer's head-mean attention [layers, T, L, L]), for explanations."""
        embeddings, state = _jitted(self.module, "encode_image", mutable=True)(self.params, frames)
        blocks = state["intermediates"]["visual"]["transformer"]
        attention = np.stack([np.asarray(blocks[f"resblocks_{i}"]["attn"]["attention"][0])
                              for i in range(len(blocks))])
        return np.asarray(embeddings, np.float32), attention

    def windows(self, path, window, stride, size):
        """Every `window` consecutive frames of a whole video, every `stride` frames, plus one window ending
        at the last frame when the strides leave frames after the last window: (mean-pooled, L2-normalised
        window features [n, D], [[start, end), ...]). The video is decoded once, front to back."""
        embeddings = []
        for frames in video.iter_frames(path, FRAMES_PER_CHUNK):
            crops = transforms.normalize(_pad_rows(transforms.test_transform(frames, size, 1)[0], FRAMES_PER_CHUNK))
            embeddings.append(np.asarray(self.frame_embeddings(crops[None]))[0, :len(frames)])
        embeddings = np.concatenate(embeddings)
        total = len(embeddings)
        if total < window:
            raise video.VideoError(path, f"{total} frames, fewer than one window of {window}", kind="unreadable")
        starts = list(range(0, total - window + 1, stride))
        if starts[-1] + window < total:
            starts.append(total - window)
        rows = np.stack([embeddings[s:s + window].mean(axis=0) for s in starts])
        return np.asarray(clip.l2_normalize(rows)), [[s, s + window] for s in starts]
