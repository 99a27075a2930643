"""predict on a user's own videos and labels: results per video, bad videos reported, errors in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, perturbed_reference
from data_pipelines import synthetic
from vifi_jax import api

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


def reference_probabilities(reference, tokenizer, frames, names):
    """OpenAI's clip/model.py on the same weights: each frame through encode_image, the mean over frames,
    "a photo of a {name}." at 77 tokens through encode_text, softmax of logit_scale · cosine."""
    import torch
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    ids = torch.zeros(len(names), 77, dtype=torch.long)
    for row, name in enumerate(names):
        tokens = [sot] + tokenizer.encode(f"a photo of a {name}.") + [eot]
        ids[row, :len(tokens)] = torch.tensor(tokens)
    with torch.no_grad():
        images = torch.from_numpy(np.asarray(frames[0])).permute(0, 3, 1, 2)
        video = reference.encode_image(images).mean(0, keepdim=True)
        video, text = video / video.norm(dim=-1, keepdim=True), reference.encode_text(ids)
        text = text / text.norm(dim=-1, keepdim=True)
        return torch.softmax(reference.logit_scale.exp() * video @ text.T, dim=-1)[0].numpy()


def test_predict_matches_openais_model_and_reports_bad_videos(model_and_videos, openai_model, openai_tokenizer,
                                                              tmp_path):
    import torch
    _, videos, root = model_and_videos
    reference = perturbed_reference(openai_model, seed=7)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    names = synthetic.class_names(3)
    code, out, err = run(f"--weights={tmp_path / 'clip.pth'}", f"--labels={','.join(names)}", "--top_k=2",
                         "--num_frames=4", "--json", *videos, str(tmp_path / "missing.mp4"))
    assert code == 1, err[-3000:]  # one video failed, the others were classified
    results = [json.loads(line) for line in out.splitlines()]  # JSON Lines: one video per line
    assert [r["video"] for r in results] == videos + [str(tmp_path / "missing.mp4")]
    for r, video in zip(results[:3], videos):
        want = reference_probabilities(reference, openai_tokenizer, api.load_video(video, 4, 32), names)
        assert [x["label"] for x in r["labels"]] == [names[i] for i in np.argsort(-want, kind="stable")[:2]]
        np.testing.assert_allclose([x["probability"] for x in r["labels"]], np.sort(want)[::-1][:2], atol=1e-5)
    assert "does not exist" in results[3]["error"]
    code, out, _ = run(f"--weights={tmp_path / 'clip.pth'}", f"--labels_file={root / 'labels.csv'}",
                       "--num_frames=4", videos[0])
    assert code == 0 and out.startswith(videos[0]) and "%" in out


def test_repeated_labels_are_refused_as_a_label_csv_would_be(model_and_videos):
    weights, videos, _ = model_and_videos
    code, out, err = run(f"--weights={weights}", "--labels=a,a,b", videos[0])
    assert code == 2 and out == "" and "name 'a' more than once" in err and "Traceback" not in err


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
    assert code == 2 and out == "" and "--top_k=0: 0 is not a positive integer" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one line, not the whole --help


def test_out_of_memory_and_non_finite_scores_are_that_videos_error(model_and_videos, monkeypatch):
    """XLA running out of memory on one video, or scores that are not finite, end that video's line only;
    the other videos are still classified and nothing prints invalid JSON."""
    from vifi_jax import predict
    weights, videos, _ = model_and_videos
    model = api.load(weights)
    logits, calls = model.logits, []

    def failing(frames, texts):
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 13.90GiB.")
        if len(calls) == 3:
            return np.full((1, 2), np.nan, np.float32)
        return logits(frames, texts)

    monkeypatch.setattr(model, "logits", failing)
    results = list(predict.classify(model, videos, ["a", "b"], num_frames=2))
    assert [("labels" in r) for r in results] == [True, False, False]
    assert results[1]["error"].startswith("out of memory classifying it (RESOURCE_EXHAUSTED")
    assert "not finite" in results[2]["error"]
    monkeypatch.setattr(model, "logits", lambda *a: (_ for _ in ()).throw(RuntimeError("a bug, not memory")))
    with pytest.raises(RuntimeError, match="a bug"):  # anything else is not hidden as a video's error
        list(predict.classify(model, videos[:1], ["a", "b"], num_frames=2))
