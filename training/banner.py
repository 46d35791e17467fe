"""The lines a run prints before its first step: the resolved run config, then what it runs on and how (devices,
precision, compile, attention, batch arithmetic, schedule, parameters, validation, FLOPs, trackers, origin)."""

import os
from pathlib import Path

from training import fsdp, trackers
from training.accelerator import compile_desc
from training.metrics import FLOPS_FORMULA
from training.model_init import describe_origin
from training.optim import use_fused
from training.preparation import Prepared
from training.run_config import RunConfig, format_run_config
from training.session import Session
from training.startup import Checked


def log_start_banner(session: Session, cfg: RunConfig, checked: Checked, prepared: Prepared) -> None:
    accelerator, world, device = session.accelerator, session.world, prepared.device
    resume_dir = checked.resume.dir if checked.resume is not None else None
    decayed, not_decayed = prepared.params
    peak = prepared.peak_flops
    attn = checked.raw_model.config._attn_implementation
    tokens_per_step, split_tokens = cfg.total_batch_size, prepared.loader.tokens_per_epoch
    session.log("resolved run config:\n" + format_run_config(cfg))
    session.log(
        "\n".join([
            f"world size {world}{_strategy(accelerator)} | device {device} ({prepared.device_name})"
            f" | precision {accelerator.mixed_precision}{_launcher_precision_note(cfg)}"
            f"{' + TF32' if device.type == 'cuda' and cfg.tf32 else ''} | compile {compile_desc(cfg)}"
            f" | attention {attn} | fused AdamW {use_fused(cfg.fused_adamw, device.type)}"
            f" | data prefetch {'on' if prepared.prefetcher is not None else 'off'}"
            f" | loss {'chunked, ' + format(cfg.loss_chunk_tokens, ',') + ' tokens' if cfg.loss_chunk_tokens else 'full logits'}",
            f"tokens/step {tokens_per_step:,} = micro_batch {cfg.micro_batch_size} x seq_len {cfg.seq_len} x "
            f"grad_accum {prepared.grad_accum} x world {world}",
            f"total {cfg.max_steps:,} steps = {cfg.max_steps * tokens_per_step:,} tokens"
            f" ({_passes(cfg.max_steps, tokens_per_step, split_tokens)}) | warmup {cfg.warmup_steps} "
            f"| lr {cfg.max_lr:g} -> {cfg.min_lr:g} (cosine, reaches min_lr "
            f"after step {cfg.lr_decay_steps or cfg.max_steps})",
            f"params {decayed + not_decayed:,} (decayed {decayed:,}, not decayed {not_decayed:,})",
            *([_validation_line(cfg)] if cfg.eval_every > 0 or cfg.eval_at_end else []),
            f"flops/token {prepared.flops_per_token / 1e6:.1f}M [{FLOPS_FORMULA}] | peak "
            + (f"{peak / 1e12:.4g} TFLOP/s per device" if peak else "unknown (set --peak_flops for MFU)"),
            trackers.describe(cfg.log_with, Path(cfg.output_dir)),
            (f"resuming from {resume_dir} at step {prepared.start_step}" if resume_dir else
             f"starting from {describe_origin(cfg.init_from)}"),
        ])
    )


def _launcher_precision_note(cfg: RunConfig) -> str:
    """A launcher's --mixed_precision (accelerate launch, or its config file) is followed only when the run config
    says 'auto'; a preset's explicit value wins. Said when they differ, as a user who set it on the launcher (e.g.
    fp16 on a card without bf16) would otherwise not know it was not used."""
    from_launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # 'no' is also the launcher's default
    if cfg.mixed_precision == "auto" or from_launcher in ("no", cfg.mixed_precision):
        return ""
    passable = from_launcher in ("bf16", "fp16")  # the launcher also offers fp8, which train.py does not
    return (f" (the launcher's {from_launcher} is not used: the run config's mixed_precision decides"
            + (f"; pass --mixed_precision {from_launcher} to train.py)" if passable else ")"))


def _strategy(accelerator) -> str:
    """' (FSDP)' / ' (DDP)' for several processes; says so when a launcher's FSDP config was not applied
    (Accelerate uses FSDP on GPUs only: on CPU processes it runs DDP)."""
    if fsdp.is_fsdp(accelerator):
        return " (FSDP)"
    if fsdp.launched_with_fsdp():
        return f" ({'DDP' if accelerator.num_processes > 1 else 'one process'}: the launcher's FSDP config is not " \
               f"applied on {accelerator.device.type.upper()})"
    return " (DDP)" if accelerator.num_processes > 1 else ""


def _validation_line(cfg: RunConfig) -> str:
    """What validation averages over; a val split smaller than val_tokens is said, not silently used."""
    from data.loader import val_split_ran_short, val_window_count

    tokens = val_window_count(cfg.data_dir, cfg.seq_len, cfg.val_tokens) * cfg.seq_len
    short = (f" (val_tokens {cfg.val_tokens:,}: the data's val split holds fewer)"
             if val_split_ran_short(tokens, cfg.seq_len, cfg.val_tokens) else "")
    when = f"every {cfg.eval_every} steps" if cfg.eval_every > 0 else "at the end"
    return f"validation {tokens:,} tokens{short}, {when}"


def _passes(steps: int, tokens_per_step: int, split_tokens: int) -> str:
    """How many times the run reads its train split, and from which step it reads it again (the loader then
    starts a new, reshuffled pass without a word, as build-nanogpt wraps around its shards)."""
    text = f"{steps * tokens_per_step / split_tokens:.2f} passes over the {split_tokens:,}-token train split"
    again = split_tokens // tokens_per_step + 1  # the first step whose batch holds a window of the second pass
    return text + (f"; the data repeats from step {again:,}" if again <= steps else "")
