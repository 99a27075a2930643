"""explain: rollout on a hand-worked case, frame contributions that add up to the logit, the pictures."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import TINY
from data_pipelines import synthetic
from data_pipelines import transforms
from vifi_jax import api, explain
from vifi_jax.runtime import encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rollout_of_a_hand_worked_case():
    first = np.array([[0.5, 0.5], [0.0, 1.0]])   # 0.5 A + 0.5 I = [[.75, .25], [0, 1]]
    second = np.array([[1.0, 0.0], [0.5, 0.5]])  # 0.5 A + 0.5 I = [[1, 0], [.25, .75]]
    # second step after the first: row 1 = .25 * [.75, .25] + .75 * [0, 1] = [.1875, .8125]
    np.testing.assert_allclose(explain.rollout(np.stack([first, second])), [[0.75, 0.25], [0.1875, 0.8125]])


@pytest.fixture(scope="module")
def model_and_video(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    synthetic.make_dataset(str(root), num_classes=2, videos_per_class=1, num_frames=12, height=40, width=48)
    return api.init("ViT-B/16", seed=4, **TINY), sorted(str(p) for p in (root / "train").iterdir())[0], root


def test_one_pass_gives_maps_and_frame_contributions_that_add_up_to_the_logit(model_and_video):
    model, path, _ = model_and_video
    crops, _ = encoder.read_test_view(path, 4, 32)
    frames = transforms.normalize(crops)
    _, state = model.module.apply({"params": model.params}, frames[0], method="encode_image", mutable=["intermediates"])
    attention = np.asarray(state["intermediates"]["visual"]["transformer"]["resblocks_0"]["attn"]["attention"][0])
    assert attention.shape == (4, 17, 17) and np.allclose(attention.sum(-1), 1, atol=1e-5)
    plain = model.module.apply({"params": model.params}, frames[0], method="encode_image")
    np.testing.assert_array_equal(plain, model.module.apply({"params": model.params}, frames[0], method="encode_image",
                                                            mutable=["intermediates"])[0])  # sowing changes nothing
    text = model.encode_text(["a red square", "a green circle"])
    logits, share, maps, top = explain.explain_frames(model, frames[0], text)
    assert maps.shape == (4, 4, 4) and np.allclose(maps.max(axis=(1, 2)), 1) and (maps >= 0).all()
    reference = np.asarray(model.logits(frames, text))[0]  # the model's own scoring, computed separately
    np.testing.assert_allclose(logits, reference, rtol=1e-5)
    assert top == int(np.argmax(reference)) and share.shape == (4,)
    assert float(share.sum()) == pytest.approx(float(reference[top]), rel=1e-5)


def test_cli_writes_a_picture_and_numbers_per_video(model_and_video, tmp_path):
    model, path, root = model_and_video
    model.save(str(tmp_path / "model"))
    result = subprocess.run([sys.executable, "-m", "vifi_jax.explain", f"--weights={tmp_path / 'model'}",
                             "--labels=red square moving right,green circle moving left", f"--out={tmp_path / 'out'}",
                             "--num_frames=3", path, str(tmp_path / "missing.mp4")], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and "missing.mp4: error:" in result.stdout, result.stderr[-2000:]
    stem = os.path.splitext(os.path.basename(path))[0]
    picture = cv2.imread(str(tmp_path / "out" / f"{stem}.png"))
    assert picture.shape == (28 + 32, 3 * 32, 3)
    numbers = json.load(open(tmp_path / "out" / f"{stem}.json"))
    assert len(numbers["frame_contributions"]) == 3 and np.array(numbers["relevance_maps"]).shape == (3, 4, 4)
    assert sum(numbers["frame_contributions"]) == pytest.approx(numbers["logit"], rel=1e-4)
    assert "rollout" in numbers["method"] and numbers["label"] in result.stdout


def test_cli_writes_only_into_its_own_directory(model_and_video, tmp_path):
    _, path, _ = model_and_video
    (tmp_path / "holiday.png").write_bytes(b"a picture")
    result = subprocess.run([sys.executable, "-m", "vifi_jax.explain", "--weights=/not/read", "--labels=a,b",
                             f"--out={tmp_path}", path], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "is not empty (holiday.png)" in lines[0], result.stderr
    assert os.listdir(tmp_path) == ["holiday.png"]
