"""Video data for vifi_jax: decoding, sampling, transforms, datasets and Grain loaders.

numpy / OpenCV / Grain only: importable inside worker processes without jax or vifi_jax.
"""
from data_pipelines.sampling import sample_frame_indices
from data_pipelines.video import VideoError, count_frames, read_frames

__all__ = ["VideoError", "count_frames", "read_frames", "sample_frame_indices"]
