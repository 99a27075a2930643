"""The train state and its optimiser: which parameters each fine-tuning mode trains, AdamW with the official
schedule, and the state {"trainable", "frozen", "opt_state", "step", "rng"} built straight into its FSDP
shardings (or only described, for compiling ahead of time)."""
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from vifi_jax.models import clip
from vifi_jax.runtime import sharding
from vifi_jax.runtime.config_checks import USES
from vifi_jax.train import schedule

TEXT_PREFIXES = ("transformer/", "positional_embedding", "ln_final/", "text_projection")


def is_trainable(path, use):
    """Which parameters a fine-tuning mode trains (official `returnCLIP`; token embeddings never)."""
    if use not in USES:
        raise ValueError(f"train.use must be one of {USES}, got {use!r}")
    if path.startswith("token_embedding/"):
        return False
    if use == "prompts":
        return clip.is_prompt(path)
    if clip.is_prompt(path):
        return False  # prompts exist only in prompting runs
    if use == "image":
        return path.startswith("visual/")
    if use == "text":
        return path.startswith(TEXT_PREFIXES)
    return True


def split_params(params, use):
    flat = traverse_util.flatten_dict(params, sep="/")
    trainable = {k: v for k, v in flat.items() if is_trainable(k, use)}
    if not trainable:
        raise ValueError(f"train.use={use!r} leaves nothing to train (prompting needs model.*_prompts > 0)")
    frozen = {k: v for k, v in flat.items() if k not in trainable}
    return traverse_util.unflatten_dict(trainable, sep="/"), traverse_util.unflatten_dict(frozen, sep="/")


def merge_params(trainable, frozen):
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen, sep="/"),
                                         **traverse_util.flatten_dict(trainable, sep="/")}, sep="/")


def make_optimizer(config, iterations_per_epoch):
    t = config.train
    lr = schedule.make(t.lr, t.epochs, t.warmup_epochs, iterations_per_epoch, t.accumulation_steps, t.min_lr_ratio)
    return optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay), lr


def _state_builder(use, optimizer, seed):
    def build(trainable, frozen):
        return {"trainable": trainable, "frozen": frozen, "opt_state": optimizer.init(trainable),
                "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(jax.random.PRNGKey(seed))}
    return build


def state_shapes(params, use, optimizer, seed, mesh):
    """What `init_state` builds, as ShapeDtypeStructs carrying their FSDP shardings, without building it:
    `params` may be arrays or ShapeDtypeStructs, the mesh's devices abstract (a TPU topology compiled for
    from a CPU host)."""
    shapes = jax.eval_shape(_state_builder(use, optimizer, seed), *split_params(params, use))
    return jax.tree.map(lambda s, placed: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placed), shapes,
                        sharding.tree_shardings(mesh, shapes))


def init_state(params, use, optimizer, seed, mesh, donate=False):
    """The train state {"trainable", "frozen", "opt_state", "step", "rng"}, built under jit straight into its
    FSDP shardings (`state_shapes`), so the optimiser state is never made unsharded. `donate`: the state takes
    over the buffers of `params` (placed in the same shardings), which are then unusable."""
    shardings = jax.tree.map(lambda s: s.sharding, state_shapes(params, use, optimizer, seed, mesh))
    build = jax.jit(_state_builder(use, optimizer, seed), out_shardings=shardings,
                    donate_argnums=(0, 1) if donate else ())
    return build(*split_params(params, use))


def global_norm(tree):
    """sqrt of the sum of squares of every element (optax renames its own between versions)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))
