"""DDP with gradient accumulation, as train.py runs it (two CPU processes, gloo): the gradient all-reduce runs
only on the last micro-step, and the gradients equal one process's over the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from ddp_accumulation_worker import GRAD_ACCUM, micro_batch, tiny_model  # noqa: E402


def test_allreduce_only_on_the_last_micro_step_and_gradients_match_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "tests" / "ddp_accumulation_worker.py"), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(out, weights_only=True)

    # no_sync on micro-step 0, all-reduce (every bucket) on micro-step 1 only
    assert result["allreduce_at"] and set(result["allreduce_at"]) == {GRAD_ACCUM - 1}

    # one process, the same 2 ranks x 2 micro-batches: mean of the 4 micro-batch losses
    model = tiny_model()
    total = sum(model(input_ids=x, shift_labels=y).loss
                for x, y in (micro_batch(rank, micro) for rank in range(2) for micro in range(GRAD_ACCUM)))
    (total / (2 * GRAD_ACCUM)).backward()
    expected = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert set(result["grads"]) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
