#!/usr/bin/env bash
# benchmarks/train_step.py --device on the one-GPU device machine; JSON and log land in $OUT.
#   run: command="bash benchmarks/train_step_device.sh", timeout_s=420 (add carry=[".whl"] with wheels)
# The device image has jax/flax/optax but not ml_collections, ftfy, wcwidth, grain or array_record, which
# configs/ and vifi_jax.train import: carry them as wheels in .whl/ (see the device README's Notes).
set -o pipefail
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
python3 benchmarks/train_step.py --device --out "$out/train_step.json" "$@" 2>&1 | tee "$out/train_step.log"
