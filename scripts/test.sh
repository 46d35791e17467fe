#!/usr/bin/env bash
# The project's test command (README quick start, and what CI runs):
#   1. the whole suite on the installed transformers (the newest release that requirements.txt admits);
#   2. the model tests again on transformers 5.17, the version our GPU machines carry (its argument names for the
#      KV cache differ), from an overlay folder that shadows the venv's transformers and its own dependencies.
# Extra arguments go to the first pytest run (e.g. `bash scripts/test.sh -k hellaswag`).
# Both runs use PYTEST_WORKERS (default 2; 0 for none) pytest-xdist processes, each taking whole test files (--dist loadfile:
# a file's shared fixtures, like test_train_runs.py's reference runs, are built once). Most tests are single-threaded
# Python or two-process launches, so one process kept 2 cores ~65% busy: 9.0 min alone, 6.6 min with two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== pytest on transformers $(python -c 'import transformers; print(transformers.__version__)')"
workers=(-n "${PYTEST_WORKERS:-2}" --dist loadfile)
python -m pytest -q "${workers[@]}" "$@"

if [ "${SKIP_TRANSFORMERS_517:-0}" != "1" ]; then
  overlay=.ci-cache/transformers-5.17.0
  if [ ! -f "$overlay/.complete" ]; then
    rm -rf "$overlay"
    python -m pip install -q --target "$overlay" "transformers==5.17.0"
    touch "$overlay/.complete"
  fi
  echo "== model tests on transformers $(PYTHONPATH=$overlay python -c 'import transformers; print(transformers.__version__)')"
  PYTHONPATH="$overlay" python -m pytest -q "${workers[@]}" -m model
fi
