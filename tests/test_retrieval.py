"""Retrieval metrics on hand-worked cases: recalls, ranks, several captions per video, pessimistic ties."""
import numpy as np
import pytest

from vifi_jax import retrieval


def test_ranks_recalls_and_median_worked_by_hand():
    # 3 captions x 3 videos; caption i describes video i
    similarity = np.array([[0.9, 0.1, 0.2],    # caption 0: video 0 first              -> rank 1
                           [0.8, 0.3, 0.5],    # caption 1: video 1 after 0.8 and 0.5  -> rank 3
                           [0.1, 0.2, 0.7]])   # caption 2: video 2 first              -> rank 1
    m = retrieval.metrics(similarity, [0, 1, 2])
    assert m["t2v"] == {"R1": pytest.approx(200 / 3), "R5": 100.0, "R10": 100.0, "MdR": 1.0,
                        "MnR": pytest.approx(5 / 3)}
    # video 0: captions score 0.9, 0.8, 0.1 -> caption 0 first; video 1: 0.1, 0.3, 0.2 -> caption 1 first;
    # video 2: 0.2, 0.5, 0.7 -> caption 2 first
    assert m["v2t"]["R1"] == 100.0 and m["v2t"]["MnR"] == 1.0


def test_several_captions_per_video_and_ties_count_against_the_truth():
    similarity = np.array([[0.5, 0.5],   # caption 0 (video 0) ties with video 1: pessimistic rank 2
                           [0.2, 0.6],   # caption 1 (video 1): rank 1
                           [0.4, 0.3]])  # caption 2 (video 1): rank 2
    m = retrieval.metrics(similarity, [0, 1, 1])
    assert m["t2v"]["R1"] == pytest.approx(100 / 3) and m["t2v"]["MnR"] == pytest.approx(5 / 3)
    # v2t, video 0: its caption 0 scores 0.5, caption 2 scores 0.4 -> rank 1; video 1: best of caption 1
    # (0.6, rank 1) and caption 2 (0.3, rank 3) -> 1
    assert m["v2t"] == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MdR": 1.0, "MnR": 1.0}
    with pytest.raises(ValueError, match="one video index per caption"):
        retrieval.metrics(similarity, [0, 1])
    with pytest.raises(ValueError, match="indices must be in 0..1"):
        retrieval.metrics(similarity, [0, 1, 2])
