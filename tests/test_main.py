"""The two commands a user starts with: the embedded default of main, and predict on their own videos."""
import json
import os
import subprocess
import sys

import numpy as np

from data_pipelines import synthetic
from vifi_jax import api
from tests.conftest import TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None):
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    return result.returncode, result.stdout, result.stderr


def test_embedded_default_runs_offline_and_says_its_weights_are_random(tmp_path):
    code, out, err = run("vifi_jax.main", "--config=configs/zeroshot.py", f"--workdir={tmp_path}",
                         env={"VIFI_JAX_OFFLINE": "1"})
    assert code == 0, err[-3000:]
    assert "WARNING: RANDOM WEIGHTS" in out and "demo: top1" in out
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert "RANDOM WEIGHTS" in results["note"] and "VIFI_JAX_OFFLINE" in results["note"]
    demo = results["final"]["demo"]
    assert demo["evaluated"] == demo["videos"] == 32 and demo["views"] == 1
    assert json.load(open(tmp_path / "config.json"))["data"]["source"] == "demo"


def test_predict_classifies_each_video_and_reports_bad_ones(tmp_path):
    root = tmp_path / "clips"
    synthetic.make_dataset(str(root), num_classes=3, videos_per_class=1, num_frames=10, height=40, width=48)
    videos = sorted(str(p) for p in (root / "train").iterdir())
    weights = tmp_path / "model"
    api.init("ViT-B/16", seed=1, **TINY).save(str(weights))
    names = synthetic.class_names(3)
    code, out, err = run("vifi_jax.predict", f"--weights={weights}", f"--labels={','.join(names)}", "--top_k=2",
                         "--num_frames=4", "--json", *videos, str(tmp_path / "missing.mp4"))
    assert code == 1, err[-3000:]  # one video failed, the others were classified
    results = json.loads(out)
    assert [r["video"] for r in results] == videos + [str(tmp_path / "missing.mp4")]
    for r in results[:3]:
        probabilities = [x["probability"] for x in r["labels"]]
        assert len(probabilities) == 2 and probabilities[0] >= probabilities[1] and sum(probabilities) <= 1 + 1e-6
        assert {x["label"] for x in r["labels"]} <= set(names)
    assert "does not exist" in results[3]["error"]
    model = api.load(str(weights))
    from vifi_jax import predict
    direct = predict.predict(model, videos[:1], names, top_k=3, num_frames=4)
    assert np.isclose(sum(x["probability"] for x in direct[0]["labels"]), 1.0, atol=1e-5)
    assert direct[0]["labels"][0]["label"] == results[0]["labels"][0]["label"]
    code, out, _ = run("vifi_jax.predict", f"--weights={weights}", f"--labels_file={root / 'labels.csv'}",
                       "--num_frames=4", videos[0])
    assert code == 0 and out.startswith(videos[0]) and "%" in out
