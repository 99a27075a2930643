"""View aggregation, accuracies, harmonic mean and mean ± std on numbers worked out by hand."""
import numpy as np
import pytest

from vifi_jax import evaluate, metrics, summarize


def test_softmax_per_view_then_sum():
    logits = np.array([[[10.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # one confident view beats two unsure ones
    scores = metrics.aggregate_views(logits)
    e = np.exp(1) / (1 + np.exp(1))
    np.testing.assert_allclose(scores, [[1 / (1 + np.exp(-10)) + 2 * (1 - e), np.exp(-10) / (1 + np.exp(-10)) + 2 * e]])
    assert scores.argmax() == 0  # whereas summed logits would pick class 0 too, mean probabilities decide here


def test_top_k_and_mean_class_accuracy():
    scores = np.array([[.9, .1, 0, 0, 0, 0], [.1, .9, 0, 0, 0, 0], [.5, .4, .1, 0, 0, 0], [.2, .2, 0, .2, .2, .2]])
    labels = np.array([0, 0, 1, 2])
    m = metrics.accuracy(scores, labels, 6)
    assert m["top1"] == pytest.approx(25.0) and m["count"] == 4
    assert m["top5"] == pytest.approx(75.0)  # the last video's class 2 ranks 6th of 6
    assert m["mean_class"] == pytest.approx(100 * (0.5 + 0 + 0) / 3)


def test_harmonic_mean_and_mean_std(tmp_path):
    assert metrics.harmonic_mean(76.4, 61.1) == pytest.approx(2 * 76.4 * 61.1 / (76.4 + 61.1))
    assert metrics.mean_std([50.0, 52.0, 54.0]) == (52.0, pytest.approx(np.sqrt(8 / 3)))
    found = {"base": {"top1": 80.0}, "novel": {"top1": 60.0}}
    assert evaluate.summarize(found)["harmonic_mean"] == pytest.approx(2 * 80 * 60 / 140)
    runs = [{"base": {"top1": b}, "novel": {"top1": n}} for b, n in ((80, 60), (70, 50), (75, 55))]
    combined = summarize.base2novel(runs)
    assert combined["base"] == 75 and combined["novel"] == 55
    assert combined["harmonic_mean"] == pytest.approx(2 * 75 * 55 / 130)
