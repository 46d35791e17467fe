"""Reading a checkpoint of build-nanogpt's train_gpt2.py (`log/model_NNNNN.pt`) into our model, so a run trained
there can be scored, exported and published here (`python convert_gpt2.py --from-build-nanogpt FILE --out DIR`).

What such a file holds: `torch.save({"model": state_dict, "config": GPTConfig(...), "step": int, "val_loss": float})`,
sometimes with an "optimizer" entry too.
- The weights have GPT-2's names and `nn.Linear`'s (out, in) layout, as ours do: nothing is transposed. With
  torch.compile on (build-nanogpt's default) the names start with `_orig_mod.`; through DDP, with `module.`.
- "config" is build-nanogpt's `GPTConfig` dataclass, pickled by name (`__main__.GPTConfig`): unpickling it the
  usual way would import and run the script that wrote it. We load with `torch.load(weights_only=True)` and let
  a plain stand-in class take that name (and any other class the file names; numpy numbers are numpy's own), so
  no code from the file runs; only its tensors and numbers are used. The config must agree with the weights.
- The embedding has 50304 rows: the 50257 GPT-2 ids padded up to a multiple of 64. build-nanogpt trains the
  47 extra rows (they are never targets, so their logits are pushed down); ours masks them instead, so here they
  have probability 0 and the tiny mass build-nanogpt gave them goes to the real ids. The logits of the real ids
  are the same.

The model folder written (`write_model_folder`) also says where it came from, for the model card export.py writes
from it: `converted_from.json` (the checkpoint's name, sha256, step and validation loss) and, when the run's
`log.txt` sits beside the checkpoint (build-nanogpt writes both into log/) and logs the checkpoint's validation
loss at its step, a copy of it as `logs/build-nanogpt-log.txt`: its train/val/HellaSwag curves, read by
publish.metrics. build-nanogpt empties log.txt each time it starts, so a log that does not match is another
run's, and is left out with a warning.

nanoGPT's `ckpt.pt` (it has "model_args") is refused: its MLP uses exact GELU (`nn.GELU()`), ours GPT-2's tanh
approximation, so the converted model would compute something else.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import torch

from publish.metrics import BUILD_NANOGPT_LOG
from publish.model_weights import first_line

CONVERTED_FROM = "converted_from.json"  # in the model folder: where its weights came from
PREFIXES = ("_orig_mod.", "module.")  # torch.compile's wrapper, DDP's wrapper (in either order)
GPT2_TOKENIZER_IDS = 50257


class _StandIn:
    """Takes the place of any class the checkpoint names (GPTConfig, an argparse Namespace, ...): it keeps what
    the pickle gives it and runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _allowed(name: str):
    """What takes `name` (module.qualname) when the checkpoint is loaded: numpy's own scalar and dtype classes
    for numpy numbers (a `val_loss` saved as np.float32: building them runs no code of the file), else a
    stand-in."""
    module, _, attribute = name.rpartition(".")
    if module.split(".")[0] == "numpy" and (attribute in ("scalar", "dtype") or module == "numpy.dtypes"):
        import importlib

        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):  # another numpy's layout: its numbers are left out
            pass
    return (_StandIn, name)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict, loaded without running code from it; ValueError saying what the file is not."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a file: pass a build-nanogpt checkpoint such as log/model_19072.pt")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == (20240326).to_bytes(4, "little"):  # llm.c's model file header (int32 magic)
        raise ValueError(f"{path} is an llm.c model file, not a build-nanogpt checkpoint: turn it into a GPT-2 folder "
                         "with llm.c's dev/eval/export_hf.py, then `python convert_gpt2.py --from-gpt2 THAT_FOLDER`")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, zipfile.BadZipFile, OSError) as err:  # not the zip format torch.save writes
        raise ValueError(f"{path} is not a checkpoint in the zip format torch.save writes (since torch 1.6), or it is "
                         f"a damaged or incomplete copy of one ({first_line(err)})") from None
    try:
        allowed = [_allowed(name) for name in names]
        if any(name.startswith("numpy.") for name in names):  # a numpy dtype is rebuilt as its own class
            import numpy as np

            dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
            allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if not blocked:
            raise ValueError(f"{path} could not be read as a checkpoint ({first_line(err)}): is the copy complete?") \
                from None
        # torch refuses some modules' functions (os, subprocess, ...) even when allowed: a pickle that calls them
        raise ValueError(f"{path} names code that would run when it is loaded ({blocked[0]}): it is not loaded. A "
                         "build-nanogpt checkpoint holds only tensors, numbers and its GPTConfig") from None
    except (RuntimeError, EOFError, IndexError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} could not be read as a checkpoint ({type(err).__name__}: {first_line(err)}): is "
                         "the copy complete?") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        kind = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path} is not a build-nanogpt checkpoint (expected a dict with 'model', 'config', 'step'; "
                         f"found {kind})")
    if "model_args" in checkpoint:
        raise ValueError(f"{path} is a nanoGPT checkpoint (it has 'model_args'): nanoGPT's MLP uses exact GELU, and "
                         "gpt2repro implements GPT-2's tanh GELU, so the converted model would compute something "
                         "else. build-nanogpt checkpoints (log/model_NNNNN.pt) convert exactly")
    return checkpoint


def _config_fields(config) -> dict:
    """GPTConfig's fields from its stand-in (a dataclass pickles its fields as the state dict), or a plain dict."""
    state = config if isinstance(config, dict) else getattr(config, "state", None)
    if isinstance(state, tuple):  # (dict, slots) for a class with __slots__
        state = state[0]
    return dict(state) if isinstance(state, dict) else {}


def _number(value) -> int | float | None:
    """A Python number from a checkpoint entry: int, float, a numpy scalar or a one-element tensor; else None."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def checkpoint_meta(checkpoint: dict, path: Path) -> dict:
    """{"step", "val_loss"} as far as the checkpoint says them sensibly (step a whole number >= 0, else the number
    in a `model_NNNNN.pt` name; val_loss finite)."""
    meta = {}
    step = _number(checkpoint.get("step"))
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    named = re.fullmatch(r"model_(\d+)\.pt", path.name)
    if isinstance(step, int) and step >= 0:
        meta["step"] = step
    elif named:
        meta["step"] = int(named.group(1))
    val_loss = _number(checkpoint.get("val_loss"))
    if val_loss is not None and math.isfinite(val_loss) and val_loss >= 0:
        meta["val_loss"] = float(val_loss)
    return meta


def _strip_prefixes(name: str) -> str:
    while name.startswith(PREFIXES):
        name = name.split(".", 1)[1]
    return name


def load_build_nanogpt(path: str | Path):
    """(GPT2ReproForCausalLM in fp32, eval mode; {"step": ..., "val_loss": ...} as far as the file says them)."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    path = Path(path)
    checkpoint = read_checkpoint(path)
    fields = _config_fields(checkpoint.get("config"))
    if fields.get("bias") is False:
        raise ValueError(f"{path} was trained without biases (config bias=False): gpt2repro implements GPT-2, "
                         "whose layers all have them")
    weights = {}
    for name, tensor in checkpoint["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: model entry {name!r} is a {type(tensor).__name__}, not a tensor")
        name = _strip_prefixes(name)
        if name.endswith(".attn.bias") and tensor.dim() == 4:
            continue  # the causal-mask buffer of early build-nanogpt code, (1, 1, T, T): not a weight
        weights[name] = tensor.detach().float()
    diverged = [name for name, tensor in weights.items() if not torch.isfinite(tensor).all()]
    if diverged:
        raise ValueError(f"{path}: {len(diverged)} weights hold NaN or infinite values (e.g. {diverged[0]}): the run "
                         "had diverged by this checkpoint; convert an earlier one")

    embedding = weights.get("transformer.wte.weight")
    if embedding is None or embedding.dim() != 2 or "transformer.wpe.weight" not in weights:
        raise ValueError(f"{path}: no GPT-2 embedding weights (transformer.wte.weight, transformer.wpe.weight) in its "
                         f"'model' entry; it holds e.g. {sorted(weights)[:3]}")
    if not isinstance(fields.get("n_head"), int):
        raise ValueError(f"{path}: its 'config' entry gives no n_head, which the weights cannot tell; is this "
                         "build-nanogpt's checkpoint with its GPTConfig?")
    rows, n_embd = embedding.shape
    if rows < GPT2_TOKENIZER_IDS:
        raise ValueError(f"{path}: its embedding has {rows} rows, fewer than GPT-2's {GPT2_TOKENIZER_IDS} token ids: "
                         "it was not trained with the GPT-2 tokenizer")
    shapes = {"n_layer": len({n.split(".")[2] for n in weights if n.startswith("transformer.h.")}),
              "n_embd": n_embd, "block_size": weights["transformer.wpe.weight"].shape[0]}
    # the weights decide the shapes; a config that says otherwise means layers were lost or added on the way
    disagree = [f"{k} {fields[k]} (the weights: {v})" for k, v in shapes.items()
                if isinstance(fields.get(k), int) and fields[k] != v]
    if disagree:
        raise ValueError(f"{path}: its config and its weights disagree: {', '.join(disagree)}; is the file complete, "
                         "and from an unmodified run?")
    try:
        config = GPT2ReproConfig(vocab_size=rows + (-rows) % 64, tokenizer_vocab_size=GPT2_TOKENIZER_IDS,
                                 n_positions=shapes["block_size"], n_embd=n_embd, n_layer=shapes["n_layer"],
                                 n_head=fields["n_head"])
    except ValueError as err:
        raise ValueError(f"{path}: its shapes make no valid gpt2repro config: {first_line(err)}") from None
    head = weights.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, embedding):
        raise ValueError(f"{path}: its LM head is not tied to its token embedding; gpt2repro implements GPT-2's tied "
                         "head only")
    if rows < config.vocab_size:  # zero rows up to a multiple of 64; their logits are masked
        padding = embedding.new_zeros(config.vocab_size - rows, n_embd)
        weights["transformer.wte.weight"] = torch.cat([embedding, padding])

    model = GPT2ReproForCausalLM(config)
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # torch refuses a weight of another shape itself, naming it
        raise ValueError(f"{path}: its weights are not GPT-2's ({first_line(err)})") from None
    missing = [k for k in missing if k != "lm_head.weight"]  # the tied embedding
    if missing or unexpected:
        found = [f"{len(names)} {what}, e.g. {sorted(names)[:3]}" for what, names in
                 (("missing", missing), ("unknown", unexpected)) if names]
        raise ValueError(f"{path}: its weights are not GPT-2's ({'; '.join(found)})")
    model.tie_weights()
    return model.eval(), checkpoint_meta(checkpoint, path)


def log_problem(log: Path, origin: dict) -> str | None:
    """Why the run's log.txt is not this checkpoint's (None when it is): build-nanogpt logs the validation loss
    it saves with each checkpoint, at that step. It opens log.txt afresh ("w") each time it starts, so the log
    beside an older checkpoint may be another run's."""
    from publish.metrics import load_metrics

    try:
        metrics = load_metrics(log)
    except (OSError, ValueError) as err:
        return f"it is not a build-nanogpt log: {first_line(err)}"
    step = origin.get("step")
    if step is None:
        return "the checkpoint does not say its step, so the log cannot be matched to it"
    logged = dict(metrics.val_loss).get(step)
    if logged is None:
        return f"it logs no validation loss at step {step}, where the checkpoint was saved: it is another run's"
    if "val_loss" in origin and not math.isclose(logged, origin["val_loss"], rel_tol=1e-6, abs_tol=1e-4):
        return (f"its validation loss at step {step} is {logged}, the checkpoint's {origin['val_loss']:.4f}: it is "
                "another run's")
    return None


def write_model_folder(checkpoint: str | Path, out: str | Path) -> dict:
    """Convert `checkpoint` into the model folder `out` (weights, config, code, GPT-2's tokenizer, provenance, the
    run's log.txt when it is this checkpoint's); returns the provenance record written to CONVERTED_FROM. The
    folder is written beside `out` and renamed into place when complete: a failed write (a full disk) leaves
    nothing that looks like a model."""
    from safetensors import SafetensorError

    from data.shards import sha256_file
    from data.tokenizer import tokenizer_for_context
    from eval.errors import full_disk

    checkpoint, out = Path(checkpoint), Path(out)
    model, meta = load_build_nanogpt(checkpoint)
    origin = {"format": "build-nanogpt", "checkpoint": checkpoint.name, "sha256": sha256_file(checkpoint), **meta}
    log = checkpoint.parent / "log.txt"
    problem = log_problem(log, origin) if log.is_file() else None
    if problem:
        warnings.warn(f"{log} is not carried into {out}: {problem}", stacklevel=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        tokenizer_for_context(model.config.n_positions).save_pretrained(staging)  # the checkpoint's context
        if log.is_file() and not problem:
            (staging / BUILD_NANOGPT_LOG).parent.mkdir(exist_ok=True)
            shutil.copyfile(log, staging / BUILD_NANOGPT_LOG)
            origin["log"] = BUILD_NANOGPT_LOG
        (staging / CONVERTED_FROM).write_text(json.dumps(origin, indent=2) + "\n", encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # new or empty (convert_gpt2 checks): only an empty folder is replaced
        os.replace(staging, out)
    except SafetensorError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if full_disk(err):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out)) from None
        raise ValueError(f"could not write the weights into {out}: {first_line(err)}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return origin
