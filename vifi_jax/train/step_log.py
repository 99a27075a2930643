"""What each training update reports: loss, gradient/parameter/update norms and LR per update; clips/s,
TFLOP/s and MFU per device (model FLOPs from `vifi_jax.models.flops`) and the fraction of time spent waiting for data
per log window; the step's FLOPs and the compiled step's memory once. Metrics stay on the device until fetched (every `log_every` updates and
before a save), so the loop never waits on the host for them.
"""
import contextlib
import logging
import time

import jax
import numpy as np

from vifi_jax.runtime import hardware

log = logging.getLogger("vifi_jax.train")


def report_step_cost(compiled, config, results, model_flops, work):
    """Log (and record) the step's model FLOPs per device (`flops.per_update`: what MFU counts) and the
    compiled step's memory; refuse a step that cannot fit the device. XLA's own FLOP count is recorded beside
    them, labelled, as a cross-check only (it counts a loop body once, and on GPU it missed most matmuls).
    `work` says what the count covers (texts, text length, devices), recorded with it."""
    xla_flops, memory = hardware.step_cost(compiled)
    limit, kind = hardware.memory_limit(), jax.devices()[0].device_kind
    results["step_cost"] = {"model_flops_per_update_per_device": model_flops, **work, "xla_flops_per_device": xla_flops,
                            "memory_bytes": memory, "memory_limit_bytes": limit, "device_kind": kind,
                            "peak_tflops": hardware.peak_tflops(kind)}
    log.info("train step: %.3f TFLOP of model work per update per device; compiled: %s of device memory%s",
             model_flops / 1e12, f"{memory / 2 ** 30:.2f} GiB" if memory is not None else "unknown bytes",
             f" (limit {limit / 2 ** 30:.2f} GiB)" if limit else "")
    if memory is not None and limit and memory > limit:
        t = config.train
        raise MemoryError(
            f"the train step needs {memory / 2 ** 30:.1f} GiB per device, more than the {limit / 2 ** 30:.1f} GiB "
            f"there are. Lower train.batch_size (now {t.batch_size}) and raise train.accumulation_steps (now "
            f"{t.accumulation_steps}) by the same factor (the same effective batch and schedule), set "
            "model.remat=True, or model.dtype=bfloat16")


class StepLog:
    """Step metrics stay on the device until `fetch`: then they are checked, recorded (results, TensorBoard)
    and logged with clips/s, TFLOP/s and MFU per device, and the fraction of time spent waiting for data."""

    def __init__(self, config, lr_fn, total_updates, updates_per_epoch, results, writer, flops_per_update):
        """flops_per_update: model FLOPs per device of one update (`flops.per_update`)."""
        self.config, self.total, self.per_epoch = config, total_updates, updates_per_epoch
        # Jitted, as inside the step: one program rather than ~15 eager ops, each a compile or cache read.
        self.lr_fn = jax.jit(lr_fn)
        self.results, self.writer, self.flops = results, writer, flops_per_update
        self.pending, self.window = [], []
        self.restart()
        self.peak = hardware.peak_tflops(jax.devices()[0].device_kind)

    @contextlib.contextmanager
    def waiting(self):
        """Time spent in this block is time the device waited for data."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.waited += time.perf_counter() - start

    @contextlib.contextmanager
    def paused(self):
        """Time spent in this block (evaluation, saving) is left out of the speed figures."""
        start = time.time()
        try:
            yield
        finally:
            self.excluded += time.time() - start

    def start(self, compiled, work):
        """The step is compiled: report its cost (`report_step_cost`) and start the first speed window."""
        report_step_cost(compiled, self.config, self.results, self.flops, work)
        self.restart()

    def add(self, done, metrics):
        self.pending.append((done, metrics))

    def restart(self):
        """Start the speed window now (after compiling): what came before is not training."""
        self.window_start, self.waited, self.excluded = time.time(), 0.0, 0.0

    def fetch(self, bar):
        values = jax.device_get([step for _, step in self.pending])
        for (done, _), step in zip(self.pending, values):
            step = {k: float(v) for k, v in step.items()}
            broken = [k for k in ("loss", "grad_norm", "update_norm", "param_norm") if not np.isfinite(step[k])]
            if broken:  # the norms cover the parameters after the update, which the loss has not seen yet
                self.pending = []
                raise FloatingPointError(f"{broken[0].replace('_', ' ')} became {step[broken[0]]} at update {done}")
            lr = float(self.lr_fn(done - 1))
            self.results["history"].append({"step": done, **step, "lr": lr})
            self.window.append(step["loss"])
            if self.writer:
                for name, value in {**step, "lr": lr}.items():
                    self.writer.add_scalar(f"train/{name}", value, done)
        if not self.pending:
            return
        done = self.pending[-1][0]
        self.pending = []
        bar.set_postfix(loss=f"{self.window[-1]:.4f}", lr=f"{lr:.3g}", epoch=(done - 1) // self.per_epoch + 1)
        if done % self.config.log_every == 0 or done == self.total:
            self._log_speed(done, lr)

    def _log_speed(self, done, lr):
        t, elapsed = self.config.train, max(time.time() - self.window_start - self.excluded, 1e-9)
        speed = {"updates": len(self.window), "seconds": elapsed,
                 "clips_per_second": len(self.window) * t.accumulation_steps * t.batch_size / elapsed,
                 "data_wait_fraction": min(self.waited / elapsed, 1.0)}
        if self.flops:
            speed["tflops_per_device"] = len(self.window) * self.flops / elapsed / 1e12
            if self.peak:
                speed["mfu"] = speed["tflops_per_device"] / self.peak
        self.results.setdefault("speed", []).append({"step": done, **speed})
        log.info("update %d/%d (epoch %d) loss %.4f lr %.3g | %.1f clips/s, %s TFLOP/s per device, MFU %s, "
                 "waiting for data %.1f%%", done, self.total, (done - 1) // self.per_epoch + 1, np.mean(self.window),
                 lr, speed["clips_per_second"], f"{speed['tflops_per_device']:.2f}" if "tflops_per_device" in speed
                 else "?", f"{100 * speed['mfu']:.1f}%" if "mfu" in speed else "unknown (no peak for this device)",
                 100 * speed["data_wait_fraction"])
        if self.writer:
            for name, value in speed.items():
                self.writer.add_scalar(f"speed/{name}", value, done)
        self.window = []
        self.restart()
