"""ViFi-CLIP video model and deep prompts against PyTorch references of the official semantics."""
import jax
import numpy as np
import pytest
import torch
from flax import traverse_util

import official
from conftest import perturbed_reference, relative_error, state_dict_numpy
from vifi_jax import tokenizer
from vifi_jax.weights import convert
from vifi_jax.models import vifi

NAMES = ["ApplyEyeMakeup", "brush hair", "Pushing something from left to right", "yoga"]


def load_flax(state):
    flat, unexpected = convert.openai_to_flat(state)
    assert not unexpected
    config = convert.infer_config(state)
    return vifi.ViFiCLIP(**config), traverse_util.unflatten_dict(flat, sep="/"), config


def test_video_logits_match_the_official_forward(openai_model):
    reference = perturbed_reference(openai_model)
    model, params, _ = load_flax(state_dict_numpy(reference))
    frames = np.random.default_rng(0).normal(size=(2, 5, 32, 32, 3)).astype(np.float32)
    ids = tokenizer.tokenize(vifi.class_texts(NAMES))
    got = model.apply({"params": params}, frames, ids)
    want = official.OfficialViFiCLIP(reference, NAMES, tokenizer.tokenize)(frames)
    assert relative_error(got, want) <= 1e-5


def test_vmap_over_time_equals_folding_time_into_batch(openai_model):
    model, params, _ = load_flax(state_dict_numpy(perturbed_reference(openai_model)))
    frames = np.random.default_rng(1).normal(size=(3, 4, 32, 32, 3)).astype(np.float32)
    video = model.apply({"params": params}, frames, method="encode_video")
    folded = model.apply({"params": params}, frames.reshape(12, 32, 32, 3), method="encode_image")
    assert relative_error(video, folded.reshape(3, 4, -1).mean(1)) <= 1e-5  # reassociation only


def test_text_modes_build_the_official_strings():
    """VLPromptLearner: fine-tuning "a photo of a {}." as is; ZS_EVAL "{}"; prompting "_" -> " " after a prefix
    that is CTX_INIT ("a photo of a") for at most 4 text prompts and "X X … X" for more."""
    assert vifi.class_texts(["brush_hair"]) == ["a photo of a brush_hair."]
    assert vifi.class_texts(["ApplyEyeMakeup"], "bare") == ["ApplyEyeMakeup"]
    assert vifi.class_texts(["brush_hair"], "prompt", 3) == ["a photo of a brush hair."]
    assert vifi.class_texts(["brush_hair"], "prompt", 4) == ["a photo of a brush hair."]
    assert vifi.class_texts(["brush_hair"], "prompt", 5) == ["X X X X X brush hair."]
    assert vifi.class_texts(["brush_hair"], None, 16) == vifi.class_texts(["brush_hair"], "prompt", 16)
    with pytest.raises(ValueError, match="text prompts"):
        vifi.class_texts(["a"], "prompt", 0)
    with pytest.raises(ValueError, match="cannot work with this model"):
        vifi.class_texts(["a"], "bare", 16)
    with pytest.raises(ValueError, match="unknown text mode"):
        vifi.class_texts(["a"], "ensemble")


@pytest.mark.parametrize("prompts", [(4, 2, 3, 3), (2, 3, 5, 1), (3, 1, 6, 2)])
def test_deep_prompts_match_the_official_semantics(openai_model, prompts):
    reference = perturbed_reference(openai_model, seed=3)
    names = NAMES[:3]
    theirs = official.OfficialViFiCLIP(reference, names, tokenizer.tokenize, prompts)
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    state = convert.vifi_to_openai(state) | {"token_embedding.weight": state_dict_numpy(reference)[
        "token_embedding.weight"]}
    model, params, config = load_flax(state)
    n_vision, depth_vision, n_text, depth_text = prompts
    assert (config["vision_prompts"], config["vision_prompt_depth"]) == (n_vision, depth_vision)
    assert (config["text_prompts"], config["text_prompt_depth"]) == (n_text, depth_text)

    images = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
    ids = tokenizer.tokenize(vifi.class_texts(names, "prompt", n_text))
    np.testing.assert_array_equal(ids, theirs.tokenized_prompts.numpy())
    with torch.no_grad():
        want_image = theirs.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        want_text = theirs.encode_text().numpy()
    got_image = model.apply({"params": params}, images, method="encode_image")
    got_text = model.apply({"params": params}, tokenizer.truncate(ids), method="encode_text")
    assert relative_error(got_image, want_image) <= 1e-5
    assert relative_error(got_text, want_text) <= 1e-5


def test_prompt_params_get_the_official_shapes_and_init():
    config = dict(embed_dim=32, image_resolution=32, vision_layers=12, vision_width=128, vision_patch_size=8,
                  context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                  transformer_layers=12, vision_prompts=16, vision_prompt_depth=9, text_prompts=16,
                  text_prompt_depth=9)
    model = vifi.ViFiCLIP(**config)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 1, 32, 32, 3), np.float32),
                            np.zeros((1, 77), np.int32))["params"]
    flat = traverse_util.flatten_dict(shapes, sep="/")
    prompt_sizes = [np.prod(s.shape) for k, s in flat.items() if "VPT" in k or "prompt_learner" in k]
    assert sum(1 for k in flat if k.startswith("visual/") and "VPT" in k) == 9
    assert sum(1 for k in flat if not k.startswith("visual/") and ("VPT" in k or "ctx" in k)) == 9
    assert sum(prompt_sizes) == 9 * 16 * 128 + 9 * 16 * 64
    small = vifi.ViFiCLIP(**{**config, "vision_layers": 4, "transformer_layers": 4, "vision_prompt_depth": 4,
                             "text_prompt_depth": 4, "vision_prompts": 64, "text_prompts": 64})  # fewer layers to compile
    variables = jax.jit(small.init)(jax.random.PRNGKey(0), np.zeros((1, 1, 32, 32, 3), np.float32),
                                    np.zeros((1, 77), np.int32))
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    prompts = np.concatenate([np.ravel(v) for k, v in params.items() if "VPT" in k or "prompt_learner" in k])
    assert abs(prompts.mean()) < 0.002 and 0.019 < prompts.std() < 0.021  # official: nn.init.normal_(std=0.02)
    assert len({float(np.ravel(v)[0]) for k, v in params.items() if k.startswith("visual/") and "VPT" in k}) == 4
