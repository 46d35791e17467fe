"""The GPT-2 pretraining loop on Accelerate, in parts that can be tested alone.

    run_config.py   RunConfig: one typed dataclass, YAML preset + CLI overrides, all errors reported at once
    optim.py        AdamW parameter groups (decay only tensors with dim >= 2) and the LR schedule lr_at(step)
    checkpoint.py   atomic checkpoints (sha256 manifest + COMPLETE marker), retention, resume + compat checks
    signals.py      SIGTERM/SIGINT -> a flag that the loop honours at the end of a step
    metrics.py      the per-step log line, metrics.jsonl, FLOPs per token and MFU
    accelerator.py  the Accelerator made from the run config (precision, compile, trackers, FSDP2)
    model_init.py   the model a run starts from: scratch, OpenAI GPT-2, a folder, or a checkpoint
    step.py         one optimizer step: accumulation, clip, one host sync, non-finite check, update
    evaluator.py    in-loop validation loss, HellaSwag and samples
    checkpoint_state.py  what a checkpoint holds (weights, optimizer, loss scale, meta) and loading it back
    fsdp.py         what FSDP2 changes: full-state gathers, a plain twin for saving, padded evaluation batches
    trackers.py     TensorBoard / W&B / trackio through Accelerate's trackers
    run_lock.py     one training per run folder (an OS lock)
    loop.py         the training loop itself (`train(cfg)`), used by ../train.py: the stages below, then the steps
    session.py      one launch as this process sees it: the Accelerator, its rank, log lines, refusals, exit codes
    startup.py      the start-up checks that can refuse a run before anything is written (config, resume, model, data)
    preparation.py  AdamW and Accelerate's preparation, the resumed optimizer and data state, batches, the evaluator
    run_folder.py   the run folder taken: locked, trackers started, run_config.yaml and metrics.jsonl written
    banner.py       the lines printed before the first step
    progress.py     what each step reports (step line, metrics.jsonl, trackers, bar) and the end-of-run summary
    uploads.py      checkpoint uploads to the Hub (--push_checkpoints_to), started at start-up, waited for at the end
    demo.py         the quick start: prepare -> train -> evaluate -> export -> samples (`python -m training.demo`)
"""
