"""Ahead-of-time compiles for TPU slices from this CPU machine (libtpu from requirements-aot.txt): the real
train and evaluation steps of a config, judged per device (vifi_jax.aot, train/ahead_of_time.py,
runtime/targets.py, runtime/compiled.py). The full-size recipes compile in benchmarks/aot_table.py."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import zeroshot
from vifi_jax.runtime import compiled, targets
from vifi_jax.train import ahead_of_time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def the_tools_matmul_precision():
    """Compile as `vifi_jax.aot` does, at JAX's default matmul precision: conftest's float32 (for parity
    tests) makes each TPU fp32 matmul six bf16 passes and the compile 2.5x longer."""
    with jax.default_matmul_precision(None):
        yield


GROUPS_ON_EACH_DEVICE = ["--config.train.batch_size=16", "--config.train.reference_world_size=4"]  # 4 clips a group


def light_config(**changes):
    """The smoke train config with each device holding whole mixing groups; host augmentation and no mixup
    keep the compile short where the test is about memory and sharding, not the input path."""
    config = zeroshot.get_config("train,smoke")
    config.train.batch_size, config.train.reference_world_size = 16, 4
    config.data.augment_on, config.train.mixup = "host", False
    for path, value in changes.items():
        block, field = path.split(".")
        config[block][field] = value
    return config


def test_the_cli_compiles_the_real_steps_for_a_v5e_slice_and_says_what_they_hold(tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "vifi_jax.aot", "--config=zeroshot:train,smoke", "--target=v5e:2x2",
                             "--json", f"--out={out}", *GROUPS_ON_EACH_DEVICE], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # one JSON object on stdout
    assert report == json.loads(out.read_text())
    assert (report["target"], report["devices"], report["hosts"], report["device_kind"]) == ("v5e:2x2", 4, 1,
                                                                                             "TPU v5 lite")
    assert report["hbm_bytes"] == 16 * 2 ** 30 and report["limit_bytes"] == report["hbm_bytes"]
    for name in ("train", "eval"):
        program = report["programs"][name]
        m = program["memory"]
        assert program["peak_bytes"] == m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"] - m["alias_bytes"] > 0
        assert program["fits"] == (program["peak_bytes"] <= report["limit_bytes"])
    train = report["programs"]["train"]
    assert train["mesh"] == {"data": 4, "fsdp": 1} and train["accumulation_steps"] == 2
    assert report["fits"] and report["peak_bytes"] == max(p["peak_bytes"] for p in report["programs"].values())
    assert m["alias_bytes"] == 0 and train["memory"]["alias_bytes"] > 0.9 * train["state_bytes"]  # the state donated
    # Data parallel, augmentation and blending per device: no all-gather anywhere (no frames or parameters
    # move). In the micro-batch loop one all-reduce: the gradient of the replicated text features [400, 32]
    # (+ the loss); after it, the image tower's gradients once per update.
    assert set(report["collectives"]) == {"all-reduce (in loop)", "all-reduce"}, report["collectives"]
    assert report["collectives"]["all-reduce (in loop)"]["count"] == 1
    assert 400 * 32 * 4 <= report["collectives"]["all-reduce (in loop)"]["bytes"] <= 400 * 32 * 4 + 64
    assert report["collectives"]["all-reduce"]["bytes"] < train["state_bytes"] / 3  # gradients, not the state
    # FLOPs: XLA's count covers every micro-batch; tiny models are dominated by what the analytic count leaves
    # out (normalisation, augmentation, softmax), so only the order is checked here.
    assert report["flops"]["analytic"] > 0 and report["flops"]["xla"] >= report["flops"]["analytic"]
    estimate = train["time"]
    assert estimate["estimate_s"] is None or estimate["estimate_s"] >= estimate["compute_bound_s"]
    assert "fits" in report["verdict"] and "NOT" not in report["verdict"]


def test_fsdp_on_a_multi_host_topology_splits_the_state_over_its_devices():
    target = targets.resolve("v5e:4x4")
    assert len(target.devices) == 16 and target.hosts == 4
    assert targets.resolve("v5e:2x4").hosts == 1  # v5litepod-8: one host of 8 chips
    report = ahead_of_time.report(light_config(**{"mesh.fsdp": 4, "train.use": "image"}), target, "fsdp",
                                  programs=("train",))
    train = report["programs"]["train"]
    assert train["mesh"] == {"data": 4, "fsdp": 4}
    # per device about a quarter: arrays under sharding's min_size stay whole on every device
    assert train["state_bytes"] / 4 < train["state_bytes_per_device"] < train["state_bytes"] / 4 * 1.35
    # the compiler holds that split too: its per-device arguments are the state's shards, not the state
    assert train["state_bytes_per_device"] <= train["memory"]["argument_bytes"] < train["state_bytes"] / 2
    assert any(kind.startswith("all-gather (in loop)") for kind in report["collectives"])  # parameters gathered


def test_a_step_that_does_not_fit_is_compiled_with_each_lever_and_the_cheapest_that_fits_is_named():
    # levers left: fsdp, micro-batch. The image tower alone (the CLI test compiles both): a quarter of the
    # compile; 64 clips, so that activations, not the accumulators, decide the peak of this tiny model.
    config = light_config(**{"model.dtype": "bfloat16", "model.remat": True, "train.use": "image",
                             "train.batch_size": 64})
    target = targets.resolve("v5e:2x2")
    base = ahead_of_time.report(config, target, "base", programs=("train",), try_levers=False)
    peak = base["programs"]["train"]["peak_bytes"]
    report = ahead_of_time.report(config, target, "tight", memory_limit_gib=peak * 0.97 / 2 ** 30,
                                  programs=("train",))
    assert not report["fits"] and report["programs"]["train"]["peak_bytes"] == peak
    levers = {lever["lever"]: lever for lever in report["levers"]}
    assert set(levers) == {"fsdp", "micro_batch"}
    assert levers["micro_batch"]["flags"] == ("--config.train.batch_size=32 --config.train.accumulation_steps=4 "
                                              "--config.train.reference_world_size=2")
    for lever in levers.values():
        assert lever["fits"] == (lever["peak_bytes"] <= report["limit_bytes"])
    assert levers["micro_batch"]["peak_bytes"] < peak  # half the activations
    best = report["cheapest_fit"]
    assert best is not None and best["fits"] and best["flags"] in report["verdict"], report["verdict"]


def test_running_out_of_hbm_is_read_from_the_tpu_compilers_own_error():
    target = targets.resolve("v5e:2x2")
    mesh = jax.make_mesh((4,), ("x",), devices=target.devices)
    too_big = jax.ShapeDtypeStruct((5, 2 ** 30), jnp.float32, sharding=NamedSharding(mesh, P()))  # 20 GiB a chip
    result = ahead_of_time.describe(jax.jit(lambda x: x * 2 + 1), (too_big,), 1.0, target, target.usable_bytes)
    assert result["fits"] is False and result["memory"] is None
    assert result["peak_bytes"] > 16 * 2 ** 30 and "15.75 GiB the compiler allows" in result["compiler_says"]
    assert compiled.out_of_memory_bytes(ValueError("something else")) is None


def test_collectives_are_found_in_loops_and_the_computations_they_call():
    hlo = "\n".join([
        "%body.1 (p: f32[4]) -> f32[4] {",
        "  %ar = f32[4]{0} all-reduce(f32[4]{0} %p), to_apply=%add",
        "  %f = f32[8]{0} fusion(%p), kind=kLoop, calls=%inner.2",
        "}",
        "%inner.2 (q: f32[4]) -> f32[8] {",
        "  %ag = f32[8]{0} all-gather(f32[4]{0} %q), dimensions={0}",
        "}",
        "ENTRY %main (a: bf16[2,3]) -> f32[4] {",
        "  %w = f32[4]{0} while(%a), condition=%cond.3, body=%body.1",
        "  %rs = (bf16[2,3]{1,0}, f32[]) reduce-scatter(%a, %b), dimensions={0}",
        "}"])
    found = compiled.collectives(hlo)
    assert found == [{"kind": "all-reduce", "bytes": 16, "in_loop": True},
                     {"kind": "all-gather", "bytes": 32, "in_loop": True},
                     {"kind": "reduce-scatter", "bytes": 16, "in_loop": False}]
    assert compiled.collectives_summary(found)["all-gather (in loop)"] == {"count": 1, "bytes": 32}


@pytest.mark.parametrize("arguments, message", [
    (["--config=zeroshot:train,smoke", "--target=v9z:2x2"], "--target=v9z:2x2: not a known target"),
    (["--config=zeroshot:train,smoke"], "--target is required")])
def test_a_wrong_target_is_one_line(arguments, message):
    result = subprocess.run([sys.executable, "-m", "vifi_jax.aot", *arguments], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and message in lines[-1] and "Traceback" not in result.stderr, result.stderr


def test_a_report_never_replaces_a_file_it_did_not_write(tmp_path):
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    result = subprocess.run([sys.executable, "-m", "vifi_jax.aot", "--config=zeroshot:train,smoke", "--target=v5e:2x2",
                             f"--out={mine}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "is not an aot report" in result.stderr
    assert mine.read_text() == '{"my": "notes"}'


def test_bytes_per_device_follow_the_shardings():
    target = targets.resolve("v5e:2x2")
    mesh = jax.make_mesh((2, 2), ("data", "fsdp"), devices=target.devices)
    split = jax.ShapeDtypeStruct((8, 6), np.float32, sharding=NamedSharding(mesh, P("fsdp")))
    whole = jax.ShapeDtypeStruct((3,), np.int32, sharding=NamedSharding(mesh, P()))
    assert ahead_of_time.bytes_total([split, whole]) == 8 * 6 * 4 + 12
    assert ahead_of_time.bytes_per_device([split, whole]) == 4 * 6 * 4 + 12


def test_main_names_the_fit_of_a_shipped_recipe_on_the_accelerator_it_runs_on(tmp_path, monkeypatch):
    from vifi_jax.runtime import hardware
    table = {"zeroshot:train": {"8 x TPU v5 lite": {"target": "v5e:2x4", "fits": True, "peak_gib": 14.9,
                                                     "limit_gib": 16.0, "lever": None},
                                "4 x TPU v4": {"target": "v4:2x2x1", "fits": False, "peak_gib": 40.1,
                                               "limit_gib": 32.0, "lever": "--config.model.remat=True"}}}
    (tmp_path / "fit.json").write_text(json.dumps(table))
    monkeypatch.setattr(hardware, "FIT_TABLE", str(tmp_path / "fit.json"))
    from vifi_jax.cli import experiment
    assert experiment.recipe_name(os.path.join(experiment.CONFIGS_DIR, "zeroshot.py:train")) == "zeroshot:train"
    assert experiment.recipe_name("zeroshot:train") == "zeroshot:train"
    assert experiment.recipe_name("/somewhere/else/zeroshot.py:train") is None  # a user's own file: no advice
    assert hardware.fit_advice(None, "TPU v5 lite", 8) is None
    fits = hardware.fit_advice("zeroshot:train", "TPU v5 lite", 8)
    assert fits.startswith("this recipe fits 8 x TPU v5 lite (v5e:2x4") and "14.9 of 16.0 GiB" in fits
    lever = hardware.fit_advice("zeroshot:train", "TPU v4", 4)
    assert "does not fit" in lever and lever.endswith("--config.model.remat=True")
    assert hardware.fit_advice("zeroshot:train", "cpu", 1) is None
    assert hardware.fit_advice("zeroshot", "TPU v5 lite", 8) is None  # the evaluation job
