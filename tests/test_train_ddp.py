"""DDP with gradient accumulation, as train.py runs it (two CPU processes, gloo): the gradient all-reduce runs
only on the last micro-step, and the gradients equal one process's over the same global batch. And the process
group's timeout is the run config's `ddp_timeout`: a rank that never joins a collective ends the run then."""

import json
import re
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


def test_ddp_timeout_ends_the_wait_for_a_stalled_rank(tmp_path):
    """Rank 1 sleeps 9 s before its second step; with --ddp_timeout 4 rank 0 gives up in its gradient all-reduce
    after 4 s instead of torch's default 30 min (gloo) or 10 min (NCCL), and the launch fails. (The timeout holds
    for every collective: on a loaded machine one in the start-up may be the one that times out, which shows the
    same.)"""
    from data.prepare import prepare

    words = "the loss falls as the model learns to predict the next token of every window".split()
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(60))}) + "\n"
                           for i in range(80)))
    prepare(str(src), tmp_path / "data", val_tokens=256, shard_tokens=4096, num_proc=1, progress=False)
    args = ["--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"), "--n_layer", "1",
            "--n_head", "2", "--n_embd", "32", "--n_positions", "32", "--seq_len", "16", "--micro_batch_size", "2",
            "--total_batch_size", "64", "--max_steps", "4", "--warmup_steps", "1", "--eval_every", "0",
            "--hellaswag_every", "0", "--sample_every", "0", "--eval_at_end", "false", "--save_every", "0",
            "--mixed_precision", "no", "--log_with", "none", "--progress_bar", "false", "--ddp_timeout", "4"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "tests" / "stalled_rank_train.py"), "9", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert re.search(r"step\s+2/4", out) is None, out[-3000:]  # the second step never completed
    assert "Timed out waiting 4000ms" in out, out[-3000:]  # gloo's message, with the configured timeout


def test_ddp_timeout_is_the_process_groups_timeout(monkeypatch):
    """The value itself reaches the process group (the stalled-rank test above can only tell its 4 s apart)."""
    from datetime import timedelta

    import accelerate

    from training.accelerator import make_accelerator
    from training.run_config import RunConfig

    made = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: made.append(kwargs))
    make_accelerator(RunConfig(output_dir="unused", ddp_timeout=123, mixed_precision="no", log_with="none"))
    assert [h.timeout for h in made[0]["kwargs_handlers"]] == [timedelta(seconds=123)]
