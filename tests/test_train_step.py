"""What trains in each mode (counts from the official model), the frozen-text shortcut, augmentation in the step."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from conftest import relative_error, xla_flags_with_devices
from configs import zeroshot
from data_pipelines import datasets, pipeline, synthetic, transforms
from vifi_jax import api
from vifi_jax.runtime import sharding
from vifi_jax.train import optim, steps
from vifi_jax.models import clip, vifi


def parameter_shapes(**fields):
    module = vifi.ViFiCLIP(**clip.VARIANTS["ViT-B/16"], **fields)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 1, 224, 224, 3)),
                            jnp.zeros((1, 77), jnp.int32))["params"]
    return traverse_util.flatten_dict(shapes, sep="/")


def test_trainable_tensors_match_the_official_counts():
    flat = parameter_shapes()
    assert sum(optim.is_trainable(k, "both") for k in flat) == 301  # 288 block tensors + 13 others
    assert all(not optim.is_trainable(k, use) for k in flat if k.startswith("token_embedding") for use in optim.USES)
    assert all(k.startswith("visual/") for k in flat if optim.is_trainable(k, "image"))
    assert not optim.is_trainable("logit_scale", "image") and not optim.is_trainable("logit_scale", "text")
    for fields, count in ((dict(vision_prompts=16, vision_prompt_depth=9, text_prompts=16, text_prompt_depth=9),
                           184_320), (dict(vision_prompts=10, vision_prompt_depth=12, text_prompts=10,
                                           text_prompt_depth=12), 153_600)):
        flat = parameter_shapes(**fields)
        assert sum(int(np.prod(v.shape)) for k, v in flat.items() if optim.is_trainable(k, "prompts")) == count
    with pytest.raises(ValueError, match="train.use must be one of"):
        optim.is_trainable("logit_scale", "all")


def test_frozen_text_features_give_the_same_step_as_running_the_text_tower():
    config = zeroshot.get_config("train,use=image,smoke")
    model = api.from_config(config.model, seed=0)[0]
    names = ["archery", "bowling", "juggling balls"]
    ids = vifi.class_token_ids(names, "template")
    optimizer = optax.sgd(1.0)  # the update is the gradient itself (Adam's g/|g| would amplify rounding near 0)
    mesh = sharding.make_mesh()
    state = optim.init_state(model.params, "image", optimizer, 0, mesh)
    trainable = state["trainable"]
    frames = jax.random.randint(jax.random.PRNGKey(1), (1, 4, 1, 4, 32, 32, 3), 0, 256).astype(jnp.uint8)
    labels = jnp.array([[0, 1, 2, 1]])
    step = steps.make_train_step(model.module, optimizer, config, 3)
    fixed = step(state, frames, labels, model.encode_text(ids))  # what image-only training passes
    running = step(state, frames, labels, jnp.asarray(ids))  # the text tower runs (its gradient is unused)
    np.testing.assert_allclose(float(fixed[1]["loss"]), float(running[1]["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(fixed[1]["grad_norm"]), float(running[1]["grad_norm"]), rtol=1e-4)
    for a, b, before in zip(jax.tree.leaves(fixed[0]["trainable"]), jax.tree.leaves(running[0]["trainable"]),
                            jax.tree.leaves(trainable)):
        assert relative_error(a - before, b - before) <= 1e-4  # the same gradient up to reassociation


def test_the_step_reports_the_norms_of_gradient_parameters_and_update():
    config = zeroshot.get_config("train,smoke")
    model = api.from_config(config.model, seed=0)[0]
    optimizer = optax.sgd(0.5)  # the update is -0.5 × the gradient
    state = optim.init_state(model.params, "both", optimizer, 0, sharding.make_mesh())
    frames = jax.random.randint(jax.random.PRNGKey(2), (1, 4, 1, 4, 32, 32, 3), 0, 256).astype(jnp.uint8)
    ids = jnp.asarray(vifi.class_token_ids(["a", "b", "c"], "template"))
    before = state["trainable"]
    after, metrics = steps.make_train_step(model.module, optimizer, config, 3)(state, frames, jnp.array([[0, 1, 2, 1]]),
                                                                                ids)
    norm = lambda tree: float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree.leaves(tree))))
    update = jax.tree.map(lambda a, b: a - b, after["trainable"], before)
    assert float(metrics["update_norm"]) == pytest.approx(norm(update), rel=1e-4)
    assert float(metrics["grad_norm"]) == pytest.approx(2 * norm(update), rel=1e-4)
    assert float(metrics["param_norm"]) == pytest.approx(norm(after["trainable"]), rel=1e-5)


def test_augmenting_in_the_step_trains_as_host_augmentation(tmp_path):
    """The same loader draws, applied on the host or inside the step: the same loss and update (float bound)."""
    list_file, _ = synthetic.make_dataset(str(tmp_path), num_classes=3, videos_per_class=2, num_frames=8, height=40,
                                          width=52)
    source = datasets.VideoFileSource.from_list_file(list_file, str(tmp_path), 3)
    config = zeroshot.get_config("train,smoke")
    model = api.from_config(config.model, seed=0)[0]
    optimizer = optax.sgd(0.5)
    state = optim.init_state(model.params, "both", optimizer, 0, sharding.make_mesh())
    spec = pipeline.ClipSpec(num_frames=4, size=32, train=True, color_jitter_prob=1.0, grayscale_prob=0.5)
    elements = [(position, position % len(source)) for position in range(4)]
    host = [pipeline.LoadClip(source, spec, seed=3).map(e) for e in elements]
    device = [pipeline.LoadClip(source, dataclasses.replace(spec, augment_on="device"), seed=3).map(e)
              for e in elements]
    labels = jnp.asarray([[e["label"] for e in host]])
    ids = jnp.asarray(vifi.class_token_ids(["a", "b", "c"], "template"))
    step = jax.jit(steps.make_train_step(model.module, optimizer, config, 3))
    reference = step(state, np.stack([e["frames"] for e in host])[None], labels, ids)
    color = {k: np.stack([e[k] for e in device])[None] for k in transforms.COLOR_PARAMS}
    moved = step(state, np.stack([e["frames"] for e in device])[None], labels, ids, color)
    assert not np.array_equal(np.stack([e["frames"] for e in host]), np.stack([e["frames"] for e in device]))
    np.testing.assert_allclose(float(moved[1]["loss"]), float(reference[1]["loss"]), rtol=1e-4)
    np.testing.assert_allclose(float(moved[1]["update_norm"]), float(reference[1]["update_norm"]), rtol=1e-3)


SHARDED_STEP = """
import json, re
import jax, jax.numpy as jnp, numpy as np, optax
from configs import zeroshot
from data_pipelines import transforms
from vifi_jax import api
from vifi_jax.runtime import sharding
from vifi_jax.train import optim, steps
from vifi_jax.models import vifi

config = zeroshot.get_config("train,smoke")
config.train.batch_size, config.train.reference_world_size = 8, 4  # mixing groups of 2: two per device
mesh = sharding.make_mesh()
model = api.from_config(config.model, seed=0)[0]
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (1, 8, 1, 4, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 3, (1, 8)).astype(np.int32)
drawn = [transforms.draw_color_params(4, rng, 1.0, 0.5, 0.5) for _ in range(8)]
color = {k: np.stack([d[k] for d in drawn])[None] for k in transforms.COLOR_PARAMS}
key = jax.random.PRNGKey(3)
placed = sharding.global_batch(mesh, {"frames": frames, "label": labels, "color": color}, leading_axes=1)
first = lambda tree: jax.tree.map(lambda x: x[0], tree)
on_devices = jax.jit(steps.make_input_fn(config, 3, mesh))(*first((placed["frames"], placed["label"], placed["color"])),
                                                          key)
whole = steps.make_input_fn(config, 3)(frames[0], labels[0], first(color), key)
optimizer = optax.sgd(0.1)
state = optim.init_state(model.params, "both", optimizer, 0, mesh)
ids = jnp.asarray(vifi.class_token_ids(["a", "b", "c"], "template"))
step = jax.jit(steps.make_train_step(model.module, optimizer, config, 3, mesh))
hlo = step.lower(state, placed["frames"], placed["label"], ids, placed["color"]).compile().as_text()
kinds = re.findall(r"\\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\\(", hlo)
print(json.dumps({"devices": jax.device_count(), "collectives": sorted(set(kinds)),
                  "difference": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                    for a, b in zip(on_devices, whole))}))
"""


def test_augmentation_and_blending_stay_on_each_device():
    """Four devices, two mixing groups each: the compiled step's only collective is the gradient's
    all-reduce (a global permutation all-gathered the batch), and the per-device inputs equal the whole
    batch's, so results do not depend on the device count."""
    env = dict(os.environ, XLA_FLAGS=xla_flags_with_devices(4), JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", SHARDED_STEP], cwd=root, env=dict(env, PYTHONPATH=root),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["devices"] == 4 and found["collectives"] == ["all-reduce"], found
    assert found["difference"] <= 1e-5, found
