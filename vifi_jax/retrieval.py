"""Text↔video retrieval metrics, as CLIP4Clip defines them.

`metrics(similarity, caption_video)` takes similarities [num_captions, num_videos] and the video index of
each caption (a video may have several captions) and returns
    {"t2v": {"R1", "R5", "R10", "MdR", "MnR"}, "v2t": {...}}
with recalls in percent and median / mean rank (1 = first). A caption's rank is its video's place among all
videos; a video's rank is the best place among all captions of any of its captions. Ties rank
pessimistically: every other item scored at least as high as the ground truth is counted above it.
"""
import numpy as np


def _ranks(scores, truth):
    """1-based pessimistic rank of column `truth[i]` within row i of `scores`."""
    rows = np.arange(len(truth))
    target = scores[rows, truth][:, None]
    above = (scores >= target).sum(axis=1) - 1  # others at least as high, not counting the truth itself
    return above + 1


def _summary(ranks):
    return {"R1": 100 * float(np.mean(ranks <= 1)), "R5": 100 * float(np.mean(ranks <= 5)),
            "R10": 100 * float(np.mean(ranks <= 10)), "MdR": float(np.median(ranks)), "MnR": float(np.mean(ranks))}


def metrics(similarity, caption_video):
    similarity = np.asarray(similarity, np.float64)
    caption_video = np.asarray(caption_video, np.int64)
    num_captions, num_videos = similarity.shape
    if caption_video.shape != (num_captions,):
        raise ValueError(f"caption_video needs one video index per caption ({num_captions}), got "
                         f"{caption_video.shape}")
    if num_captions == 0 or caption_video.min() < 0 or caption_video.max() >= num_videos:
        raise ValueError(f"caption_video indices must be in 0..{num_videos - 1}")
    t2v = _ranks(similarity, caption_video)
    caption_ranks = _ranks(similarity.T[caption_video], np.arange(num_captions))  # each caption in its video's row
    v2t = np.full(num_videos, np.iinfo(np.int64).max)
    np.minimum.at(v2t, caption_video, caption_ranks)
    covered = v2t < np.iinfo(np.int64).max  # videos without a caption take no part in v2t
    return {"t2v": _summary(t2v), "v2t": _summary(v2t[covered])}
