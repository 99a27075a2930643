"""The public API end to end: load, encode, score, save, reload."""
import json
import numpy as np
import pytest
import torch

import official
import vifi_jax
from configs import common
from conftest import perturbed_reference, relative_error, write_openai_jit_archive
from vifi_jax import api, tokenizer

NAMES = ["archery", "bowling", "ApplyEyeMakeup"]


@pytest.fixture()
def archive(openai_model, tmp_path):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "fp32.pth")
    return reference, write_openai_jit_archive(reference, openai_model, tmp_path / "clip.pt"), tmp_path


def test_load_encode_and_score_like_the_official_model(archive):
    reference, _, tmp_path = archive
    model = vifi_jax.load(tmp_path / "fp32.pth")
    frames = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    texts = model.class_texts(NAMES)
    assert texts[0] == "a photo of a archery."
    want = official.OfficialViFiCLIP(reference, NAMES, tokenizer.tokenize)(frames)
    assert relative_error(model.logits(frames, texts), want) <= 1e-5
    video, text = model.encode_video(frames), model.encode_text(texts)
    assert video.shape == (2, 32) and text.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(video, axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(model.encode_text(vifi_jax.tokenize(texts)), text, rtol=1e-6)
    assert vifi_jax.tokenize(texts).shape == (3, 77)
    np.testing.assert_array_equal(model.logits(frames, text), model.logits(frames, texts))  # features once
    np.testing.assert_allclose(model.logits(frames, text), model.logit_scale * video @ text.T, rtol=1e-5)


def test_save_and_save_pytorch_reload_to_the_same_model(archive):
    _, path, tmp_path = archive
    model = vifi_jax.load(path)
    frames = np.random.default_rng(1).normal(size=(1, 2, 32, 32, 3)).astype(np.float32)
    want = np.asarray(model.logits(frames, model.class_texts(NAMES, "bare")))
    model.save(tmp_path / "dir")
    model.save_pytorch(tmp_path / "vifi.pth", layout="vifi")
    model.save_pytorch(tmp_path / "openai.pth", layout="openai")
    for again in (vifi_jax.load(tmp_path / "dir"), vifi_jax.load(tmp_path / "openai.pth"),
                  vifi_jax.load(tmp_path / "vifi.pth", clip_weights=path)):
        np.testing.assert_array_equal(np.asarray(again.logits(frames, again.class_texts(NAMES, "bare"))), want)


@pytest.mark.parametrize("num_prompts", [3, 8])
def test_new_text_prompts_start_as_the_official_prompt_learner_starts_them(archive, num_prompts):
    """VLPromptLearner: with at most 4 text prompts, ctx = token embeddings of "a photo of a"[:n]; else N(0, .02)."""
    reference, path, _ = archive
    model_config = common.base_config().model
    model_config.update(init=str(path), text_prompts=num_prompts, text_prompt_depth=2, vision_prompts=2,
                        vision_prompt_depth=1)
    ctx = np.asarray(api.from_config(model_config)[0].params["prompt_learner"]["ctx"])
    with torch.no_grad():
        words = reference.token_embedding(torch.from_numpy(tokenizer.tokenize(official.CTX_INIT)).long())[0]
    if num_prompts <= 4:
        np.testing.assert_array_equal(ctx, words[1:1 + num_prompts].numpy())
    else:
        assert ctx.shape == (8, 128) and 0.015 < ctx.std() < 0.025


def test_bad_inputs_get_clear_errors(archive):
    _, path, tmp_path = archive
    model = vifi_jax.load(path)
    with pytest.raises(ValueError, match="raw uint8 pixels"):
        model.encode_video(np.zeros((1, 2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, 3\]"):
        model.encode_video(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="takes 32x32"):
        model.encode_video(np.zeros((1, 2, 64, 64, 3), np.float32))
    with pytest.raises(FileNotFoundError):
        vifi_jax.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown OpenAI CLIP model"):
        vifi_jax.load("openai:ViT-H/99")
    with pytest.raises(ValueError, match="unknown variant"):
        vifi_jax.init("ViT-Q/3")


def test_init_gives_a_working_random_model():
    model = vifi_jax.init("ViT-B/32", embed_dim=16, image_resolution=64, vision_layers=1, vision_width=64,
                          transformer_width=64, transformer_heads=1, transformer_layers=1)
    logits = model.logits(np.zeros((1, 2, 64, 64, 3), np.float32), ["a", "b"])
    assert logits.shape == (1, 2) and np.isfinite(logits).all()
    np.testing.assert_allclose(float(model.logit_scale), 1 / 0.07, rtol=1e-5)


def test_a_model_directory_keeps_its_remat_switch(tmp_path):
    model = vifi_jax.init("ViT-B/32", embed_dim=16, image_resolution=64, vision_layers=1, vision_width=64,
                          transformer_width=64, transformer_heads=1, transformer_layers=1)
    model.save(tmp_path / "dir")
    config_file = tmp_path / "dir" / "config.json"
    fields = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**fields, "remat": True}))   # as training writes a remat model
    assert vifi_jax.load(tmp_path / "dir").logits(np.zeros((1, 2, 64, 64, 3), np.float32), ["a"]).shape == (1, 1)
    config_file.write_text(json.dumps({**fields, "remat": "yes"}))
    with pytest.raises(ValueError, match="remat: 'yes' is not true or false"):
        vifi_jax.load(tmp_path / "dir")
