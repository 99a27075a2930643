"""View aggregation, accuracies, harmonic mean and mean ± std on numbers worked out by hand."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vifi_jax import summarize
from vifi_jax.evaluators import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_softmax_per_view_then_sum():
    logits = np.array([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])  # one confident view against two fairly sure ones
    scores = metrics.aggregate_views(logits)
    p = 1 / (1 + np.exp(-3.0))  # softmax of (0, 3) for class 1
    q = 1 / (1 + np.exp(-10.0))  # softmax of (10, 0) for class 0
    np.testing.assert_allclose(scores, [[q + 2 * (1 - p), (1 - q) + 2 * p]])  # 1.095, 1.905
    assert scores.argmax() == 1 and logits.sum(axis=1).argmax() == 0  # summed logits (10 vs 6) would pick class 0


def test_top_k_and_mean_class_accuracy():
    scores = np.array([[.9, .1, 0, 0, 0, 0], [.1, .9, 0, 0, 0, 0], [.5, .4, .1, 0, 0, 0], [.2, .2, 0, .2, .2, .2]])
    labels = np.array([0, 0, 1, 2])
    m = metrics.accuracy(scores, labels, 6)
    assert m["top1"] == pytest.approx(25.0) and m["count"] == 4
    assert m["top5"] == pytest.approx(75.0)  # the last video's class 2 ranks 6th of 6
    assert m["mean_class"] == pytest.approx(100 * (0.5 + 0 + 0) / 3)
    assert m["per_class_top1"] == [50.0, 0.0, 0.0, None, None, None]  # classes 3-5 have no videos


def test_harmonic_mean_and_mean_std(tmp_path):
    assert metrics.harmonic_mean(76.4, 61.1) == pytest.approx(67.89876, abs=1e-5)  # the paper's K400 67.9
    assert metrics.mean_std([50.0, 52.0, 54.0]) == (52.0, pytest.approx(1.632993, abs=1e-6))  # population std
    found = {"base": {"top1": 80.0}, "novel": {"top1": 60.0}}
    assert metrics.summarize_sets(found) == {"harmonic_mean": pytest.approx(68.571428, abs=1e-6)}  # no mean over b/n
    splits = {f"split{i}": {"top1": v} for i, v in enumerate((50.0, 52.0, 54.0))}
    assert metrics.summarize_sets(splits) == {"top1_mean": 52.0, "top1_std": pytest.approx(1.632993, abs=1e-6),
                                              "std": metrics.STD_CONVENTION}
    runs = [{"base": {"top1": b}, "novel": {"top1": n}} for b, n in ((80, 60), (70, 50), (75, 55))]
    combined = summarize.base2novel(runs)
    assert combined["base"] == 75 and combined["novel"] == 55
    assert combined["harmonic_mean"] == pytest.approx(63.461538, abs=1e-6)


def write_run(directory, final):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({"final": final}, f)
    return str(directory)


def test_summarize_names_what_is_wrong_with_the_runs(tmp_path):
    b2n = [write_run(tmp_path / f"s{i}", {"base": {"top1": 70.0 + i}, "novel": {"top1": 50.0}}) for i in range(3)]
    zs = write_run(tmp_path / "zs", {"split1": {"top1": 40.0}})
    with pytest.raises(summarize.SummaryError, match="the 3 splits of one dataset.*got 2 run"):
        summarize.base2novel([summarize.load(r) for r in b2n[:2]], b2n[:2])
    with pytest.raises(summarize.SummaryError, match=r"zs has evaluation sets \['split1'\].*not a base-to-novel"):
        summarize.base2novel([summarize.load(r) for r in b2n[:2] + [zs]], b2n[:2] + [zs])
    with pytest.raises(summarize.SummaryError, match="runs of different kinds cannot be averaged"):
        summarize.mean_over_runs([summarize.load(r) for r in (b2n[0], zs)], [b2n[0], zs])
    with pytest.raises(summarize.SummaryError, match="missing: no results.json in that directory"):
        summarize.load(str(tmp_path / "missing"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(summarize.SummaryError, match="not a readable results file"):
        summarize.load(str(tmp_path / "broken.json"))
    result = subprocess.run([sys.executable, "-m", "vifi_jax.summarize", "base2novel", *b2n[:2]], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("error: base2novel combines the 3 splits")
    assert "Traceback" not in result.stderr
    assert json.loads(subprocess.run([sys.executable, "-m", "vifi_jax.summarize", "base2novel", *b2n], cwd=REPO,
                                     capture_output=True, text=True, timeout=120).stdout)["base"] == 71.0


def test_summarize_averages_retrieval_runs_recall_by_recall():
    found = lambda r1: {"t2v": {"R1": r1, "R5": 80.0, "R10": 90.0, "MdR": 2.0, "MnR": 10.0},
                        "v2t": {"R1": r1 - 2, "R5": 79.0, "R10": 88.0, "MdR": 2.0, "MnR": 11.0}, "videos": 1000}
    out = summarize.mean_over_runs([{"retrieval": found(r1)} for r1 in (42.0, 44.0, 46.0)])["retrieval"]
    assert out["t2v"]["R1"] == {"mean": 44.0, "std": pytest.approx(1.632993, abs=1e-6)}
    assert out["v2t"]["R1"]["mean"] == 42.0 and out["t2v"]["MdR"] == {"mean": 2.0, "std": 0.0}
    assert out["runs"] == 3 and out["std"] == metrics.STD_CONVENTION
