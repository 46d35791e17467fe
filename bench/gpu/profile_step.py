"""Where the GPU time of one training micro-step goes: ours (GPT2ReproForCausalLM through Accelerate, as
train.py runs it) vs the build-nanogpt-style reference (bench/nanogpt_reference.py), B=64, T=1024, bf16
autocast, TF32, torch.compile. Prints ms per forward+backward (CUDA events, median) and the top CUDA kernels.
"ours" asks for the loss only
(`return_logits=False`, as train.py's step does); "ours, logits returned" is the same model returning its (B, T, V)
logits too, as before 2026-11-30 evening (under compile backward then also reads a zero gradient of that size);
"ours, chunked loss" runs the fused chunked loss (`loss_chunk_tokens`; `--chunk`, default 65536 = one chunk of
the whole micro-batch, since fewer chunks mean fewer passes).

    python bench/gpu/profile_step.py [--steps 6] [--top 25]
    python bench/gpu/profile_step.py --tiny          # CPU smoke run of the same code (no kernel table)
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def timed(fn, steps, cuda: bool):
    import time

    times = []
    for _ in range(steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def profile(name, fn, steps, top, cuda: bool):
    from torch.profiler import ProfilerActivity, profile as prof

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        fn()
    if cuda:
        torch.cuda.synchronize()
    ms = timed(fn, steps, cuda)
    peak = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    print(f"=== {name}: {ms:.1f} ms per micro-step (fwd+bwd){peak}", flush=True)
    if cuda:
        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(2):
                fn()
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=90), flush=True)
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--chunk", type=int, default=65536, help="tokens per chunk of the chunked-loss variant")
    ap.add_argument("--tiny", action="store_true", help="2-layer model, B=2, T=64, on CPU if there is no GPU")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dims = dict(n_layer=2, n_head=2, n_embd=64, n_positions=64) if args.tiny else {}
    B, T = (2, 64) if args.tiny else (64, 1024)
    x = torch.randint(0, 50257, (B, T + 1), device=device)
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    acc = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda,
                      dynamo_plugin=TorchDynamoPlugin(backend="inductor" if cuda else "eager"))
    torch.manual_seed(0)
    ours = acc.prepare(GPT2ReproForCausalLM(GPT2ReproConfig(**dims)))

    def ours_step():
        loss = ours(input_ids=inp, shift_labels=tgt, return_logits=False).loss
        acc.backward(loss)

    def ours_logits_returned_step():
        loss = ours(input_ids=inp, shift_labels=tgt).loss
        acc.backward(loss)

    def ours_chunked_loss_step():
        loss = ours(input_ids=inp, shift_labels=tgt, loss_chunk_tokens=args.chunk).loss
        acc.backward(loss)

    results = {"ours": profile("ours", ours_step, args.steps, args.top, cuda)}
    results["ours, logits returned"] = profile("ours, logits returned", ours_logits_returned_step, args.steps,
                                               args.top, cuda)
    results["ours, chunked loss"] = profile("ours, chunked loss", ours_chunked_loss_step, args.steps, args.top, cuda)
    del ours
    torch._dynamo.reset()
    if cuda:
        torch.cuda.empty_cache()

    from bench.nanogpt_reference import RefConfig, RefGPT

    ref_cfg = RefConfig(**{"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64} if args.tiny else {})
    ref = torch.compile(RefGPT(ref_cfg).to(device), backend="inductor" if cuda else "eager")

    def ref_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            _, loss = ref(inp, tgt)
        loss.backward()

    results["reference"] = profile("reference", ref_step, args.steps, args.top, cuda)
    for name in ("ours", "ours, logits returned", "ours, chunked loss"):
        print(f"{name} / reference time per micro-step: {results[name] / results['reference']:.3f}")
    return results


if __name__ == "__main__":
    main()
