"""TSN sampling against hand-computed expectations from the mmaction formulas (vificlip.md §4)."""
import numpy as np
import pytest

from data_pipelines import sample_frame_indices
from data_pipelines.sampling import MODES


class FixedDraws:
    """A Generator stand-in whose integers() returns chosen values, to check formulas exactly."""

    def __init__(self, values):
        self.values = np.asarray(values)
        self.calls = []

    def integers(self, high, size):
        self.calls.append((high, size))
        return self.values[:size] % high


def test_train_long_video_draws_one_random_frame_per_segment():
    draws = FixedDraws([0, 3, 11, 12, 5, 1, 7, 2])
    got = sample_frame_indices(100, 8, "train", draws)
    assert draws.calls == [(12, 8)]  # avg = 100 // 8
    np.testing.assert_array_equal(got, np.arange(8) * 12 + np.array([0, 3, 11, 0, 5, 1, 7, 2]))


def test_train_exact_multiple_and_short_video():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(sample_frame_indices(8, 8, "train", rng), np.arange(8))
    # N < T: round(arange(T) * N / T), numpy's round-half-to-even, frames repeat
    np.testing.assert_array_equal(sample_frame_indices(5, 8, "train", rng), [0, 1, 1, 2, 2, 3, 4, 4])
    np.testing.assert_array_equal(sample_frame_indices(3, 4, "train", rng), [0, 1, 2, 2])


def test_test_mode_takes_segment_centres():
    np.testing.assert_array_equal(sample_frame_indices(100, 8, "test"), [6, 18, 31, 43, 56, 68, 81, 93])
    np.testing.assert_array_equal(sample_frame_indices(32, 8, "test"), [2, 6, 10, 14, 18, 22, 26, 30])
    np.testing.assert_array_equal(sample_frame_indices(5, 8, "test"), [0, 0, 1, 2, 2, 3, 4, 4])


def test_multi_view_concatenates_independent_train_samplings():
    draws = FixedDraws([1, 2, 3, 4])
    got = sample_frame_indices(40, 4, "test", draws, num_views=3)
    assert draws.calls == [(10, 4)] * 3
    np.testing.assert_array_equal(got, np.tile([1, 12, 23, 34], 3))
    rng = np.random.default_rng(7)
    views = sample_frame_indices(1000, 8, "train", rng, num_views=4).reshape(4, 8)
    assert len({tuple(v) for v in views}) == 4
    assert all((v // 125 == np.arange(8)).all() for v in views)


def test_every_index_is_a_frame_of_the_video():
    rng = np.random.default_rng(0)
    for num_frames in range(1, 40):
        for segments in (1, 3, 8, 16, 32):
            for mode in MODES:
                got = sample_frame_indices(num_frames, segments, mode, rng)
                assert got.shape == (segments,) and got.dtype == np.int64
                assert ((got >= 0) & (got < num_frames)).all()
    # mmaction: round(arange(3) * 2 / 3) = [0, 1, 1]; round(arange(3) / 3) = [0, 0, 1], and 1 wraps to 0
    np.testing.assert_array_equal(sample_frame_indices(2, 3, "train", rng), [0, 1, 1])
    np.testing.assert_array_equal(sample_frame_indices(1, 3, "train", rng), [0, 0, 0])


def test_train_is_reproducible_and_bad_arguments_are_named():
    a = sample_frame_indices(300, 16, "train", np.random.default_rng(3))
    np.testing.assert_array_equal(a, sample_frame_indices(300, 16, "train", np.random.default_rng(3)))
    with pytest.raises(ValueError, match="needs rng"):
        sample_frame_indices(300, 16, "train")
    with pytest.raises(ValueError, match="0 frames"):
        sample_frame_indices(0, 8, "test")
    with pytest.raises(ValueError, match="mode"):
        sample_frame_indices(10, 2, "val", np.random.default_rng(0))
