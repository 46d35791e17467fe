"""A tiny *trained* run folder in the layout train.py writes (docs/CONTRACTS.md), for the publish/export tests.

`make_tiny_run(root)` trains the tiny test config (2 layers, 64 wide) for 20 AdamW steps on Tiny Shakespeare
with plain torch (a few seconds on 2 CPU cores) and writes run_config.yaml, metrics.jsonl (train lines every
step, val loss every 5 steps measured on held-out text, one summary) and two committed checkpoints plus one
uncommitted one (no COMPLETE: a killed save). The HellaSwag records are made-up fixture values (distinct per
step, n=40) so tests can check the card and plots carry exactly the numbers of the exported step; scoring real
HellaSwag is eval's business and would cost minutes here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
STEPS, SAVE_AT, BATCH, SEQ, EVAL_EVERY = 20, (10, 20), 4, 32, 5
UNCOMMITTED = 30  # a checkpoint folder without COMPLETE


def hellaswag_fixture(step: int) -> dict:
    """Fixture HellaSwag numbers for `step` (not measured; see the module docstring)."""
    return {"acc": round(0.24 + step / 2000, 4), "acc_norm": round(0.25 + step / 1000, 4),
            "acc_tokennorm": round(0.245 + step / 1500, 4), "n": 40}


def _text() -> str:
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    # Without ../shared/data: a repetitive but learnable text, so the loss still falls.
    return " ".join(f"The {w} of the king is {v} today." for w in ("house", "horse", "crown") for v in ("red", "old")) * 400


def make_tiny_run(root: Path, data_dir: str = "data/fineweb-edu-tiny") -> Path:
    from configuration_gpt2repro import GPT2ReproConfig
    from data.tokenizer import gpt2_tokenizer
    from modeling_gpt2repro import GPT2ReproForCausalLM
    from training.optim import lr_at

    run = Path(root)
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    ids = torch.tensor(gpt2_tokenizer()(_text())["input_ids"], dtype=torch.long)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    model = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128))
    cfg = {"output_dir": str(run), "data_dir": data_dir, "init_from": "scratch", "total_batch_size": BATCH * SEQ,
           "micro_batch_size": BATCH, "seq_len": SEQ, "max_steps": STEPS, "max_lr": 3e-3, "min_lr": 3e-4,
           "warmup_steps": 5, "lr_decay_steps": None, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
           "adam_eps": 1e-8, "grad_clip": 1.0, "mixed_precision": "no", "n_layer": 2, "n_head": 2, "n_embd": 64}
    (run / "run_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["max_lr"], betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)

    def batch(source):
        starts = torch.randint(0, len(source) - SEQ - 1, (BATCH,), generator=g)
        x = torch.stack([source[s : s + SEQ] for s in starts])
        y = torch.stack([source[s + 1 : s + SEQ + 1] for s in starts])
        return x, y

    lines, t_start = [], time.time()
    for step in range(1, STEPS + 1):
        t0 = time.time()
        lr = lr_at(step - 1, SimpleNamespace(**cfg))  # train.py's schedule (its steps are 0-based, the log's 1-based)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch(train_ids)
        loss = model(input_ids=x, shift_labels=y).loss
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.time() - t0
        lines.append({"type": "train", "step": step, "loss": loss.item(), "lr": lr, "grad_norm": norm.item(),
                      "dt_ms": 1000 * dt, "tok_per_s": BATCH * SEQ / dt, "mfu": None, "tokens": step * BATCH * SEQ})
        if step % EVAL_EVERY == 0:
            with torch.no_grad():
                vx, vy = batch(val_ids)
                val = model(input_ids=vx, shift_labels=vy).loss.item()
            lines.append({"type": "val", "step": step, "val_loss": val, "val_tokens": BATCH * SEQ})
            lines.append({"type": "hellaswag", "step": step, **hellaswag_fixture(step)})
        if step in SAVE_AT:
            ckpt = run / "checkpoints" / f"step_{step:08d}"
            model.save_pretrained(ckpt / "model")
            (ckpt / "meta.json").write_text(json.dumps({"step": step, "tokens": step * BATCH * SEQ}))
            (ckpt / "COMPLETE").write_text("fixture\n")
    # A save killed halfway: no COMPLETE, never to be exported.
    (run / "checkpoints" / f"step_{UNCOMMITTED:08d}" / "model").mkdir(parents=True)
    lines.append({"type": "summary", "steps": STEPS, "tokens": STEPS * BATCH * SEQ, "wall_time_s": time.time() - t_start,
                  "device": "cpu", "world_size": 1, "precision": "fp32", "mean_tok_per_s": None, "mfu": None})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run
