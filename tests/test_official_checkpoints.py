"""Checkpoints exactly as the official code writes them, read through `load`, `convert` and `predict`.

Each checkpoint is what `utils/tools.py:epoch_saving` saves: the DDP state dict of the official module tree,
a real AdamW state after one step, a scheduler state, `max_accuracy`, `epoch` and a real yacs config.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import official
import vifi_jax
from conftest import perturbed_reference, relative_error
from data_pipelines import synthetic
from vifi_jax import convert as convert_command
from vifi_jax import tokenizer
from vifi_jax.weights import convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["ApplyEyeMakeup", "brush_hair", "pushing something from left to right", "yoga"]
KINDS = {"finetuned": None, "prompting": (4, 3, 16, 2), "prompting_short_context": (3, 2, 3, 3)}


@pytest.fixture(scope="module")
def checkpoints(openai_model, tmp_path_factory):
    """{kind: (official model, checkpoint path)} plus the OpenAI weights they lack the token embedding of."""
    root = tmp_path_factory.mktemp("official")
    reference = perturbed_reference(openai_model, seed=2)
    clip_weights = root / "clip.pth"
    torch.save(reference.state_dict(), clip_weights)
    made = {}
    for kind, prompts in KINDS.items():
        model = official.OfficialViFiCLIP(perturbed_reference(openai_model, seed=2), NAMES, tokenizer.tokenize,
                                          prompts, seed=len(made))
        made[kind] = model, official.save_checkpoint(model, root / f"{kind}.pth")
    return made, clip_weights


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_load_scores_like_the_official_model(checkpoints, kind):
    (model, path), clip_weights = checkpoints[0][kind], checkpoints[1]
    ours = vifi_jax.load(path, clip_weights=clip_weights)
    frames = np.random.default_rng(0).normal(size=(2, 3, 32, 32, 3)).astype(np.float32)
    assert relative_error(ours.logits(frames, ours.class_texts(NAMES)), model(frames)) <= 1e-5


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_convert_reads_and_writes_back_the_official_layout_bit_exactly(checkpoints, kind, tmp_path, capsys):
    (model, path), clip_weights = checkpoints[0][kind], checkpoints[1]
    assert convert_command.run([str(path), str(tmp_path / "dir"), "--clip_weights", str(clip_weights)]) == 0
    assert convert_command.run([str(tmp_path / "dir"), str(tmp_path / "back.pth")]) == 0
    report = capsys.readouterr().out
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    want = {k: v for k, v in official.DistributedDataParallelKeys(model).state_dict().items()
            if k[len("module."):] not in convert.VIFI_BUFFERS}
    assert sorted(back) == sorted(want)
    for key in want:
        torch.testing.assert_close(back[key], want[key], rtol=0, atol=0, msg=key)
    assert f"{sum(v.numel() for v in want.values()):,} parameters in the ViFi-CLIP layout" in report
    assert "--clip_weights" in report  # the written file lacks the token embedding, as official files do
    reloaded = vifi_jax.load(tmp_path / "dir")
    frames = np.random.default_rng(1).normal(size=(1, 2, 32, 32, 3)).astype(np.float32)
    assert relative_error(reloaded.logits(frames, reloaded.class_texts(NAMES)), model(frames)) <= 1e-5


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    synthetic.make_dataset(str(root), num_classes=2, videos_per_class=1, num_frames=12, height=40, width=52)
    return sorted(str(p) for p in (root / "train").iterdir())


@pytest.mark.parametrize("kind", ["finetuned", "prompting"])
def test_predict_gives_the_official_probabilities(checkpoints, kind, videos):
    (model, path), clip_weights = checkpoints[0][kind], checkpoints[1]
    result = subprocess.run(
        [sys.executable, "-m", "vifi_jax.predict", f"--weights={path}", f"--clip_weights={clip_weights}",
         f"--labels={','.join(NAMES)}", f"--top_k={len(NAMES)}", "--num_frames=4", "--json", *videos],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for entry, video in zip(map(json.loads, result.stdout.splitlines()), videos):
        want = model.probabilities(vifi_jax.load_video(video, num_frames=4, size=32))[0]
        got = {x["label"]: x["probability"] for x in entry["labels"]}
        np.testing.assert_allclose([got[name] for name in NAMES], want, rtol=0, atol=1e-5)


def test_a_text_mode_that_cannot_work_with_the_model_is_refused(checkpoints):
    (_, path), clip_weights = checkpoints[0]["prompting"], checkpoints[1]
    ours = vifi_jax.load(path, clip_weights=clip_weights)
    assert ours.class_texts(["brush_hair"]) == [" ".join(["X"] * 16) + " brush hair."]
    with pytest.raises(ValueError, match="'template' cannot work with this model"):
        ours.class_texts(NAMES, "template")
    with pytest.raises(ValueError, match="replace the words 'X X"):
        ours.logits(np.zeros((1, 1, 32, 32, 3), np.float32), ["a photo of a yoga."])
    plain = vifi_jax.load(checkpoints[0]["finetuned"][1], clip_weights=clip_weights)
    with pytest.raises(ValueError, match="needs a model with learned text prompts"):
        plain.class_texts(NAMES, "prompt")
