"""ViFi-CLIP video model and deep prompts against PyTorch references of the official semantics."""
import jax
import numpy as np
import pytest
import torch

from conftest import perturbed_reference, relative_error, state_dict_numpy
from vifi_jax import convert, tokenizer
from vifi_jax.models import vifi

NAMES = ["ApplyEyeMakeup", "brush hair", "Pushing something from left to right", "yoga"]


def reference_video_logits(reference, frames, ids):
    """ViFiCLIP.forward: frames folded into the batch, mean over T, L2 norm, exp(logit_scale)·cos."""
    b, t, h, w, c = frames.shape
    with torch.no_grad():
        images = torch.from_numpy(frames).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        video = reference.encode_image(images).view(b, t, -1).mean(dim=1)
        text = reference.encode_text(torch.from_numpy(ids).long())
        video = video / video.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        return (reference.logit_scale.exp() * video @ text.t()).numpy()


def load_flax(state):
    flat, unexpected = convert.openai_to_flat(state)
    assert not unexpected
    config = convert.infer_config(state)
    return vifi.ViFiCLIP(**config), convert.unflatten(flat), config


def test_video_logits_match_the_official_forward(openai_model):
    reference = perturbed_reference(openai_model)
    model, params, _ = load_flax(state_dict_numpy(reference))
    frames = np.random.default_rng(0).normal(size=(2, 5, 32, 32, 3)).astype(np.float32)
    ids = tokenizer.tokenize(vifi.class_texts(NAMES))
    got = model.apply({"params": params}, frames, ids)
    assert relative_error(got, reference_video_logits(reference, frames, ids)) <= 1e-5


def test_vmap_over_time_equals_folding_time_into_batch(openai_model):
    model, params, _ = load_flax(state_dict_numpy(perturbed_reference(openai_model)))
    frames = np.random.default_rng(1).normal(size=(3, 4, 32, 32, 3)).astype(np.float32)
    video = model.apply({"params": params}, frames, method="encode_video")
    folded = model.apply({"params": params}, frames.reshape(12, 32, 32, 3), method="encode_image")
    np.testing.assert_allclose(video, folded.reshape(3, 4, -1).mean(1), rtol=1e-6, atol=1e-6)


def test_text_modes_build_the_official_strings():
    assert vifi.class_texts(["brush hair"]) == ["a photo of a brush hair."]
    assert vifi.class_texts(["ApplyEyeMakeup"], "bare") == ["ApplyEyeMakeup"]
    assert vifi.class_texts(["brush_hair"], "prompt", 3) == ["X X X brush hair."]
    with pytest.raises(ValueError, match="text prompts"):
        vifi.class_texts(["a"], "prompt", 0)
    with pytest.raises(ValueError, match="unknown text mode"):
        vifi.class_texts(["a"], "ensemble")


# ---- deep prompts: a PyTorch reference written from the official clip/model.py semantics ----

def reference_prompted_image(reference, images, vpt, shallow):
    """VPT appended after the positional embedding, before ln_pre; block i>=1 swaps the last n tokens."""
    visual, n = reference.visual, vpt.shape[0]
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = torch.cat([x, vpt.expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if i in shallow:
            x = torch.cat([x[:x.shape[0] - n], shallow[i].expand(x.shape[1], -1, -1).permute(1, 0, 2)], dim=0)
        x = block(x)
    return visual.ln_post(x.permute(1, 0, 2)[:, 0]) @ visual.proj


def reference_prompted_text(reference, ids, ctx, shallow):
    """ctx after SOT (construct_prompts); block i>=1 swaps tokens 1..n; EOT pooling as usual."""
    n = ctx.shape[0]
    x = reference.token_embedding(ids)
    x = torch.cat([x[:, :1], ctx.expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
    x = (x + reference.positional_embedding).permute(1, 0, 2)
    for i, block in enumerate(reference.transformer.resblocks):
        if i in shallow:
            x = torch.cat([x[:1], shallow[i].expand(x.shape[1], -1, -1).permute(1, 0, 2), x[1 + n:]], dim=0)
        x = block(x)
    x = reference.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ reference.text_projection


@pytest.mark.parametrize("n_vision,depth_vision,n_text,depth_text", [(4, 2, 3, 3), (2, 3, 5, 1), (3, 1, 2, 2)])
def test_deep_prompts_match_the_official_semantics(openai_model, n_vision, depth_vision, n_text, depth_text):
    reference = perturbed_reference(openai_model, seed=3)
    g = torch.Generator().manual_seed(0)
    width_v, width_t = reference.visual.conv1.weight.shape[0], reference.ln_final.weight.shape[0]
    vpt = torch.randn(n_vision, width_v, generator=g) * 0.5
    vshallow = {i: torch.randn(n_vision, width_v, generator=g) * 0.5 for i in range(1, depth_vision)}
    ctx = torch.randn(n_text, width_t, generator=g) * 0.5
    tshallow = {i: torch.randn(n_text, width_t, generator=g) * 0.5 for i in range(1, depth_text)}

    state = state_dict_numpy(reference)
    state["visual.VPT"] = vpt.numpy()
    state.update({f"visual.transformer.resblocks.{i}.VPT_shallow": p.numpy() for i, p in vshallow.items()})
    state["prompt_learner.ctx"] = ctx.numpy()
    state.update({f"transformer.resblocks.{i}.VPT_shallow": p.numpy() for i, p in tshallow.items()})
    model, params, config = load_flax(state)
    assert (config["vision_prompts"], config["vision_prompt_depth"]) == (n_vision, depth_vision)
    assert (config["text_prompts"], config["text_prompt_depth"]) == (n_text, depth_text)

    images = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
    ids = tokenizer.tokenize(vifi.class_texts(NAMES, "prompt", n_text))
    with torch.no_grad():
        want_image = reference_prompted_image(reference, torch.from_numpy(images).permute(0, 3, 1, 2),
                                              vpt, vshallow).numpy()
        want_text = reference_prompted_text(reference, torch.from_numpy(ids).long(), ctx, tshallow).numpy()
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
    flat = convert.flatten(shapes)
    prompt_sizes = [np.prod(s.shape) for k, s in flat.items() if "VPT" in k or "prompt_learner" in k]
    assert sum(1 for k in flat if k.startswith("visual/") and "VPT" in k) == 9
    assert sum(1 for k in flat if not k.startswith("visual/") and ("VPT" in k or "ctx" in k)) == 9
    assert sum(prompt_sizes) == 9 * 16 * 128 + 9 * 16 * 64
