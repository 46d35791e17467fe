"""Load a model for evaluation: `load_model(path) -> (model, tokenizer)`, fp32, eval mode, no remote code.

`path` may be (docs/CONTRACTS.md):
- an export / `save_pretrained` folder (has `config.json`);
- a checkpoint folder `checkpoints/step_*/` (uses its `model/`);
- a run folder (`output_dir` of train.py): its newest committed checkpoint that verifies (publish.model_source);
- a Hub id such as `openai-community/gpt2` (for side-by-side comparisons; needs the network).

Our classes are registered with the Auto factories in-process first (`register_auto_classes()`), so our own
folders load without `trust_remote_code`. Accepted architectures: ours (`gpt2repro`) and stock GPT-2 (`gpt2`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from eval.errors import EvalInputError
from publish.model_weights import first_line

SUPPORTED_MODEL_TYPES = ("gpt2repro", "gpt2")
_GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def resolve_model_dir(path: str | Path) -> Path | str:
    """The folder holding `config.json` for an export, checkpoint or run folder; a Hub id is returned as is.
    Local paths resolve exactly as export does (publish.model_source): committed, verified checkpoints only."""
    from publish.model_source import resolve_source

    p = Path(path)
    if not p.exists():
        # `owner/name` is a Hub id, unless `owner` is a folder here and the Hub cache has no such model: then it is
        # a mistyped local path (runs/demoo), which must fail now, not after huggingface_hub's retries (~30 s
        # offline) as a network problem
        if (re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)) and not str(path).startswith((".", "/"))
                and (not p.parent.is_dir() or _in_hub_cache(str(path)))):
            return str(path)  # Hub id
        hint = f" ({p.parent}/ holds no {p.name}: check the name)" if p.parent.is_dir() else ""
        if str(path) in _GPT2_HUB_NAMES:  # build-nanogpt's and old transformers' short names of the Hub models
            hint += f"; for OpenAI's model on the Hub pass its full id: openai-community/{path}"
        elif "/" not in str(path):
            hint += "; a Hub model is named by its full id, 'owner/name'"
        raise EvalInputError(f"model path not found: {p}{hint}")
    try:
        return resolve_source(p).model_dir
    except (FileNotFoundError, ValueError) as err:
        raise EvalInputError(str(err)) from None


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)  # a path when cached


def model_dir_of(path: str | Path) -> Path | str:
    """Same as `resolve_model_dir` (named for callers that only want the location)."""
    return resolve_model_dir(path)


def trained_with(model_dir: Path | str) -> dict:
    """The run config a checkpoint was trained with ({} for an export or a Hub id)."""
    from publish.model_source import resolve_source

    return {} if isinstance(model_dir, str) else resolve_source(model_dir).trained_with()


def results_path(path: str | Path, filename: str) -> Path:
    """Where eval results go: `<model dir>/eval_results/<filename>` for an export; for a run's checkpoint
    `<run>/eval_results/step_XXXXXXXX/<filename>` (inside the checkpoint, keep_last would delete them and they
    would change its checksums); for a Hub id `out/eval_results/<id>/`."""
    from publish.model_source import resolve_source

    model_dir = resolve_model_dir(path)
    if isinstance(model_dir, str):
        return Path("out") / "eval_results" / model_dir.replace("/", "__") / filename
    return resolve_source(model_dir).eval_results_dir / filename


def output_path(model_dir: Path | str, output: str | Path | None, filename: str,
                keep: tuple[str | Path | None, ...] = ()) -> Path:
    """Where an eval command writes its JSON: `output`, checked before any work, else `results_path`.

    `model_dir` is the resolved model (`model_dir_of`). `--output` is refused (`EvalInputError`) when it is an
    existing directory, when a folder on its way is a file, or when it lies inside the model's folder (for a
    run's checkpoint: anywhere in the run folder) other than under the model's eval_results folder
    (`results_path`'s) or, for a run, directly in <run>/eval_results/: a results file elsewhere would overwrite
    the weights, the config, a checkpoint (whose checksums it would also break), the run's logs or another
    step's results. `keep` names the user's input data (a file, or a folder
    such as a prepared data dir): the output may not be it or lie inside it.
    """
    if output is None or str(output) == "":
        return _writable(results_path(model_dir, filename))
    out = Path(output)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise EvalInputError(f"--output {out}: {parent} is a file, not a folder; pass another path")
    target = out.resolve()
    for data in keep:
        if data is not None and (target == Path(data).resolve() or Path(data).resolve() in target.parents):
            raise EvalInputError(f"--output {out} would overwrite the input data ({data}): pass another path")
    if not isinstance(model_dir, str):  # a Hub id has nothing local to protect
        _refuse_inside_model(model_dir, out, target, filename)
    if out.is_dir():
        raise EvalInputError(f"--output {out} is a directory: pass a file path such as {out / filename}")
    return _writable(out)


def _writable(out: Path) -> Path:
    """`out`, if it can be written (its nearest existing folder, or the file itself); else EvalInputError now:
    found only when saving, the failure came after all the scoring (a read-only model folder, a shared export)."""
    existing = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | (0 if existing.is_file() else os.X_OK)):
        raise EvalInputError(f"cannot write the results to {out}: {existing} is not writable; pass --output PATH "
                             "somewhere you can write")
    return out


def _refuse_inside_model(model_dir: Path, out: Path, target: Path, filename: str) -> None:
    from publish.model_source import resolve_source

    src = resolve_source(model_dir)
    protected = src.run_dir if src.run_dir is not None and src.checkpoint_dir is not None else (
        src.checkpoint_dir or src.model_dir)
    allowed = src.eval_results_dir.resolve()
    # also a file directly in a run's eval_results/ (export reads only its step_N/ folders, so nothing is hidden)
    loose = src.run_dir is not None and target.parent == (src.run_dir / "eval_results").resolve()
    inside = protected.resolve() == target or protected.resolve() in target.parents
    if inside and allowed not in target.parents and not loose:
        what = ("run folder" if protected == src.run_dir else "checkpoint" if protected == src.checkpoint_dir
                else "model folder")
        where = "" if target == protected.resolve() else "inside "
        raise EvalInputError(
            f"--output {out} is {where}the {what} {protected}, where it could overwrite the model or its data: "
            f"pass a path outside it, or in {src.eval_results_dir}/"
            + (f" or directly in {src.run_dir / 'eval_results'}/" if src.run_dir is not None else "")
            + " (or leave --output out: "
            f"{src.eval_results_dir / filename})")


def load_model(path: str | Path, dtype=None):
    """Return `(model, tokenizer)` for an export / checkpoint / run folder or a Hub id; fp32 (or `dtype`), eval mode.

    A model folder that cannot be loaded (no or damaged weights, shapes that do not match its config) raises
    `EvalInputError` naming the folder. Tokenizer: the folder's own; if it has none and the config is ours
    (`gpt2repro`), our offline `data.tokenizer.gpt2_tokenizer()` (a message says so); otherwise an error.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from modeling_gpt2repro import register_auto_classes
    from publish.model_weights import from_pretrained_checked

    register_auto_classes()
    model_dir = resolve_model_dir(path)
    model_type = _model_type(model_dir)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise EvalInputError(
            f"{model_dir} holds a {model_type!r} model; eval/ loads GPT2Repro ('gpt2repro') and GPT-2 ('gpt2') models"
        )
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise EvalInputError(f"could not load the model in {model_dir}: {first_line(err)}") from None
    try:
        model = from_pretrained_checked(AutoModelForCausalLM, model_dir, config=config, dtype=dtype or torch.float32)
    except ValueError as err:  # it says what is wrong, naming the folder
        raise EvalInputError(str(err)) from None
    model.eval()
    tokenizer = _load_tokenizer(model_dir, model_type)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # its ids past the table: an IndexError in the first forward otherwise
        raise EvalInputError(
            f"{model_dir}: its tokenizer has {len(tokenizer):,} ids but the model only {rows:,} embedding rows: "
            "the tokenizer saved there is not this model's; save the model's own tokenizer with it")
    return model, tokenizer


def _model_type(model_dir: Path | str) -> str:
    if isinstance(model_dir, str):  # Hub id: trust the config transformers downloads
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(model_dir).model_type
        except (OSError, ValueError) as err:
            # `runs/demo` is a Hub id by its form too: a mistyped local path must not read as a network problem
            raise EvalInputError(
                f"{model_dir} is not a local folder (no such path here: check it), and as a Hub model id it could "
                f"not be loaded: {first_line(err)}") from None
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{model_dir / 'config.json'} is not valid JSON ({err.msg})") from None
    return str(config.get("model_type"))


def _load_tokenizer(model_dir: Path | str, model_type: str):
    from transformers import AutoTokenizer

    has_files = isinstance(model_dir, str) or any((model_dir / f).is_file() for f in _TOKENIZER_FILES)
    if has_files:
        try:
            # our configs carry auto_map; without trust_remote_code=False AutoTokenizer may ask y/N interactively
            return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        except Exception as err:  # noqa: BLE001 - OSError, ValueError; the tokenizers library raises TypeError too
            raise EvalInputError(f"could not load the tokenizer in {model_dir}: {first_line(err)}") from None
    if model_type == "gpt2repro":
        from data.tokenizer import gpt2_tokenizer

        print(f"note: {model_dir} has no tokenizer files; using the project's GPT-2 tokenizer (data.tokenizer)")
        return gpt2_tokenizer()
    raise EvalInputError(
        f"{model_dir} has no tokenizer (no {', '.join(_TOKENIZER_FILES)}): save the tokenizer with the model"
    )


def environment(device, data_file: str | Path | None = None) -> dict:
    """What a result JSON records besides its numbers, so that a number quoted later can be traced: library
    versions, the device, and the sha256 of the data file (e.g. the original hellaswag_val.jsonl is 0aa3b888...)."""
    import hashlib
    import platform

    import torch
    import transformers

    record = {"torch": torch.__version__, "transformers": transformers.__version__,
              "python": platform.python_version(),
              "device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else str(device)}
    if data_file is not None:
        record["data_sha256"] = hashlib.sha256(Path(data_file).read_bytes()).hexdigest()
    return record

