"""Write a Hub-ready model folder from a training run, a checkpoint or a model folder.

    result = export_model("runs/124M", "export/124M")                                  # our format + code
    result = export_model("runs/124M", "export/124M-gpt2", format="gpt2", dtype="bfloat16")

The folder (format "gpt2repro"):
    config.json                  model_type gpt2repro, auto_map -> the two code files (trust_remote_code=True)
    configuration_gpt2repro.py   modeling_gpt2repro.py
    model.safetensors            float32 or bfloat16
    generation_config.json       top-k 50 sampling, temperature 1 (build-nanogpt's sampling)
    tokenizer.json  tokenizer_config.json  vocab.json  merges.txt     GPT-2 BPE, 50,257 ids (a model folder
                                 with added tokens: its own tokenizer)
    README.md                    model card (publish.model_card)
    plots/loss.png  plots/hellaswag.png                                 when the run has metrics
    logs/metrics.jsonl  logs/run_config.yaml                            the run's record, when known (the run
                                 config this checkpoint trained with, as the card), absolute local paths
                                 reduced to their last name (publish.local_paths)
Format "gpt2": the same, but config.json / model.safetensors are transformers' stock `GPT2LMHeadModel`
(vocabulary cropped to 50,257 rows) and there are no code files.

The folder is written next to `out` under a temporary name and renamed into place at the end, so a failed
export never leaves a half-written folder that looks finished. Before the rename the written weights are loaded
back and their log-probabilities compared with the source model's (weights rounded to the export dtype).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from publish.local_paths import public_metrics_record, public_run_config, scrub_paths
from publish.metrics import load_metrics
from publish.model_card import CardInputs, build_model_card, load_lm_eval_results
from publish.plots import plot_runs
from publish.references import HELLASWAG_EXAMPLES, val_loss_reference_applies
from publish.model_source import COMPLETE_MARKER, resolve_source
from training.checkpoint import default_file_modes

FORMATS = ("gpt2repro", "gpt2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CODE_FILES = ("configuration_gpt2repro.py", "modeling_gpt2repro.py")
# Every file an export writes, as patterns relative to its folder: the card, config and generation config, the
# code (default format), weights (sharded or not), the tokenizer files any transformers version writes, the run's
# logs/ and plots/. Two uses: a push deletes from the repo those an earlier export left and this one lacks (the
# code after --format gpt2, logs after a model folder, added_tokens.json), so the repo holds this export, not a mix
# (files no export writes, a LICENSE added on the Hub, are left alone); and --overwrite refuses an earlier export
# that holds anything else (eval_results/ of `python -m eval.hellaswag --model EXPORT`, a .git of the Hub repo,
# notes), which replacing the folder would delete.
EXPORT_FILE_PATTERNS = ("README.md", "config.json", "generation_config.json", *CODE_FILES, "model*.safetensors",
                        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                        "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                        "plots/*", "logs/*")
# build-nanogpt samples with top-k 50 at temperature 1
# No length in it: a max_new_tokens here would override every caller's max_length (lm-eval's generate_until
# passes max_length, and a pipeline's max_length= was ignored).
SAMPLING = {"do_sample": True, "top_k": 50, "temperature": 1.0}


@dataclass
class ExportResult:
    out_dir: Path
    files: list[str]  # relative paths, sorted
    step: int | None
    max_logprob_diff: float  # export vs source (weights rounded to the export dtype), over the real 50,257 ids


TRAINING_STATE = ("checkpoints", COMPLETE_MARKER, "manifest.json", "optimizer.pt", "metrics.jsonl", "run_config.yaml",
                  "model", "meta.json")


def not_written_by_export(out: Path) -> list[str]:
    """The entries of the folder `out` that no export writes (EXPORT_FILE_PATTERNS; folders with a trailing '/')."""
    files = [pattern for pattern in EXPORT_FILE_PATTERNS if "/" not in pattern]
    folders = {pattern.split("/")[0] for pattern in EXPORT_FILE_PATTERNS if "/" in pattern}
    return sorted(p.name + "/" for p in out.iterdir() if p.is_dir() and p.name not in folders) + sorted(
        p.name for p in out.iterdir() if not p.is_dir() and not any(fnmatch.fnmatchcase(p.name, f) for f in files))


def unsafe_out_problem(out: Path, src) -> str | None:
    """Why `out` must not be written, or None. With --overwrite, `out` is deleted before the new export moves in,
    so only an earlier export may be replaced: never the export's source, a folder containing it, a run,
    a checkpoint (or a folder inside one), a prepared data folder, or any folder that is not an export."""
    target = out.resolve()
    for source in (src.model_dir, src.checkpoint_dir, src.run_dir):
        if source is None:
            continue
        source = Path(source).resolve()
        if target == source or target in source.parents:
            return (f"--out {out} is or contains the export's source {source}: export writes a new folder and "
                    "never replaces its own source; choose another --out (e.g. export/NAME)")
    if any((parent / COMPLETE_MARKER).is_file() or parent.name == "checkpoints" for parent in target.parents):
        return f"--out {out} is inside a checkpoint or a run's checkpoints/: choose a folder outside the run"
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file: pass a folder to write the export into (a new or empty one)"
    if out.is_dir() and any(out.iterdir()):
        held = [name for name in TRAINING_STATE if (out / name).exists()]
        if held or not (out / "config.json").is_file():
            what = f"training state ({', '.join(held)})" if held else "no config.json (not an earlier export)"
            return (f"--out {out} holds {what}: export only ever replaces an earlier export, even with "
                    "--overwrite; choose another --out")
        extra = not_written_by_export(out)
        if extra:
            shown = ", ".join(extra[:6]) + (f" and {len(extra) - 6} more" if len(extra) > 6 else "")
            return (f"--out {out} is an earlier export that also holds {shown}, which export does not write: "
                    "replacing it would delete them; move them out of that folder first, or choose another --out")
    return None


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    format: str = "gpt2repro",
    dtype: str = "float32",
    model_name: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    datasets: list[str] | None = None,
    license: str = "mit",
    base_model: str | None = None,
    lm_eval_results: dict | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export `source` (run folder / checkpoint folder / model folder) to the folder `out`."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {format!r}")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    out = Path(out)
    src = resolve_source(source)
    problem = unsafe_out_problem(out, src)
    if problem:
        raise FileExistsError(problem)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} holds an earlier export: choose another --out or pass --overwrite to replace it")
    _check_lm_eval_results_are_of(src, lm_eval_results)
    if src.run_dir is None and (src.model_dir / "logs" / "metrics.jsonl").is_file():  # an earlier export
        warnings.warn(f"{src.model_dir} is an export: its card's numbers, logs/ and plots/ are not carried into "
                      "this one (only a run folder or checkpoint has them); export from the run instead to keep "
                      "them", stacklevel=2)
    model = _load_source_model(src.model_dir)

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except PermissionError:  # named after the folder that refused it, not the staging folder never asked for
        refusing = next((p for p in out.absolute().parents if p.exists()), out.parent)
        raise PermissionError(13, "Permission denied", str(refusing)) from None
    try:
        exported = _write_weights(model, tmp, format, DTYPES[dtype])
        diff = _check_roundtrip(model, tmp, format, DTYPES[dtype])
        _write_tokenizer(tmp, context=model.config.n_positions, model_dir=src.model_dir,
                         n_ids=model.config.tokenizer_vocab_size)
        _write_generation_config(model, tmp)

        # what this checkpoint trained with (its meta.json); run_config.yaml is the latest session's, which may
        # have resumed with another schedule (or been stopped before its first checkpoint)
        run_config = src.trained_with() or src.run_config()
        metrics = load_metrics(src.metrics_path, name=model_name or out.name) if src.metrics_path else None
        lm_eval_results = _results_after_training(src, metrics, lm_eval_results)
        datasets = datasets if datasets is not None else guess_datasets(run_config)
        plots = []
        if metrics is not None:
            (tmp / "logs").mkdir(exist_ok=True)
            if run_config:  # the config the card describes, not a later session's run_config.yaml
                (tmp / "logs" / "run_config.yaml").write_text(
                    yaml.safe_dump(public_run_config(run_config), sort_keys=False))
            if src.run_dir is not None:
                _write_public_metrics(src.metrics_path, tmp / "logs" / "metrics.jsonl")
            else:  # a converted build-nanogpt checkpoint's log.txt: steps and numbers only, no paths to reduce
                shutil.copyfile(src.metrics_path, tmp / "logs" / src.metrics_path.name)
            plots = _write_plots(metrics, tmp / "plots", src.step, datasets)
        card = build_model_card(CardInputs(
            model_name=model_name or out.name,
            repo_id=repo_id,
            revision=revision,
            format=format,
            dtype=dtype,
            step=src.step,
            n_params=sum(p.numel() for p in exported.parameters()),
            run_config=run_config,
            metrics=metrics,
            lm_eval_results=lm_eval_results,
            datasets=datasets,
            data_description=None if datasets else describe_local_data(run_config),
            license=license,
            base_model=base_model,
            plots=plots,
            converted_from=src.converted_from,
        ))
        card.save(tmp / "README.md")
        default_file_modes(tmp)  # readable as the umask allows (transformers writes the weights 0600)

        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return ExportResult(out, files, src.step, diff)


def _manifest_source(run_config: dict) -> dict:
    """`settings.source` of the run's data folder manifest (what data.prepare read), or {} when unknown."""
    data_dir = str(run_config.get("data_dir") or "")
    manifest = Path(data_dir) / "manifest.json" if data_dir else None
    if not (manifest and manifest.is_file()):
        return {}
    try:
        source = json.loads(manifest.read_text()).get("settings", {}).get("source", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return source if isinstance(source, dict) else {}


def guess_datasets(run_config: dict) -> list[str]:
    """Hub dataset ids of the training data: from the data folder's manifest.json (data.prepare writes
    `settings.source = {"kind": "hub", "name": ...}` for Hub sources; data.import_shards the name prefix of
    build-nanogpt's or llm.c's shards), else from the folder name, else none."""
    source = _manifest_source(run_config)
    if source.get("kind") == "hub" and isinstance(source.get("name"), str):
        return [source["name"]]
    if source.get("kind") == "import":  # build-nanogpt's / llm.c's shards: their fineweb.py's file names say which
        prefix = str(source.get("prefix") or "").lower().replace("_", "").replace("-", "")
        return {"edufineweb": ["HuggingFaceFW/fineweb-edu"], "fineweb": ["HuggingFaceFW/fineweb"]}.get(prefix, [])
    if source.get("kind"):
        return []  # local files or a built-in corpus: no Hub dataset to name
    lowered = str(run_config.get("data_dir") or "").lower().replace("_", "-")
    if "fineweb-edu" in lowered:
        return ["HuggingFaceFW/fineweb-edu"]
    if "fineweb" in lowered:
        return ["HuggingFaceFW/fineweb"]
    return []


def describe_local_data(run_config: dict) -> str | None:
    """The card's words for training data that is not on the Hub: local files by name, or the built-in corpus.
    None for Hub data or when the manifest is not there to say."""
    source = _manifest_source(run_config)
    if source.get("kind") == "builtin":
        return f"the offline built-in corpus `{source.get('name', 'builtin')}` ({source.get('description', '')})"
    if source.get("kind") == "local":
        files = [f for f in source.get("files") or [] if isinstance(f, dict)]
        names = ", ".join(f"`{f.get('name')}`" for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        size = sum(int(f.get("bytes") or 0) for f in files)
        return f"local {source.get('format', '')} files ({names}; {size / 1e6:,.1f} MB)"
    if source.get("kind") == "import":
        return f"token shards imported from {source.get('tool')} (`{source.get('prefix')}_*`)"
    return None


# ---- pieces ----------------------------------------------------------------------------------------------


def _check_lm_eval_results_are_of(src, lm_eval_results: dict | None) -> None:
    """The card calls passed lm-eval results a run "on this export": refuse a file that eval.lm_eval_run wrote
    for another checkpoint (its `model` is a checkpoint of another step). An export folder or a path that is
    gone says nothing about its step, and is taken as given."""
    scored = (lm_eval_results or {}).get("model")
    if not scored or src.step is None:
        return
    try:
        other = resolve_source(scored)
    except (OSError, ValueError):
        return
    if other.step is not None and (other.step != src.step or other.model_dir.resolve() != src.model_dir.resolve()):
        raise ValueError(f"--lm-eval-results was measured on {scored} (step {other.step:,}), not on the exported "
                         f"checkpoint {src.model_dir} (step {src.step:,}): its numbers would be published as this "
                         "model's; run `python -m eval.lm_eval_run --model` on the checkpoint you export")


def _results_after_training(src, metrics, lm_eval_results: dict | None) -> dict | None:
    """Evaluations run on this checkpoint after training (`eval.hellaswag` / `eval.lm_eval_run` save them in
    `<run>/eval_results/step_N/`) join the card: lm-eval's 0-shot HellaSwag results unless others were passed,
    the scorer's as the HellaSwag record of that step unless training measured one there. Optional extras: a
    file that cannot be used (unreadable, another task, few-shot) is skipped with a warning, never an error.
    Returns the lm-eval results to use. A converted build-nanogpt checkpoint's folder keeps them in its own
    eval_results/."""
    if src.step is None or (src.checkpoint_dir is None and src.converted_from is None):
        return lm_eval_results
    folder = src.eval_results_dir
    from eval import hellaswag, lm_eval_run

    def skip(path, why):
        warnings.warn(f"not in the model card: {path} ({why})", stacklevel=3)

    lm_eval_file = folder / lm_eval_run.RESULTS_FILE
    if lm_eval_results is None and lm_eval_file.is_file():
        try:  # ValueError: unusable, or few-shot
            lm_eval_results = {**load_lm_eval_results(lm_eval_file),
                               "where": f"lm-eval on checkpoint step {src.step:,} after training"}
        except (OSError, ValueError) as err:
            skip(lm_eval_file, err)
    scorer = folder / hellaswag.RESULTS_FILE
    logged = metrics.hellaswag_records.get(src.step) if metrics is not None else None
    # a build-nanogpt log's record has its own acc_norm only (acc_tokennorm, on every example): the scorer's, on
    # all of them too, adds lm-eval's; on fewer it would replace a full-set number with a subset's
    if metrics is not None and (logged is None or logged.get("acc_norm") is None) and scorer.is_file():
        try:
            saved = json.loads(scorer.read_text())
            result = saved["results"]
            float(result["acc_norm"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            skip(scorer, f"no usable results: {err}")
        else:
            if logged is not None and int(result.get("n") or 0) < HELLASWAG_EXAMPLES:
                skip(scorer, f"scored on {result.get('n')} examples, where the run's log has step {src.step:,}'s "
                             "number on all of them")
                return lm_eval_results
            metrics.hellaswag_records[src.step] = {
                **result, "step": src.step, "data_fingerprint": saved.get("data_fingerprint"),
                "measured": f"measured with eval.hellaswag on checkpoint step {src.step:,} after training"}
    return lm_eval_results


def _load_source_model(model_dir: Path):
    from modeling_gpt2repro import GPT2ReproForCausalLM
    from publish.model_weights import from_pretrained_checked, read_config_json

    config = read_config_json(model_dir)
    if config.get("model_type") == "gpt2":
        raise ValueError(f"{model_dir} holds a stock GPT-2 model, not gpt2repro: convert it first with "
                         "`python convert_gpt2.py --from-gpt2 DIR --out OUT`")
    if config.get("model_type") != "gpt2repro":
        raise ValueError(f"{model_dir} holds a {config.get('model_type')!r} model: export takes gpt2repro models "
                         "(this project's, or a stock GPT-2 converted with convert_gpt2.py --from-gpt2)")
    return from_pretrained_checked(GPT2ReproForCausalLM, model_dir, dtype=torch.float32).eval()


def _write_weights(model, out: Path, format: str, dtype: torch.dtype):
    """Save the weights (and code) in `format`; return the model object that was saved."""
    if format == "gpt2":
        from convert_gpt2 import to_stock_gpt2

        exported = to_stock_gpt2(model).to(dtype)
        exported.save_pretrained(out)
    else:
        exported = copy.deepcopy(model).to(dtype)
        exported.save_pretrained(out)
        config = json.loads((out / "config.json").read_text())
        missing = [f for f in CODE_FILES if not (out / f).is_file()]
        if missing or "AutoModelForCausalLM" not in config.get("auto_map", {}):
            raise RuntimeError(
                f"save_pretrained did not write the remote-code files {missing} / auto_map: the export would not "
                "load with trust_remote_code (check `_auto_class` in the model files)"
            )
    return exported


def _check_roundtrip(model, out: Path, format: str, dtype: torch.dtype) -> float:
    """Load the written weights back and compare log-probs with the source (weights rounded to `dtype`)."""
    if format == "gpt2":
        from transformers import GPT2LMHeadModel as loader
    else:
        from modeling_gpt2repro import GPT2ReproForCausalLM as loader
    reference = copy.deepcopy(model).to(dtype).to(torch.float32)
    reloaded = loader.from_pretrained(out, dtype=torch.float32).eval()
    vocab = model.config.tokenizer_vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, min(16, model.config.n_positions)), generator=generator)
    with torch.no_grad():
        want = torch.log_softmax(reference(ids).logits[..., :vocab].float(), dim=-1)
        got = torch.log_softmax(reloaded(ids).logits[..., :vocab].float(), dim=-1)
    diff = (want - got).abs().max().item()
    if not diff < 1e-3:
        raise RuntimeError(f"the exported {format} weights do not reproduce the source model: log-probs differ "
                           f"by up to {diff:.3g}")
    return diff


def _write_tokenizer(out: Path, context: int, model_dir: Path | None, n_ids: int) -> None:
    from data.tokenizer import tokenizer_for_model

    tokenizer, warning = tokenizer_for_model(context, n_ids, model_dir)
    if warning:
        warnings.warn(f"{warning}; save your tokenizer into {out} (tokenizer.save_pretrained) before publishing it",
                      stacklevel=3)
    tokenizer.save_pretrained(out)
    _copy_bpe_files(out)  # GPT-2's 50257 (added tokens are in tokenizer.json / tokenizer_config.json)


def _copy_bpe_files(out: Path) -> None:
    """The classic GPT-2 files too (byte-identical to OpenAI's), for tools that read vocab.json / merges.txt."""
    from data.tokenizer import gpt2_bpe_files

    encoder, merges = gpt2_bpe_files()
    shutil.copyfile(encoder, out / "vocab.json")
    shutil.copyfile(merges, out / "merges.txt")


def _write_generation_config(model, out: Path) -> None:
    from transformers import GenerationConfig

    eot = model.config.eos_token_id
    GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, **SAMPLING).save_pretrained(out)


def _write_public_metrics(source: Path, out: Path) -> None:
    """metrics.jsonl as published: each record with its local paths reduced (publish.local_paths); a line that is
    not a JSON record (a crash cut it short) is kept as text, scrubbed the same way."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(scrub_paths(line))
            continue
        lines.append(json.dumps(public_metrics_record(record) if isinstance(record, dict) else record))
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_plots(metrics, plots_dir: Path, step: int | None, datasets: list[str]) -> list[tuple[str, str]]:
    fineweb_edu = val_loss_reference_applies(datasets)
    plots = []
    if metrics.train_loss or metrics.val_loss:
        plot_runs([metrics], plots_dir / "loss.png", panels=("loss",), reference_loss=fineweb_edu, mark_step=step)
        plots.append(("train and validation loss" if metrics.val_loss else "train loss", "plots/loss.png"))
    if metrics.hellaswag:
        plot_runs([metrics], plots_dir / "hellaswag.png", panels=("hellaswag",), mark_step=step)
        plots.append(("HellaSwag acc_norm", "plots/hellaswag.png"))
    return plots
