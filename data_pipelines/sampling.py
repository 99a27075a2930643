"""Frame-index sampling with the official ViFi-CLIP semantics (mmaction `SampleFrames`).

TSN segment sampling is the default (`clip_len=1`): one frame per segment, a
random one in train mode and the segment centre in test mode. `num_views > 1`
concatenates independent train-style samplings, which is what the official
multi-clip test does. Dense clips are `clip_len > 1` frames `frame_interval`
apart, one clip per segment. Indices wrap modulo the frame count ("loop").
"""
import numpy as np

MODES = ("train", "test")


def clip_offsets(num_frames, num_segments, mode="train", rng=None, clip_len=1, frame_interval=1):
    """Start frame of each of the `num_segments` clips, exactly as mmaction computes them."""
    span = (clip_len - 1) * frame_interval + 1
    if mode == "test":
        average = (num_frames - span + 1) / float(num_segments)
        if num_frames > span - 1:
            return (np.arange(num_segments) * average + average / 2.0).astype(np.int64)
        return np.zeros(num_segments, np.int64)
    if mode != "train":
        raise ValueError(f"sampling mode must be one of {MODES}, got {mode!r}")
    if rng is None:
        raise ValueError("train-mode sampling needs rng (a numpy Generator) so that it is reproducible")
    average = (num_frames - span + 1) // num_segments
    if average > 0:
        return np.arange(num_segments) * average + rng.integers(average, size=num_segments)
    if num_frames > max(num_segments, span):
        return np.sort(rng.integers(num_frames - span + 1, size=num_segments))
    if average == 0:
        ratio = (num_frames - span + 1.0) / num_segments
        return np.around(np.arange(num_segments) * ratio).astype(np.int64)
    return np.zeros(num_segments, np.int64)


def sample_frame_indices(num_frames, num_segments, mode="train", rng=None, num_views=1,
                         clip_len=1, frame_interval=1):
    """Frame indices, int64 [num_views * num_segments * clip_len], wrapped into [0, num_frames).

    Views are concatenated view-major; within a view, clips are segment-major.
    """
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if num_segments <= 0 or clip_len <= 0 or frame_interval <= 0 or num_views <= 0:
        raise ValueError("num_segments, clip_len, frame_interval and num_views must be positive")
    if num_views > 1 and mode == "test":
        mode = "train"  # the official multi-view test draws independent train-style samplings
    views = []
    for _ in range(num_views):
        offsets = clip_offsets(num_frames, num_segments, mode, rng, clip_len, frame_interval)
        views.append((offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval).reshape(-1))
    return np.mod(np.concatenate(views), num_frames).astype(np.int64)
