"""What the loop does differently when Accelerate shards the model with FSDP (configs/accelerate/fsdp2.yaml).

- Compile: per transformer block, in place (Accelerate's regional compilation): a whole-model torch.compile
  wrapper is what fully_shard then shards, and calls through it skip the per-block weight gathers.
- Precision: Accelerate's FSDP2 default under bf16/fp16 also reduces gradients and returns outputs in the low
  precision (the logged loss rounded to bf16); we keep low-precision weights for compute and reduce in fp32.
- Checkpoints hold full tensors, gathered from the shards (every rank takes part), saved through a weightless
  instance of the model's own class, so a checkpoint loads under DDP, on one GPU or with trust_remote_code.
- A one-process or DDP checkpoint's optimizer state (keyed by parameter positions) loads by parameter name.
- Evaluation: every forward all-gathers the weights, so every rank must run as many forwards as the busiest one.

Tested on CPU processes through Accelerate's real FSDP2 preparation (tests/test_train_fsdp.py).
"""

from __future__ import annotations

import copy
import math
import os

import torch


def is_fsdp(accelerator) -> bool:
    return getattr(accelerator, "is_fsdp2", False) or accelerator.distributed_type.name == "FSDP"


def launched_with_fsdp() -> bool:
    """`accelerate launch` with an FSDP config (it exports its settings as environment variables)."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def launched_with_fsdp2() -> bool:
    return launched_with_fsdp() and os.environ.get("FSDP_VERSION") == "2"


def compile_problem() -> str | None:
    """Why compiling under FSDP2 cannot work with this torch, else None. Accelerate's per-block compile sets
    torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint, which torch 2.9 lacks (an AttributeError
    inside accelerator.prepare on every rank); 2.10, 2.13 and 2.14 (tested) have it."""
    if hasattr(torch._dynamo.config, "skip_fwd_side_effects_in_bwd_under_checkpoint"):
        return None
    return (f"compile under FSDP2 needs a newer torch than {torch.__version__} (Accelerate's per-block compile sets "
            "torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint, which it lacks): upgrade torch "
            "(2.13 is tested), or pass --compile false")


def plugin_for_launch(mixed_precision: str):
    """The plugin for `Accelerator(fsdp_plugin=...)` when launched with FSDP2 and bf16/fp16, else None (FSDP1
    keeps Accelerate's own). Its other settings come from the launcher's FSDP_* environment (the accelerate
    config file), as without one."""
    if not (launched_with_fsdp2() and mixed_precision in ("bf16", "fp16")):
        return None
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecisionPolicy

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    return FullyShardedDataParallelPlugin(
        mixed_precision_policy=MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32))


def gather_full_state(raw_model, inner_optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts; a collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(raw_model, options=options)
    optim_state = get_optimizer_state_dict(raw_model, inner_optimizer, options=options)
    # The tied head comes back as a second tensor (save_pretrained would write both): keep the source only.
    if getattr(raw_model.config, "tie_word_embeddings", False):
        for key in getattr(raw_model, "_tied_weights_keys", None) or {}:
            model_state.pop(key, None)
    return model_state, optim_state


def plain_twin(raw_model):
    """A weightless (meta) instance of the model's own class to save through. fully_shard swaps the module's class
    for a generated `FSDP<Class>` defined in torch's FSDP internals, and save_pretrained names and copies the code
    of `type(model)`: config.json's auto_map would point at torch's `_fsdp_init` module (copied into the folder)
    and the checkpoint would not load with trust_remote_code."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(raw_model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        twin = cls(raw_model.config)
    twin.generation_config = copy.deepcopy(raw_model.generation_config)  # e.g. sampling settings of an init_from
    return twin


def load_full_optimizer_state(raw_model, inner_optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(raw_model, inner_optimizer, keyed_by_name(state, raw_model, inner_optimizer),
                             options=StateDictOptions(full_state_dict=True))


def keyed_by_name(state: dict, raw_model, inner_optimizer) -> dict:
    """An optimizer state_dict keyed by parameter names (as get_optimizer_state_dict writes them) from one keyed by
    positions (Optimizer.state_dict(): one process or DDP), matched in this optimizer's parameter order, the
    order Optimizer.load_state_dict matches by."""
    saved = [key for group in state["param_groups"] for key in group["params"]]
    if all(isinstance(key, str) for key in saved):
        return state
    saved_sizes = [len(group["params"]) for group in state["param_groups"]]
    sizes = [len(group["params"]) for group in inner_optimizer.param_groups]
    if saved_sizes != sizes:  # the check Optimizer.load_state_dict makes
        raise ValueError(f"the checkpoint's optimizer has parameter groups of sizes {saved_sizes}, this model's "
                         f"{sizes}: it was saved for another model")
    name_of = {id(p): name for name, p in raw_model.named_parameters()}  # a tied tensor: its first name
    rename = dict(zip(saved, (name_of[id(p)] for group in inner_optimizer.param_groups for p in group["params"])))
    return {"state": {rename[key]: value for key, value in state["state"].items()},
            "param_groups": [{**group, "params": [rename[key] for key in group["params"]]}
                             for group in state["param_groups"]]}


def padded_val_batches(batches, n_windows: int, batch_size: int, world: int, seq_len: int):
    """This rank's validation batches, then filler batches (targets all -100: they count no tokens) up to the
    number of batches of the rank with the most windows (rank 0: windows are dealt round-robin). Without them a
    rank with one batch fewer leaves the others waiting in the weight all-gather forever."""
    most = math.ceil(math.ceil(n_windows / world) / batch_size)
    count = 0
    for count, batch in enumerate(batches, start=1):
        yield batch
    for _ in range(most - count):
        x = torch.zeros((1, seq_len), dtype=torch.long)
        yield x, torch.full_like(x, -100)
