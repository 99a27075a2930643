#!/usr/bin/env bash
# Download here (where the package index is reachable) the wheels the device image lacks, into .whl/, for
#   run: command="bash benchmarks/train_step_device.sh", carry=[".whl"]
# The device image has jax, flax, optax and orbax; configs/, vifi_jax.train and the loader also import these.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any -d .whl \
  ml_collections ftfy wcwidth grain array_record tensorboardX cloudpickle etils
du -sh .whl && ls .whl
