"""What a run puts into a checkpoint and takes back: weights (full, also under FSDP), tokenizer, optimizer,
fp16 loss scale, meta.json. The folder mechanics (staging, checksums, COMPLETE, retention) are checkpoint.py's."""

import json
import time
from pathlib import Path

import torch

from training import checkpoint as ckpt
from training import fsdp
from training.optim import with_this_runs_groups


def save_checkpoint(accelerator, cfg, raw_model, optimizer, data_state, step, tokens, manifest_hash, log) -> Path:
    """Every rank writes its part into the staging folder; the main process seals and renames it."""
    from data.tokenizer import TOKENIZER_FINGERPRINT, tokenizer_for_context

    main = accelerator.is_main_process
    stage = ckpt.staging_dir(cfg.output_dir, step)
    if main:
        ckpt.prepare_staging(cfg.output_dir, step)
    accelerator.wait_for_everyone()
    if fsdp.is_fsdp(accelerator):  # gather full tensors (collective: every rank takes part)
        model_state, optim_state = fsdp.gather_full_state(raw_model, optimizer.optimizer)
        saver = fsdp.plain_twin(raw_model) if main else None
    else:
        model_state, optim_state = raw_model.state_dict(), optimizer.state_dict()
        saver = raw_model
    if main:
        saver.save_pretrained(stage / "model", state_dict=model_state, safe_serialization=True)
        tokenizer_for_context(raw_model.config.n_positions).save_pretrained(stage / "model")
        torch.save(optim_state, stage / "optimizer.pt")
        save_grad_scaler(accelerator, stage)
        meta = {
            "step": step, "tokens": tokens, "world_size": accelerator.num_processes,
            "grad_accum": accelerator.gradient_accumulation_steps, "run_config": cfg.to_dict(),
            "model_config": raw_model.config.to_dict(), "data_manifest_hash": manifest_hash,
            "tokenizer_fingerprint": TOKENIZER_FINGERPRINT,
            "versions": versions(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (stage / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    ckpt.save_rank_state(stage, accelerator.process_index, data_state)
    accelerator.wait_for_everyone()
    final = ckpt.staging_dir(cfg.output_dir, step).parent / ckpt.step_dir_name(step)
    if main:
        final = ckpt.commit(stage, cfg.keep_last, log=log)
        log(f"checkpoint committed: {final}")
    accelerator.wait_for_everyone()
    return final


GRAD_SCALER_FILE = "grad_scaler.pt"


def save_grad_scaler(accelerator, folder: Path) -> None:
    """fp16 only: the loss scale and its growth tracker, so a resumed run does not start again from 65536 and
    skip its first steps for overflow."""
    if getattr(accelerator, "scaler", None) is not None:
        torch.save(accelerator.scaler.state_dict(), Path(folder) / GRAD_SCALER_FILE)


def load_grad_scaler(accelerator, folder: Path) -> None:
    path = Path(folder) / GRAD_SCALER_FILE
    if getattr(accelerator, "scaler", None) is not None and path.is_file():
        accelerator.scaler.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def load_optimizer(accelerator, raw_model, optimizer, resume_dir: Path) -> None:
    state = torch.load(resume_dir / "optimizer.pt", map_location="cpu", weights_only=True)
    state = with_this_runs_groups(state, optimizer)  # this run's AdamW settings and fused/foreach flags
    if fsdp.is_fsdp(accelerator):
        fsdp.load_full_optimizer_state(raw_model, optimizer.optimizer, state)
    else:
        optimizer.load_state_dict(state)


def versions() -> dict:
    import accelerate
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}
