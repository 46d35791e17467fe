"""Reading a checkpoint of build-nanogpt's train_gpt2.py (`log/model_NNNNN.pt`) into our model, so a run trained
there can be scored, exported and published here (`python convert_gpt2.py --from-build-nanogpt FILE --out DIR`).

What such a file holds: `torch.save({"model": state_dict, "config": GPTConfig(...), "step": int, "val_loss": float})`,
sometimes with an "optimizer" entry too.
- The weights have GPT-2's names and `nn.Linear`'s (out, in) layout, as ours do: nothing is transposed. With
  torch.compile on (build-nanogpt's default) the names start with `_orig_mod.`; through DDP, with `module.`.
- "config" is build-nanogpt's `GPTConfig` dataclass, pickled by name (`__main__.GPTConfig`): unpickling it the
  usual way would import and run the script that wrote it. We load with `torch.load(weights_only=True)` and let
  a plain stand-in class take that name (and any other class the file names), so no code from the file runs;
  only its tensors and the config's numbers are used.
- The embedding has 50304 rows: the 50257 GPT-2 ids padded up to a multiple of 64. build-nanogpt trains the
  47 extra rows (they are never targets, so their logits are pushed down); ours masks them instead, so here they
  have probability 0 and the tiny mass build-nanogpt gave them goes to the real ids. The logits of the real ids
  are the same.

The model folder written (`write_model_folder`) also says where it came from, for the model card export.py writes
from it: `converted_from.json` (the checkpoint's name, sha256, step and validation loss) and, when the run's
`log.txt` sits beside the checkpoint (build-nanogpt writes both into log/), a copy of it as
`logs/build-nanogpt-log.txt`: its train/val/HellaSwag curves, read by publish.metrics.

nanoGPT's `ckpt.pt` (it has "model_args") is refused: its MLP uses exact GELU (`nn.GELU()`), ours GPT-2's tanh
approximation, so the converted model would compute something else.
"""

from __future__ import annotations

import json
import numbers
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import torch

from publish.model_weights import first_line

CONVERTED_FROM = "converted_from.json"  # in the model folder: where its weights came from
BUILD_NANOGPT_LOG = "logs/build-nanogpt-log.txt"  # in the model folder: the run's log.txt, when it was found
PREFIXES = ("_orig_mod.", "module.")  # torch.compile's wrapper, DDP's wrapper (in either order)
GPT2_TOKENIZER_IDS = 50257


class _StandIn:
    """Takes the place of any class the checkpoint names (GPTConfig, numpy scalars, ...): it keeps what the
    pickle gives it and runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


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
    except (ValueError, RuntimeError, zipfile.BadZipFile, OSError) as err:  # not a zip torch.save wrote
        raise ValueError(f"{path} is not a checkpoint torch.save wrote, or a damaged or incomplete copy of one "
                         f"({first_line(err)})") from None
    try:
        with torch.serialization.safe_globals([(_StandIn, name) for name in names]):
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
    """GPTConfig's fields from its stand-in (a dataclass pickles its fields as the state dict)."""
    state = getattr(config, "state", None)
    if isinstance(state, tuple):  # (dict, slots) for a class with __slots__
        state = state[0]
    return dict(state) if isinstance(state, dict) else {}


def _strip_prefixes(name: str) -> str:
    while name.startswith(PREFIXES):
        name = name.split(".", 1)[1]
    return name


def load_build_nanogpt(path: str | Path):
    """(GPT2ReproForCausalLM in fp32, eval mode; {"step": ..., "val_loss": ...} as far as the file says them)."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

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

    embedding = weights.get("transformer.wte.weight")
    if embedding is None or embedding.dim() != 2 or "transformer.wpe.weight" not in weights:
        raise ValueError(f"{path}: no GPT-2 embedding weights (transformer.wte.weight, transformer.wpe.weight) in its "
                         f"'model' entry; it holds e.g. {sorted(weights)[:3]}")
    if "n_head" not in fields:
        raise ValueError(f"{path}: its 'config' entry gives no n_head, which the weights cannot tell; is this "
                         "build-nanogpt's checkpoint with its GPTConfig?")
    rows, n_embd = embedding.shape
    if rows < GPT2_TOKENIZER_IDS:
        raise ValueError(f"{path}: its embedding has {rows} rows, fewer than GPT-2's {GPT2_TOKENIZER_IDS} token ids: "
                         "it was not trained with the GPT-2 tokenizer")
    n_layer = len({n.split(".")[2] for n in weights if n.startswith("transformer.h.")})
    try:
        config = GPT2ReproConfig(vocab_size=rows + (-rows) % 64, tokenizer_vocab_size=GPT2_TOKENIZER_IDS,
                                 n_positions=weights["transformer.wpe.weight"].shape[0], n_embd=n_embd,
                                 n_layer=n_layer, n_head=fields["n_head"])
    except ValueError as err:
        raise ValueError(f"{path}: its shapes make no valid gpt2repro config: {err}") from None
    head = weights.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, embedding):
        raise ValueError(f"{path}: its LM head is not tied to its token embedding; gpt2repro implements GPT-2's tied "
                         "head only")
    if rows < config.vocab_size:  # zero rows up to a multiple of 64; their logits are masked
        padding = embedding.new_zeros(config.vocab_size - rows, n_embd)
        weights["transformer.wte.weight"] = torch.cat([embedding, padding])

    model = GPT2ReproForCausalLM(config)
    ours = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    reshaped = sorted(k for k in set(ours) & set(weights) if ours[k].shape != weights[k].shape)
    if missing or unexpected or reshaped:
        raise ValueError(f"{path}: its weights are not GPT-2's ({len(missing)} missing, e.g. {missing[:3]}; "
                         f"{len(unexpected)} unknown, e.g. {unexpected[:3]}; {len(reshaped)} of another shape, e.g. "
                         f"{reshaped[:3]})")
    model.load_state_dict(weights, strict=False)  # lm_head.weight is the tied embedding
    model.tie_weights()
    meta = {k: checkpoint[k] for k in ("step", "val_loss")
            if isinstance(checkpoint.get(k), numbers.Real) and not isinstance(checkpoint.get(k), bool)}
    return model.eval(), meta


def write_model_folder(checkpoint: str | Path, out: str | Path) -> dict:
    """Convert `checkpoint` into the model folder `out` (weights, config, code, GPT-2's tokenizer, provenance, the
    run's log.txt when found beside it); returns the provenance record written to CONVERTED_FROM."""
    from data.shards import sha256_file
    from data.tokenizer import gpt2_tokenizer
    from publish.metrics import load_metrics

    checkpoint, out = Path(checkpoint), Path(out)
    model, meta = load_build_nanogpt(checkpoint)
    model.save_pretrained(out)
    gpt2_tokenizer().save_pretrained(out)
    origin = {"format": "build-nanogpt", "checkpoint": checkpoint.name, "sha256": sha256_file(checkpoint), **meta}
    log = checkpoint.parent / "log.txt"
    if log.is_file():
        try:
            load_metrics(log)  # only a log the card can read is carried
        except (OSError, ValueError) as err:
            warnings.warn(f"{log} is not carried into {out} (it is not a build-nanogpt log: {first_line(err)})",
                          stacklevel=2)
        else:
            (out / BUILD_NANOGPT_LOG).parent.mkdir(exist_ok=True)
            shutil.copyfile(log, out / BUILD_NANOGPT_LOG)
            origin["log"] = BUILD_NANOGPT_LOG
    (out / CONVERTED_FROM).write_text(json.dumps(origin, indent=2) + "\n", encoding="utf-8")
    return origin
