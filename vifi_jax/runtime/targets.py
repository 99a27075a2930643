"""Accelerators to compile for from any host: TPU slices by topology name and 8-GPU systems by XLA's target
specs, as abstract devices (`jax.experimental.topologies`), with the datasheet figures a verdict needs.

TPU: `v4:2x2x1`, `v5e:2x2`, `v5e:2x4`, `v5p:2x2x1`, `v6e:2x4`, `v5e:4x4` (4 hosts), ... need libtpu
(`requirements-aot.txt`). v4 and v5p run one JAX device per chip (megacore), as on the real slice.
GPU: `h100x8`, `a100x8` from XLA's target specs (`vifi_jax/assets/gpu_specs/`), `h200x8` as H100 with the
H200's memory size and bandwidth (an approximation: same GH100 compute, so same kernels); they need the CUDA
plugin and ptxas (`requirements-aot-gpu.txt`, installed with --no-deps), and JAX's GPU compiler then gives
memory but no cost analysis.
"""
import dataclasses
import os
import re

import numpy as np

GIB = 2 ** 30
GB = 10 ** 9

# generation: (device kind as on the real chip, HBM bytes per chip, HBM bytes/s, peak dense bf16 TFLOP/s,
# megacore); sources in ../shared/reference/performance.md section 5.1 (Google Cloud's TPU pages).
TPUS = {"v4": ("TPU v4", 32 * GIB, 1200 * GB, 275.0, True),
        "v5e": ("TPU v5 lite", 16 * GIB, 819 * GB, 197.0, False),
        "v5p": ("TPU v5", 95 * GIB, 2765 * GB, 459.0, True),
        "v6e": ("TPU v6 lite", 32 * GIB, 1638 * GB, 918.0, False)}
# name: (spec file in assets/gpu_specs, device kind, GPUs, HBM bytes per GPU, HBM bytes/s, peak bf16 TFLOP/s, note)
GPUS = {"h100x8": ("h100_sxm.txtpb", "NVIDIA H100 80GB HBM3", 8, 80 * GIB, 3350 * GB, 989.4, None),
        "a100x8": ("a100_sxm_80.txtpb", "NVIDIA A100-SXM4-80GB", 8, 80 * GIB, 2039 * GB, 312.0, None),
        "h200x8": ("h100_sxm.txtpb", "NVIDIA H200", 8, 140 * GIB, 4800 * GB, 989.0,
                   "H200 approximated as an H100 (same GH100 compute) with the H200's 141 GB (140 GiB) and 4.8 TB/s")}
GPU_SPECS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "gpu_specs")
# Share of a GPU's memory JAX's allocator takes by default (XLA_PYTHON_CLIENT_MEM_FRACTION overrides it).
GPU_MEMORY_FRACTION = 0.75


class TargetError(ValueError):
    """A target name that is not known, or a backend for it that is not installed."""


@dataclasses.dataclass
class Target:
    name: str
    platform: str          # "tpu" or "gpu"
    device_kind: str
    devices: list          # abstract devices, in the topology's order
    hosts: int
    hbm_bytes: int         # per device
    usable_bytes: int      # what a program may use per device (GPU: the allocator's share)
    hbm_bandwidth: float   # bytes/s per device
    peak_tflops: float     # dense bf16 per device
    note: str | None = None

    def summary(self):
        return {"target": self.name, "platform": self.platform, "device_kind": self.device_kind,
                "devices": len(self.devices), "hosts": self.hosts, "hbm_bytes": self.hbm_bytes,
                "usable_bytes": self.usable_bytes, "hbm_bandwidth": self.hbm_bandwidth,
                "peak_tflops": self.peak_tflops, "note": self.note}


def names():
    return [f"{g}:<topology>" for g in TPUS] + list(GPUS)


def resolve(name):
    """The Target called `name` (see the module docstring)."""
    if name in GPUS:
        return _gpu(name)
    generation, colon, topology = name.partition(":")
    if generation in TPUS and colon and re.fullmatch(r"\d+(x\d+){1,2}", topology):
        return _tpu(name, generation)
    raise TargetError(f"--target={name}: not a known target; give a TPU topology such as v5e:2x4, v4:2x2x1, "
                      f"v5p:4x4x4 or v6e:2x4 (generations {', '.join(TPUS)}), or one of {', '.join(GPUS)}")


def _tpu(name, generation):
    from jax.experimental import topologies
    kind, hbm, bandwidth, peak, megacore = TPUS[generation]
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # else libtpu logs an error about the host
    # libtpu lets one process hold it, for the chips; compiling for absent chips may run in several at once
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    options = {"chip_config_name": "megacore"} if megacore else {}
    chips = int(np.prod([int(n) for n in name.partition(":")[2].split("x")]))
    if generation in ("v5e", "v6e") and chips == 8:
        options["chips_per_host_bounds"] = (2, 4, 1)  # v5litepod-8 and v6e-8 are one host; larger slices 4 a host
    try:
        devices = topologies.get_topology_desc(topology_name=name, platform="tpu", **options).devices
    except RuntimeError as error:
        if "not installed" in str(error):
            raise TargetError(f"--target={name} needs libtpu: pip install -r requirements-aot.txt") from None
        raise TargetError(f"--target={name}: libtpu could not make this topology ({' '.join(str(error).split())[:200]})"
                          ) from None
    hosts = len({d.process_index for d in devices})
    return Target(name, "tpu", devices[0].device_kind or kind, list(devices), hosts, hbm, hbm, bandwidth, peak)


def gpu_spec(name):
    """XLA's GPU target spec for `name` as text (GpuTargetConfigProto)."""
    with open(os.path.join(GPU_SPECS, GPUS[name][0])) as f:
        return f.read()


def _gpu(name):
    from jax.experimental import topologies
    _, kind, count, hbm, bandwidth, peak, note = GPUS[name]
    _without_local_cudnn()
    try:
        # topology is "<partitions>x<hosts>x<devices per host>"; the positional topology_name is ignored for GPUs
        devices = topologies.get_topology_desc(platform="cuda", target_config=gpu_spec(name),
                                               topology=f"1x1x{count}").devices
    except (RuntimeError, NotImplementedError) as error:
        raise TargetError(f"--target={name} needs the CUDA plugin: pip install --no-deps -r requirements-aot-gpu.txt, "
                          f"and JAX_PLATFORMS=cpu on a machine without GPUs "
                          f"({' '.join(str(error).split())[:160]})") from None
    fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEMORY_FRACTION))
    kind = kind if note else devices[0].device_kind or kind  # an approximated GPU keeps its own name
    return Target(name, "gpu", kind, list(devices), 1, hbm, int(hbm * fraction), bandwidth, peak, note)


def _without_local_cudnn():
    """cuDNN's fused attention is compiled from the target spec (its cuDNN version), but JAX first checks the
    cuDNN library of this machine, which a compile-only install lacks: answer that check with the spec's
    version. Compiling is all such a process does (`vifi_jax.aot`), so nothing runs on the answer."""
    try:
        from jax._src.cudnn import fused_attention_stablehlo
    except ImportError:
        return
    if hasattr(fused_attention_stablehlo, "check_cudnn_version"):
        fused_attention_stablehlo.check_cudnn_version = lambda: 91000


def prepare_environment(target_name):
    """Environment a compile for `target_name` needs, set before JAX starts its backends: the CPU as this
    process's own backend (no attempt to use a local accelerator) and, for GPUs, no autotuning (it needs the
    device) and cuBLAS for matmuls instead of untuned Triton tiles."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if target_name in GPUS:
        flags = os.environ.get("XLA_FLAGS", "")
        for flag in ("--xla_gpu_enable_triton_gemm=false", "--xla_gpu_autotune_level=0"):
            if flag.split("=")[0] not in flags:
                flags += " " + flag
        os.environ["XLA_FLAGS"] = flags.strip()
