"""The Flax towers against OpenAI's reference `clip/model.py` (fp32, random perturbed weights)."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import traverse_util

from conftest import perturbed_reference, relative_error, state_dict_numpy
from vifi_jax import tokenizer
from vifi_jax.weights import convert
from vifi_jax.models import clip

TEXTS = ["a photo of a ApplyEyeMakeup.", "a photo of a brush hair.",
         "Pretending to put something on a surface", "a", "x " * 40]


def flax_model_and_params(reference, **fields):
    state = state_dict_numpy(reference)
    config = convert.infer_config(state)
    flat, unexpected = convert.openai_to_flat(state)
    assert not unexpected
    return clip.CLIP(**config, **fields), traverse_util.unflatten_dict(flat, sep="/")


def reference_features(reference, images_nhwc, ids):
    with torch.no_grad():
        images = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)
        image = reference.encode_image(images).numpy()
        text = reference.encode_text(torch.from_numpy(ids).long()).numpy()
        logits, _ = reference(images, torch.from_numpy(ids).long())
    return image, text, logits.numpy()


def check_parity(reference, images, ids, tol=1e-5):
    model, params = flax_model_and_params(reference)
    want_image, want_text, want_logits = reference_features(reference, images, ids)
    image = model.apply({"params": params}, images, method="encode_image")
    text = model.apply({"params": params}, ids, method="encode_text")
    logits, _ = model.apply({"params": params}, images, ids)
    assert relative_error(image, want_image) <= tol
    assert relative_error(text, want_text) <= tol
    assert relative_error(logits, want_logits) <= tol


def test_tiny_towers_match_openai(openai_model):
    reference = perturbed_reference(openai_model)
    images = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    check_parity(reference, images, tokenizer.tokenize(TEXTS))


def test_full_size_vit_b16_matches_openai(openai_model):
    reference = perturbed_reference(openai_model, seed=1, **clip.VARIANTS["ViT-B/16"])
    images = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
    check_parity(reference, images, tokenizer.tokenize(TEXTS[:3]))


def test_truncated_text_tower_gives_the_same_features(openai_model):
    """The same arithmetic on fewer columns: equal up to float reassociation, not bit for bit.

    Fewer tokens change how XLA:CPU blocks its matmuls (the rows of every dense layer) and the key-axis
    sums of the attention; both reorder fp32 additions. On the 2-core CI machine that moved features by up
    to 3e-6 absolute; the bound is the parity bound used against OpenAI's code.
    """
    model, params = flax_model_and_params(perturbed_reference(openai_model))
    ids = tokenizer.tokenize(TEXTS[:3])
    short = tokenizer.truncate(ids)
    assert short.shape[1] == 16 < ids.shape[1]
    full = model.apply({"params": params}, ids, method="encode_text")
    cut = model.apply({"params": params}, short, method="encode_text")
    assert relative_error(cut, full) <= 1e-5


def test_truncate_picks_the_smallest_bucket_holding_every_eot():
    ids = tokenizer.tokenize(["a photo of a dog.", "x " * 30])
    eot = int(np.argmax(ids, axis=1).max())
    short = tokenizer.truncate(ids)
    assert eot == 31 and short.shape[1] == 32
    assert (np.argmax(short, axis=1) == np.argmax(ids, axis=1)).all()
    assert tokenizer.truncate(tokenizer.tokenize("x " * 74)).shape[1] == 77


def test_bf16_compute_stays_close_and_params_stay_fp32(openai_model):
    reference = perturbed_reference(openai_model)
    model32, params = flax_model_and_params(reference)
    model16, _ = flax_model_and_params(reference, dtype=jnp.bfloat16)
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    want = model32.apply({"params": params}, images, method="encode_image")
    got = model16.apply({"params": params}, images, method="encode_image")
    assert got.dtype == jnp.bfloat16
    assert relative_error(got.astype(jnp.float32), want) < 0.05
    init = model16.init(jax.random.PRNGKey(0), images, tokenizer.tokenize(["a"]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(init))


def test_remat_changes_nothing_numerically(openai_model):
    reference = perturbed_reference(openai_model)
    model, params = flax_model_and_params(reference)
    remat, _ = flax_model_and_params(reference, remat=True)
    images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)

    def loss(m):
        return jax.grad(lambda p: m.apply({"params": p}, images, method="encode_image").sum())(params)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), loss(model), loss(remat))


def test_param_paths_mirror_openai_keys(openai_model):
    reference = perturbed_reference(openai_model)
    model, params = flax_model_and_params(reference)
    init = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32), tokenizer.tokenize(["a"]))
    init_flat = traverse_util.flatten_dict(init["params"], sep="/")
    assert set(init_flat) == set(traverse_util.flatten_dict(params, sep="/"))
    assert "visual/transformer/resblocks_2/mlp/c_fc/kernel" in init_flat
    assert "transformer/resblocks_0/attn/in_proj/kernel" in init_flat
    assert len(init_flat) == len(reference.state_dict())
    blocks = {k.split("/")[2] for k in init_flat if k.startswith("visual/transformer/resblocks_")}
    assert len(blocks) == len(reference.visual.transformer.resblocks) == 3  # resblocks_2 above is the last one


def test_layer_norm_matches_flax_values_and_gradients():
    import flax.linen as nn
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 64)) * 3 + 1
    params = {"scale": jax.random.normal(jax.random.PRNGKey(1), (64,)), "bias": jnp.arange(64.0) / 64}
    ours = clip.layer_norm()
    reference = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)
    weights = jax.random.normal(jax.random.PRNGKey(2), x.shape)

    def loss(module, p, x):
        return jnp.sum(jnp.sin(module.apply({"params": p}, x)) * weights)

    np.testing.assert_allclose(ours.apply({"params": params}, x), reference.apply({"params": params}, x),
                               rtol=1e-6, atol=1e-6)
    got = jax.grad(loss, argnums=(1, 2))(ours, params, x)
    want = jax.grad(loss, argnums=(1, 2))(reference, params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
