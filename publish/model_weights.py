"""Load a model folder's weights and refuse what `from_pretrained` only reports.

    model = from_pretrained_checked(GPT2ReproForCausalLM, "export/124M", dtype=torch.float32)

transformers initialises the weights a folder lacks at random and logs a load report: a config.json edited
after saving (n_layer 12 -> 24) or the weights of another architecture "load" as a partly random model. Export
(publish/export_model.py), train.py's --init_from (training/model_init.py) and evaluation (eval/load.py) all
load through here, so none of them exports, trains or scores such a model; each says what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# buffers some GPT-2 checkpoints carry and ours never had (not weights: nothing is random without them)
_NOT_WEIGHTS = ("attn.bias", "attn.masked_bias")


def from_pretrained_checked(model_class, model_dir: str | Path, **kwargs):
    """`model_class.from_pretrained(model_dir, **kwargs)`, or ValueError naming the folder when its weights file
    is damaged, its shapes differ from its config, or weights the config asks for are missing from it."""
    from safetensors import SafetensorError

    try:
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    except SafetensorError as err:  # a truncated or garbled weights file
        files = sorted(p.name for p in Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
        raise ValueError(
            f"{model_dir}: the weights file {', '.join(files) or '(*.safetensors)'} is damaged or incomplete "
            f"({first_line(err)}): copy or export the model again (a checkpoint: use an earlier one)") from None
    except (OSError, ValueError, RuntimeError) as err:
        unreadable = [p for p in _weight_files(model_dir) if not os.access(p, os.R_OK)]
        if unreadable:  # transformers says "No such file or directory" of a weights file it may not read
            raise ValueError(f"{unreadable[0]}: permission denied: check that this user can read it (ls -l shows "
                             "its modes)") from None
        text = str(err).lower()
        if "mismatch" in text:  # "size mismatch", "ignore_mismatched_sizes"
            raise ValueError(f"{model_dir}: the weight shapes do not match its config.json: is this a checkpoint of "
                             "another architecture, or a config edited after saving?") from None
        raise ValueError(f"could not load the model in {model_dir}: {first_line(err)}") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith(_NOT_WEIGHTS)]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.endswith(_NOT_WEIGHTS)]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise ValueError(
            f"{model_dir}: its weights do not match its config.json ({len(missing)} weights missing, e.g. "
            f"{missing[:3]}; {len(mismatched)} of another shape): they would be initialised at random. Is this a "
            "checkpoint of another architecture, or a config edited after saving?")
    if unexpected:  # n_layer lowered after saving: the last blocks' weights would be dropped without a word
        raise ValueError(
            f"{model_dir}: it holds weights its config.json has no place for ({len(unexpected)}, e.g. "
            f"{unexpected[:3]}): they would be dropped. Is this a checkpoint of another architecture, or a config "
            "edited after saving?")
    return model


def _weight_files(model_dir: str | Path) -> list[Path]:
    folder = Path(model_dir)
    return sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]) if folder.is_dir() else []


def read_config_json(model_dir: str | Path) -> dict:
    """A model folder's config.json as a dict; ValueError naming the file when it is not a JSON object."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # a copy cut short, or another file in its place
        raise ValueError(f"{path} is not valid JSON ({err}): copy or export the model again") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not a model config")
    return config


def first_line(err: BaseException) -> str:
    """The first line of an error's message (library errors append long reports), with its type if empty; a
    first line that is a heading ("Invalid GPT2ReproConfig:") keeps the reasons listed under it."""
    lines = [line.strip() for line in str(err).strip().splitlines()]
    if not lines:
        return type(err).__name__
    return " ".join(lines[:4]) if lines[0].endswith(":") else lines[0]
