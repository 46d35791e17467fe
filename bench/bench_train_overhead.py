"""Overhead of our Accelerate training step over a plain PyTorch loop: same model, batch, flags, same process.

    python bench/bench_train_overhead.py                                  # CPU default: small model, fp32
    python bench/bench_train_overhead.py --device cuda --n_layer 12 --n_embd 768 --seq_len 1024 \
        --micro_batch 16 --grad_accum 4 --bf16 --compile                  # GPU: the 124M recipe's step

"ours" is `training.step.optimizer_step` (what train.py runs every step: LR set, micro-batches through
`accelerator.accumulate` + `accelerator.backward`, `accelerator.clip_grad_norm_`, the cross-rank loss/stop
reduce, the non-finite check, the prepared optimizer's step) plus the per-step bookkeeping train.py does
(step line, metrics.jsonl row). "plain" is the same math written directly in PyTorch, build-nanogpt style
(loss / grad_accum, backward, clip_grad_norm_, AdamW, loss.item() for its log line, the same line and row).

Both models start from the same weights and see the same in-memory batches (no data loading in the timing).
Timed segments alternate (ours, plain, ours, ...) so drift in machine speed hits both equally; the overhead is
the median over `--rounds` back-to-back pairs of (plain rate / ours rate - 1), after `--warmup` untimed steps each.
"""

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--n_embd", type=int, default=128)
    ap.add_argument("--seq_len", type=int, default=128)
    ap.add_argument("--micro_batch", type=int, default=8)
    ap.add_argument("--grad_accum", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (both loops)")
    ap.add_argument("--compile", action="store_true", help="torch.compile (both loops)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per segment")
    ap.add_argument("--rounds", type=int, default=6, help="segments per loop, alternating")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM
    from training.step import optimizer_step
    from training.metrics import MetricsLog, step_line
    from training.optim import param_groups

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = GPT2ReproConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                             n_positions=max(args.seq_len, 128))
    torch.manual_seed(0)
    ours_model = GPT2ReproForCausalLM(config)
    plain_model = GPT2ReproForCausalLM(config)
    plain_model.load_state_dict(ours_model.state_dict())
    plain_model.to(device)
    fused = device.type == "cuda" or None

    def adamw(model):
        return torch.optim.AdamW(param_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=fused)

    acc = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision="bf16" if args.bf16 else "no",
                      cpu=device.type == "cpu",
                      **({"dynamo_plugin": TorchDynamoPlugin(backend="inductor")} if args.compile
                         else {"dynamo_backend": "no"}))
    ours, ours_opt = acc.prepare(ours_model, adamw(ours_model))
    plain_opt = adamw(plain_model)
    plain = torch.compile(plain_model) if args.compile else plain_model

    g = torch.Generator().manual_seed(0)
    pool = [torch.randint(0, 50257, (args.micro_batch, args.seq_len + 1), generator=g) for _ in range(8)]
    pool = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in pool]

    def batches():
        i = 0
        while True:
            yield pool[i % len(pool)]
            i += 1

    tokens_per_step = args.micro_batch * args.seq_len * args.grad_accum
    sink = io.StringIO()  # both loops format and "print" their step line here
    tmp = Path(tempfile.mkdtemp())
    ours_log, plain_log = MetricsLog(tmp / "ours.jsonl"), MetricsLog(tmp / "plain.jsonl")
    ours_batches, plain_batches = batches(), batches()
    step_counter = {"ours": 0, "plain": 0}

    def ours_step():
        t0 = time.perf_counter()
        loss, norm, _ = optimizer_step(acc, ours, ours_opt, ours_batches, lr=6e-4, grad_accum=args.grad_accum,
                                       grad_clip=1.0, device=acc.device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step_counter["ours"] += 1
        sink.write(step_line(step_counter["ours"], 0, loss, 6e-4, norm, dt, tokens_per_step / dt, None) + "\n")
        ours_log.write("train", step=step_counter["ours"], loss=loss, lr=6e-4, grad_norm=norm, dt_ms=1000 * dt,
                       tok_per_s=tokens_per_step / dt, mfu=None, tokens=0)

    def plain_step():
        t0 = time.perf_counter()
        for group in plain_opt.param_groups:
            group["lr"] = 6e-4
        loss_accum = torch.zeros((), device=device)
        for _ in range(args.grad_accum):
            x, y = next(plain_batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if args.bf16:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = plain(input_ids=x, shift_labels=y).loss
            else:
                loss = plain(input_ids=x, shift_labels=y).loss
            loss = loss / args.grad_accum
            loss_accum += loss.detach()
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        loss_value, norm_value = loss_accum.item(), norm.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step_counter["plain"] += 1
        sink.write(step_line(step_counter["plain"], 0, loss_value, 6e-4, norm_value, dt, tokens_per_step / dt,
                             None) + "\n")
        plain_log.write("train", step=step_counter["plain"], loss=loss_value, lr=6e-4, grad_norm=norm_value,
                        dt_ms=1000 * dt, tok_per_s=tokens_per_step / dt, mfu=None, tokens=0)

    for _ in range(args.warmup):
        ours_step()
        plain_step()
    rates = {"ours": [], "plain": []}  # round r's two segments run back to back: a pair
    for r in range(args.rounds):
        order = (("ours", ours_step), ("plain", plain_step)) if r % 2 == 0 else (("plain", plain_step), ("ours", ours_step))
        for name, fn in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            rates[name].append(args.steps * tokens_per_step / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    # overhead = extra time per step of ours relative to plain; the per-pair median is robust to machine-speed
    # drift between rounds (other jobs), the ratio of medians is given alongside
    pair = [p / o - 1.0 for o, p in zip(rates["ours"], rates["plain"])]
    overhead = statistics.median(pair)
    step_ms = {k: 1000 * tokens_per_step / v for k, v in med.items()}
    import accelerate
    import transformers

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "accelerate": accelerate.__version__, "python": platform.python_version()},
        "setup": {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "seq_len", "micro_batch", "grad_accum",
                                                "bf16", "compile", "steps", "rounds", "warmup")},
        "tokens_per_step": tokens_per_step,
        "tok_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "tok_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "overhead_pct": round(100 * overhead, 2),
        "overhead_pct_ratio_of_medians": round(100 * (med["plain"] / med["ours"] - 1.0), 2),
        "overhead_pct_pairs": [round(100 * x, 2) for x in pair],
        "step_ms_median": {k: round(v, 2) for k, v in step_ms.items()},
    }
    print(json.dumps(result, indent=1))
    print(f"ours {med['ours']:,.0f} tok/s vs plain {med['plain']:,.0f} tok/s (medians); overhead {100 * overhead:+.2f}% "
          f"(median over {args.rounds} back-to-back pairs of {args.steps}-step segments; "
          f"quartiles {100 * statistics.quantiles(pair, n=4)[0]:+.2f}% .. {100 * statistics.quantiles(pair, n=4)[2]:+.2f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
