"""Worker for tests/test_train_ddp.py, launched by torchrun with 2 CPU (gloo) processes.

Runs `training.step.train_step` (what train.py does per optimizer step) with grad_accum=2 on a DDP model
prepared by Accelerate, and records on which micro-step DDP's gradient all-reduce ran (a counting comm hook).
Rank 0 writes the all-reduced gradients and the hook log to OUT (torch.save).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_accumulation_worker.py OUT
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRAD_ACCUM = 2


def micro_batch(rank: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) rank `rank` trains on at micro-step `micro`: (2, 8) windows, different for every pair."""
    window = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(100 * rank + micro))
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def tiny_model():
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(0)
    return GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=1, n_head=2, n_embd=32, n_positions=16))


def main(out: str) -> None:
    from accelerate import Accelerator
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from training.step import train_step

    torch.set_num_threads(1)
    acc = Accelerator(gradient_accumulation_steps=GRAD_ACCUM, cpu=True)
    assert acc.num_processes == 2, acc.num_processes
    model = acc.prepare(tiny_model())
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel), type(model)

    current = {"micro": -1}
    allreduce_at = []  # micro-step index of every bucket all-reduce

    def counting_allreduce(process_group, bucket):
        allreduce_at.append(current["micro"])
        return default_hooks.allreduce_hook(process_group, bucket)

    model.register_comm_hook(None, counting_allreduce)

    def batches():
        for micro in range(GRAD_ACCUM):
            current["micro"] = micro
            yield micro_batch(acc.process_index, micro)

    loss, _ = train_step(acc, model, batches(), GRAD_ACCUM, grad_clip=0.0, device=acc.device)
    if acc.is_main_process:
        grads = {name: p.grad.clone() for name, p in model.module.named_parameters() if p.grad is not None}
        torch.save({"allreduce_at": allreduce_at, "grads": grads, "loss": loss.item()}, out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
