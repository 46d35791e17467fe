"""AdamW as GPT-2/GPT-3 small was trained, and the learning-rate schedule as a pure function of the step.

    groups = param_groups(model, weight_decay=0.1)  # decay: every tensor with dim >= 2 (matmuls, embeddings)
    opt = build_adamw(model, cfg, device_type)       # betas (0.9, 0.95), eps 1e-8, fused on CUDA
    lr = lr_at(step, cfg)                            # linear warmup, cosine to min_lr, then flat

The LR is set on the param groups before every optimizer step rather than through a prepared scheduler:
Accelerate steps a prepared scheduler once per process, which would run a step-based schedule N times too fast.
"""

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: tensors with dim >= 2 are decayed, biases and LayerNorm gains are not.
    Tied weights appear once (named_parameters() de-duplicates shared tensors)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(decayed, not decayed) parameter counts, tied weights counted once."""
    groups = param_groups(model, 0.0)
    return tuple(sum(p.numel() for p in g["params"]) for g in groups)


def use_fused(setting: str, device_type: str) -> bool:
    return setting == "on" or (setting == "auto" and device_type == "cuda")


def build_adamw(model: torch.nn.Module, cfg, device_type: str) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=lr_at(0, cfg),
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.adam_eps,
        fused=use_fused(cfg.fused_adamw, device_type) or None,
    )


def lr_at(step: int, cfg) -> float:
    """LR for optimizer step `step` (0-based), as in build-nanogpt: linear warmup to max_lr over
    warmup_steps (step 0 already gets max_lr / warmup_steps), cosine from max_lr to min_lr between
    warmup_steps and the decay end (lr_decay_steps, default max_steps), min_lr after that."""
    decay_end = cfg.lr_decay_steps or cfg.max_steps
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if step >= decay_end:
        return cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, decay_end - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.max_lr - cfg.min_lr)


def with_this_runs_groups(state: dict, optimizer) -> dict:
    """A saved optimizer state to resume from: the checkpoint supplies the per-parameter state (steps, moments),
    this run's freshly built optimizer the settings of each group. So changed AdamW settings (weight decay,
    betas, eps) apply instead of the checkpoint's coming back with load_state_dict, and so do this run's
    implementation flags: load_state_dict places each `step` counter by them (fused: on the parameter's device),
    and a CPU run's checkpoint resumed with fused AdamW on a GPU would otherwise keep CPU counters that the fused
    CUDA kernel refuses (pytorch#124133)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # under Accelerate's AcceleratedOptimizer
    groups = [{**saved, **{k: v for k, v in now.items() if k != "params"}}
              for saved, now in zip(state["param_groups"], inner.param_groups)]
    return {**state, "param_groups": groups}


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
