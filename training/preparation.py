"""After the start-up checks, before the run folder is written: what the steps train with.

    prepare_model     AdamW, Accelerate's preparation (DDP / FSDP, precision, compile), and what it cannot run
    load_resume_state the optimizer, loss scale, data position and RNG of the checkpoint resumed from
    make_batches      the batches each step reads: one repeated batch, a prefetcher, or the loader itself
    make_evaluator    validation, HellaSwag and samples (a bad HellaSwag file is refused here)

`prepare` runs them; each can still refuse the run (nothing is written yet).
"""

import itertools
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch

from training import checkpoint as ckpt
from training.accelerator import broadcast, every_ranks_errors, first_error
from training.checkpoint_state import load_grad_scaler, load_optimizer
from training.evaluator import Evaluator
from training.metrics import default_peak_flops, flops_per_token
from training.optim import build_adamw, count_params
from training.run_config import RunConfig, grad_accum_steps
from training.session import Refusal, Session
from training.startup import Checked, Resume


@dataclass
class Prepared:
    """What the steps train with."""

    model: Any  # the raw model as accelerator.prepare returned it (DDP / FSDP / compiled): the one trained
    optimizer: Any  # AdamW, prepared
    grad_accum: int  # micro-batches per step on each rank
    device: torch.device
    device_name: str  # "NVIDIA H100 80GB HBM3", or "cpu"
    peak_flops: Optional[float]  # per device, for MFU (None: unknown)
    flops_per_token: int
    params: tuple[int, int]  # (decayed, not decayed)
    loader: Any  # data.loader.TrainBatches: this rank's windows, at the resumed position
    batches: Iterator  # what each micro-batch is read from: (x, y) pairs
    data_state: Callable[[], dict]  # the data position a checkpoint saves
    prefetcher: Any  # data.prefetch.Prefetcher when on, else None
    evaluator: Evaluator
    start_step: int  # 0, or the resumed checkpoint's step
    tokens: int  # trained before this session


def prepare(session: Session, cfg: RunConfig, checked: Checked,
            held: dict) -> tuple[Optional[Prepared], Optional[Refusal]]:
    """(what the steps train with, None) or (None, why the run cannot start). Registers the prefetcher in
    `held` (closed however the run ends)."""
    accelerator, raw_model, resume = session.accelerator, checked.raw_model, checked.resume
    grad_accum = grad_accum_steps(cfg, session.world)
    accelerator.gradient_accumulation_steps = grad_accum
    device = accelerator.device
    if device.type == "cuda" and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model, optimizer, params, fpt, refusal = prepare_model(session, cfg, raw_model)
    if refusal:
        return None, refusal
    start_step, tokens = 0, 0

    from data.loader import TrainBatches

    # Pinned host batches on CUDA: `.to(device, non_blocking=True)` is then a real async copy; from pageable
    # memory the driver may first wait for the stream, which stalls the CPU that should be queueing kernels.
    loader = TrainBatches(cfg.data_dir, cfg.micro_batch_size, cfg.seq_len, session.rank, session.world,
                          cfg.data_seed, pin_memory=device.type == "cuda")
    if resume is not None:
        refusal = load_resume_state(session, cfg, resume, raw_model, optimizer, loader, grad_accum)
        if refusal:
            return None, refusal
        start_step, tokens = resume.meta["step"], resume.meta["tokens"]
    batches, data_state, prefetcher = make_batches(cfg, loader, device, held)
    evaluator, refusal = make_evaluator(session, cfg, raw_model)
    if refusal:
        return None, refusal
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return Prepared(model=model, optimizer=optimizer, grad_accum=grad_accum, device=device, device_name=device_name,
                    peak_flops=cfg.peak_flops or default_peak_flops(device_name), flops_per_token=fpt,
                    params=params, loader=loader, batches=batches, data_state=data_state, prefetcher=prefetcher,
                    evaluator=evaluator, start_step=start_step, tokens=tokens), None


def prepare_model(session: Session, cfg: RunConfig, raw_model):
    """(model, optimizer, (decayed, not decayed) parameter counts, FLOPs per token, None), or (..., a Refusal)
    for what the prepared model cannot run on this device and precision."""
    accelerator, device = session.accelerator, session.accelerator.device
    optimizer = build_adamw(raw_model, cfg, device.type)
    params = count_params(raw_model)
    fpt = flops_per_token(raw_model, cfg.seq_len)
    model, optimizer = accelerator.prepare(raw_model, optimizer)
    problems = []
    # mixed_precision auto is each rank's own choice (its launcher's ACCELERATE_MIXED_PRECISION, else its GPU's bf16
    # support): ranks that differ trained silently in different precisions (under fp16 only some ranks skip an
    # overflowing update, and the replicas' weights part), with the main process's in the banner and checkpoints
    main_precision = broadcast(accelerator, accelerator.mixed_precision)
    if accelerator.mixed_precision != main_precision:
        problems.append(f"mixed_precision {cfg.mixed_precision!r} is {accelerator.mixed_precision!r} here but "
                        f"{main_precision!r} on the main process: the ranks of a run train in one precision; pass "
                        "--mixed_precision bf16, fp16 or no (or give every launcher the same setting)")
    if accelerator.mixed_precision == "fp16" and device.type != "cuda":
        problems.append("mixed_precision fp16 needs a CUDA GPU (Accelerate would run it as fp32 here): "
                        "use --mixed_precision bf16 or no")
    if cfg.loss_chunk_tokens and accelerator.mixed_precision == "fp16":
        problems.append("loss_chunk_tokens needs bf16 or fp32 (the launcher asked for fp16): the chunked loss makes "
                        "its gradients in forward, out of the fp16 loss scaler's reach; use --loss_chunk_tokens 0")
    if raw_model.config._attn_implementation == "flex_attention" and device.type == "cpu":
        problems.append("attn_implementation flex_attention cannot train on a CPU (torch has no CPU backward for it; "
                        "it would fail after the first evaluation): use sdpa or eager")
    if cfg.loss_chunk_tokens and not raw_model.supports_chunked_loss():
        problems.append("loss_chunk_tokens: this model's LM head is not a plain nn.Linear after preparation (wrapped "
                        "or hooked), so the chunked loss cannot run; use --loss_chunk_tokens 0")
    # the precision and device are this rank's (its launcher's environment, its machine's GPU): one that refused
    # alone did so silently (only the main process prints) and the others died in the next collective
    problems = every_ranks_errors(accelerator, problems)
    return model, optimizer, params, fpt, (Refusal(problems) if problems else None)


def load_resume_state(session: Session, cfg: RunConfig, resume: Resume, raw_model, optimizer, loader,
                      grad_accum: int) -> Optional[Refusal]:
    """The optimizer state, loss scale, and this rank's data position and RNG, from the checkpoint (the weights
    were loaded with the model)."""
    accelerator, rank, world, meta = session.accelerator, session.rank, session.world, resume.meta
    resized = ckpt.batch_split_changed(meta, cfg.to_dict(), world)
    problem = None
    try:  # the weights loaded; a damaged state file (checksums passed: written so) ends here, not in a traceback
        load_optimizer(accelerator, raw_model, optimizer, resume.dir)
        load_grad_scaler(accelerator, resume.dir)
        rank_state = ckpt.load_rank_state(resume.dir, rank if rank < meta["world_size"] else 0)
        # A rank the checkpoint did not have starts from rank 0's data position (all ranks save the same global
        # one) and keeps its own fresh RNG seed. Inside the try, before the ranks agree: a data state this rank's
        # loader refuses (ValueError) or a rank file without its keys stopped this rank alone, with a traceback,
        # and the others died in the next collective.
        if not cfg.overfit_single_batch:
            loader.load_state_dict(rank_state["data"], allow_resize=resized)
        if rank < meta["world_size"]:
            ckpt.set_rng_state(rank_state["rng"])
    except (ckpt.CheckpointError, OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as err:
        problem = (f"its optimizer or data state cannot be loaded ({type(err).__name__}: "
                   f"{str(err)[:300]}); resume from an earlier checkpoint (--resume PATH)")
    problem = first_error(accelerator, problem)  # each rank reads its own rank file (named in the message)
    if problem:
        return Refusal([problem], heading=f"cannot resume from {resume.dir}")
    if resized:
        saved_micro, saved_accum = meta["run_config"]["micro_batch_size"], meta.get("grad_accum", "?")
        session.log(f"note: resuming with world {world} x micro_batch {cfg.micro_batch_size} x grad_accum {grad_accum} "
                    f"(the checkpoint: world {meta['world_size']} x micro_batch {saved_micro} "
                    f"x grad_accum {saved_accum}): each step reads the same {cfg.total_batch_size:,} tokens as it "
                    "would have, split another way")
    return None


def make_batches(cfg: RunConfig, loader, device, held: dict):
    """(batches, data_state, prefetcher or None). Called after the loader is at its resumed position."""
    if cfg.overfit_single_batch:
        return itertools.repeat(next(iter(loader))), lambda: {"overfit_single_batch": True}, None
    if cfg.data_prefetch == "on" or (cfg.data_prefetch == "auto" and device.type == "cuda"):
        from data.prefetch import Prefetcher

        prefetcher = Prefetcher(loader, depth=2, device=device)  # after load_state_dict: resumes exactly
        held["prefetcher"] = prefetcher
        return prefetcher, prefetcher.state_dict, prefetcher
    return iter(loader), loader.state_dict, None


def make_evaluator(session: Session, cfg: RunConfig, raw_model) -> tuple[Optional[Evaluator], Optional[Refusal]]:
    from data.tokenizer import gpt2_tokenizer
    from eval.errors import EvalInputError

    try:  # reads and tokenises the HellaSwag file: a bad one is refused here, before the run folder is written
        return Evaluator(cfg, session.accelerator, gpt2_tokenizer(), session.log,
                         context=raw_model.config.n_positions), None
    except EvalInputError as err:
        return None, Refusal([f"hellaswag_file: {err}"])
