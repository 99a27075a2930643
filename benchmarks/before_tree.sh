#!/usr/bin/env bash
# A copy of an earlier commit's tree in .before/ (git-ignored), for before/after runs in one device call:
#   bash benchmarks/before_tree.sh adfa0c6     then carry ".before"
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .before && mkdir .before
git archive "${1:?commit}" vifi_jax data_pipelines configs benchmarks/train_step.py | tar -x -C .before
mkdir -p .before/benchmarks && touch .before/benchmarks/__init__.py
git rev-parse "$1" > .before/COMMIT
du -sh .before
