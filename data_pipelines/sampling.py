"""Frame-index sampling with the official ViFi-CLIP semantics (mmaction `SampleFrames`, clip_len=1).

TSN segment sampling: one frame per segment, a random one in train mode and the segment centre in
test mode. `num_views > 1` concatenates independent train-style samplings, which is what the official
multi-clip test does. A video with fewer frames than segments repeats frames (evenly spread), and
indices wrap modulo the frame count as mmaction's "loop" does (1 frame, 3 segments: 0, 0, 1 -> 0, 0, 0).
"""
import numpy as np

MODES = ("train", "test")
NUM_FRAMES = 32  # frames per clip: the official recipes' default, and every tool's (the one place it is set)


def segment_frames(num_frames, num_segments, mode="train", rng=None):
    """The frame of each of the `num_segments` segments, exactly as mmaction computes it (clip_len=1)."""
    if mode == "test":
        average = num_frames / float(num_segments)
        return (np.arange(num_segments) * average + average / 2.0).astype(np.int64)
    if mode != "train":
        raise ValueError(f"sampling mode must be one of {MODES}, got {mode!r}")
    if rng is None:
        raise ValueError("train-mode sampling needs rng (a numpy Generator) so that it is reproducible")
    average = num_frames // num_segments
    if average > 0:
        return np.arange(num_segments) * average + rng.integers(average, size=num_segments)
    return np.around(np.arange(num_segments) * (num_frames / num_segments)).astype(np.int64)


def sample_frame_indices(num_frames, num_segments, mode="train", rng=None, num_views=1):
    """Frame indices, int64 [num_views * num_segments], each in [0, num_frames); views concatenated."""
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if num_segments <= 0 or num_views <= 0:
        raise ValueError("num_segments and num_views must be positive")
    if num_views > 1 and mode == "test":
        mode = "train"  # the official multi-view test draws independent train-style samplings
    views = [segment_frames(num_frames, num_segments, mode, rng) for _ in range(num_views)]
    return np.mod(np.concatenate(views), num_frames).astype(np.int64)
