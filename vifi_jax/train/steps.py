"""The jitted train steps: one optimiser update over `accumulation_steps` micro-batches (scanned, gradients
averaged). Classification applies flip/jitter/grayscale, normalisation and Mixup/CutMix on the device first;
retrieval scores each clip against every caption of the global micro-batch (`contrastive`)."""
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from data_pipelines import transforms
from vifi_jax.runtime import sharding
from vifi_jax.train import augment, contrastive, mixup
from vifi_jax.train.optim import global_norm, merge_params

def mixing_group_size(config):
    """Clips blended together by Mixup/CutMix: the official per-GPU batch, train.batch_size over
    train.reference_world_size (each official GPU blends its own clips)."""
    return config.train.batch_size // config.train.reference_world_size


def make_input_fn(config, num_classes, mesh=None):
    """(frames [B, 1, T, H, W, 3] uint8, labels [B], colour parameters or None, key) -> (normalised, blended
    frames [B, T, H, W, 3] float32, soft targets [B, C]): flip/jitter/grayscale when the loader left them to
    the step, normalisation, Mixup/CutMix within mixing groups (`mixing_group_size`).

    Every op is per clip or per group, so with a `mesh` whose devices each hold whole groups it runs under
    shard_map on each device's own shard: no device sees another's frames (a global permutation would move
    the whole batch between devices). Groups draw from fold_in(key, group index) either way, so the result
    is the same on any number of devices."""
    t = config.train
    group = mixing_group_size(config)
    shards = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]

    def local(frames, labels, color, rng, first_group):
        x = frames[:, 0]  # views axis is 1 in training
        if color is not None:
            x = augment.augment(x, color)
        x = transforms.normalize(x, config.data.normalize)
        if not t.mixup:
            return x, mixup.smooth_one_hot(labels, num_classes, t.label_smoothing)
        return mixup.blend_groups(rng, x, labels, num_classes, group, first_group, t.label_smoothing,
                                  t.mixup_alpha, t.cutmix_alpha, t.mixup_switch_prob)

    def inputs(frames, labels, color, rng):
        if shards == 1 or (frames.shape[0] // shards) % group:
            return local(frames, labels, color, rng, 0)
        batch = P(sharding.BATCH_AXES)

        def per_shard(rng, frames, labels, color=None):
            first = jax.lax.axis_index(sharding.BATCH_AXES) * (frames.shape[0] // group)
            return local(frames, labels, color, rng, first)

        args = (rng, frames, labels) + (() if color is None else (color,))
        specs = (P(), batch, batch) + (() if color is None else (jax.tree.map(lambda _: batch, color),))
        return sharding.shard_map(per_shard, mesh, specs, (batch, batch))(*args)

    return inputs


def make_train_step(module, optimizer, config, num_classes, mesh=None):
    """The classification step; its `text` is class token ids [C, L] (the text tower runs and trains) or fixed
    text features [C, D] (`ViFiCLIP.text_features`: image-only training computes them once). With the `mesh`
    the batch is split over, augmentation and blending stay on each device (`make_input_fn`)."""
    inputs = make_input_fn(config, num_classes, mesh)

    def loss_fn(params, frames, labels, color, text, rng):
        x, targets = inputs(frames, labels, color, rng)
        return mixup.soft_target_cross_entropy(module.apply({"params": params}, x, text), targets)

    return _accumulating_step(loss_fn, optimizer)


def make_retrieval_step(module, optimizer, config, mesh=None):
    """The retrieval step: its `labels` are each clip's caption token ids [B, L] and `text` is unused.
    Clips are normalised here (the loader crops them, no augmentation), and the loss is the symmetric InfoNCE
    of `contrastive.loss` over the global micro-batch: with a `mesh`, both sides' features are gathered from
    every device before they are compared (`contrastive.gather`)."""

    def loss_fn(params, frames, captions, color, text, rng):
        x = transforms.normalize(frames[:, 0], config.data.normalize)  # views axis is 1 in training
        video = module.apply({"params": params}, x, method=module.video_features)
        texts = module.apply({"params": params}, captions, method=module.text_features)
        video, texts = contrastive.gather(video, mesh), contrastive.gather(texts, mesh)
        return contrastive.loss(module.apply({"params": params}, video, texts, method=module.scores))

    return _accumulating_step(loss_fn, optimizer)


def _accumulating_step(loss_fn, optimizer):
    """One optimiser update from `loss_fn(params, frames, labels, colour, text, rng) -> loss` over the
    micro-batches of an update (scanned, gradients averaged)."""

    def grad_fn(trainable, frozen, *args):
        return jax.value_and_grad(lambda t: loss_fn(merge_params(t, frozen), *args))(trainable)

    def train_step(state, frames, labels, text, color=None):
        """frames [ACC, B, 1, T, H, W, 3] uint8, labels [ACC, B] (class indices, or caption token ids
        [ACC, B, L]), the loader's colour parameters (`transforms.COLOR_PARAMS`, leading axes [ACC, B]) when
        augmentation runs here, else None -> (new state, metrics): the mean loss and the global norms of the
        gradient, the trained parameters (after the update) and the update."""
        rng = jax.random.fold_in(state["rng"], state["step"])

        def micro(carry, micro_batch):
            grads_sum, loss_sum = carry
            index, x, y, c = micro_batch
            loss, grads = grad_fn(state["trainable"], state["frozen"], x, y, c, text, jax.random.fold_in(rng, index))
            return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss), None

        zeros = jax.tree.map(jnp.zeros_like, state["trainable"])
        steps = frames.shape[0]
        (grads, loss), _ = jax.lax.scan(micro, (zeros, 0.0), (jnp.arange(steps), frames, labels, color))
        grads = jax.tree.map(lambda g: g / steps, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
        trained = optax.apply_updates(state["trainable"], updates)
        new_state = dict(state, trainable=trained, opt_state=opt_state, step=state["step"] + 1)
        return new_state, {"loss": loss / steps, "grad_norm": global_norm(grads), "param_norm": global_norm(trained),
                           "update_norm": global_norm(updates)}

    return train_step


def jit_train_step(module, optimizer, config, num_classes, mesh, state):
    """The step of `config.task` (`make_train_step`, `make_retrieval_step`) jitted as training runs it: the
    state (arrays or ShapeDtypeStructs with their shardings) donated and kept in its shardings, the metrics
    replicated."""
    step = (make_retrieval_step(module, optimizer, config, mesh) if config.task == "retrieval"
            else make_train_step(module, optimizer, config, num_classes, mesh))
    return jax.jit(step, donate_argnums=(0,),
                   out_shardings=(jax.tree.map(lambda x: x.sharding, state), sharding.replicated(mesh)))


def update_shapes(config, mesh):
    """One update's inputs as the loop places them, as ShapeDtypeStructs: frames [ACC, B, 1, T, H, W, 3]
    uint8, labels [ACC, B] (retrieval: caption token ids [ACC, B, retrieval.max_words]) and (with
    data.augment_on="device") the colour parameters, split over the batch."""
    t, d = config.train, config.data
    lead = (t.accumulation_steps, t.batch_size)
    placed = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, 1))
    frames = placed(lead + (1, d.num_frames, d.input_size, d.input_size, 3), jnp.uint8)
    if config.task == "retrieval":
        return {"frames": frames, "label": placed(lead + (config.retrieval.max_words,), jnp.int32), "color": None}
    color = None
    if d.augment_on == "device":
        color = {k: placed(lead + jnp.shape(v), jnp.asarray(v).dtype)
                 for k, v in transforms.identity_color_params(d.num_frames).items()}
    return {"frames": frames, "label": placed(lead, jnp.int32), "color": color}
