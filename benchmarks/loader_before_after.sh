#!/usr/bin/env bash
# Issue 12's loader figures before and after, in one run on this machine:
#   bash benchmarks/loader_before_after.sh          # ~12 minutes on 2 cores
# 1. The Grain train loader as commit $BASE (default 00ed4d4, before issue 12's changes) has it: the workers
#    flip, jitter and convert to grayscale, prepared records are zstd-compressed, JPEG decodes to BGR, every
#    clip demuxes its video to count packets. Its own benchmarks/data_pipeline.py, from a git worktree, with
#    T=32 added to its frame counts and the same 100 videos as step 2.
# 2. This tree's benchmarks/data_pipeline.py (decoders vs decord, then the loader with the augmentation on the
#    host and on the device).
# Writes benchmarks/results/data_pipeline_before.json and data_pipeline.json, then prints the comparison.
set -euo pipefail
BASE=${BASE:-00ed4d4}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
git -C "$HERE" worktree add --detach "$TMP/before" "$BASE" >/dev/null
trap 'git -C "$HERE" worktree remove --force "$TMP/before"; rm -rf "$TMP"' EXIT
sed -i 's/^LOADER_FRAMES = (8, 16)$/LOADER_FRAMES = (8, 16, 32)/' "$TMP/before/benchmarks/data_pipeline.py"
(cd "$TMP/before" && PYTHONPATH=. "$PYTHON" benchmarks/data_pipeline.py --skip-decode --copies 20 \
    --out "$HERE/benchmarks/results/data_pipeline_before.json")
(cd "$HERE" && PYTHONPATH=. "$PYTHON" benchmarks/data_pipeline.py --copies 20 --out "$HERE/benchmarks/results/data_pipeline.json")
"$PYTHON" - "$HERE/benchmarks/results" <<'PY'
import json, os, sys
load = lambda name: json.load(open(os.path.join(sys.argv[1], name)))["loader"]["rows"]
before = {(r["source"], r["T"], r["workers"]): r for r in load("data_pipeline_before.json")}
after = {(r["source"], r["T"], r["workers"], r["augment_on"]): r for r in load("data_pipeline.json")}
print("\nclips/s (frames/s) per configuration: before -> after with augmentation on the host / on the device")
for (source, T, workers), old in sorted(before.items()):
    host, device = after[source, T, workers, "host"], after[source, T, workers, "device"]
    print(f"{source:12s} T={T:<3d} workers={workers}: {old['clips_per_s']:6.1f} ({old['clips_per_s'] * T:5.0f}) -> "
          f"{host['clips_per_s']:6.1f} ({host['frames_per_s']:5.0f}) / {device['clips_per_s']:6.1f} "
          f"({device['frames_per_s']:5.0f}); device/before {device['clips_per_s'] / old['clips_per_s']:.2f}x")
PY
