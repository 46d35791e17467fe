#!/usr/bin/env bash
# On the GPU machine (see prepare_carry.sh): the issue-7 measurements in one go, results under $OUT.
#   1. bench/bench_gpu_train.py: train.py's loop vs a build-nanogpt-style PyTorch GPT-2, MFU against the
#      measured bf16 peak, peak memory, in-loop eval costs (val 10.5M tokens, HellaSwag 10,042, samples);
#      plus one more run of ours per entry of BENCH_VARIANTS (run-config overrides or inductor.NAME settings,
#      space-separated, a comma joins settings into one variant; default: the fused chunked loss in one chunk per
#      micro-batch, then inductor's coordinate-descent tuning (the loss kernels are reductions over 50,304 ids,
#      which that tuning re-tiles). Also worth a run when time allows: both together
#      ("loss_chunk_tokens=65536,inductor.coordinate_descent_tuning=True"), compile_mode=max-autotune-no-cudagraphs
#      (its compile takes longest, and turns the tuning on too).
#   2. bench/bench_padded_vocab.py (124M, bf16, compile): cost of the padded-ids -inf bias (SKIP_PADDED=0 to run;
#      measured on an H200 already)
# Timing (one device command may run 600 s): ours + reference + evals take ~4-5 min on an H200 (estimated from the
# 11-30 runs), each variant 1.5-3 min. No variant starts after BENCH_DEADLINE_S (default 400) seconds, and the
# bench is killed at BENCH_KILL_S (default 560): its JSON, written after every stage, keeps what was measured.
# Call the device with timeout_s 600. Exit status: the bench's (137: killed at BENCH_KILL_S).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu_results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} || exit 1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)" \
  | tee -a "$OUT/gpu.txt"
VARIANT_ARGS=()
for variant in ${BENCH_VARIANTS-loss_chunk_tokens=65536 inductor.coordinate_descent_tuning=True}; do
  VARIANT_ARGS+=(--variant "$variant")
done
# BENCH_ARGS: extra arguments (e.g. "--tiny ..." for a CPU smoke run of this script, "--skip evals")
timeout -s KILL "${BENCH_KILL_S:-560}" python3 bench/bench_gpu_train.py --data out/bench_gpu/data \
  --hellaswag out/bench_gpu/hellaswag_val.jsonl --json "$OUT/bench_gpu_train.json" \
  --deadline-s "${BENCH_DEADLINE_S:-400}" "${VARIANT_ARGS[@]}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu_train.log"
status=${PIPESTATUS[0]}
if [ "${SKIP_PADDED:-1}" != "1" ]; then
  python3 -m bench.bench_padded_vocab --n-layer 12 --n-embd 768 --n-head 12 --batch 16 --seq 1024 \
    2>&1 | tee "$OUT/bench_padded_vocab.log"
fi
exit "$status"
