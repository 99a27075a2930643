"""Checkpoint conversion: bit-exact round trips, official layouts, clear errors, the CLI, downloads."""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY, fake_yacs, perturbed_reference, state_dict_numpy, write_openai_jit_archive
from vifi_jax import convert, downloads
from vifi_jax.models import vifi

PROMPTS = dict(n_vision=4, depth_vision=3, n_text=5, depth_text=2)


def assert_states_equal(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)


def torch_state(path):
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def official_vifi_state(reference, prompted=False, n_classes=3):
    """The `model` dict of an official ViFi-CLIP checkpoint built from `reference`'s weights."""
    state = state_dict_numpy(reference)
    out = convert.openai_to_vifi(state)
    width = state["ln_final.weight"].shape[0]
    rng = np.random.default_rng(0)
    out["module.prompt_learner.complete_text_embeddings"] = rng.normal(size=(n_classes, 77, width)).astype("f4")
    if prompted:
        v_width = state["visual.conv1.weight"].shape[0]
        n_v, n_t = PROMPTS["n_vision"], PROMPTS["n_text"]
        out["module.image_encoder.VPT"] = rng.normal(size=(n_v, v_width)).astype("f4")
        for i in range(1, PROMPTS["depth_vision"]):
            out[f"module.image_encoder.transformer.resblocks.{i}.VPT_shallow"] = rng.normal(size=(n_v, v_width)).astype("f4")
        out["module.prompt_learner.ctx"] = rng.normal(size=(n_t, width)).astype("f4")
        for i in range(1, PROMPTS["depth_text"]):
            out[f"module.text_encoder.transformer.resblocks.{i}.VPT_shallow"] = rng.normal(size=(n_t, width)).astype("f4")
        out["module.prompt_learner.token_prefix"] = rng.normal(size=(n_classes, 1, width)).astype("f4")
        out["module.prompt_learner.token_suffix"] = rng.normal(size=(n_classes, 77 - 1 - n_t, width)).astype("f4")
    return out


def save_official_vifi_checkpoint(state, path):
    """torch.save it as the official training loop does, yacs config included (yacs faked, then removed)."""
    with fake_yacs() as cfg_node:
        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {}, "max_accuracy": 0.0,
                    "epoch": 9, "config": cfg_node({"TRAIN": cfg_node({"LR": 8e-6})})}, path)
    return path


def test_openai_state_dict_round_trip_is_bit_exact(openai_model, tmp_path):
    state = state_dict_numpy(perturbed_reference(openai_model))
    flat, unexpected = convert.openai_to_flat(state)
    assert not unexpected
    assert_states_equal(convert.flat_to_openai(flat), state)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "openai.pth")
    _, params = convert.read(tmp_path / "openai.pth")
    convert.write_pytorch(params, tmp_path / "back.pth", layout="openai")
    assert_states_equal(torch_state(tmp_path / "back.pth"), state)


def test_openai_jit_archive_converts_and_writes_back_loadable_by_build_model(openai_model, tmp_path):
    reference = perturbed_reference(openai_model)
    archive = write_openai_jit_archive(reference, openai_model, tmp_path / "ViT-tiny.pt")
    jit_state = torch.jit.load(str(archive), map_location="cpu").state_dict()
    config, params = convert.read(archive)
    assert config == {**TINY, "vision_prompts": 0, "vision_prompt_depth": 0, "text_prompts": 0,
                      "text_prompt_depth": 0}
    convert.write_pytorch(params, tmp_path / "fp16.pth", layout="openai", dtype=np.float16)
    convert.write_pytorch(params, tmp_path / "fp32.pth", layout="openai")
    back16, back32 = torch_state(tmp_path / "fp16.pth"), torch_state(tmp_path / "fp32.pth")
    assert set(back32) == set(jit_state) - set(convert.OPENAI_BUFFERS)
    for key in back32:
        value = jit_state[key]
        np.testing.assert_array_equal(back32[key], value.float().numpy(), err_msg=key)
        if value.dtype == torch.float16:
            np.testing.assert_array_equal(back16[key], value.numpy(), err_msg=key)
    rebuilt = openai_model.build_model(torch.load(tmp_path / "fp32.pth", weights_only=True)).float()
    ids = torch.randint(0, 49406, (2, 77))
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt.encode_text(ids).numpy(),
                                      openai_model.build_model(jit_state).float().encode_text(ids).numpy())


@pytest.mark.parametrize("prompted", [False, True])
def test_official_vifi_checkpoint_round_trip_is_bit_exact(openai_model, tmp_path, prompted):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    official = official_vifi_state(reference, prompted)
    path = save_official_vifi_checkpoint(official, tmp_path / "vifi.pth")
    config, params = convert.read(path, clip_weights=tmp_path / "clip.pth")
    if prompted:
        assert (config["vision_prompts"], config["vision_prompt_depth"]) == (4, 3)
        assert (config["text_prompts"], config["text_prompt_depth"]) == (5, 2)
    np.testing.assert_array_equal(params["token_embedding"]["embedding"],
                                  reference.token_embedding.weight.detach().numpy())
    convert.write_pytorch(params, tmp_path / "back.pth", layout="vifi")
    back = {k: v.numpy() for k, v in torch.load(tmp_path / "back.pth", weights_only=True)["model"].items()}
    weights = {k: v for k, v in official.items() if k[len("module."):] not in convert.VIFI_BUFFERS}
    assert_states_equal(back, weights)


class OfficialViFiCLIPKeys(torch.nn.Module):
    """The module tree of the official ViFiCLIP (names only), to check what our vifi layout loads into."""

    def __init__(self, reference, n_classes=3):
        super().__init__()
        self.prompt_learner = torch.nn.Module()
        self.prompt_learner.register_buffer("complete_text_embeddings", torch.zeros(n_classes, 77, 128))
        self.image_encoder = reference.visual
        self.text_encoder = torch.nn.Module()
        self.text_encoder.transformer = reference.transformer
        self.text_encoder.positional_embedding = reference.positional_embedding
        self.text_encoder.ln_final = reference.ln_final
        self.text_encoder.text_projection = reference.text_projection
        self.logit_scale = reference.logit_scale


def test_vifi_layout_loads_into_the_official_module_with_only_prompt_buffers_missing(openai_model, tmp_path):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    _, params = convert.read(tmp_path / "clip.pth")
    convert.write_pytorch(params, tmp_path / "vifi.pth", layout="vifi")
    state = torch.load(tmp_path / "vifi.pth", weights_only=True)["model"]
    target = OfficialViFiCLIPKeys(perturbed_reference(openai_model, seed=5))
    result = target.load_state_dict({k[len("module."):]: v for k, v in state.items()}, strict=False)
    assert result.missing_keys == ["prompt_learner.complete_text_embeddings"] and not result.unexpected_keys
    torch.testing.assert_close(target.image_encoder.proj, reference.visual.proj, rtol=0, atol=0)


def test_safetensors_source(openai_model, tmp_path):
    from safetensors.numpy import save_file
    state = state_dict_numpy(perturbed_reference(openai_model))
    save_file(state, str(tmp_path / "clip.safetensors"))
    _, params = convert.read(tmp_path / "clip.safetensors")
    assert_states_equal(convert.flat_to_openai(convert.flatten(params)), state)


def test_missing_token_embedding_asks_for_clip_weights(openai_model, tmp_path):
    path = save_official_vifi_checkpoint(official_vifi_state(perturbed_reference(openai_model)), tmp_path / "v.pth")
    with pytest.raises(convert.ConversionError, match="token_embedding.*--clip-weights"):
        convert.read(path)


def test_wrong_shapes_unknown_and_missing_keys_are_named(openai_model, tmp_path):
    state = state_dict_numpy(perturbed_reference(openai_model))
    state["visual.transformer.resblocks.1.mlp.c_fc.bias"] = np.zeros(7, np.float32)
    state["visual.mystery.weight"] = np.zeros(3, np.float32)
    del state["transformer.resblocks.2.ln_2.bias"]
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "bad.pth")
    with pytest.raises(convert.ConversionError) as err:
        convert.read(tmp_path / "bad.pth")
    message = str(err.value)
    assert "missing: transformer/resblocks_2/ln_2/bias" in message
    assert "unexpected: visual.mystery.weight" in message
    assert "visual/transformer/resblocks_1/mlp/c_fc/bias (7,) (expected (512,))" in message


def test_not_a_clip_checkpoint_and_resnet_are_refused(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(convert.ConversionError, match="neither OpenAI CLIP"):
        convert.read(tmp_path / "other.pth")
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(2, 2), "visual.attnpool.c_proj.weight": torch.zeros(1)},
               tmp_path / "rn50.pth")
    with pytest.raises(convert.ConversionError, match="ResNet"):
        convert.read(tmp_path / "rn50.pth")
    with pytest.raises(FileNotFoundError, match="openai:ViT-B/16"):
        convert.read(tmp_path / "absent.pth")


def test_cli_converts_both_ways_and_reports_errors(openai_model, tmp_path, capsys):
    reference = perturbed_reference(openai_model)
    archive = write_openai_jit_archive(reference, openai_model, tmp_path / "clip.pt")
    assert convert.main([str(archive), str(tmp_path / "model")]) == 0
    assert convert.main([str(tmp_path / "model"), str(tmp_path / "out.pth"), "--layout", "openai"]) == 0
    vifi_ckpt = save_official_vifi_checkpoint(official_vifi_state(reference), tmp_path / "v.pth")
    assert convert.main([str(vifi_ckpt), str(tmp_path / "v_dir"), "--clip-weights", str(archive)]) == 0
    assert convert.main([str(vifi_ckpt), str(tmp_path / "v_dir2")]) == 1
    assert "--clip-weights" in capsys.readouterr().err
    config, params = convert.read(tmp_path / "v_dir")
    assert config["transformer_width"] == 128 and "token_embedding" in params


def test_prompted_model_cannot_be_written_in_openai_layout(openai_model, tmp_path):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    path = save_official_vifi_checkpoint(official_vifi_state(reference, prompted=True), tmp_path / "p.pth")
    _, params = convert.read(path, clip_weights=tmp_path / "clip.pth")
    with pytest.raises(convert.ConversionError, match="layout vifi"):
        convert.write_pytorch(params, tmp_path / "x.pth", layout="openai")


def fake_release(openai_model, tmp_path):
    """A local archive laid out like OpenAI's URL (<sha256>/<file>) standing in for the download."""
    archive = write_openai_jit_archive(perturbed_reference(openai_model), openai_model, tmp_path / "tmp.pt")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    os.makedirs(tmp_path / "server" / digest)
    served = tmp_path / "server" / digest / "ViT-B-16.pt"
    shutil.move(archive, served)
    return served, f"file://{served}"


def test_download_verifies_checksum_and_caches(openai_model, tmp_path):
    served, url = fake_release(openai_model, tmp_path)
    path = downloads.openai_weights("ViT-B/16", urls={"ViT-B/16": url}, root=tmp_path / "cache")
    assert open(path, "rb").read() == served.read_bytes()
    os.remove(served)
    assert downloads.openai_weights("ViT-B/16", urls={"ViT-B/16": url}, root=tmp_path / "cache") == path
    bad_url = url.replace(url.split("/")[-2], "0" * 64)
    with pytest.raises(ConnectionError, match="cannot download"):
        downloads.openai_weights("ViT-B/16", urls={"ViT-B/16": bad_url}, root=tmp_path / "c2")


def test_download_with_wrong_checksum_is_discarded(openai_model, tmp_path):
    served, url = fake_release(openai_model, tmp_path)
    wrong = tmp_path / "server" / ("f" * 64)
    os.makedirs(wrong)
    shutil.copy(served, wrong / "ViT-B-16.pt")
    with pytest.raises(ValueError, match="SHA-256"):
        downloads.openai_weights("ViT-B/16", urls={"ViT-B/16": f"file://{wrong}/ViT-B-16.pt"}, root=tmp_path / "c")
    assert not any(name.endswith(".pt") for _, _, files in os.walk(tmp_path / "c") for name in files)


def test_openai_name_loads_through_the_cache(openai_model, tmp_path, monkeypatch):
    _, url = fake_release(openai_model, tmp_path)
    monkeypatch.setitem(downloads.OPENAI_MODELS, "ViT-B/16", url)
    monkeypatch.setenv("VIFI_JAX_CACHE", str(tmp_path / "cache"))
    config, _ = convert.read("openai:ViT-B/16")
    assert config["vision_width"] == TINY["vision_width"]
    assert os.path.isfile(tmp_path / "cache" / "openai" / "ViT-B-16.pt")
    model = vifi.ViFiCLIP(**config)
    assert model.vision_patch_size == 8
