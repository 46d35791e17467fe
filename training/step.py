"""One optimizer step as train.py runs it (shared with bench/bench_train_overhead.py and the DDP tests):
micro-batches through forward/backward with gradient accumulation, clip, one host sync, non-finite check, update."""

import contextlib
import hashlib
import math

import torch

from training.optim import set_lr


class NonFiniteError(RuntimeError):
    def __init__(self, loss: float, grad_norm: float):
        self.loss, self.grad_norm = loss, grad_norm
        self.what = "loss" if not math.isfinite(loss) else "grad norm"
        super().__init__(f"non-finite {self.what} (loss {loss}, grad_norm {grad_norm})")


@contextlib.contextmanager
def cpu_oom_as_oom():
    """The CPU allocator reports out of memory as a plain RuntimeError ("DefaultCPUAllocator: can't allocate
    memory"): raised again as torch.OutOfMemoryError, as on CUDA, so the loop's one handler (exit 4, the knob to
    lower) covers both."""
    try:
        yield
    except RuntimeError as err:
        if isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" not in str(err):
            raise
        raise torch.OutOfMemoryError(str(err)) from err


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
    with cpu_oom_as_oom():
        loss, grad_norm = train_step(accelerator, model, batches, grad_accum, grad_clip, device, digests,
                                     loss_chunk_tokens)
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
