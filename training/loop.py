"""The training loop: Accelerate for devices, precision, DDP/FSDP and gradient accumulation; our own code for
the schedule, the checks, and checkpoints that resume to the bit.

    exit_code = train(load_run_config(argv))

Exit codes: 0 done (or stopped cleanly by SIGTERM/SIGINT after a checkpoint), 2 bad config or incompatible
resume (nothing written), 3 non-finite loss or grad norm (stopped; that step's update not applied), 4 out of memory,
5 a checkpoint could not be written (disk full, quota, permissions; the committed ones are kept).
(train.py adds 130: interrupted by a second Ctrl-C.)

Each rank builds its own `data.loader.TrainBatches(rank, world_size)` and feeds batches itself: the loader is an
infinite iterator with its own resumable position, so it is not handed to `accelerator.prepare`.
"""

import dataclasses
import itertools
import pickle
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from training import checkpoint as ckpt
from training import fsdp, trackers
from training.accelerator import broadcast, compile_desc, every_ranks_errors, first_error, make_accelerator
from training.checkpoint_state import load_grad_scaler, load_optimizer, save_checkpoint
from training.evaluator import Evaluator
from training.metrics import (FLOPS_FORMULA, MetricsLog, default_peak_flops, flops_per_token, mfu, step_line)
from training.model_init import ARCH_KEYS, build_model, build_model_config, describe_origin, init_model_dir
from training.optim import build_adamw, count_params, lr_at, use_fused
from training.run_config import ConfigError, RunConfig, format_run_config, grad_accum_steps, save_run_config, validate
from training.run_lock import folder_in_use, lock_run_folder
from training.signals import StopRequest
from training.step import NonFiniteError, optimizer_step

EXIT_OK, EXIT_CONFIG, EXIT_NONFINITE, EXIT_OOM, EXIT_SAVE = 0, 2, 3, 4, 5


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
    from data.loader import val_window_count

    tokens = val_window_count(cfg.data_dir, cfg.seq_len, cfg.val_tokens) * cfg.seq_len
    short = (f" (val_tokens {cfg.val_tokens:,}: the data's val split holds fewer)"
             if tokens + cfg.seq_len <= cfg.val_tokens else "")
    when = f"every {cfg.eval_every} steps" if cfg.eval_every > 0 else "at the end"
    return f"validation {tokens:,} tokens{short}, {when}"


def _passes(steps: int, tokens_per_step: int, split_tokens: int) -> str:
    """How many times the run reads its train split, and from which step it reads it again (the loader then
    starts a new, reshuffled pass without a word, as build-nanogpt wraps around its shards)."""
    text = f"{steps * tokens_per_step / split_tokens:.2f} passes over the {split_tokens:,}-token train split"
    again = split_tokens // tokens_per_step + 1  # the first step whose batch holds a window of the second pass
    return text + (f"; the data repeats from step {again:,}" if again <= steps else "")


def _changes(before: dict, after, keys) -> list[str]:
    """`key old -> new` for each of `keys` that `before` (a dict) has and `after` (an object) changes."""
    return [f"{key} {before[key]} -> {getattr(after, key)}" for key in keys
            if key in before and before[key] != getattr(after, key)]


def data_checks(cfg: RunConfig, model_vocab: int, checksums: bool = True) -> tuple[str, list[str]]:
    """(manifest hash, problems): the data must be GPT-2 tokens that fit the model's vocabulary, in shards
    that match the manifest (sha256 too when `checksums`: ~40 s for 10B tokens, so the main process only)."""
    from data.loader import TokenDataset
    from data.tokenizer import EOT_ID

    try:
        ds = TokenDataset(cfg.data_dir)
        ds.verify(vocab_size=model_vocab, eot_id=EOT_ID, check_sha256=checksums)
    except Exception as err:  # noqa: BLE001 - the data layer raises its own, already actionable, errors
        return "", [f"data_dir {cfg.data_dir!r}: {err}"]
    problems, window = [], cfg.seq_len + 1  # a training / validation window: T inputs and the next token
    train_tokens = ds.split_tokens("train")
    if train_tokens < window:
        problems.append(f"data_dir {cfg.data_dir!r}: the train split has {train_tokens:,} tokens, fewer than one "
                        f"window of seq_len + 1 = {window}: prepare more data or lower --seq_len")
    val_tokens = ds.split_tokens("val")
    if (cfg.eval_every > 0 or cfg.eval_at_end) and val_tokens < window:
        problems.append(f"data_dir {cfg.data_dir!r}: the val split has {val_tokens:,} tokens, fewer than one window "
                        f"of {window}: prepare with a larger --val-tokens, or train without validation "
                        "(--eval_every 0 --eval_at_end false)")
    return ds.manifest_hash, problems


# ---------------------------------------------------------------------------------------------------------------
# checkpoint uploads (publish.checkpoint_sync; main process only)


def start_checkpoint_uploader(cfg: RunConfig, api=None):
    """(uploader, None) or (None, why it cannot upload). Creates the repo if needed, so a run that could not
    save its checkpoints to the Hub stops before it trains."""
    from publish.checkpoint_sync import CheckpointUploader
    from publish.hub import PublishError

    try:
        return CheckpointUploader(cfg.push_checkpoints_to, private=cfg.push_private, api=api), None
    except PublishError as err:
        return None, f"{err} (train without --push_checkpoints_to, or fix the above and start again)"


def finish_uploads(uploader, metrics, log) -> None:
    """Wait for the upload in flight (the last checkpoint is the one that matters most) and report each one."""
    if uploader is None:
        return
    log(f"waiting for checkpoint uploads to {uploader.repo_id} to finish ...")
    for result in uploader.close():
        if result.ok:
            log(f"checkpoint step {result.step} uploaded: {uploader.repo_id}@{result.branch} ({result.seconds:.1f}s)")
        else:
            log(f"checkpoint step {result.step} NOT uploaded ({result.branch}): {result.error}; "
                "the local checkpoint is unaffected")
        if metrics:
            metrics.write("upload", step=result.step, repo_id=uploader.repo_id, branch=result.branch, ok=result.ok,
                          url=result.commit_url, error=result.error, seconds=result.seconds)


# ---------------------------------------------------------------------------------------------------------------
# the run


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train(cfg: RunConfig, *, hooks: Optional[dict] = None) -> int:
    """Run (or resume) training as configured. Returns the process exit code. `hooks` is for tests only:
    {"build_model": fn(cfg, resume_dir) -> model} replaces the model factory; {"hub_api": HfApi-like} replaces
    the Hub client of the checkpoint uploader."""
    threads: dict = {}  # the background threads the run starts, stopped however it ends
    code = None
    try:
        code = _train(cfg, hooks or {}, threads)
        return code
    finally:
        if threads.get("prefetcher") is not None:
            threads["prefetcher"].close()
        if threads.get("uploader") is not None:
            threads["uploader"].close()  # waits for the upload in flight; a no-op after finish_uploads()
        if threads.get("run_lock") is not None:
            threads["run_lock"].close()  # releases the run folder
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


def _train(cfg: RunConfig, hooks: dict, threads: dict) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's per-checkpoint "Writing model shards" bar
    init_model_dir.cache_clear()  # resolved once per run (an init_from run folder may have moved on since)
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    world = accelerator.num_processes
    rank = accelerator.process_index

    def log(msg: str) -> None:  # main process only; safe to call alongside the tqdm bar
        if main:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stdout)
            sys.stdout.flush()

    def fail(errors: list[str], code: int = EXIT_CONFIG, heading: str = "invalid run config") -> int:
        if main:
            print(str(ConfigError(errors, heading)), file=sys.stderr, flush=True)
        return code

    # ---- everything that can refuse the run happens before anything is written ------------------------------
    errors = validate(cfg, world)
    if cfg.compile and getattr(accelerator, "is_fsdp2", False) and (compile_problem := fsdp.compile_problem()):
        errors.append(compile_problem)
    errors = every_ranks_errors(accelerator, errors)  # paths are checked on every machine
    if errors:
        return fail(errors)
    busy = broadcast(accelerator, folder_in_use(cfg.output_dir) if main else None)
    if busy:  # checked again, race-free, when the lock is taken below
        return fail([busy], heading="cannot start")
    resume_dir = None
    if cfg.resume == "auto":
        resume_dir = ckpt.find_resumable(cfg.output_dir, log=log) if main else None
        resume_dir = broadcast(accelerator, str(resume_dir) if resume_dir else None)
        resume_dir = Path(resume_dir) if resume_dir else None
        committed = ckpt.committed_checkpoints(cfg.output_dir)
        if resume_dir is None and committed:  # all damaged: starting over would delete them as it saves
            return fail([f"output_dir {cfg.output_dir!r}: none of its {len(committed)} committed checkpoints is "
                         "intact (see the warnings above), so there is nothing to resume; move checkpoints/ away "
                         "(or repair it) to start over in this folder, or pick a new output_dir"],
                        heading="cannot resume")
    elif cfg.resume != "off":
        resume_dir = Path(cfg.resume)
        if (resume_dir / ckpt.CHECKPOINTS).is_dir():  # a run folder: its newest complete checkpoint
            found = ckpt.find_resumable(resume_dir, log=log) if main else None
            found = broadcast(accelerator, str(found) if found else None)
            if found is None:
                return fail([f"resume {cfg.resume}: the run folder has no complete checkpoint"])
            resume_dir = Path(found)  # verified by find_resumable
        else:
            problem = broadcast(accelerator, ckpt.verify(resume_dir) if main else None)
            if problem:
                return fail([f"resume checkpoint {cfg.resume}: {problem}"])
    # The run's saves go to output_dir. Checkpoints there of a later step would outrank them in retention
    # (keep_last deletes the oldest steps), so the session would delete each of its own saves: intact ones refuse
    # an explicit --resume; damaged ones (which auto, or --resume OUTPUT_DIR, fell back past) are set aside.
    set_aside: list[Path] = []
    meta = None
    if resume_dir is not None:
        try:
            meta = ckpt.read_meta(resume_dir)
        except ckpt.CheckpointError as err:
            return fail([str(err)], heading=f"cannot resume from {resume_dir}")
        resume_step = meta["step"]
        # verify() is cached: the checkpoints find_resumable checked are not read again
        newer = [c for c in ckpt.committed_checkpoints(cfg.output_dir) if ckpt.step_of(c) > resume_step]
        intact = broadcast(accelerator, [c.name for c in newer if ckpt.verify(c) is None] if main else None)
        if intact:
            return fail([f"output_dir {cfg.output_dir!r} already holds checkpoints beyond step {resume_step} of "
                         f"{resume_dir} (up to {intact[-1]}): this session's checkpoints would be deleted as old "
                         "ones; resume into a new --output_dir, or continue that folder with --resume auto"],
                        heading="cannot resume")
        set_aside = newer

    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    from safetensors import SafetensorError

    problem = None
    try:
        raw_model = (hooks.get("build_model") or build_model)(cfg, resume_dir)
    except (OSError, ValueError, ImportError, RuntimeError, SafetensorError) as err:  # ImportError: an attention
        # backend that is not installed; RuntimeError: weights of other shapes; SafetensorError: a damaged file
        problem = f"could not build the model ({cfg.init_from if resume_dir is None else resume_dir}): {err}"
    # Each rank loads the weights itself, on its own machine (init_from gpt2: its own Hub cache): one that failed
    # alone stopped without a message (only the main process prints) and the others died in the next collective.
    problems = every_ranks_errors(accelerator, [problem] if problem else [])
    if problems:
        return fail(problems)
    if cfg.init_from != "scratch":
        # The loaded model (or, resuming, the checkpoint of such a run) fixes the architecture: record its values,
        # not the run config's unused ones (run_config.yaml is written again every session).
        replaced = _changes(cfg.to_dict(), raw_model.config, ARCH_KEYS)
        if replaced:
            log(f"note: init_from {cfg.init_from} fixes the architecture; the run config's values are replaced "
                f"({', '.join(replaced)})")
        for key in ARCH_KEYS:
            setattr(cfg, key, getattr(raw_model.config, key))
    if cfg.seq_len > raw_model.config.n_positions:
        return fail([f"seq_len ({cfg.seq_len}) exceeds the model's n_positions ({raw_model.config.n_positions})"])
    checkpoint_tokenizer = None  # saved beside the weights (main process): GPT-2's, or the loaded model's own
    if main:  # when tokens were added to it (its folder's tokenizer, or the resumed checkpoint's)
        from data.tokenizer import tokenizer_for_model

        source = (resume_dir / "model" if resume_dir is not None
                  else None if cfg.init_from in ("scratch", "gpt2") else init_model_dir(cfg.init_from))
        checkpoint_tokenizer, warning = tokenizer_for_model(raw_model.config.n_positions,
                                                            raw_model.config.tokenizer_vocab_size, source)
        if warning:
            log(f"WARNING: {warning}, and start from that folder")
    if cfg.num_samples and (cfg.sample_every > 0 or cfg.eval_at_end):  # else found only at the first sample
        from data.tokenizer import gpt2_tokenizer
        from eval.sample import prompt_ids

        prompt_tokens = len(prompt_ids(gpt2_tokenizer(), cfg.sample_prompt))
        if prompt_tokens + cfg.sample_max_new_tokens > raw_model.config.n_positions:
            return fail([f"sample_prompt ({prompt_tokens} tokens) + sample_max_new_tokens "
                         f"({cfg.sample_max_new_tokens}) exceed the model's context of "
                         f"{raw_model.config.n_positions} tokens: lower --sample_max_new_tokens or shorten the prompt"])
    manifest_hash, problems = data_checks(cfg, raw_model.config.vocab_size, checksums=main)
    problems = every_ranks_errors(accelerator, problems)  # every rank stops if any one found a problem
    if problems:
        return fail(problems)
    if resume_dir is not None:
        from data.tokenizer import TOKENIZER_FINGERPRINT

        expected = build_model_config(cfg) if cfg.init_from == "scratch" else None
        problems = ckpt.compat_errors(meta, model_config=expected, run_config=cfg.to_dict(), world_size=world,
                                      data_manifest_hash=manifest_hash, tokenizer_fingerprint=TOKENIZER_FINGERPRINT)
        if problems:
            saved = resume_dir.parent.parent / "run_config.yaml"  # run/checkpoints/step_N -> run/run_config.yaml
            if cfg.resume != "auto" and Path(cfg.resume).resolve() != Path(cfg.output_dir).resolve():
                # an explicit --resume of a checkpoint: what starts from those weights with other data or settings
                # is init_from, into a folder that does not hold that run (there resume auto would find it again)
                fresh = (f"to start a new run from its weights with these settings (other data, a fresh optimizer "
                         f"and LR schedule), pass --init_from {resume_dir} instead of --resume"
                         + (" and a new --output_dir"
                            if resume_dir.resolve().parent.parent == Path(cfg.output_dir).resolve() else ""))
            else:
                fresh = "to start a new run with these settings, pick a new --output_dir"
            return fail(problems + [
                "to continue that run, launch it with its data and the settings in "
                f"{saved if saved.is_file() else 'the run config saved with it'} (any world size and "
                f"micro_batch_size); {fresh}"], heading=f"cannot resume from {resume_dir}")
        trained = meta.get("run_config") or {}
        if meta["step"] >= cfg.max_steps:
            decay_end = trained.get("lr_decay_steps") or trained.get("max_steps")
            hint = "raise --max_steps to continue"
            if decay_end and not cfg.lr_decay_steps:  # the cosine would otherwise stretch to the new max_steps
                hint += f", with --lr_decay_steps {decay_end} to keep the LR schedule it was trained on"
            log(f"{resume_dir} is at step {meta['step']} >= max_steps {cfg.max_steps}: nothing to train ({hint})")
            return EXIT_OK
        schedule = _changes(trained, cfg, ("max_steps", "lr_decay_steps", "warmup_steps", "max_lr", "min_lr"))
        if schedule:  # allowed (extending a run is normal), but the LR curve changes: say so, once
            log(f"note: resuming with another learning-rate schedule ({', '.join(schedule)}): from step "
                f"{meta['step'] + 1} the LR follows the new one")
        adamw = _changes(trained, cfg, ("weight_decay", "beta1", "beta2", "adam_eps"))
        if adamw:  # this run's settings go into the loaded optimizer state (load_optimizer)
            log(f"note: resuming with other AdamW settings ({', '.join(adamw)}): applied from step {meta['step'] + 1}")
        if trained.get("val_tokens", cfg.val_tokens) != cfg.val_tokens:
            from data.loader import val_window_count

            windows = [val_window_count(cfg.data_dir, cfg.seq_len, n) for n in (trained["val_tokens"], cfg.val_tokens)]
            if windows[0] != windows[1]:  # another set of windows: the val curve is not one series across the resume
                log(f"note: resuming with another validation set (val_tokens {trained['val_tokens']} -> "
                    f"{cfg.val_tokens}: {windows[0]} -> {windows[1]} windows): val losses from step {meta['step'] + 1} "
                    "on are not comparable with the earlier ones")

    uploader, problem = None, None
    if cfg.push_checkpoints_to and main:  # one Hub call now: offline / no token / no access stop the run here
        uploader, problem = start_checkpoint_uploader(cfg, api=hooks.get("hub_api"))
        threads["uploader"] = uploader
    problem = broadcast(accelerator, problem) if cfg.push_checkpoints_to else None
    if problem:
        return fail([f"push_checkpoints_to {cfg.push_checkpoints_to!r}: {problem}"])

    # ---- setup ----------------------------------------------------------------------------------------------
    grad_accum = grad_accum_steps(cfg, world)
    accelerator.gradient_accumulation_steps = grad_accum
    device = accelerator.device
    if device.type == "cuda" and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    optimizer = build_adamw(raw_model, cfg, device.type)
    decayed, not_decayed = count_params(raw_model)
    fpt = flops_per_token(raw_model, cfg.seq_len)
    model, optimizer = accelerator.prepare(raw_model, optimizer)
    problems = []
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
    if problems:
        return fail(problems)
    start_step, tokens = 0, 0

    from data.loader import TrainBatches
    from data.tokenizer import gpt2_tokenizer

    # Pinned host batches on CUDA: `.to(device, non_blocking=True)` is then a real async copy; from pageable
    # memory the driver may first wait for the stream, which stalls the CPU that should be queueing kernels.
    loader = TrainBatches(cfg.data_dir, cfg.micro_batch_size, cfg.seq_len, rank, world, cfg.data_seed,
                          pin_memory=device.type == "cuda")
    if resume_dir is not None:
        problem = None
        try:  # the weights loaded; a damaged state file (checksums passed: written so) ends here, not in a traceback
            load_optimizer(accelerator, raw_model, optimizer, resume_dir)
            load_grad_scaler(accelerator, resume_dir)
            rank_state = ckpt.load_rank_state(resume_dir, rank if rank < meta["world_size"] else 0)
        except (ckpt.CheckpointError, OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as err:
            problem = (f"its optimizer or data state cannot be loaded ({type(err).__name__}: "
                       f"{str(err)[:300]}); resume from an earlier checkpoint (--resume PATH)")
        problem = first_error(accelerator, problem)  # each rank reads its own rank file (named in the message)
        if problem:
            return fail([problem], heading=f"cannot resume from {resume_dir}")
        resized = ckpt.batch_split_changed(meta, cfg.to_dict(), world)
        if resized:
            saved_micro, saved_accum = meta["run_config"]["micro_batch_size"], meta.get("grad_accum", "?")
            log(f"note: resuming with world {world} x micro_batch {cfg.micro_batch_size} x grad_accum {grad_accum} "
                f"(the checkpoint: world {meta['world_size']} x micro_batch {saved_micro} "
                f"x grad_accum {saved_accum}): each step reads the same {cfg.total_batch_size:,} tokens as it "
                "would have, split another way")
        # A rank the checkpoint did not have starts from rank 0's data position (all ranks save the same global
        # one, loaded above) and keeps its own fresh RNG seed.
        if not cfg.overfit_single_batch:
            loader.load_state_dict(rank_state["data"], allow_resize=resized)
        if rank < meta["world_size"]:
            ckpt.set_rng_state(rank_state["rng"])
        start_step, tokens = meta["step"], meta["tokens"]
    prefetcher = None
    if cfg.overfit_single_batch:
        batches = itertools.repeat(next(iter(loader)))
        data_state = lambda: {"overfit_single_batch": True}  # noqa: E731
    elif cfg.data_prefetch == "on" or (cfg.data_prefetch == "auto" and device.type == "cuda"):
        from data.prefetch import Prefetcher

        batches = prefetcher = Prefetcher(loader, depth=2, device=device)  # after load_state_dict: resumes exactly
        threads["prefetcher"] = prefetcher
        data_state = prefetcher.state_dict
    else:
        batches = iter(loader)
        data_state = loader.state_dict

    from eval.errors import EvalInputError

    try:  # reads and tokenises the HellaSwag file: a bad one is refused here, before the run folder is written
        evaluator = Evaluator(cfg, accelerator, gpt2_tokenizer(), log, context=raw_model.config.n_positions)
    except EvalInputError as err:
        return fail([f"hellaswag_file: {err}"])

    # ---- the run folder -------------------------------------------------------------------------------------
    out = Path(cfg.output_dir)
    metrics = None
    busy = None
    if main:  # one training per run folder, held until this process ends
        threads["run_lock"], busy = lock_run_folder(out)
    busy = broadcast(accelerator, busy)
    if busy:
        return fail([busy], heading="cannot start")
    tracker_error = trackers.start(accelerator, {k: v for k, v in cfg.to_dict().items() if v is not None}, out,
                                   start_step)
    tracker_error = broadcast(accelerator, tracker_error)
    if tracker_error:  # before the run folder gets its config and metrics files
        return fail([tracker_error], heading="cannot start")
    if main:
        # resume: auto in the saved copy: relaunched with it, the run continues from its own checkpoints (not
        # again from the folder this session may have started from)
        save_run_config(dataclasses.replace(cfg, resume="auto"), out / "run_config.yaml")
        metrics = MetricsLog(out / "metrics.jsonl", log=log)
        if resume_dir is not None:
            metrics.write("resume", step=start_step, checkpoint=str(resume_dir))
        for damaged in set_aside:  # renamed, not deleted: the user may want to look at them
            kept = damaged.with_name(f"damaged-{damaged.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            damaged.rename(kept)
            log(f"set aside the damaged checkpoint {damaged.name} as {kept} (retention would have kept it over "
                "this session's saves); delete it when you no longer need it")

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = cfg.peak_flops or default_peak_flops(device_name)
    precision = accelerator.mixed_precision
    attn = raw_model.config._attn_implementation
    tokens_per_step = cfg.total_batch_size
    log("resolved run config:\n" + format_run_config(cfg))
    log(
        "\n".join([
            f"world size {world}{_strategy(accelerator)} | device {device} ({device_name})"
            f" | precision {precision}"
            f"{' + TF32' if device.type == 'cuda' and cfg.tf32 else ''} | compile {compile_desc(cfg)}"
            f" | attention {attn} | fused AdamW {use_fused(cfg.fused_adamw, device.type)}"
            f" | data prefetch {'on' if prefetcher is not None else 'off'}"
            f" | loss {'chunked, ' + format(cfg.loss_chunk_tokens, ',') + ' tokens' if cfg.loss_chunk_tokens else 'full logits'}",
            f"tokens/step {tokens_per_step:,} = micro_batch {cfg.micro_batch_size} x seq_len {cfg.seq_len} x "
            f"grad_accum {grad_accum} x world {world}",
            f"total {cfg.max_steps:,} steps = {cfg.max_steps * tokens_per_step:,} tokens"
            f" ({_passes(cfg.max_steps, tokens_per_step, loader.tokens_per_epoch)}) | warmup {cfg.warmup_steps} "
            f"| lr {cfg.max_lr:g} -> {cfg.min_lr:g} (cosine, reaches min_lr "
            f"after step {cfg.lr_decay_steps or cfg.max_steps})",
            f"params {decayed + not_decayed:,} (decayed {decayed:,}, not decayed {not_decayed:,})",
            *([_validation_line(cfg)] if cfg.eval_every > 0 or cfg.eval_at_end else []),
            f"flops/token {fpt / 1e6:.1f}M [{FLOPS_FORMULA}] | peak "
            + (f"{peak / 1e12:.4g} TFLOP/s per device" if peak else "unknown (set --peak_flops for MFU)"),
            trackers.describe(cfg.log_with, out),
            (f"resuming from {resume_dir} at step {start_step}" if resume_dir else
             f"starting from {describe_origin(cfg.init_from)}"),
        ])
    )

    # Validation runs a compiled module of its own over the same weights (fixed shapes: compiled once for
    # no_grad). Not `accelerator.unwrap_model(model)`: with compile + DDP, accelerate 1.15 unwraps by setting
    # the compiled wrapper's `_orig_mod` to the bare module, which silently drops DDP from the training model.
    eval_model = torch.compile(raw_model) if cfg.compile and not fsdp.is_fsdp(accelerator) else raw_model

    def evaluate(step: int, final: bool = False):
        if final or _due(step, cfg.eval_every):
            evaluator.val_loss(eval_model, step, metrics)
        if final or _due(step, cfg.hellaswag_every):
            evaluator.hellaswag_eval(raw_model, step, metrics)
        if final or _due(step, cfg.sample_every):
            evaluator.samples(raw_model, step, metrics)

    # ---- the loop -------------------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    # A bar only on a terminal or in a notebook: redirected to a file its redraws are noise (the step lines carry
    # the same facts).
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    bar = tqdm(total=cfg.max_steps, initial=start_step, unit="step",
               disable=not (main and cfg.progress_bar and interactive),
               dynamic_ncols=True, file=sys.stderr)
    run_t0 = time.time()
    tok_rates = []
    last_saved = start_step if resume_dir is not None else None
    step = start_step
    code = EXIT_OK

    def report_eval_oom(at_step: int) -> None:
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

    if start_step == 0 and cfg.eval_every > 0:
        try:
            evaluator.val_loss(eval_model, 0, metrics)  # the baseline every val curve starts from
        except torch.OutOfMemoryError:
            report_eval_oom(0)
            finish_uploads(uploader, metrics, log)
            return EXIT_OOM
    model.train()
    with StopRequest() as stop:
        while step < cfg.max_steps:
            t0 = time.time()
            digests = [] if step == start_step else None
            try:
                loss_value, norm_value, stop_now = optimizer_step(
                    accelerator, model, optimizer, batches, lr=lr_at(step, cfg), grad_accum=grad_accum,
                    grad_clip=cfg.grad_clip, device=device, stop_requested=stop.requested, digests=digests,
                    loss_chunk_tokens=cfg.loss_chunk_tokens)
            except torch.OutOfMemoryError:
                print(f"out of memory at step {step + 1} on rank {rank} with micro_batch_size={cfg.micro_batch_size}, "
                      f"seq_len={cfg.seq_len}: lower --micro_batch_size (e.g. {max(1, cfg.micro_batch_size // 2)}); "
                      f"grad accumulation grows to keep total_batch_size={cfg.total_batch_size:,} tokens/step "
                      "unchanged (it is never changed for you).", file=sys.stderr, flush=True)
                finish_uploads(uploader, metrics, log)
                return EXIT_OOM
            except NonFiniteError as err:
                last_good = ckpt.find_resumable(cfg.output_dir) if main else None
                msg = (f"non-finite {err.what} at step {step + 1} (loss {err.loss}, grad_norm {err.grad_norm}): "
                       f"stopped, this step's update not applied; last good checkpoint: {last_good or 'none'}. "
                       "Resuming with the same settings repeats this exactly (resume is bit-exact): resume with a "
                       "lower --max_lr or a longer --warmup_steps (a resume may change the schedule)")
                if main:
                    print(msg, file=sys.stderr, flush=True)
                    metrics.write("error", step=step + 1, message=msg)
                code = EXIT_NONFINITE
                break
            if digests is not None:
                # First step of this process: which windows each rank read (sha1 of its inputs, per micro-batch),
                # so two runs or a resumed run can be checked to read the same data.
                print(f"rank {rank}/{world} step {step + 1} micro-batch digests: {' '.join(digests)} "
                      "(data check: equal digests = identical input batches)", flush=True)
            step += 1
            tokens += tokens_per_step
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t0
            tok_s = tokens_per_step / dt
            if step > start_step + 1:
                tok_rates.append(tok_s)
            lr = lr_at(step - 1, cfg)
            m = mfu(fpt, tok_s, peak, world)
            # ETA from the wall time per step since this session's first step (compiling excluded; evaluations
            # and checkpoints included, as they will be in the steps left).
            now = time.time()
            if step == start_step + 1:
                eta_from = (step, now)
            eta = None
            if step > eta_from[0] and step < cfg.max_steps:
                eta = (now - eta_from[1]) / (step - eta_from[0]) * (cfg.max_steps - step)
            log(step_line(step, cfg.max_steps, loss_value, lr, norm_value, dt, tok_s, m, eta_s=eta))
            if main:
                metrics.write("train", step=step, loss=loss_value, lr=lr, grad_norm=norm_value, dt_ms=1000 * dt,
                              tok_per_s=tok_s, mfu=m, tokens=tokens)
            accelerator.log({"train/loss": loss_value, "train/lr": lr, "train/grad_norm": norm_value,
                             "train/tokens": tokens, "perf/tok_per_s": tok_s,
                             **({"perf/mfu": m} if m is not None else {})}, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)

            done = step >= cfg.max_steps
            try:
                evaluate(step, final=done and cfg.eval_at_end)
            except torch.OutOfMemoryError:  # training fit; an evaluation did not
                report_eval_oom(step)
                if world > 1:  # the other ranks may be inside a collective: no checkpoint can be agreed on
                    return EXIT_OOM
                code, stop_now = EXIT_OOM, True  # save this step (below), then stop
            except Exception:
                # Any other evaluation error: the step itself trained fine, so keep it (one process: no other rank
                # to agree with) before the error propagates; a resume then continues after it.
                if world == 1 and last_saved != step:
                    try:
                        save_checkpoint(accelerator, cfg, raw_model, optimizer, data_state(), step, tokens,
                                        manifest_hash, checkpoint_tokenizer, log)
                        print(f"the evaluation after step {step} failed (below); step {step} is checkpointed",
                              file=sys.stderr, flush=True)
                    except ckpt.SaveError as err:  # the evaluation's error stays the one raised
                        print(f"the evaluation after step {step} failed (below), and step {step} could not be "
                              f"checkpointed either: {err}", file=sys.stderr, flush=True)
                raise
            if world == 1 and stop.requested:  # a signal during this step or its evaluation: stop after it (one
                stop_now = True                # process: no other rank to agree with first)
            if stop_now or done or _due(step, cfg.save_every):
                try:
                    saved = save_checkpoint(accelerator, cfg, raw_model, optimizer, data_state(), step, tokens,
                                            manifest_hash, checkpoint_tokenizer, log)
                except ckpt.SaveError as err:  # every rank gets it: stop together, with the message, not a traceback
                    if main:
                        print(str(err), file=sys.stderr, flush=True)
                        try:
                            metrics.write("error", step=step, message=str(err))
                        except OSError:
                            pass  # the same full disk: the message above is what the user sees
                    finish_uploads(uploader, metrics, log)
                    return EXIT_SAVE
                last_saved = step
                if uploader is not None:  # hard-links the files and returns; the upload runs in a thread
                    branch = uploader.submit(saved, out / "metrics.jsonl", step=step)
                    log(f"checkpoint step {step} queued for upload to {cfg.push_checkpoints_to}@{branch}")
            if code == EXIT_OOM:
                break
            if stop_now or (world == 1 and stop.requested and last_saved == step):  # latter: a signal in the save
                if not done:
                    log(f"stopped by a signal at step {step}: checkpoint committed; continue with --resume auto")
                break
    bar.close()

    if code == EXIT_OK and step >= cfg.max_steps:
        wall = time.time() - run_t0
        if main:
            # steps and tokens: the run's totals; wall_time_s, tok/s and mfu: this session's (since its start)
            summary = dict(steps=step, tokens=tokens, session_steps=step - start_step, wall_time_s=wall,
                           device=device_name, world_size=world,
                           precision=precision, mean_tok_per_s=(sum(tok_rates) / len(tok_rates)) if tok_rates else None,
                           mfu=mfu(fpt, sum(tok_rates) / len(tok_rates), peak, world) if tok_rates else None,
                           flops_formula=FLOPS_FORMULA, last_checkpoint=last_saved)
            metrics.write("summary", **summary)
            session = f" in {wall:.1f}s" if start_step == 0 else f" ({step - start_step} this session, in {wall:.1f}s)"
            log(f"done: {step} steps, {tokens:,} tokens{session}")
    finish_uploads(uploader, metrics, log)
    if metrics:
        metrics.close()
    accelerator.end_training()
    return code
