#!/usr/bin/env bash
# Create .venv (once) and install the project's dependencies into it; re-installs only when
# requirements.txt changes. Used by the quick-start commands and by CI, so a fresh machine needs nothing else.
#
#   bash scripts/setup.sh            # then: . .venv/bin/activate
#   TORCH_SPEC='torch' bash scripts/setup.sh   # another torch than the pinned 2.13.0
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$wanted" ]; then
  exit 0
fi

python -m pip install -q --upgrade pip
# torch first and pinned to one version, so that no other package pulls in an unpinned one. Which build (CPU or
# CUDA) comes is the package index's choice; to choose, install torch into .venv yourself before running this,
# or set TORCH_SPEC (e.g. TORCH_SPEC='torch' for the newest).
if ! python -c "import torch" 2>/dev/null; then
  echo "[setup] installing ${TORCH_SPEC:-torch==2.13.0}"
  python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
echo "[setup] installing requirements.txt"
python -m pip install -q -r requirements.txt
echo "$wanted" > "$stamp"
echo "[setup] done: $(python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
