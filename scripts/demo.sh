#!/usr/bin/env bash
# The quick start's main job, offline: install into .venv (first time only), then
# prepare builtin:pydocs -> train configs/demo.yaml -> evaluate -> export runs/demo/export -> samples.
# Extra arguments go to train.py (e.g. `bash scripts/demo.sh --max_steps 20`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false
exec python -m training.demo "$@"
