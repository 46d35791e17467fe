"""The training loop: Accelerate for devices, precision, DDP/FSDP and gradient accumulation; our own code for
the schedule, the checks, and checkpoints that resume to the bit.

    exit_code = train(load_run_config(argv))

Exit codes: 0 done (or stopped cleanly by SIGTERM/SIGINT after a checkpoint), 2 bad config or incompatible
resume (nothing written), 3 non-finite loss or grad norm (stopped; that step's update not applied), 4 out of memory.

Each rank builds its own `data.loader.TrainBatches(rank, world_size)` and feeds batches itself: the loader is an
infinite iterator with its own resumable position, so it is not handed to `accelerator.prepare`.
"""

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from training import checkpoint as ckpt
from training import fsdp
from training.metrics import (FLOPS_FORMULA, MetricsLog, default_peak_flops, flops_per_token, mfu, step_line)
from training.optim import build_adamw, count_params, lr_at, set_lr, use_fused, with_this_runs_groups
from training.run_config import (ConfigError, RunConfig, format_run_config, grad_accum_steps, save_run_config,
                                 validate)
from training.run_lock import folder_in_use, lock_run_folder
from training.signals import StopRequest
from training import trackers

EXIT_OK, EXIT_CONFIG, EXIT_NONFINITE, EXIT_OOM = 0, 2, 3, 4


class NonFiniteError(RuntimeError):
    def __init__(self, loss: float, grad_norm: float):
        self.loss, self.grad_norm = loss, grad_norm
        self.what = "loss" if not math.isfinite(loss) else "grad norm"
        super().__init__(f"non-finite {self.what} (loss {loss}, grad_norm {grad_norm})")


# ---------------------------------------------------------------------------------------------------------------
# setup


def resolve_precision(setting: str) -> str:
    """'auto': the launcher's choice (ACCELERATE_MIXED_PRECISION from the accelerate config), else bf16 on a
    GPU that has it, else fp32 ('no')."""
    if setting != "auto":
        return setting
    from_launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if from_launcher != "no":  # 'no' is also the launcher's default: it does not override the GPU default
        return from_launcher
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def make_accelerator(cfg: RunConfig, grad_accum: int = 1):
    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    kwargs = dict(
        gradient_accumulation_steps=grad_accum,
        mixed_precision=resolve_precision(cfg.mixed_precision),
        log_with=trackers.resolve_trackers(cfg.log_with) or None,
        project_dir=cfg.output_dir,
    )
    fsdp_plugin = fsdp.plugin_for_launch(kwargs["mixed_precision"])  # FSDP2: gradients reduced in fp32
    if fsdp_plugin is not None:
        kwargs["fsdp_plugin"] = fsdp_plugin
    if cfg.compile:
        # Per-block compile only under FSDP2 (see training/fsdp.py); elsewhere the whole model, as measured in
        # BENCHMARKS.md, whatever a launcher config's dynamo settings say (the run config decides).
        kwargs["dynamo_plugin"] = TorchDynamoPlugin(backend="inductor", mode=cfg.compile_mode,
                                                    use_regional_compilation=fsdp.launched_with_fsdp2())
    else:
        kwargs["dynamo_backend"] = "no"  # the run config decides, not a launcher default
    return Accelerator(**kwargs)


def _compile_desc(cfg: RunConfig) -> str:
    if not cfg.compile:
        return "off"
    return "on" if cfg.compile_mode == "default" else f"on ({cfg.compile_mode})"


ARCH_KEYS = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")  # run-config fields of the architecture


def _changes(before: dict, after, keys) -> list[str]:
    """`key old -> new` for each of `keys` that `before` (a dict) has and `after` (an object) changes."""
    return [f"{key} {before[key]} -> {getattr(after, key)}" for key in keys
            if key in before and before[key] != getattr(after, key)]


def build_model_config(cfg: RunConfig):
    from configuration_gpt2repro import GPT2ReproConfig

    return GPT2ReproConfig(**{key: getattr(cfg, key) for key in ARCH_KEYS})


def build_model(cfg: RunConfig, resume_dir: Optional[Path]):
    """The model in fp32: from a checkpoint when resuming, else from scratch / OpenAI GPT-2 / a GPT-2 folder."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    if resume_dir is not None:
        config = GPT2ReproConfig.from_pretrained(resume_dir / "model")
        model = GPT2ReproForCausalLM(config)
        ckpt.load_weights(model, resume_dir / "model")
    elif cfg.init_from == "scratch":
        model = GPT2ReproForCausalLM(build_model_config(cfg))
    else:
        model = load_pretrained(cfg.init_from)
    model.set_attn_implementation(cfg.attn_implementation)
    return model.float()


def load_pretrained(init_from: str):
    """OpenAI GPT-2 ('gpt2' = openai-community/gpt2 on the Hub), one of our folders, or any stock GPT-2 folder."""
    from convert_gpt2 import load_stock_gpt2
    from modeling_gpt2repro import GPT2ReproForCausalLM

    if init_from == "gpt2":
        from huggingface_hub import try_to_load_from_cache

        from publish.hub import hub_reachable

        # offline and not in the Hub cache: say so now, not after the libraries' half a minute of retries
        cached = try_to_load_from_cache("openai-community/gpt2", "config.json")  # a path, None or a sentinel
        if not isinstance(cached, str) and not hub_reachable():
            raise OSError("init_from 'gpt2' downloads openai-community/gpt2 from the Hub, which cannot be reached "
                          "(and it is not in the Hub cache): go online once, or pass a local GPT-2 folder")
        return load_stock_gpt2("openai-community/gpt2")
    # a model folder, a checkpoint folder or a run folder (its newest intact checkpoint), as export and eval take
    model_dir = init_model_dir(init_from)
    config_file = model_dir / "config.json"
    if json.loads(config_file.read_text()).get("model_type") == "gpt2repro":
        return GPT2ReproForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return load_stock_gpt2(str(model_dir))


@functools.lru_cache(maxsize=4)
def init_model_dir(init_from: str) -> Path:
    """The model folder an init_from folder stands for: itself, a checkpoint's model/, or a run folder's newest
    intact checkpoint (as export and eval resolve it). Resolved once per run (train() clears the cache), so
    the start line names the folder that was loaded even if the source run commits a newer checkpoint meanwhile."""
    from publish.run_folder import resolve_source

    return resolve_source(init_from).model_dir


def _origin(init_from: str) -> str:
    """What a run starts from, for the log: a folder is named down to the model folder it resolved to."""
    if init_from in ("scratch", "gpt2"):
        return init_from
    model_dir = init_model_dir(init_from)
    return init_from if Path(model_dir) == Path(init_from) else f"{init_from} (model: {model_dir})"


def resolve_hellaswag(setting: str, log=print) -> Optional[str]:
    """Path of the HellaSwag val jsonl, or None (with one line saying why and how to enable it). 'auto': as
    `python -m eval.hellaswag` finds it ($HELLASWAG_FILE, an earlier download, the Hub)."""
    from eval.errors import EvalInputError
    from eval.hellaswag_data import find_hellaswag_file

    if setting == "off":
        return None
    if setting != "auto":
        return setting
    try:
        return str(find_hellaswag_file("to enable it pass --hellaswag_file PATH/hellaswag_val.jsonl "
                                       "(or set HELLASWAG_FILE), or run once online"))
    except EvalInputError as err:
        log(f"HellaSwag skipped: {err}.")
        return None


@dataclass
class Derived:
    world_size: int
    grad_accum: int
    tokens_per_step: int
    precision: str
    device: str
    device_name: str


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
# one optimizer step (shared with bench/bench_train_overhead.py)


def train_step(accelerator, model, batches, grad_accum: int, grad_clip: float, device, digests=None,
               loss_chunk_tokens: int = 0):
    """Forward/backward over `grad_accum` micro-batches (DDP syncs only on the last one, through
    `accelerator.accumulate`), then clip. Returns (mean micro-batch loss, grad norm) as tensors, before any
    optimizer step: the caller checks them first. `loss_chunk_tokens` > 0: the model's fused chunked loss."""
    loss_kwargs = {"loss_chunk_tokens": loss_chunk_tokens} if loss_chunk_tokens else {}
    loss_sum = torch.zeros((), device=device)
    for _ in range(grad_accum):
        x, y = next(batches)
        if digests is not None:
            digests.append(hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest()[:12])
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with accelerator.accumulate(model):
            # return_logits=False: under compile a returned (B, T, V) logits tensor costs a write, and backward a
            # zero gradient of that size (BENCHMARKS.md)
            loss = model(input_ids=x, shift_labels=y, return_logits=False, **loss_kwargs).loss
            loss_sum += loss.detach()
            accelerator.backward(loss)  # divides by grad_accum
    assert accelerator.sync_gradients, "micro-steps out of step with gradient_accumulation_steps"
    # max_norm=inf measures the norm without clipping
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    return loss_sum / grad_accum, grad_norm


def optimizer_step(accelerator, model, optimizer, batches, *, lr: float, grad_accum: int, grad_clip: float, device,
                   stop_requested: bool = False, digests=None, loss_chunk_tokens: int = 0) -> tuple[float, float, bool]:
    """One optimizer step as the loop runs it: set the LR, forward/backward/clip, agree across ranks on the
    mean loss and on stopping (one collective), refuse non-finite values (NonFiniteError; the update is not
    applied), update. Returns (mean loss over ranks, grad norm, some rank asked to stop).

    Host syncs: one, after the update is queued. With fused AdamW (the default on CUDA) the non-finite check
    runs on the device: the optimizer's `found_inf` (what GradScaler uses) makes the fused kernel skip the whole
    update, so the GPU gets the step without waiting for the CPU to read the loss first. Otherwise the values
    are read first and the step is not called. Under fp16 the GradScaler owns `found_inf`: it skips the updates
    whose gradients overflowed (a normal event there: the grad norm is then inf and the step is not an error)
    and lowers the loss scale; only a non-finite loss stops the run."""
    set_lr(optimizer, lr)
    loss, grad_norm = train_step(accelerator, model, batches, grad_accum, grad_clip, device, digests, loss_chunk_tokens)
    # new_full, not torch.tensor(...): a host-to-device copy from pageable memory would wait for the backward
    flags = torch.stack([loss.float(), loss.new_full((), float(stop_requested), dtype=torch.float32)])
    flags = accelerator.reduce(flags, reduction="sum")  # queued on the device like the rest
    inner = getattr(optimizer, "optimizer", optimizer)  # under Accelerate's AcceleratedOptimizer
    fp16_scaler = getattr(optimizer, "scaler", None) is not None
    # per group, not .defaults: the groups are what load_optimizer made of the checkpoint's (with_this_runs_groups)
    on_device_check = not fp16_scaler and all(group.get("fused") for group in inner.param_groups)
    if on_device_check:
        # 0-dim float 1.0 when the summed loss or the norm (identical on every rank) is non-finite: every rank
        # then skips the same update
        inner.found_inf = (~(torch.isfinite(flags[0]) & torch.isfinite(grad_norm))).float()
        try:
            optimizer.step()
        finally:
            inner.__dict__.pop("found_inf", None)
    elif fp16_scaler:
        optimizer.step()  # GradScaler.step: skips an overflowing update by itself, then updates the scale
    loss_sum, stop_flag = flags.tolist()  # the step's one host sync
    loss_value, stop_now = loss_sum / accelerator.num_processes, stop_flag > 0
    norm_value = float(grad_norm)  # identical on every rank (gradients are already all-reduced)
    if not math.isfinite(loss_value) or (not fp16_scaler and not math.isfinite(norm_value)):
        raise NonFiniteError(loss_value, norm_value)
    if not (on_device_check or fp16_scaler):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_value, norm_value, stop_now


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


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
            "versions": _versions(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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


def _versions() -> dict:
    import accelerate
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def _broadcast(accelerator, value):
    from accelerate.utils import broadcast_object_list

    if accelerator.num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


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
# evaluation


class Evaluator:
    """Validation loss, HellaSwag and samples. Works with torch.compile on: val loss runs the compiled module
    (same shapes as training, one recompile for no_grad), HellaSwag and generation run the eager module that
    shares its weights (their shapes change with every example)."""

    def __init__(self, cfg, accelerator, tokenizer, log, context: int = 1024):
        self.cfg, self.acc, self.tok, self.log = cfg, accelerator, tokenizer, log
        self.hellaswag = None
        path = resolve_hellaswag(cfg.hellaswag_file, log=log) if accelerator.is_main_process else None
        path = _broadcast(accelerator, path)
        if path:
            from eval.hellaswag import HellaSwagScorer

            self.hellaswag = HellaSwagScorer.from_file(path, tokenizer, limit=cfg.hellaswag_limit,
                                                       max_length=min(1024, context))
            log(f"HellaSwag: {path} ({cfg.hellaswag_limit or 'all'} examples)")

    def _reduce(self, tensor):
        return self.acc.reduce(tensor, reduction="sum")

    @contextlib.contextmanager
    def _mode(self, model):
        was_training = model.training
        model.eval()
        # evaluation must not move the training RNG streams (or resume would no longer be exact)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self.acc.autocast():
                yield
        finally:
            model.train(was_training)

    def val_loss(self, model, step, metrics):
        from data.loader import val_batches, val_window_count
        from eval.val_loss import evaluate_val_loss

        cfg = self.cfg
        t0 = time.time()
        with self._mode(model):
            batch_size = cfg.val_batch_size or cfg.micro_batch_size
            batches = val_batches(cfg.data_dir, batch_size, cfg.seq_len,
                                  cfg.val_tokens, self.acc.process_index, self.acc.num_processes,
                                  pin_memory=self.acc.device.type == "cuda")
            if fsdp.is_fsdp(self.acc):  # every forward is collective: each rank runs as many as the busiest one
                n_windows = val_window_count(cfg.data_dir, cfg.seq_len, cfg.val_tokens)
                batches = fsdp.padded_val_batches(batches, n_windows, batch_size, self.acc.num_processes, cfg.seq_len)
            loss, n_tokens = evaluate_val_loss(model, batches, self._reduce)
        loss, n_tokens = float(loss), int(n_tokens)
        self.log(f"val step {step:>6} | val_loss {loss:.6f} | tokens {n_tokens:,} | {time.time() - t0:.1f}s")
        if metrics:
            metrics.write("val", step=step, val_loss=loss, val_tokens=n_tokens)
        self.acc.log({"val/loss": loss}, step=step)
        return loss

    def hellaswag_eval(self, model, step, metrics):
        if self.hellaswag is None:
            return None
        t0 = time.time()
        with self._mode(model):
            res = self.hellaswag.evaluate(model, batch_size=self.cfg.val_batch_size or self.cfg.micro_batch_size,
                                          rank=self.acc.process_index, world_size=self.acc.num_processes,
                                          reduce_fn=self._reduce)
        from eval.hellaswag import REFERENCE_GPT2_124M as ref

        self.log(f"hellaswag step {step:>6} | acc {res['acc']:.4f} | acc_norm {res['acc_norm']:.4f} | "
                 f"acc_tokennorm {res['acc_tokennorm']:.4f} | n {res['n']} | {time.time() - t0:.1f}s | "
                 f"OpenAI GPT-2 124M: acc_norm {ref['acc_norm']:.4f}, acc_tokennorm {ref['acc_tokennorm']:.4f}")
        if metrics:
            metrics.write("hellaswag", step=step, acc=res["acc"], acc_norm=res["acc_norm"],
                          acc_tokennorm=res["acc_tokennorm"], n=res["n"])
        self.acc.log({f"hellaswag/{name}": res[name] for name in ("acc_norm", "acc", "acc_tokennorm")}, step=step)
        return res

    def samples(self, model, step, metrics):
        from eval.sample import generate_samples

        cfg = self.cfg
        if cfg.num_samples <= 0:
            return []
        with self._mode(model):  # every rank generates (an FSDP forward is collective); rank 0 reports
            texts = generate_samples(model, self.tok, cfg.sample_prompt, num_samples=cfg.num_samples,
                                     max_new_tokens=cfg.sample_max_new_tokens, top_k=cfg.sample_top_k,
                                     seed=cfg.seed + step)
        for i, text in enumerate(texts):
            self.log(f"sample {i} step {step}: {text!r}")
        if metrics:
            metrics.write("sample", step=step, prompt=cfg.sample_prompt, texts=list(texts))
        trackers.log_texts(self.acc, {f"samples/{i}": text for i, text in enumerate(texts)}, step)
        return texts


# ---------------------------------------------------------------------------------------------------------------
# the run


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train(cfg: RunConfig, *, hooks: Optional[dict] = None) -> int:
    """Run (or resume) training as configured. Returns the process exit code. `hooks` is for tests only:
    {"build_model": fn(cfg, resume_dir) -> model} replaces the model factory; {"hub_api": HfApi-like} replaces
    the Hub client of the checkpoint uploader."""
    threads: dict = {}  # the background threads the run starts, stopped however it ends
    try:
        return _train(cfg, hooks or {}, threads)
    finally:
        if threads.get("prefetcher") is not None:
            threads["prefetcher"].close()
        if threads.get("uploader") is not None:
            threads["uploader"].close()  # waits for the upload in flight; a no-op after finish_uploads()
        if threads.get("run_lock") is not None:
            threads["run_lock"].close()  # releases the run folder


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
    if errors:
        return fail(errors)
    busy = _broadcast(accelerator, folder_in_use(cfg.output_dir) if main else None)
    if busy:  # checked again, race-free, when the lock is taken below
        return fail([busy], heading="cannot start")
    resume_dir = None
    if cfg.resume == "auto":
        resume_dir = ckpt.find_resumable(cfg.output_dir, log=log) if main else None
        resume_dir = _broadcast(accelerator, str(resume_dir) if resume_dir else None)
        resume_dir = Path(resume_dir) if resume_dir else None
    elif cfg.resume != "off":
        resume_dir = Path(cfg.resume)
        if (resume_dir / ckpt.CHECKPOINTS).is_dir():  # a run folder: its newest complete checkpoint
            found = ckpt.find_resumable(resume_dir, log=log) if main else None
            found = _broadcast(accelerator, str(found) if found else None)
            if found is None:
                return fail([f"resume {cfg.resume}: the run folder has no complete checkpoint"])
            resume_dir = Path(found)  # verified by find_resumable
        else:
            problem = _broadcast(accelerator, ckpt.verify(resume_dir) if main else None)
            if problem:
                return fail([f"resume checkpoint {cfg.resume}: {problem}"])

    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    try:
        raw_model = (hooks.get("build_model") or build_model)(cfg, resume_dir)
    except (OSError, ValueError, ImportError) as err:  # ImportError: an attention backend that is not installed
        return fail([f"could not build the model ({cfg.init_from if resume_dir is None else resume_dir}): {err}"])
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
    if cfg.num_samples and (cfg.sample_every > 0 or cfg.eval_at_end):  # else found only at the first sample
        from data.tokenizer import gpt2_tokenizer
        from eval.sample import prompt_ids

        prompt_tokens = len(prompt_ids(gpt2_tokenizer(), cfg.sample_prompt))
        if prompt_tokens + cfg.sample_max_new_tokens > raw_model.config.n_positions:
            return fail([f"sample_prompt ({prompt_tokens} tokens) + sample_max_new_tokens "
                         f"({cfg.sample_max_new_tokens}) exceed the model's context of "
                         f"{raw_model.config.n_positions} tokens: lower --sample_max_new_tokens or shorten the prompt"])
    manifest_hash, problems = data_checks(cfg, raw_model.config.vocab_size, checksums=main)
    problems = _broadcast(accelerator, problems) or problems  # every rank stops if the main one found a problem
    if problems:
        return fail(problems)
    meta = None
    if resume_dir is not None:
        from data.tokenizer import TOKENIZER_FINGERPRINT

        meta = json.loads((resume_dir / "meta.json").read_text())
        expected = build_model_config(cfg) if cfg.init_from == "scratch" else None
        problems = ckpt.compat_errors(meta, model_config=expected, run_config=cfg.to_dict(), world_size=world,
                                      data_manifest_hash=manifest_hash, tokenizer_fingerprint=TOKENIZER_FINGERPRINT)
        if problems:
            saved = resume_dir.parent.parent / "run_config.yaml"  # run/checkpoints/step_N -> run/run_config.yaml
            return fail(problems + [
                "to continue that run, launch it with its data and the settings in "
                f"{saved if saved.is_file() else 'the run config saved with it'} (any world size and "
                "micro_batch_size); to start a new run with these "
                "settings, pick a new --output_dir"], heading=f"cannot resume from {resume_dir}")
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

    uploader, problem = None, None
    if cfg.push_checkpoints_to and main:  # one Hub call now: offline / no token / no access stop the run here
        uploader, problem = start_checkpoint_uploader(cfg, api=hooks.get("hub_api"))
        threads["uploader"] = uploader
    problem = _broadcast(accelerator, problem) if cfg.push_checkpoints_to else None
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
        load_optimizer(accelerator, raw_model, optimizer, resume_dir)
        load_grad_scaler(accelerator, resume_dir)
        resized = ckpt.batch_split_changed(meta, cfg.to_dict(), world)
        if resized:
            saved_micro, saved_accum = meta["run_config"]["micro_batch_size"], meta.get("grad_accum", "?")
            log(f"note: resuming with world {world} x micro_batch {cfg.micro_batch_size} x grad_accum {grad_accum} "
                f"(the checkpoint: world {meta['world_size']} x micro_batch {saved_micro} "
                f"x grad_accum {saved_accum}): each step reads the same {cfg.total_batch_size:,} tokens as it "
                "would have, split another way")
        # A rank the checkpoint did not have starts from rank 0's data position (all ranks save the same global
        # one) and keeps its own fresh RNG seed.
        rank_state = ckpt.load_rank_state(resume_dir, rank if rank < meta["world_size"] else 0)
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
    busy = _broadcast(accelerator, busy)
    if busy:
        return fail([busy], heading="cannot start")
    tracker_error = trackers.start(accelerator, {k: v for k, v in cfg.to_dict().items() if v is not None}, out,
                                   start_step)
    tracker_error = _broadcast(accelerator, tracker_error)
    if tracker_error:  # before the run folder gets its config and metrics files
        return fail([tracker_error], heading="cannot start")
    if main:
        save_run_config(cfg, out / "run_config.yaml")
        metrics = MetricsLog(out / "metrics.jsonl")
        if resume_dir is not None:
            metrics.write("resume", step=start_step, checkpoint=str(resume_dir))

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = cfg.peak_flops or default_peak_flops(device_name)
    precision = accelerator.mixed_precision
    attn = raw_model.config._attn_implementation
    tokens_per_step = cfg.total_batch_size
    log("resolved run config:\n" + format_run_config(cfg))
    log(
        "\n".join([
            f"world size {world}{' (FSDP)' if fsdp.is_fsdp(accelerator) else ''} | device {device} ({device_name})"
            f" | precision {precision}"
            f"{' + TF32' if device.type == 'cuda' and cfg.tf32 else ''} | compile {_compile_desc(cfg)}"
            f" | attention {attn} | fused AdamW {use_fused(cfg.fused_adamw, device.type)}"
            f" | data prefetch {'on' if prefetcher is not None else 'off'}"
            f" | loss {'chunked, ' + format(cfg.loss_chunk_tokens, ',') + ' tokens' if cfg.loss_chunk_tokens else 'full logits'}",
            f"tokens/step {tokens_per_step:,} = micro_batch {cfg.micro_batch_size} x seq_len {cfg.seq_len} x "
            f"grad_accum {grad_accum} x world {world}",
            f"total {cfg.max_steps:,} steps = {cfg.max_steps * tokens_per_step:,} tokens | warmup {cfg.warmup_steps} "
            f"| lr {cfg.max_lr:g} -> {cfg.min_lr:g} (cosine, ends at step {cfg.lr_decay_steps or cfg.max_steps})",
            f"params {decayed + not_decayed:,} (decayed {decayed:,}, not decayed {not_decayed:,})",
            f"flops/token {fpt / 1e6:.1f}M [{FLOPS_FORMULA}] | peak "
            + (f"{peak / 1e12:.0f} TFLOP/s per device" if peak else "unknown (set --peak_flops for MFU)"),
            trackers.describe(cfg.log_with, out),
            (f"resuming from {resume_dir} at step {start_step}" if resume_dir else
             f"starting from {_origin(cfg.init_from)}"),
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
                       f"stopped, this step's update not applied; last good checkpoint: {last_good or 'none'}")
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
                    save_checkpoint(accelerator, cfg, raw_model, optimizer, data_state(), step, tokens,
                                    manifest_hash, log)
                    print(f"the evaluation after step {step} failed (below); step {step} is checkpointed",
                          file=sys.stderr, flush=True)
                raise
            if world == 1 and stop.requested:  # a signal during this step or its evaluation: stop after it (one
                stop_now = True                # process: no other rank to agree with first)
            if stop_now or done or _due(step, cfg.save_every):
                saved = save_checkpoint(accelerator, cfg, raw_model, optimizer, data_state(), step, tokens,
                                        manifest_hash, log)
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
            summary = dict(steps=step, tokens=tokens, wall_time_s=wall, device=device_name, world_size=world,
                           precision=precision, mean_tok_per_s=(sum(tok_rates) / len(tok_rates)) if tok_rates else None,
                           mfu=mfu(fpt, sum(tok_rates) / len(tok_rates), peak, world) if tok_rates else None,
                           flops_formula=FLOPS_FORMULA, last_checkpoint=str(last_saved))
            metrics.write("summary", **summary)
            log(f"done: {step} steps, {tokens:,} tokens in {wall:.1f}s")
    finish_uploads(uploader, metrics, log)
    if metrics:
        metrics.close()
    accelerator.end_training()
    return code
