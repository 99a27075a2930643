"""Model FLOPs for MFU: the analytic count against a hand count of ViT-B/16 and against XLA's count of the
compiled forward (on the CPU, where XLA counts every matmul), and the logged figure of a real training run
(accumulation multiplies it; XLA would count the scanned micro-batch once)."""
import json

import jax
import jax.numpy as jnp
import pytest

from conftest import TINY
from configs import zeroshot
from vifi_jax.models import flops
from vifi_jax.models import clip, vifi

B16 = clip.VARIANTS["ViT-B/16"]


def test_vit_b16_by_hand():
    """Multiply-adds of every layer of OpenAI's ViT-B/16 written out, x 2."""
    n, d, mlp = 197, 768, 3072
    conv1 = 196 * (16 * 16 * 3) * d
    block = n * d * 3 * d + n * n * d + n * n * d + n * d * d + n * d * mlp + n * mlp * d  # qkv, qk, av, out, mlp
    image = 2 * (conv1 + 12 * block + d * 512)
    assert flops.image_forward(B16) == image
    assert image == pytest.approx(35.13e9, rel=2e-3)  # open_clip's profile of ViT-B-16 (performance.md §1.1)
    w, length = 512, 16
    text_block = length * w * 3 * w + 2 * length * length * w + length * w * w + 2 * length * w * 4 * w
    assert flops.text_forward(B16, length) == 2 * (12 * text_block + w * 512)
    assert flops.text_forward(B16, 77) == pytest.approx(5.96e9, rel=5e-3)  # open_clip: text_gflops 5.96
    prompted = dict(B16, vision_prompts=10, vision_prompt_depth=12)
    assert flops.image_forward(prompted) > flops.image_forward(B16)  # 10 more tokens in every block


def test_the_count_matches_xlas_on_the_cpu():
    """XLA:CPU counts every dot of the compiled forward: the analytic count is its matmul part."""
    module = vifi.ViFiCLIP(**TINY)
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 1, 32, 32, 3)),
                            jnp.zeros((1, 16), jnp.int32))
    images = jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32)
    compiled = jax.jit(lambda p, x: module.apply(p, x, method="encode_image")).lower(params, images).compile()
    cost = compiled.cost_analysis()
    xla = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    analytic = 8 * flops.image_forward(TINY)
    assert analytic <= xla <= 1.15 * analytic, xla / analytic  # + softmax, LayerNorm, GELU: elementwise


def test_work_per_update_follows_accumulation_devices_and_mode():
    config = zeroshot.get_config("train")  # 32 clips x 32 frames, 8 micro-batches per update
    one = flops.train_step(B16, 32, 32, 400, 16)
    assert flops.per_update(B16, config, 400, 16, devices=1) == 8 * one
    assert flops.per_update(B16, config, 400, 16, devices=8) == one
    assert one == 3 * (32 * 32 * flops.image_forward(B16) + 400 * flops.text_forward(B16, 16)) + 3 * 2 * 32 * 400 * 512
    image_only = flops.train_step(B16, 32, 32, 400, 16, "image")
    assert image_only == 3 * 32 * 32 * flops.image_forward(B16) + 3 * 2 * 32 * 400 * 512  # text features fixed
    assert flops.train_step(B16, 32, 32, 400, 16, "text") < one < 1.5 * flops.train_step(B16, 32, 32, 400, 16,
                                                                                         "prompts")
    # Retrieval training: the batch's 128 captions of 32 tokens go through the (frozen, image-only) text tower.
    captions = flops.train_step(B16, 128, 12, 128, 32, "image", texts_in_step=True)
    assert captions == (3 * 128 * 12 * flops.image_forward(B16) + 128 * flops.text_forward(B16, 32)
                        + 3 * 2 * 128 * 128 * 512)


def test_a_training_run_logs_the_model_flops_of_every_micro_batch(one_device):
    """The smoke run (2 micro-batches of 8 clips x 4 frames per update): the logged work is both micro-batches'
    (XLA's count of the compiled step has the scanned micro-batch once), and TFLOP/s is that work over time."""
    workdir, _ = one_device
    results = json.load(open(workdir / "results.json"))
    cost, config = results["step_cost"], results["config"]
    assert cost["micro_batches"] == config["train"]["accumulation_steps"] == 2 and cost["devices"] == 1
    cfg = dict(B16, **config["model"]["fields"])
    micro = flops.train_step(cfg, config["train"]["batch_size"], config["data"]["num_frames"], cost["texts"],
                             cost["text_length"], cost["use"])
    assert cost["model_flops_per_update_per_device"] == 2 * micro
    assert cost["xla_flops_per_device"] < 1.5 * micro  # why XLA's figure is not used
    for window in results["speed"]:
        assert window["tflops_per_device"] == pytest.approx(
            window["updates"] * 2 * micro / window["seconds"] / 1e12, rel=1e-9)
