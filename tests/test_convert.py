"""Checkpoint conversion: bit-exact round trips, official layouts, clear errors, the CLI, downloads."""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch
from flax import traverse_util

import official
from conftest import TINY, perturbed_reference, state_dict_numpy, write_openai_jit_archive
from vifi_jax import convert as convert_command
from vifi_jax import tokenizer
from vifi_jax.weights import convert, downloads

PROMPTS = (4, 3, 5, 2)  # vision tokens, vision depth, text tokens, text depth
NAMES = ["archery", "brush_hair", "ApplyEyeMakeup"]


def assert_states_equal(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)


def torch_state(path):
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def official_checkpoint(reference, path, prompted=False):
    """(official model, its checkpoint saved as the official training loop saves it)."""
    model = official.OfficialViFiCLIP(reference, NAMES, tokenizer.tokenize, PROMPTS if prompted else None)
    return model, official.save_checkpoint(model, path)


def weights_of(model):
    """The official model's DDP state dict without its derived buffers, as numpy."""
    state = official.DistributedDataParallelKeys(model).state_dict()
    return {k: v.numpy() for k, v in state.items() if k[len("module."):] not in convert.VIFI_BUFFERS}


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
    model, path = official_checkpoint(reference, tmp_path / "vifi.pth", prompted)
    config, params = convert.read(path, clip_weights=tmp_path / "clip.pth")
    if prompted:
        assert (config["vision_prompts"], config["vision_prompt_depth"]) == (4, 3)
        assert (config["text_prompts"], config["text_prompt_depth"]) == (5, 2)
    np.testing.assert_array_equal(params["token_embedding"]["embedding"],
                                  reference.token_embedding.weight.detach().numpy())
    convert.write_pytorch(params, tmp_path / "back.pth", layout="vifi")
    back = {k: v.numpy() for k, v in torch.load(tmp_path / "back.pth", weights_only=True)["model"].items()}
    assert_states_equal(back, weights_of(model))


@pytest.mark.parametrize("prompted", [False, True])
def test_vifi_layout_loads_into_the_official_module_tree_with_only_derived_buffers_missing(openai_model, tmp_path,
                                                                                            prompted):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    source, path = official_checkpoint(reference, tmp_path / "vifi.pth", prompted)
    _, params = convert.read(path, clip_weights=tmp_path / "clip.pth")
    convert.write_pytorch(params, tmp_path / "ours.pth", layout="vifi")
    state = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]
    fresh = perturbed_reference(openai_model, seed=5)  # other weights, OpenAI's token embedding (never trained)
    fresh.token_embedding.load_state_dict(reference.token_embedding.state_dict())
    target = official.OfficialViFiCLIP(fresh, NAMES, tokenizer.tokenize, PROMPTS if prompted else None, seed=9)
    result = official.DistributedDataParallelKeys(target).load_state_dict(state, strict=False)
    buffers = ["module.prompt_learner.token_prefix", "module.prompt_learner.token_suffix"] if prompted else \
        ["module.prompt_learner.complete_text_embeddings"]
    assert sorted(result.missing_keys) == buffers and not result.unexpected_keys
    frames = np.random.default_rng(0).normal(size=(1, 2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(target(frames), source(frames))


def test_safetensors_source(openai_model, tmp_path):
    from safetensors.numpy import save_file
    state = state_dict_numpy(perturbed_reference(openai_model))
    save_file(state, str(tmp_path / "clip.safetensors"))
    _, params = convert.read(tmp_path / "clip.safetensors")
    assert_states_equal(convert.flat_to_openai(traverse_util.flatten_dict(params, sep="/")), state)


def test_missing_token_embedding_asks_for_clip_weights(openai_model, tmp_path):
    _, path = official_checkpoint(perturbed_reference(openai_model), tmp_path / "v.pth")
    with pytest.raises(convert.ConversionError, match="token_embedding.*--clip_weights.*clip_weights="):
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


def test_cli_converts_both_ways_and_reports_errors_in_one_line(openai_model, tmp_path, capsys):
    reference = perturbed_reference(openai_model)
    archive = write_openai_jit_archive(reference, openai_model, tmp_path / "clip.pt")
    assert convert_command.run([str(archive), str(tmp_path / "model")]) == 0
    assert convert_command.run([str(tmp_path / "model"), str(tmp_path / "out.pth"), "--layout", "openai"]) == 0
    written = capsys.readouterr().out.splitlines()
    total = sum(v.numel() for k, v in reference.state_dict().items())
    assert written == [f"wrote {tmp_path / 'model'}: {total:,} parameters",
                       f"wrote {tmp_path / 'out.pth'}: {total:,} parameters"]
    _, vifi_ckpt = official_checkpoint(reference, tmp_path / "v.pth")
    # --clip-weights: the earlier spelling of --clip_weights
    assert convert_command.run([str(vifi_ckpt), str(tmp_path / "v_dir"), "--clip-weights", str(archive)]) == 0
    with pytest.raises(SystemExit) as exit_code:
        convert_command.run([str(vifi_ckpt), str(tmp_path / "v_dir2")])
    err = capsys.readouterr().err
    assert exit_code.value.code == 1 and err.startswith("error: ") and "--clip_weights" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    config, params = convert.read(tmp_path / "v_dir")
    assert config["transformer_width"] == 128 and "token_embedding" in params


def test_prompted_model_cannot_be_written_in_openai_layout(openai_model, tmp_path):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    _, path = official_checkpoint(reference, tmp_path / "p.pth", prompted=True)
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
    served, url = fake_release(openai_model, tmp_path)
    monkeypatch.setitem(downloads.OPENAI_MODELS, "ViT-B/16", url)
    monkeypatch.setenv("VIFI_JAX_CACHE", str(tmp_path / "cache"))
    config, params = convert.read("openai:ViT-B/16")
    assert config == {**TINY, "vision_prompts": 0, "vision_prompt_depth": 0, "text_prompts": 0,
                      "text_prompt_depth": 0}
    assert os.path.isfile(tmp_path / "cache" / "openai" / "ViT-B-16.pt")
    served_state = torch.jit.load(str(served), map_location="cpu").state_dict()
    # fp32: the archive's fp16 tensors widen exactly
    ours = convert.flat_to_openai(traverse_util.flatten_dict(params, sep="/"))
    assert_states_equal(ours, {k: v.float().numpy() for k, v in served_state.items()
                               if k not in convert.OPENAI_BUFFERS})


def test_destinations_safetensors_and_overwrite(openai_model, tmp_path, capsys):
    reference = perturbed_reference(openai_model)
    torch.save(reference.state_dict(), tmp_path / "clip.pth")
    assert convert_command.run([str(tmp_path / "clip.pth"), str(tmp_path / "clip.safetensors")]) == 0
    assert os.path.isfile(tmp_path / "clip.safetensors")  # a file, not a directory named .safetensors
    _, params = convert.read(tmp_path / "clip.safetensors")
    flat = traverse_util.flatten_dict(params, sep="/")
    assert_states_equal(convert.flat_to_openai(flat), state_dict_numpy(reference))
    assert convert_command.run([str(tmp_path / "clip.pth"), str(tmp_path / "model")]) == 0
    with pytest.raises(SystemExit):
        convert_command.run([str(tmp_path / "clip.safetensors"), str(tmp_path / "model")])
    assert "pass --overwrite" in capsys.readouterr().err
    assert convert_command.run([str(tmp_path / "clip.safetensors"), str(tmp_path / "model"), "--overwrite"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["clip.pth", "clip.safetensors", "model"]  # no staging left behind
    with pytest.raises(SystemExit):
        convert_command.run([str(tmp_path / "clip.pth"), str(tmp_path / "clip.safetensors")])
    assert "exists; pass --overwrite" in capsys.readouterr().err


def tiny_state(openai_model, **changes):
    state = {k: v.clone() for k, v in perturbed_reference(openai_model).state_dict().items()}
    state.update(changes)
    return state


@pytest.mark.parametrize("key, value, expect", [
    ("visual.proj", float("nan"), r"non-finite values \(NaN or infinity\) in visual/proj"),
    ("transformer.resblocks.1.mlp.c_fc.bias", float("-inf"), "in transformer/resblocks_1/mlp/c_fc/bias"),
    ("logit_scale", float("inf"), "non-finite values .* in logit_scale"),
    ("logit_scale", 1e4, r"logit_scale is 10000, .* outside \[0, ln 200\]"),
    ("logit_scale", -3.0, r"logit_scale is -3, .*outside \[0, ln 200\]")])
def test_damaged_values_are_refused_at_load_naming_the_tensor(openai_model, tmp_path, key, value, expect):
    """From a PyTorch file and from a model directory alike: no NaN reaches a probability."""
    state = tiny_state(openai_model)
    with torch.no_grad():
        state[key].view(-1)[0] = value
    torch.save(state, tmp_path / "damaged.pth")
    with pytest.raises(convert.ConversionError, match=expect):
        convert.read(tmp_path / "damaged.pth")
    assert not os.path.exists(tmp_path / "model")
    config, params = convert.read(_saved(openai_model, tmp_path))
    flat = traverse_util.flatten_dict(params, sep="/")
    path = _path_of(key)
    flat[path] = np.array(flat[path])
    flat[path].reshape(-1)[0] = value
    from vifi_jax.weights import model_dir
    model_dir.save(tmp_path / "model", config, traverse_util.unflatten_dict(flat, sep="/"))
    with pytest.raises(convert.ConversionError, match=expect):
        convert.read(str(tmp_path / "model"))


def _saved(openai_model, tmp_path):
    torch.save(tiny_state(openai_model), tmp_path / "good.pth")
    return tmp_path / "good.pth"


def _path_of(key):
    flat, _ = convert.openai_to_flat({key: np.zeros((2, 2) if key.endswith("proj") else (2,), np.float32)})
    return next(iter(flat))


def test_integer_tensors_are_cast_where_exact_and_refused_naming_their_dtype(openai_model, tmp_path):
    """An int64 tensor used to be written into a model directory that then failed to load."""
    state = tiny_state(openai_model, logit_scale=torch.tensor(4, dtype=torch.int64))
    torch.save(state, tmp_path / "int.pth")
    assert convert_command.run([str(tmp_path / "int.pth"), str(tmp_path / "model")]) == 0
    _, params = convert.read(str(tmp_path / "model"))  # loads back
    assert params["logit_scale"].dtype == np.float32 and float(params["logit_scale"]) == 4.0
    state["positional_embedding"] = torch.full(state["positional_embedding"].shape, 2 ** 40, dtype=torch.int64)
    torch.save(state, tmp_path / "huge.pth")
    with pytest.raises(convert.ConversionError, match="positional_embedding is a int64 tensor with values beyond"):
        convert.read(tmp_path / "huge.pth")
    state["positional_embedding"] = state["positional_embedding"].to(torch.complex64)
    torch.save(state, tmp_path / "complex.pth")
    with pytest.raises(convert.ConversionError, match="positional_embedding is a complex64 tensor; CLIP parameters"):
        convert.read(tmp_path / "complex.pth")


def test_links_inside_a_model_directory_are_refused(openai_model, tmp_path):
    torch.save(tiny_state(openai_model), tmp_path / "clip.pth")
    for name in ("a", "b"):
        assert convert_command.run([str(tmp_path / "clip.pth"), str(tmp_path / name)]) == 0
    os.symlink(tmp_path / "a", tmp_path / "link_to_a")  # the directory itself may be a link
    convert.read(str(tmp_path / "link_to_a"))
    shutil.rmtree(tmp_path / "b" / "params")
    os.symlink(tmp_path / "a" / "params", tmp_path / "b" / "params")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'b' / 'params'} is a symbolic link \(to .*a/params\)"):
        convert.read(str(tmp_path / "b"))


def test_saving_a_model_replaces_only_a_vifi_jax_model(tmp_path):
    """Training's best/ and final/ export: a directory holding anything else is left as it is."""
    from conftest import TINY
    from vifi_jax import api
    from vifi_jax.weights import model_dir
    model = api.init("ViT-B/16", seed=0, **TINY)
    (tmp_path / "final" / "params").mkdir(parents=True)
    (tmp_path / "final" / "params" / "notes.txt").write_text("mine")
    with pytest.raises(model_dir.ModelDirError, match="exists and is not a vifi_jax model; it is left as it is"):
        model.save(str(tmp_path / "final"))
    assert (tmp_path / "final" / "params" / "notes.txt").read_text() == "mine"
    model.save(str(tmp_path / "best"))
    other = api.init("ViT-B/16", seed=1, **TINY)
    other.save(str(tmp_path / "best"))  # a model is replaced whole
    assert api.load(str(tmp_path / "best")).fingerprint == other.fingerprint
    assert sorted(os.listdir(tmp_path)) == ["best", "final"]  # no staging left


def test_a_killed_conversion_keeps_the_old_model_and_its_leftover_is_removed(openai_model, tmp_path):
    """SIGKILL after the new model is written but before it is swapped in: the old destination is whole;
    the next run removes the dead process's `<dst>.partial-<pid>`, says so, and finishes."""
    import subprocess
    import sys
    import textwrap
    torch.save(tiny_state(openai_model), tmp_path / "clip.pth")
    assert convert_command.run([str(tmp_path / "clip.pth"), str(tmp_path / "model")]) == 0
    old = convert.read(str(tmp_path / "model"))[1]
    state = tiny_state(openai_model)
    with torch.no_grad():
        state["logit_scale"].fill_(3.0)
    torch.save(state, tmp_path / "new.pth")
    script = textwrap.dedent(f"""
        import os, signal
        from vifi_jax import convert as command
        from vifi_jax.weights import model_dir
        write = model_dir.write
        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        model_dir.write = write_then_die
        command.run([{str(tmp_path / 'new.pth')!r}, {str(tmp_path / 'model')!r}, "--overwrite"])
        """)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    killed = subprocess.Popen([sys.executable, "-c", script], cwd=repo, stderr=subprocess.PIPE, text=True)
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -9, err[-2000:]
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith("model.partial-")]
    assert leftovers == [f"model.partial-{killed.pid}"]
    np.testing.assert_array_equal(convert.read(str(tmp_path / "model"))[1]["logit_scale"], old["logit_scale"])
    again = subprocess.run([sys.executable, "-m", "vifi_jax.convert", str(tmp_path / "new.pth"), str(tmp_path / "model"),
                            "--overwrite"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"removed {tmp_path / leftovers[0]}" in again.stderr, again.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["clip.pth", "model", "new.pth"]
    assert float(convert.read(str(tmp_path / "model"))[1]["logit_scale"]) == 3.0


def test_a_full_disk_during_convert_is_one_line_and_leaves_nothing(openai_model, tmp_path):
    """RLIMIT_FSIZE makes Orbax's writes fail as a full disk would (EFBIG instead of ENOSPC)."""
    import resource
    import signal
    import subprocess
    import sys

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # the token embedding alone is 25 MB

    torch.save(tiny_state(openai_model), tmp_path / "clip.pth")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "vifi_jax.convert", str(tmp_path / "clip.pth"), str(tmp_path / "model")],
                         cwd=repo, capture_output=True, text=True, timeout=300, preexec_fn=limited, env=env)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    assert "file-size limit" in lines[0] or "larger than allowed" in lines[0] or "File too large" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["clip.pth"]  # no half-written model, no staging
