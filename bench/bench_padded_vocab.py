"""Cost of masking the padded vocabulary ids (50257..50303) on a training step.

Times forward+backward+AdamW of the same model twice, alternating windows: (a) as shipped, with the LM-head bias
(PADDED_LOGIT; -inf when the BENCHMARKS figures were taken) on the 47 padded ids, (b) the same weights with
`tokenizer_vocab_size = vocab_size` (no bias). Reports
the median step time of each and the ratio a/b. Uses CUDA + bf16 autocast + compile when a GPU is present.

    python -m bench.bench_padded_vocab                      # CPU: small model
    python -m bench.bench_padded_vocab --n-layer 12 --n-embd 768 --n-head 12 --batch 16 --seq 1024   # GPU
"""

import argparse
import statistics
import time

import torch

from configuration_gpt2repro import GPT2ReproConfig
from modeling_gpt2repro import GPT2ReproForCausalLM


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--windows", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps per timed window")
    p.add_argument("--compile", action="store_true", help="torch.compile (default on with CUDA)")
    args = p.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    config = GPT2ReproConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, n_positions=args.seq)
    model = GPT2ReproForCausalLM(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    step_fn = torch.compile(model) if (cuda or args.compile) else model
    x = torch.randint(0, 50257, (args.batch, args.seq), device=device)
    y = torch.randint(0, 50257, (args.batch, args.seq), device=device)

    def window(mask_padded: bool) -> float:
        # Switching the field changes only whether the padded-ids bias is added; under compile each setting is its own graph.
        model.config.tokenizer_vocab_size = 50257 if mask_padded else config.vocab_size
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                loss = step_fn(input_ids=x, shift_labels=y).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.steps

    window(True), window(False)  # warm-up (and compile) both variants
    masked, plain = [], []
    for _ in range(args.windows):
        masked.append(window(True))
        plain.append(window(False))
    m, q = statistics.median(masked), statistics.median(plain)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; model L{args.n_layer} C{args.n_embd} B{args.batch} T{args.seq}")
    print(f"step with the padded-ids bias: {m * 1e3:.1f} ms; without: {q * 1e3:.1f} ms; ratio {m / q:.4f}")


if __name__ == "__main__":
    main()
