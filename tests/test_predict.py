"""predict on a user's own videos and labels: results per video, bad videos reported, errors in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY
from data_pipelines import synthetic
from vifi_jax import api, predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "vifi_jax.predict", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=900, env={**os.environ, **(env or {})})
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def model_and_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    synthetic.make_dataset(str(root), num_classes=3, videos_per_class=1, num_frames=10, height=40, width=48)
    videos = sorted(str(p) for p in (root / "train").iterdir())
    weights = root / "model"
    api.init("ViT-B/16", seed=1, **TINY).save(str(weights))
    return str(weights), videos, root


def test_predict_classifies_each_video_and_reports_bad_ones(model_and_videos, tmp_path):
    weights, videos, root = model_and_videos
    names = synthetic.class_names(3)
    code, out, err = run(f"--weights={weights}", f"--labels={','.join(names)}", "--top_k=2", "--num_frames=4",
                         "--json", *videos, str(tmp_path / "missing.mp4"))
    assert code == 1, err[-3000:]  # one video failed, the others were classified
    results = [json.loads(line) for line in out.splitlines()]  # JSON Lines: one video per line
    assert [r["video"] for r in results] == videos + [str(tmp_path / "missing.mp4")]
    model = api.load(weights)
    for r, video in zip(results[:3], videos):
        logits = np.asarray(model.logits(api.load_video(video, 4, 32), model.class_texts(names)))[0]
        want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert [x["label"] for x in r["labels"]] == [names[i] for i in np.argsort(-want)[:2]]
        np.testing.assert_allclose([x["probability"] for x in r["labels"]], np.sort(want)[::-1][:2], atol=1e-5)
    assert "does not exist" in results[3]["error"]
    code, out, _ = run(f"--weights={weights}", f"--labels_file={root / 'labels.csv'}", "--num_frames=4", videos[0])
    assert code == 0 and out.startswith(videos[0]) and "%" in out
    direct = predict.predict(model, videos[:1], names, top_k=3, num_frames=4)
    assert np.isclose(sum(x["probability"] for x in direct[0]["labels"]), 1.0, atol=1e-5)


@pytest.mark.parametrize("weights,expected", [
    ("/nowhere/model.pth", "error: checkpoint /nowhere/model.pth does not exist"),
    ("openai:ViT-B/16", "error: ViT-B/16 is not in the cache")])
def test_a_weights_problem_is_one_line(model_and_videos, weights, expected):
    _, videos, _ = model_and_videos
    code, out, err = run(f"--weights={weights}", "--labels=a,b", videos[0], env={"VIFI_JAX_OFFLINE": "1"})
    assert code == 1 and out == "" and err.startswith(expected) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_top_k_below_one_is_a_usage_error(model_and_videos):
    weights, videos, _ = model_and_videos
    code, out, err = run(f"--weights={weights}", "--labels=a,b", "--top_k=0", videos[0])
    assert code != 0 and out == "" and "--top_k must be at least 1, got 0" in err and "Traceback" not in err
