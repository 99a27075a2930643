"""Processes joined into one job, the device mesh, parameter sharding rules, global batches and copies
back to the host.

The mesh has axes ("data", "fsdp"). Batches are split over both. Parameters are replicated over
"data" and, with fsdp > 1, each array of at least `min_size` elements is split along its largest
dimension that the fsdp axis divides (a rule on shapes, so Adam's moments follow their parameters).
"""
import inspect

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def join_processes(coordinator_address=None, num_processes=None, process_id=None, heartbeat_timeout=100):
    """Form one job of several JAX processes (one per host): auto-detected on TPU pods, SLURM and Open MPI,
    or given explicitly. CPU processes talk through gloo, so several of them on one machine work too."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    options = {}
    if "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:  # jax >= 0.5
        options["heartbeat_timeout_seconds"] = heartbeat_timeout
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **options)


def make_mesh(data=-1, fsdp=1, devices=None):
    """A ("data", "fsdp") mesh by `jax.make_mesh` (which orders devices by the topology); data=-1 takes
    every device left after fsdp. Axes are Auto: arrays are placed by the NamedShardings of this module."""
    devices = list(devices if devices is not None else jax.devices())
    if data == -1:
        if len(devices) % fsdp:
            raise ValueError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices")
        data = len(devices) // fsdp
    if data * fsdp != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, there are {len(devices)}")
    options = {}
    axis_type = getattr(jax.sharding, "AxisType", None)  # jax >= 0.6; newer versions default to Explicit axes
    if axis_type is not None and "axis_types" in inspect.signature(jax.make_mesh).parameters:
        options["axis_types"] = (axis_type.Auto,) * 2
    return jax.make_mesh((data, fsdp), BATCH_AXES, devices=devices, **options)


def shard_map(f, mesh, in_specs, out_specs):
    """`f` on each device's shard of its arguments (jax.shard_map; jax.experimental's before jax 0.7)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as experimental_shard_map
    return experimental_shard_map(f, mesh, in_specs, out_specs, check_rep=False)


def param_spec(shape, fsdp_size, min_size=2 ** 14):
    if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(mesh, tree):
    """NamedShardings for every array (or ShapeDtypeStruct) in `tree` by the FSDP rule."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(np.shape(x), fsdp_size)), tree)


def batch_sharding(mesh, leading_axes=0):
    """Split the batch axis over every device; `leading_axes` unsplit axes come before it (the
    micro-batch axis of accumulated training batches)."""
    return NamedSharding(mesh, P(*[None] * leading_axes, BATCH_AXES))


def replicated(mesh):
    return NamedSharding(mesh, P())


def global_batch(mesh, local_batch, leading_axes=0):
    """Process-local numpy arrays -> global jax arrays split over the batch axes (see `batch_sharding`).
    Training and evaluation place their batches only through here."""
    sharding = batch_sharding(mesh, leading_axes)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def to_host(tree):
    """Full numpy copies of (possibly sharded, multi-host) arrays."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
