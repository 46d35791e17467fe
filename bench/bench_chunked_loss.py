"""The fused chunked loss (`loss_chunk_tokens`) against the default full-logits loss: time of a training micro-step
(forward + backward) and peak memory, each variant in its own process, alternating rounds in one run.

    python -m bench.bench_chunked_loss                      # CPU: 2-layer, width 768, vocab 50304, B=8, T=1024, fp32
    python -m bench.bench_chunked_loss --n-layer 12 --batch 64 --bf16 --compile     # the 124M recipe, on a GPU

Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the process's peak resident set minus the resident
set after the model and the batch were made (so it counts what the step itself allocates). Time: median of
`--steps` steps after `--warmup`, then the median over the rounds. Prints one JSON object.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_variant(args) -> dict:
    """Runs in the child process: one variant, returns {ms, peak_mb}."""
    import resource

    import torch

    sys.path.insert(0, str(REPO))
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=args.n_layer, n_head=args.n_embd // 64,
                                                 n_embd=args.n_embd, n_positions=args.seq)).to(device).train()
    x = torch.randint(0, 50257, (args.batch, args.seq + 1), device=device)
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    step_model = torch.compile(model) if args.compile else model
    kwargs = {"loss_chunk_tokens": args.chunk} if args.child == "chunked" else {}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = step_model(input_ids=inp, shift_labels=tgt, **kwargs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb) / 1024
    return {"ms": statistics.median(times), "peak_mb": round(peak_mb), "loss": float(loss)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=2048, help="tokens per chunk of the chunked loss")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (as train.py on a GPU)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of (full, chunked)")
    ap.add_argument("--child", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_variant(args)))
        return {}

    forwarded = list(argv if argv is not None else sys.argv[1:])
    results: dict[str, list[dict]] = {"full": [], "chunked": []}
    for _ in range(args.rounds):
        for variant in ("full", "chunked"):
            proc = subprocess.run([sys.executable, "-m", "bench.bench_chunked_loss", *forwarded, "--child", variant],
                                  cwd=REPO, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
            results[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = {name: {"ms_per_step": round(statistics.median(r["ms"] for r in runs), 1),
                      "peak_mb": max(r["peak_mb"] for r in runs), "loss": runs[0]["loss"]}
               for name, runs in results.items()}
    summary["chunked_over_full_time"] = round(summary["chunked"]["ms_per_step"] / summary["full"]["ms_per_step"], 3)
    summary["chunked_over_full_memory"] = round(summary["chunked"]["peak_mb"] / summary["full"]["peak_mb"], 3)
    summary["setup"] = {k: getattr(args, k) for k in ("n_layer", "n_embd", "batch", "seq", "chunk", "bf16", "compile",
                                                      "warmup", "steps", "rounds")}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
