"""What a run puts into a checkpoint and takes back: weights (full, also under FSDP), tokenizer, optimizer,
fp16 loss scale, meta.json. The folder mechanics (staging, checksums, COMPLETE, retention) are checkpoint.py's."""

import json
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from training import checkpoint as ckpt
from training import fsdp
from training.accelerator import first_error
from training.optim import with_this_runs_groups


def save_checkpoint(accelerator, cfg, raw_model, optimizer, data_state, step, tokens, manifest_hash,
                    data_content_hash, tokenizer, log) -> Path:
    """Every rank writes its part into the staging folder; the main process seals and renames it. A write that
    fails on any rank (disk full, quota, permissions) raises `checkpoint.SaveError` on every rank, with the
    staging folder removed (a full disk gets its space back) and the committed checkpoints untouched.
    `tokenizer` is saved beside the weights (main process; `data.tokenizer.tokenizer_for_model`)."""
    from data.tokenizer import TOKENIZER_FINGERPRINT

    main = accelerator.is_main_process
    stage = ckpt.staging_dir(cfg.output_dir, step)
    final = stage.parent / ckpt.step_dir_name(step)

    def agree(problem: str | None) -> None:
        """Every rank gets the first problem any rank had (a collective, so also a barrier); then all stop
        together, the staging folder removed (a half-written checkpoint is never resumed, and holds space)."""
        problem = first_error(accelerator, problem)
        if problem:
            if main:
                shutil.rmtree(stage, ignore_errors=True)
            raise ckpt.SaveError(problem)

    problem = None
    if main:
        try:
            ckpt.prepare_staging(cfg.output_dir, step)
        except OSError as err:
            problem = _failure(stage, step, err)
    agree(problem)  # before the ranks write into the folder
    if fsdp.is_fsdp(accelerator):  # gather full tensors (collective: every rank takes part)
        model_state, optim_state = fsdp.gather_full_state(raw_model, optimizer.optimizer)
        saver = fsdp.plain_twin(raw_model) if main else None
    else:
        model_state, optim_state = raw_model.state_dict(), optimizer.state_dict()
        saver = raw_model
    try:
        if main:
            saver.save_pretrained(stage / "model", state_dict=model_state, safe_serialization=True)
            tokenizer.save_pretrained(stage / "model")
            torch.save(optim_state, stage / "optimizer.pt")
            save_grad_scaler(accelerator, stage)
            meta = {
                "step": step, "tokens": tokens, "world_size": accelerator.num_processes,
                "grad_accum": accelerator.gradient_accumulation_steps, "run_config": cfg.to_dict(),
                "model_config": raw_model.config.to_dict(), "data_manifest_hash": manifest_hash,
                "data_content_hash": data_content_hash,
                "tokenizer_fingerprint": TOKENIZER_FINGERPRINT,
                "versions": versions(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (stage / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        ckpt.save_rank_state(stage, accelerator.process_index, data_state)
    except Exception as err:  # noqa: BLE001 - disk full is an OSError, or torch.save's RuntimeError "unexpected pos"
        problem = _failure(stage, step, err)  # another rank's is named by its rank (first_error)
    agree(problem)  # every rank has written its part, or every rank stops
    if main:
        try:
            final = ckpt.commit(stage, cfg.keep_last, log=log)
        except Exception as err:  # noqa: BLE001 - sealing writes the manifest and fsyncs: a full disk shows here
            if not (final.is_dir() and ckpt.verify(final) is None):  # renamed into place: only what followed failed
                problem = _failure(stage, step, err)
            else:
                log(f"WARNING: checkpoint {final} is committed, but what follows a commit failed (directory sync or "
                    f"deleting old checkpoints): {err}")
        if problem is None:
            log(f"checkpoint committed: {final}")
    agree(problem)
    return final


def _failure(stage: Path, step: int, err: BaseException) -> str:
    """The message for a save that failed with `err`. One that failed for another reason than the disk is a bug:
    its traceback goes to stderr (this rank's), or the one-line message would be all there is to find it by."""
    if not ckpt.looks_like_storage(err):
        traceback.print_exception(err, file=sys.stderr)
        sys.stderr.flush()
    return ckpt.save_failure(stage, step, err)


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
