#!/usr/bin/env bash
# On the one-GPU device machine: 1. benchmarks/train_step.py --device (both recipes, bf16); 2. a short
# training run feeding the device from the real Grain loader (data-wait fraction, MFU). Output in $OUT.
#   here:  bash benchmarks/device_wheels.sh          (the wheels the device image lacks, into .whl/)
#   run:   command="bash benchmarks/train_step_device.sh", carry=[".whl"], timeout_s=420
# Try part 2 on a CPU: SKIP_STEP=1 LOADER_CONFIG=zeroshot:train,smoke LOADER_STEPS=3 LOADER_BATCH=4 bash ...
set -o pipefail
LOADER_ARGS=("$@")  # extra --config.* flags for the loader run (e.g. a tiny model to try it on a CPU)
out="${OUT:-/tmp}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'PY' || exit 1
import importlib.util, sys
missing = [m for m in ("jax", "flax", "optax", "ml_collections", "ftfy", "regex", "grain", "cv2", "orbax")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {missing}")
import jax
print("jax", jax.__version__, jax.devices())
PY
[ -n "${SKIP_STEP:-}" ] || python3 benchmarks/train_step.py --device --out "$out/train_step.json" 2>&1 | tee "$out/train_step.log"

# 2. The real Grain loader feeding the device: ViT-B/16 bf16 training on generated clips (8 frames, short
#    videos), workers on this host's CPUs. results.json "speed" gives clips/s, TFLOP/s, MFU and the fraction of
#    each log window spent waiting for data; "step_cost" the compiled step's FLOPs and memory.
workers=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
python3 -m vifi_jax.main --config="${LOADER_CONFIG:-zeroshot:train}" --workdir="$out/loader_run" --config.data.source=demo \
  --config.model.init=random:ViT-B/16 --config.model.dtype=bfloat16 --config.data.num_frames=8 \
  --config.data.num_workers="$workers" --config.data.demo.num_classes=8 --config.data.demo.videos_per_class=64 \
  --config.train.batch_size="${LOADER_BATCH:-32}" --config.train.accumulation_steps=1 \
  --config.train.reference_world_size=1 --config.train.max_steps="${LOADER_STEPS:-60}" --config.log_every=10 \
  --config.eval.every_epochs=1000 --config.eval.batch_size=64 --config.checkpoint.every_steps=100000 \
  "${LOADER_ARGS[@]}" 2>&1 | tail -n 25 | tee "$out/loader_run.log"
python3 - "$out/loader_run/results.json" <<'PY' | tee "$out/loader_speed.json"
import json, sys
results = json.load(open(sys.argv[1]))
print(json.dumps({"speed": results.get("speed"), "step_cost": results.get("step_cost")}, indent=1))
PY
