"""The Accelerator a run trains with, made from the run config (precision, compile, trackers, FSDP2 plugin),
and the cross-rank helpers the setup needs: `broadcast` (the main process decides, every rank follows) and
`first_error` / `every_ranks_errors` (a problem found on any one rank stops every rank, with its message)."""

import os
from datetime import timedelta

import torch

from training import fsdp, trackers
from training.run_config import RunConfig


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
    from accelerate.utils import InitProcessGroupKwargs, TorchDynamoPlugin

    kwargs = dict(
        gradient_accumulation_steps=grad_accum,
        mixed_precision=resolve_precision(cfg.mixed_precision),
        log_with=trackers.resolve_trackers(cfg.log_with) or None,
        project_dir=cfg.output_dir,
        # how long a collective waits for the other ranks; read when the Accelerator starts the process group
        # (torch's own default: 10 min on NCCL, 30 on gloo)
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.ddp_timeout))],
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


def compile_desc(cfg: RunConfig) -> str:
    if not cfg.compile:
        return "off"
    return "on" if cfg.compile_mode == "default" else f"on ({cfg.compile_mode})"


def broadcast(accelerator, value):
    """The main process's `value` on every rank (a picklable object; as is with one process)."""
    from accelerate.utils import broadcast_object_list

    if accelerator.num_processes == 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def first_error(accelerator, error: str | None) -> str | None:
    """Every rank passes its own finding (None: fine); every rank gets the first one found on any rank (named by
    its rank when not the main process's, as in `every_ranks_errors`), so all stop together (a rank that returned
    alone would leave the others waiting in a collective)."""
    found = every_ranks_errors(accelerator, [error] if error else [])
    return found[0] if found else None


def every_ranks_errors(accelerator, errors: list[str]) -> list[str]:
    """Every rank passes the problems it found; every rank gets the main process's, then those only other ranks
    found, each named by its ranks (`rank 8-15: data_dir ... does not exist`). A rank on another machine can see
    other files (a data_dir only the main machine has): alone, it stopped silently (only the main process prints)
    and the main one died in the next collective."""
    if accelerator.num_processes == 1:
        return list(errors)
    from accelerate.utils import gather_object

    per_rank = gather_object([list(errors)])  # rank order, on every rank
    merged = list(per_rank[0])
    elsewhere: dict[str, list[int]] = {}  # message -> ranks that found it, the main process not among them
    for rank, found in enumerate(per_rank[1:], start=1):
        for error in found:
            if error not in per_rank[0]:
                elsewhere.setdefault(error, []).append(rank)
    for error, ranks in elsewhere.items():
        which = f"{ranks[0]}-{ranks[-1]}" if len(ranks) > 1 and ranks == list(range(ranks[0], ranks[-1] + 1)) \
            else ", ".join(map(str, ranks))
        merged.append(f"rank{'s' if len(ranks) > 1 else ''} {which}: {error}")
    return merged
