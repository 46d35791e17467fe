"""Where the GPU time of one training micro-step goes: ours (GPT2ReproForCausalLM through Accelerate, as
train.py runs it) vs the build-nanogpt-style reference (bench/nanogpt_reference.py), B=64, T=1024, bf16
autocast, TF32, torch.compile. Prints ms per forward+backward (CUDA events, median) and the top CUDA kernels.

    python bench/gpu/profile_step.py [--steps 6] [--top 25]
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def timed(fn, steps):
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def profile(name, fn, steps, top):
    from torch.profiler import ProfilerActivity, profile as prof

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ms = timed(fn, steps)
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
    print(f"=== {name}: {ms:.1f} ms per micro-step (fwd+bwd, B=64 T=1024)", flush=True)
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=90), flush=True)
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda")
    x = torch.randint(0, 50257, (64, 1025), device=device)
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    acc = Accelerator(mixed_precision="bf16", dynamo_plugin=TorchDynamoPlugin(backend="inductor"))
    torch.manual_seed(0)
    ours = acc.prepare(GPT2ReproForCausalLM(GPT2ReproConfig()))

    def ours_step():
        loss = ours(input_ids=inp, shift_labels=tgt).loss
        acc.backward(loss)

    a = profile("ours", ours_step, args.steps, args.top)
    del ours
    torch._dynamo.reset()
    torch.cuda.empty_cache()

    from bench.nanogpt_reference import RefConfig, RefGPT

    ref = torch.compile(RefGPT(RefConfig()).to(device))

    def ref_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = ref(inp, tgt)
        loss.backward()

    b = profile("reference", ref_step, args.steps, args.top)
    print(f"ours / reference time per micro-step: {a / b:.3f}")


if __name__ == "__main__":
    main()
