#!/usr/bin/env bash
# The train-step table of issue 18 in one command on the one-GPU device machine (~6 minutes):
#   1. before: the step of commit $BEFORE (a copy in .before/), b8 x 32 frames, timed and profiled;
#   2. this tree's step: b8 (profiled), b8 with XLA's attention, b8 with augmentation in the step
#      (VARIANTS=...,b32 adds the recipe's one-GPU micro-batch: its compile alone takes minutes);
#   3. OpenAI's clip/model.py doing the official work (text at 77 tokens), eager and torch.compile, b8;
#   4. this tree's b8 step under other XLA flags;
#   5. the table (benchmarks/device_table.py). Everything lands in $OUT.
# here: bash benchmarks/device_wheels.sh && bash benchmarks/before_tree.sh adfa0c6
# run:  command="bash benchmarks/train_step_device.sh", carry=[".whl", ".before"], timeout_s=480
set -o pipefail
out="${OUT:-/tmp/device_out}"
mkdir -p "$out"
log="$out/run.log"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$log"
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)" || exit 1
steps="${STEPS:-12}" frames="${FRAMES:-32}" classes="${CLASSES:-400}" batch="${BATCH:-8}"  # a CPU dry run: small ones

if [ -d .before ] && [ -z "${SKIP_BEFORE:-}" ]; then  # 1. the starting point, timed and profiled the same way
  timeout 120 python3 - "$out" "$steps" "$frames" "$classes" "$batch" <<'PY' 2>&1 | tee -a "$log"
import importlib.util, json, sys
out, (steps, frames, classes, batch) = sys.argv[1], map(int, sys.argv[2:])
sys.path.insert(0, ".before")
import jax, jax.numpy as jnp
from benchmarks import train_step as old  # the starting commit's benchmark and library
spec = importlib.util.spec_from_file_location("profile_trace", "benchmarks/profile_trace.py")
profile_trace = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_trace)
row, run = old.jax_setup("zeroshot", batch, frames, classes, jnp.bfloat16, False)
old.time_steps([(row, run)], steps, 2)
row["model_flops_per_step"] = 3 * old.forward_flops(old.clip.VARIANTS["ViT-B/16"], frames, batch, classes,
                                                   row["text_len"])
row.update(variant=f"b{batch}", profile=profile_trace.profile(run, f"{out}/trace_before", steps=3))
print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "profile")}))
json.dump({"info": {"device_kind": jax.devices()[0].device_kind, "commit": open(".before/COMMIT").read().strip()},
           "results": [row]}, open(f"{out}/before.json", "w"), indent=1)
PY
fi

# 2. this tree
timeout "${JAX_TIMEOUT:-200}" python3 benchmarks/train_step.py --device --variants "${VARIANTS:-b8,b8+attention=xla,b8+augment}" \
  --torch "" --steps "$steps" --frames "$frames" --classes "$classes" --profile "$out/trace_after" --out "$out/jax.json" 2>&1 | tee -a "$log"

# 3. the PyTorch peers
timeout "${TORCH_TIMEOUT:-170}" python3 benchmarks/train_step.py --device --variants "" --torch "${TORCH:-eager,compile}" --steps "$steps" \
  --frames "$frames" --classes "$classes" --torch_batch "$batch" \
  --out "$out/torch.json" 2>&1 | grep -v "^W[0-9]" | tee -a "$log"

# 4. XLA flags (read when the backend starts: a process of its own)
[ -z "${SKIP_FLAGS:-}" ] && XLA_FLAGS="--xla_gpu_enable_triton_gemm=false" timeout 70 python3 \
  benchmarks/train_step.py --device --variants "b$batch" --torch "" --steps "$steps" --frames "$frames" \
  --classes "$classes" --label "triton gemm off" \
  --out "$out/flags.json" 2>&1 | tee -a "$log" | tail -n 3

# 5. the table; the traces' raw files stay on the machine (their summaries are in the JSON files)
python3 benchmarks/device_table.py "$out"/before.json "$out"/jax.json "$out"/torch.json "$out"/flags.json \
  2>&1 | tee "$out/table.md"
rm -rf "$out"/trace_before "$out"/trace_after
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader | tee -a "$log"
