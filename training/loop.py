"""The training loop: Accelerate for devices, precision, DDP/FSDP and gradient accumulation; our own code for
the schedule, the checks, and checkpoints that resume to the bit.

    exit_code = train(load_run_config(argv))

A session runs in stages, each in its own file, read top-down in `_train`:

    training/startup.py      checks that can refuse the run, before anything is written (config, resume
                             checkpoint, model, data, resume compatibility, Hub uploads)
    training/preparation.py  AdamW and Accelerate's preparation, the resumed optimizer and data state, the batches,
                             the evaluator (can still refuse)
    training/run_folder.py   the run folder: locked, trackers started, run_config.yaml and metrics.jsonl written
    training/banner.py       the lines printed before the first step
    this file                the steps, each followed by the evaluations, checkpoint and stop due after it

Exit codes: 0 done (or stopped cleanly by SIGTERM/SIGINT after a checkpoint), 2 bad config or incompatible
resume (nothing written), 3 non-finite loss or grad norm (stopped; that step's update not applied), 4 out of memory,
5 a checkpoint could not be written (disk full, quota, permissions; the committed ones are kept).
(train.py adds 130: interrupted by a second Ctrl-C.)

Every rank makes the same collective calls in the same order (broadcast, every_ranks_errors, first_error in
training/accelerator.py; the saves in training/checkpoint_state.py), so every rank refuses, stops or saves at
the same point.

Each rank builds its own `data.loader.TrainBatches(rank, world_size)` and feeds batches itself: the loader is an
infinite iterator with its own resumable position, so it is not handed to `accelerator.prepare`.
"""

import sys
import time
from typing import Optional

import torch

from training import checkpoint as ckpt
from training import fsdp
from training.banner import log_start_banner
from training.checkpoint_state import save_checkpoint
from training.model_init import init_model_dir
from training.optim import lr_at
from training.preparation import Prepared, prepare
from training.progress import Progress
from training.run_config import RunConfig
from training.run_folder import open_run_folder
from training.session import EXIT_CONFIG, EXIT_NONFINITE, EXIT_OK, EXIT_OOM, EXIT_SAVE, Session
from training.signals import StopRequest
from training.startup import Checked, run_checks
from training.step import NonFiniteError, optimizer_step
from training.uploads import finish_uploads


def train(cfg: RunConfig, *, hooks: Optional[dict] = None) -> int:
    """Run (or resume) training as configured. Returns the process exit code. `hooks` is for tests only:
    {"build_model": fn(cfg, resume_dir) -> model} replaces the model factory; {"hub_api": HfApi-like} replaces
    the Hub client of the checkpoint uploader."""
    held: dict = {}  # what the run holds (its background threads, the run folder's lock), let go however it ends
    code = None
    try:
        code = _train(cfg, hooks or {}, held)
        return code
    finally:
        if held.get("prefetcher") is not None:
            held["prefetcher"].close()
        if held.get("uploader") is not None:
            held["uploader"].close()  # waits for the upload in flight; a no-op after finish_uploads()
        if held.get("run_lock") is not None:
            held["run_lock"].close()  # releases the run folder
        if code == EXIT_CONFIG:
            _leave_process_group()


def _leave_process_group() -> None:
    """After a start-up refusal, which every rank agrees on before returning (nothing is in flight), leave the
    process group as end_training() does at a run's end: a rank that exited still in it could abort in gloo's
    threads ("terminate called without an active exception", exit -6 instead of 2; 3 of 12 refused 2-process
    launches on CPU)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(cfg: RunConfig, hooks: dict, held: dict) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's per-checkpoint "Writing model shards" bar
    init_model_dir.cache_clear()  # resolved once per run (an init_from run folder may have moved on since)
    session = Session.start(cfg)

    # everything that can refuse the run happens before anything is written
    checked, refusal = run_checks(session, cfg, hooks, held)
    if refusal:
        return session.refuse(refusal)
    if checked is None:  # nothing to train: every rank agreed on it, nothing is in flight, as after a refusal
        _leave_process_group()
        return EXIT_OK
    prepared, refusal = prepare(session, cfg, checked, held)  # can still refuse: nothing is written yet
    if refusal:
        return session.refuse(refusal)
    # the run folder is taken (locked, trackers started) and written from here on
    metrics, refusal = open_run_folder(session, cfg, checked.resume, prepared.start_step, prepared.device_name,
                                       held)
    if refusal:
        return session.refuse(refusal)
    log_start_banner(session, cfg, checked, prepared)
    return _run_steps(session, cfg, checked, prepared, metrics)


# ---------------------------------------------------------------------------------------------------------------
# the steps


def _run_steps(session: Session, cfg: RunConfig, checked: Checked, prepared: Prepared, metrics) -> int:
    """From the start step to max_steps: each step, then the evaluations, checkpoint and stop due after it; at the
    end the summary, the uploads waited for, and Accelerate's end of training. Returns the exit code.

    Out of memory (in a step, or with several processes in an evaluation) and a checkpoint that could not be
    written return at once; a non-finite step, and an evaluation out of memory on one process (after saving its
    step), end the run as a stop does."""
    accelerator, world, log, uploader = session.accelerator, session.world, session.log, checked.uploader
    raw_model, start_step = checked.raw_model, prepared.start_step
    # Validation runs a compiled module of its own over the same weights (fixed shapes: compiled once for
    # no_grad). Not `accelerator.unwrap_model(model)`: with compile + DDP, accelerate 1.15 unwraps by setting
    # the compiled wrapper's `_orig_mod` to the bare module, which silently drops DDP from the training model.
    eval_model = torch.compile(raw_model) if cfg.compile and not fsdp.is_fsdp(accelerator) else raw_model

    def save(step: int, tokens: int):  # every rank; ckpt.SaveError on every rank if any one failed
        return save_checkpoint(accelerator, cfg, raw_model, prepared.optimizer, prepared.data_state(), step, tokens,
                               checked.manifest_hash, checked.data_content_hash, checked.checkpoint_tokenizer, log)

    progress = Progress(session, cfg, prepared, metrics)
    last_saved = start_step if checked.resume is not None else None
    step, tokens = start_step, prepared.tokens
    code = EXIT_OK

    if start_step == 0 and cfg.eval_every > 0:
        try:
            prepared.evaluator.val_loss(eval_model, 0, metrics)  # the baseline every val curve starts from
        except torch.OutOfMemoryError:
            _report_eval_oom(session, cfg, prepared.device, metrics, 0)
            finish_uploads(uploader, metrics, log)
            return EXIT_OOM
    prepared.model.train()
    with StopRequest(session.rank, world) as stop:
        while step < cfg.max_steps:
            t0 = time.time()
            digests = [] if step == start_step else None  # this process's first step: which windows it read
            try:
                loss_value, norm_value, stop_now = optimizer_step(
                    accelerator, prepared.model, prepared.optimizer, prepared.batches, lr=lr_at(step, cfg),
                    grad_accum=prepared.grad_accum, grad_clip=cfg.grad_clip, device=prepared.device,
                    stop_requested=stop.requested, digests=digests, loss_chunk_tokens=cfg.loss_chunk_tokens)
            except torch.OutOfMemoryError:
                _report_step_oom(session, cfg, metrics, step + 1)
                finish_uploads(uploader, metrics, log)
                return EXIT_OOM
            except NonFiniteError as err:
                _report_non_finite(session, cfg, metrics, err, step + 1)
                code = EXIT_NONFINITE
                break
            if digests is not None:
                _print_digests(session, step + 1, digests)
            step += 1
            tokens += cfg.total_batch_size
            progress.step_done(step, tokens, t0, loss_value, norm_value)

            done = step >= cfg.max_steps
            try:
                _evaluate(cfg, prepared, raw_model, eval_model, metrics, step, final=done and cfg.eval_at_end)
            except torch.OutOfMemoryError:  # training fit; an evaluation did not
                _report_eval_oom(session, cfg, prepared.device, metrics, step)
                if world > 1:  # the other ranks may be inside a collective: no checkpoint can be agreed on
                    return EXIT_OOM
                code, stop_now = EXIT_OOM, True  # save this step (below), then stop
            except Exception:
                # Any other evaluation error: the step itself trained fine, so keep it (one process: no other rank
                # to agree with) before the error propagates; a resume then continues after it.
                if world == 1 and last_saved != step:
                    _save_before_raising(save, step, tokens)
                raise
            if world == 1 and stop.requested:  # a signal during this step or its evaluation: stop after it (one
                stop_now = True                # process: no other rank to agree with first)
            if _checkpoint_due(cfg, step, stop_now, done):
                try:
                    saved = save(step, tokens)
                except ckpt.SaveError as err:  # every rank gets it: stop together, with the message, not a traceback
                    _report_save_error(session, metrics, step, err)
                    finish_uploads(uploader, metrics, log)
                    return EXIT_SAVE
                last_saved = step
                if uploader is not None:  # hard-links the files and returns; the upload runs in a thread
                    branch = uploader.submit(saved, metrics.path, step=step)
                    log(f"checkpoint step {step} queued for upload to {cfg.push_checkpoints_to}@{branch}")
            if code == EXIT_OOM:
                break
            if _stops_here(session, stop, stop_now, step, last_saved):
                if not done:
                    log(_stopped_line(step, world))
                break
    progress.close()

    if code == EXIT_OK and step >= cfg.max_steps:
        progress.summary(step, tokens, last_saved)
    finish_uploads(uploader, metrics, log)
    if metrics:
        metrics.close()
    accelerator.end_training()
    return code


# ---- what is due after a step -----------------------------------------------------------------------------------


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _evaluate(cfg: RunConfig, prepared: Prepared, raw_model, eval_model, metrics, step: int, final: bool = False):
    """The evaluations due after `step`; all of them when `final` (the last step, with eval_at_end)."""
    evaluator = prepared.evaluator
    if final or _due(step, cfg.eval_every):
        evaluator.val_loss(eval_model, step, metrics)
    if final or _due(step, cfg.hellaswag_every):
        evaluator.hellaswag_eval(raw_model, step, metrics)
    if final or _due(step, cfg.sample_every):
        evaluator.samples(raw_model, step, metrics)


def _checkpoint_due(cfg: RunConfig, step: int, stop_now: bool, done: bool) -> bool:
    """A checkpoint after this step: before a stop, after the last step, and every save_every steps."""
    return stop_now or done or _due(step, cfg.save_every)


def _stops_here(session: Session, stop: StopRequest, stop_now: bool, step: int, last_saved) -> bool:
    """The run stops after this step: the ranks agreed on a stop (or an evaluation ran out of memory), or, with
    one process, a signal came while this step was being saved."""
    return stop_now or (session.world == 1 and stop.requested and last_saved == step)


def _stopped_line(step: int, world: int) -> str:
    """What the main process says after a signal stopped the run at `step`, its checkpoint committed. A launcher that
    received the signal itself (torchrun, accelerate launch) forwards it and then exits 1, with a SignalException
    traceback, however cleanly the ranks stopped: said here, before it, so that exit 1 is not taken for a lost
    checkpoint."""
    line = f"stopped by a signal at step {step}: checkpoint committed; continue with --resume auto"
    if world > 1:
        line += ("; every rank exits 0, but a launcher that received the signal itself exits 1 (with a "
                 "SignalException traceback) all the same")
    return line


# ---- what the steps report when something goes wrong ------------------------------------------------------------


def _step_oom_message(cfg: RunConfig, step: int, rank: int) -> str:
    return (f"out of memory at step {step} on rank {rank} with micro_batch_size={cfg.micro_batch_size}, "
            f"seq_len={cfg.seq_len}: lower --micro_batch_size (e.g. {max(1, cfg.micro_batch_size // 2)}); "
            f"grad accumulation grows to keep total_batch_size={cfg.total_batch_size:,} tokens/step "
            "unchanged (it is never changed for you).")


def _report_step_oom(session: Session, cfg: RunConfig, metrics, step: int) -> None:
    msg = _step_oom_message(cfg, step, session.rank)
    print(msg, file=sys.stderr, flush=True)
    if metrics:  # the main process's (the others have none)
        metrics.write("error", step=step, message=msg)


def _report_eval_oom(session: Session, cfg: RunConfig, device, metrics, at_step: int) -> None:
    rank, world = session.rank, session.world
    vb = cfg.val_batch_size or cfg.micro_batch_size
    msg = (f"out of memory in the evaluation at step {at_step} on rank {rank} with val_batch_size={vb} "
           f"(validation and HellaSwag use it): lower --val_batch_size (e.g. {max(1, vb // 2)})"
           + ("; training itself fit, and this step is checkpointed before stopping" if at_step > 0 and world == 1
              else "; training itself fit; resume from the last checkpoint" if at_step > 0 else ""))
    print(msg, file=sys.stderr, flush=True)
    if metrics:
        metrics.write("error", step=at_step, message=msg)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _report_non_finite(session: Session, cfg: RunConfig, metrics, err: NonFiniteError, step: int) -> None:
    last_good = ckpt.find_resumable(cfg.output_dir) if session.main else None
    msg = (f"non-finite {err.what} at step {step} (loss {err.loss}, grad_norm {err.grad_norm}): "
           f"stopped, this step's update not applied; last good checkpoint: {last_good or 'none'}. "
           "Resuming with the same settings repeats this exactly (resume is bit-exact): resume with a "
           "lower --max_lr or a longer --warmup_steps (a resume may change the schedule)")
    if session.main:
        print(msg, file=sys.stderr, flush=True)
        metrics.write("error", step=step, message=msg)


def _print_digests(session: Session, step: int, digests: list[str]) -> None:
    # First step of this process: which windows each rank read (sha1 of its inputs, per micro-batch),
    # so two runs or a resumed run can be checked to read the same data.
    print(f"rank {session.rank}/{session.world} step {step} micro-batch digests: {' '.join(digests)} "
          "(data check: equal digests = identical input batches)", flush=True)


def _save_before_raising(save, step: int, tokens: int) -> None:
    """One process, an evaluation failed after `step`: checkpoint the step, and say so, before its error goes on."""
    try:
        save(step, tokens)
        print(f"the evaluation after step {step} failed (below); step {step} is checkpointed",
              file=sys.stderr, flush=True)
    except ckpt.SaveError as err:  # the evaluation's error stays the one raised
        print(f"the evaluation after step {step} failed (below), and step {step} could not be "
              f"checkpointed either: {err}", file=sys.stderr, flush=True)


def _report_save_error(session: Session, metrics, step: int, err: ckpt.SaveError) -> None:
    if session.main:
        print(str(err), file=sys.stderr, flush=True)
        try:
            metrics.write("error", step=step, message=str(err))
        except OSError:
            pass  # the same full disk: the message above is what the user sees
