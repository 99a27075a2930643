"""The retrieval loss against an independent PyTorch computation of CLIP4Clip's, and its gradient on one
device against eight, where the negatives cross devices."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

from conftest import xla_flags_with_devices
from vifi_jax.train import contrastive


def clip4clip_loss(video, text, logit_scale):
    """CLIP4Clip's `CrossEn` on the text×video similarity and its transpose (modules/until_module.py,
    modeling.py), written here from its description in torch, in float64."""
    def cross_en(sim):
        return (-torch.diag(torch.log_softmax(sim, dim=-1))).mean()
    video = video / video.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    sim = logit_scale.exp() * text @ video.t()
    return (cross_en(sim) + cross_en(sim.t())) / 2


def test_loss_and_its_gradients_equal_clip4clips():
    rng = np.random.default_rng(0)
    video, text = rng.normal(size=(6, 16)), rng.normal(size=(6, 16))
    text[2] = video[2] + 0.1 * text[2]  # one easy pair, so the rows differ in difficulty
    scale = np.log(1 / 0.07)

    def ours(v, t, s):
        normalise = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
        return contrastive.loss(jnp.exp(s) * normalise(v) @ normalise(t).T)

    value, grads = jax.value_and_grad(ours, argnums=(0, 1, 2))(jnp.float32(video), jnp.float32(text), jnp.float32(scale))
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (video, text, scale)]
    expected = clip4clip_loss(*tensors)
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-6)
    for got, tensor in zip(grads, tensors):
        np.testing.assert_allclose(np.asarray(got), tensor.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert expected.item() > 0.1  # not a degenerate case where every caption already wins


ONE_AND_EIGHT = """
import json, re
import jax, jax.numpy as jnp, numpy as np, optax
from configs import retrieval
from vifi_jax import api
from vifi_jax.evaluators import retrieval as retrieval_eval
from vifi_jax.runtime import sharding
from vifi_jax.train import optim, steps

jax.config.update("jax_default_matmul_precision", "float32")
config = retrieval.get_config("train,smoke")
model = api.from_config(config.model, seed=0)[0]
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (1, 8, 1, 4, 32, 32, 3), dtype=np.uint8)
captions = retrieval_eval.free_text_ids(model.module, [f"clip number {i} of eight" for i in range(8)],
                                        config.retrieval.max_words)[None]
optimizer = optax.sgd(1.0)  # the update is the gradient itself
found = {"devices": jax.device_count()}
for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
    mesh = sharding.make_mesh(devices=devices)
    state = optim.init_state(model.params, "both", optimizer, 0, mesh)
    before = jax.device_get(state["trainable"])
    placed = sharding.global_batch(mesh, {"frames": frames, "label": captions}, leading_axes=1)
    step = jax.jit(steps.make_retrieval_step(model.module, optimizer, config, mesh))
    hlo = step.lower(state, placed["frames"], placed["label"], None).compile().as_text()
    after, metrics = step(state, placed["frames"], placed["label"], None)
    grads = jax.tree.map(lambda a, b: np.asarray(b) - np.asarray(a), jax.device_get(after["trainable"]), before)
    np.savez(f"{name}.npz", **{"/".join(str(k.key) for k in path): g
                              for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]})
    gathers = sorted(set(re.findall(r"= (\\w+\\[[0-9,]*\\])\\{[^}]*\\} all-gather(?:-start)?\\(", hlo)))
    found[name] = {"loss": float(metrics["loss"]), "all_gathers": gathers}
print(json.dumps(found))
"""


def test_one_device_and_eight_give_the_same_gradient_with_negatives_from_the_whole_batch(tmp_path):
    """Eight devices, one clip each: alone, each clip's loss would be 0 (a 1x1 softmax); gathered, every
    device scores the whole 8x8 matrix, and the gradient equals one device's up to reassociation. What is
    all-gathered are rows of per-clip features, never frames or parameters."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS=xla_flags_with_devices(8), JAX_PLATFORMS="cpu", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", ONE_AND_EIGHT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["devices"] == 8
    assert found["one"]["loss"] > 1.0  # ~ln 8 for a random model: every clip has 7 negatives
    np.testing.assert_allclose(found["eight"]["loss"], found["one"]["loss"], rtol=1e-5)
    # The features [8, 32], and for the projections' gradients the towers' last states [8, 64] and the text
    # tower's EOT positions [8, 2]: per-clip rows of the batch, never frames or parameters.
    assert found["one"]["all_gathers"] == [], found
    assert "f32[8,32]" in found["eight"]["all_gathers"], found
    assert set(found["eight"]["all_gathers"]) <= {"f32[8,32]", "f32[8,64]", "s32[8,2]"}, found
    one, eight = np.load(tmp_path / "one.npz"), np.load(tmp_path / "eight.npz")
    assert set(one) == set(eight) and len(one) > 20
    scale = max(float(np.max(np.abs(one[k]))) for k in one)
    for key in one:  # float reassociation of sums over devices, bounded against the largest gradient
        np.testing.assert_allclose(eight[key], one[key], rtol=0, atol=2e-5 * scale, err_msg=key)
    assert scale > 0
