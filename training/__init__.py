"""The GPT-2 pretraining loop on Accelerate, in parts that can be tested alone.

    run_config.py   RunConfig: one typed dataclass, YAML preset + CLI overrides, all errors reported at once
    optim.py        AdamW parameter groups (decay only tensors with dim >= 2) and the LR schedule lr_at(step)
    checkpoint.py   atomic checkpoints (sha256 manifest + COMPLETE marker), retention, resume + compat checks
    signals.py      SIGTERM/SIGINT -> a flag that the loop honours at the end of a step
    metrics.py      the per-step log line, metrics.jsonl, FLOPs per token and MFU
    loop.py         the training loop itself (`train(cfg)`), used by ../train.py
    demo.py         the quick start: prepare -> train -> evaluate -> export -> samples (`python -m training.demo`)
"""
