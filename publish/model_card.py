"""The model card (`README.md`) of an exported model, built with huggingface_hub's `ModelCard` / `ModelCardData`.

Metadata: license, datasets, tags, library_name, pipeline_tag, base_model (when training continued from GPT-2),
and a `model-index` with HellaSwag (acc and acc_norm, each metric named with its scorer) and the validation loss,
so the Hub shows them and `ModelCard.load(path).data.eval_results` reads them back. The text: results next to
the published references under the same scorer, the training summary, the curves, how to load the model with
and without remote code, and how it was evaluated.

Every number is taken at the exported step: a run exported at step 5000 never shows what it scored later.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from publish.local_paths import public_path
from publish.metrics import RunMetrics
from publish.references import (
    HELLASWAG_ACC,
    HELLASWAG_ACC_NORM,
    HELLASWAG_EXAMPLES,
    SCORER_BUILD_NANOGPT,
    SCORER_DESCRIPTIONS,
    SCORER_LM_EVAL,
    VAL_LOSS,
    val_loss_reference_applies,
)

HELLASWAG_DATASET = "Rowan/hellaswag"
FORMATS = ("gpt2repro", "gpt2")
# Metric names in the model-index: the scorer is part of the name, so nobody compares across scorers.
METRIC_ACC = "acc (lm-eval scorer)"
METRIC_ACC_NORM = "acc_norm (lm-eval scorer, length in characters)"
METRIC_ACC_TOKENNORM = "acc_norm (build-nanogpt scorer, length in tokens)"
METRIC_VAL_LOSS = "validation loss (nats/token)"
# run_config `init_from` values that mean "continued from OpenAI's GPT-2"
_GPT2_BASES = {"gpt2": "openai-community/gpt2", "openai-community/gpt2": "openai-community/gpt2"}


@dataclass
class CardInputs:
    """Everything the card says. Built by publish.export_model from the run folder; all optional but the name."""

    model_name: str
    repo_id: str | None = None  # where it will live; the usage snippets use it
    revision: str | None = None  # the branch it is pushed to, when not main: the snippets load that branch
    format: str = "gpt2repro"
    dtype: str = "float32"
    step: int | None = None
    n_params: int | None = None
    run_config: dict = field(default_factory=dict)
    metrics: RunMetrics | None = None
    lm_eval_results: dict | None = None  # {"acc":, "acc_norm":, "acc_stderr":, "acc_norm_stderr":, "version":}
    datasets: list[str] = field(default_factory=list)
    data_description: str | None = None  # training data that is not on the Hub (local files, built-in corpus)
    license: str = "mit"
    base_model: str | None = None  # default: from run_config init_from
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the card)
    converted_from: dict | None = None  # a converted build-nanogpt checkpoint's record (publish.nanogpt_checkpoint)


def base_model_of(run_config: dict) -> str | None:
    init_from = str(run_config.get("init_from") or "scratch")
    return _GPT2_BASES.get(init_from)


def results_at_step(metrics: RunMetrics | None, step: int | None) -> dict:
    """The HellaSwag record and val loss measured at `step` (else the last measurement before it)."""
    if metrics is None:
        return {}
    out = {}
    upto = (lambda s: True) if step is None else (lambda s: s <= step)
    hella = [(s, rec) for s, rec in metrics.hellaswag_records.items() if upto(s)]
    if hella:
        out["hellaswag"] = {"step": hella[-1][0], **hella[-1][1]}
    val = [(s, v) for s, v in metrics.val_loss if upto(s)]
    if val:
        out["val_loss"] = {"step": val[-1][0], "value": val[-1][1], "tokens": metrics.val_tokens.get(val[-1][0])}
    return out


def _results(inputs: "CardInputs") -> dict:
    """`results_at_step` of the card's run; for a converted build-nanogpt checkpoint whose log did not come with it,
    the validation loss its checkpoint recorded."""
    at = results_at_step(inputs.metrics, inputs.step)
    converted = inputs.converted_from or {}
    if "val_loss" not in at and inputs.step is not None and isinstance(converted.get("val_loss"), float):
        at["val_loss"] = {"step": inputs.step, "value": converted["val_loss"], "tokens": None,
                          "measured": "recorded in the checkpoint"}
    return at


def _schedule_changed(cfg: dict, train: list[dict]) -> bool:
    """Whether any logged step's lr differs from what `cfg`'s schedule gives for it (a resume that extended the
    run or changed max_lr/warmup: the card's one-line schedule then describes only the last part)."""
    from types import SimpleNamespace

    from training.optim import lr_at

    keys = ("max_lr", "min_lr", "warmup_steps", "max_steps", "lr_decay_steps")
    if any(key not in cfg for key in keys[:4]):
        return False
    schedule = SimpleNamespace(**{key: cfg.get(key) for key in keys})
    return any(not math.isclose(rec["lr"], lr_at(rec["step"] - 1, schedule), rel_tol=1e-6)  # logged steps are 1-based
               for rec in train if isinstance(rec.get("lr"), (int, float)) and isinstance(rec.get("step"), int))


def _hardware(metrics: RunMetrics | None, step: int | None) -> str | None:
    """What trained the steps up to `step`, from the `session` rows: "8 x NVIDIA H100 80GB HBM3", or per span of
    steps when a resume changed it ("8 x ... (steps 1-3,000), 4 x ... (steps 3,001-5,000)"). None without session
    rows (runs logged before they were written: the summary row, the last session's, says it then)."""
    last = step if step is not None else metrics.last_step if metrics else None
    # sessions that began at or after the exported step trained none of its steps
    sessions = [(start, record) for start, record in sorted((metrics.sessions if metrics else {}).items())
                if last is None or start < last]
    spans: list[list] = []  # [first step, last step, hardware]
    for i, (start, record) in enumerate(sessions):
        end = sessions[i + 1][0] if i + 1 < len(sessions) else last
        world, device = record.get("world_size"), record.get("device")
        what = f"{world} x {device}" if world else str(device)
        if spans and spans[-1][2] == what:
            spans[-1][1] = end
        else:
            spans.append([start + 1, end, what])
    if len(spans) <= 1:
        return spans[0][2] if spans else None
    return ", ".join(f"{what} (steps {first:,}-{end:,})" if end is not None else f"{what} (from step {first:,})"
                     for first, end, what in spans)


def training_rows(run_config: dict, metrics: RunMetrics | None, step: int | None) -> list[tuple[str, str]]:
    """The training summary as (label, value) rows, from the run config, the summary record and the train lines."""
    cfg, summary = run_config, (metrics.summary if metrics else None) or {}
    train = [rec for s, rec in (metrics.train_records.items() if metrics else []) if step is None or s <= step]
    rows: list[tuple[str, str]] = []
    # train.py logs every step: a log that starts later belongs to a run resumed from another run folder's
    # checkpoint, whose earlier steps (their times, their schedule) are not in this metrics.jsonl
    first = min((rec["step"] for rec in train if isinstance(rec.get("step"), int)), default=1)
    elsewhere = f"steps 1-{first - 1:,} were trained in another run folder (resumed from its checkpoint)" \
        if first > 1 else None

    def get(*keys, source=None):
        for key in keys:
            value = (source if source is not None else summary).get(key)
            if value is not None and value != "":
                return value
        return None

    steps = step if step is not None else get("steps", "total_steps", "step")
    if steps is not None:
        planned = cfg.get("max_steps")
        rows.append(("optimizer steps", f"{int(steps):,}" + (f" of {int(planned):,} planned" if planned else "")))
    tokens = train[-1].get("tokens") if train else None
    if tokens is None and step is None:
        tokens = get("tokens", "total_tokens")
    if tokens is None and steps is not None and cfg.get("total_batch_size"):
        tokens = int(steps) * int(cfg["total_batch_size"])
    if tokens is not None:
        rows.append(("tokens seen", f"{int(tokens):,}" + _short_count(int(tokens))))
    if cfg.get("total_batch_size"):
        batch = f"{int(cfg['total_batch_size']):,} tokens/step"
        if cfg.get("micro_batch_size") and cfg.get("seq_len"):
            batch += f" (micro batch {cfg['micro_batch_size']} x {cfg['seq_len']} tokens, grad accumulation as needed)"
        rows.append(("batch", batch))
    if cfg.get("max_lr") is not None:
        decay = cfg.get("lr_decay_steps") or cfg.get("max_steps")
        warmup = cfg.get("warmup_steps", "?")
        schedule = ((f"no warmup: {cfg['max_lr']:g} from the first step, " if warmup == 0 else
                     f"linear warmup {warmup} steps to {cfg['max_lr']:g}, ")
                    + f"cosine to {cfg.get('min_lr', '?'):g}, reached after step {decay}")
        if elsewhere:
            schedule += f" (this checkpoint's settings; {elsewhere} and may have followed another schedule)"
        elif _schedule_changed(cfg, train):
            schedule += (" (this checkpoint's settings; earlier steps followed another schedule: the run was resumed "
                         "with other settings, see the per-step lr in metrics.jsonl)")
        rows.append(("learning rate", schedule))
    if cfg.get("weight_decay") is not None:
        rows.append(("optimizer", f"AdamW betas ({cfg.get('beta1', 0.9)}, {cfg.get('beta2', 0.95)}), eps "
                                  f"{cfg.get('adam_eps', 1e-8):g}, weight decay {cfg['weight_decay']} on tensors with "
                                  f"dim >= 2, grad clip {cfg.get('grad_clip', '?')}"))
    precision = summary.get("precision") or cfg.get("mixed_precision")
    if precision:
        rows.append(("precision", "fp32" if precision in ("no", "fp32") else
                     f"{precision} autocast, fp32 master weights and optimizer state"))
    # Times and speeds from the train rows (the later row wins for a step repeated after a resume), never from the
    # summary row: that one covers only the last session of a resumed run.
    timed = [rec for rec in train if isinstance(rec.get("dt_ms"), (int, float)) and rec["dt_ms"] > 0]
    step_seconds = sum(float(rec["dt_ms"]) for rec in timed) / 1000
    if step_seconds:
        text = f"{step_seconds / 3600:.2f} h" if step_seconds >= 3600 else f"{step_seconds:.0f} s"
        what = f"steps {first:,}-{train[-1]['step']:,} only: {elsewhere}; " if elsewhere else ""
        rows.append(("training time", f"{text} (sum of the optimizer steps' times; {what}evaluations and saves not "
                                      "counted)"))
    device, world = get("device", "hardware"), get("world_size")
    hardware = _hardware(metrics, step) or ((f"{world} x {device}" if world else str(device)) if device else None)
    if hardware:
        rows.append(("hardware", hardware))
    steady = timed[len(timed) // 10:]  # the first 10% (compilation, warm-up) left out
    per_step = cfg.get("total_batch_size")
    tok_s = None
    if steady and per_step:
        tok_s = len(steady) * int(per_step) / (sum(float(rec["dt_ms"]) for rec in steady) / 1000)
    elif not train and (summary_tok_s := get("tok_per_s", "mean_tok_per_s")) is not None:
        tok_s = float(summary_tok_s)
    if tok_s:
        rows.append(("throughput", f"{tok_s:,.0f} tokens/s (steady state: tokens / step time)"))
    # MFU is proportional to throughput (FLOPs/token / peak, the same for every step): scale it the same way.
    ratio = _mean(rec["mfu"] / rec["tok_per_s"] for rec in steady
                  if isinstance(rec.get("mfu"), (int, float)) and isinstance(rec.get("tok_per_s"), (int, float))
                  and rec["tok_per_s"] > 0)
    mfu = ratio * tok_s if ratio and tok_s else None
    if mfu:
        rows.append(("MFU", f"{100 * float(mfu):.1f}% (6N + 12LHQT FLOPs/token vs measured bf16 peak)"))
    return rows


def _short_count(n: int) -> str:
    """' (10.49B)' / ' (24.6M)': the scale of a count in words; '' below a million, where the digits say it."""
    return f" ({n / 1e9:.2f}B)" if n >= 1e9 else f" ({n / 1e6:.1f}M)" if n >= 1e6 else ""


def _mean(values) -> float | None:
    clean = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(clean) / len(clean) if clean else None


def eval_results(inputs: CardInputs) -> list[EvalResult]:
    """The model-index entries: HellaSwag acc / acc_norm (scorer in the metric name) and validation loss."""
    at = _results(inputs)
    hella, lm_eval = at.get("hellaswag"), inputs.lm_eval_results
    results = []
    subset = []  # the example count of the HellaSwag entry (the first metric's)

    def hellaswag(metric_type, name, value, n=None):
        n = int(n) if n and int(n) != HELLASWAG_EXAMPLES else None  # None: all 10,042 (or not said)
        # huggingface_hub merges metrics of one task + dataset into one model-index entry under the FIRST one's
        # dataset args (`limit` is not part of EvalResult.unique_identifier): a metric measured on another number
        # of examples would be shown with the wrong count, e.g. a 40-example in-loop number as all 10,042. It is
        # left out of the index; the card's text reports it with its own count.
        if subset and subset[0] != n:
            return
        subset.append(n)
        args = {"num_fewshot": 0}
        if n:
            args["limit"] = n  # a subset of the 10,042 rows: say so
        # the name is what the Hub's results widget shows (not the args): a subset says so there too
        shown = f"HellaSwag (first {n:,} of {HELLASWAG_EXAMPLES:,} examples)" if n else "HellaSwag"
        results.append(EvalResult(
            task_type="text-generation", task_name="Text Generation", dataset_type=HELLASWAG_DATASET,
            dataset_name=shown, dataset_split="validation", dataset_args=args,
            metric_type=metric_type, metric_name=name, metric_value=round(float(value), 4),
        ))

    # Filed under Rowan/hellaswag: numbers scored on another file are in the text only.
    if lm_eval:  # a full lm-eval run on the export beats the in-loop numbers for the lm-eval scorer
        if _published_set(lm_eval):
            hellaswag("acc", METRIC_ACC, lm_eval["acc"], lm_eval.get("n"))
            hellaswag("acc_norm", METRIC_ACC_NORM, lm_eval["acc_norm"], lm_eval.get("n"))
    elif hella and hella.get("acc") is not None and _published_set(hella):
        hellaswag("acc", METRIC_ACC, hella["acc"], hella.get("n"))
        hellaswag("acc_norm", METRIC_ACC_NORM, hella["acc_norm"], hella.get("n"))
    if hella and hella.get("acc_tokennorm") is not None and _published_set(hella):
        hellaswag("acc_norm", METRIC_ACC_TOKENNORM, hella["acc_tokennorm"], hella.get("n"))
    if "val_loss" in at:
        dataset = inputs.datasets[0] if inputs.datasets else "custom"
        results.append(EvalResult(
            task_type="text-generation", task_name="Text Generation", dataset_type=dataset,
            dataset_name=f"{dataset.split('/')[-1]} validation tokens", dataset_split="validation",
            metric_type="loss", metric_name=METRIC_VAL_LOSS, metric_value=round(at["val_loss"]["value"], 4),
        ))
    return results


def build_model_card(inputs: CardInputs) -> ModelCard:
    if inputs.format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {inputs.format!r}")
    base_model = inputs.base_model or base_model_of(inputs.run_config)
    tags = ["gpt2", "text-generation", "causal-lm", "pretraining", "build-nanogpt", "gpt2repro"]
    if inputs.format == "gpt2repro":
        tags.append("custom_code")
    results = eval_results(inputs)
    card_data = ModelCardData(
        language="en",
        license=inputs.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=inputs.datasets or None,
        base_model=base_model,
        model_name=inputs.model_name,
        eval_results=results or None,
    )
    text = _render(inputs, _results(inputs), base_model)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{text}")


def load_lm_eval_results(path: str | Path) -> dict:
    """HellaSwag acc/acc_norm from an lm-eval results JSON (`lm_eval ... --output_path`, or eval.lm_eval_run's).
    0-shot only: the card compares with 0-shot references, so a few-shot result is refused. Anything unusable
    raises ValueError saying what the file lacks."""
    what = "pass the results file lm-eval wrote (`lm_eval ... --output_path`, or eval.lm_eval_run's lm_eval.json)"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): {what}") from None
    try:
        # `hellaswag`, or our `hellaswag_local` (eval/tasks: lm-eval's task on a local copy of the file), which
        # the README's offline `lm_eval ... --include_path eval/tasks --tasks hellaswag_local` writes
        name = next((t for t in ("hellaswag", "hellaswag_local") if t in data["results"]), "hellaswag")
        task = data["results"][name]
        acc, acc_norm = float(task["acc,none"]), float(task["acc_norm,none"])
        shots = (data.get("n-shot") or {}).get(name)
        n = (data.get("n-samples") or {}).get(name, {}).get("effective")
        version = (data.get("versions") or {}).get(name)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: no HellaSwag acc/acc_norm in it ({type(err).__name__}: {err}): {what}") from None
    if shots:
        raise ValueError(f"{path}: HellaSwag was scored {shots}-shot; the model card reports 0-shot (the references "
                         "are 0-shot): run lm-eval without --num_fewshot")
    if not n:  # an lm-eval without `n-samples`: its --limit (also in `config`), else it scored every example
        limit = data.get("limit") or (data.get("config") or {}).get("limit")
        if isinstance(limit, (int, float)) and limit > 0:  # lm-eval: a limit below 1 is a fraction of the task
            n = min(HELLASWAG_EXAMPLES, math.ceil(HELLASWAG_EXAMPLES * limit) if limit < 1 else int(limit))
    out = {"acc": acc, "acc_norm": acc_norm,
           "acc_stderr": task.get("acc_stderr,none"), "acc_norm_stderr": task.get("acc_norm_stderr,none"),
           "version": version, "lm_eval_version": data.get("lm_eval_version")}
    if n:
        out["n"] = n
    if isinstance(data.get("model"), str):  # eval.lm_eval_run records the model folder it scored
        out["model"] = data["model"]
    elif _pretrained_arg(data):  # the lm_eval command line records it in its --model_args
        out["model"] = _pretrained_arg(data)
    if isinstance(data.get("data_fingerprint"), str):  # ... and what its local HellaSwag file holds
        out["data_fingerprint"] = data["data_fingerprint"]
    elif name == "hellaswag_local":  # the lm_eval command line on our task records only the task's data_files
        out.update(_local_task_data(data, name))
    return out


def _pretrained_arg(data: dict) -> str | None:
    """`pretrained=` of the `--model_args` an lm_eval run recorded in its results' config (a "k=v,k=v" string, read
    with lm-eval's own parser, or a dict in some versions); None when absent."""
    args = (data.get("config") or {}).get("model_args")
    if isinstance(args, str):
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(args)
    value = args.get("pretrained") if isinstance(args, dict) else None
    return value if isinstance(value, str) and value else None


def _local_task_data(data: dict, name: str) -> dict:
    """{"data_fingerprint": ...} of the file an lm_eval run of eval/tasks/hellaswag_local.yaml read (its path is
    relative to where lm_eval ran), or {"data_unchecked": path} when that file cannot be read here."""
    from eval.errors import EvalInputError
    from eval.hellaswag_data import file_fingerprint

    try:
        files = data["configs"][name]["dataset_kwargs"]["data_files"]
        file = files["validation"] if isinstance(files, dict) else files
        file = file[0] if isinstance(file, list) else file
        return {"data_fingerprint": file_fingerprint(str(file))}
    except (KeyError, TypeError, IndexError):
        return {"data_unchecked": "a file the results do not name"}
    except (EvalInputError, OSError):
        return {"data_unchecked": str(file)}


# ---- the text ------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _local_origin(init_from: str) -> str:
    """The card's words for a local `init_from` (its last name only: no local paths); a folder converted from a
    build-nanogpt checkpoint, when it is still there to say so, is named as that."""
    from publish.model_source import converted_from

    try:  # the folder itself (--init_from names the converted folder); gone or unreadable: its name is all there is
        converted = (converted_from(Path(init_from)) if Path(init_from).is_dir() else None) or {}
    except OSError:
        converted = {}
    if converted.get("format") == "build-nanogpt" and converted.get("checkpoint"):
        step = f", step {converted['step']:,}" if isinstance(converted.get("step"), int) else ""
        return (f"whose pretraining continued from a [build-nanogpt](https://github.com/karpathy/build-nanogpt) "
                f"checkpoint (`{converted['checkpoint']}`{step}, converted)")
    return f"whose pretraining continued from a local model (`{Path(init_from).name}`)"


def _render(inputs: CardInputs, at: dict, base_model: str | None) -> str:
    repo = inputs.repo_id or f"<namespace>/{inputs.model_name}"
    cfg = inputs.run_config
    params = f"{inputs.n_params / 1e6:.1f}M parameters" if inputs.n_params else "GPT-2 architecture"
    init_from = str(cfg.get("init_from") or "scratch")
    origin = (f"whose pretraining continued from [{base_model}](https://huggingface.co/{base_model})" if base_model
              else "pretrained from scratch" if init_from == "scratch" else _local_origin(init_from))
    data = (", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in inputs.datasets)
            or inputs.data_description or "the run's data")
    parts = [f"# {inputs.model_name}\n"]
    converted = inputs.converted_from
    if converted:
        what = ("trained with Karpathy's [build-nanogpt](https://github.com/karpathy/build-nanogpt) "
                "(`train_gpt2.py`)" + (f" on {data}" if inputs.datasets or inputs.data_description else "")
                + f" and converted from its checkpoint `{converted.get('checkpoint')}`: the same GPT-2 architecture, "
                "its weights copied as they are (the 47 padded vocabulary rows build-nanogpt trains are masked here, "
                "so only the 50,257 real token ids are ever predicted). "
                + ("Its training is described only by what that run logged (below). " if inputs.metrics is not None
                   else "No log of that run came with it: how it was trained is not stated here. "))
    elif cfg or base_model or inputs.datasets or inputs.data_description or inputs.metrics is not None:
        what = (f"{origin} on {data} with gpt2repro: Karpathy's [build-nanogpt](https://github.com/karpathy/"
                "build-nanogpt) GPT-2 (124M) recipe, reimplemented natively on the Hugging Face stack (transformers "
                "model, Accelerate training loop). ")
    else:  # a model folder (save_pretrained, Trainer, an earlier export) carries no record of its training
        what = ("in gpt2repro's architecture (Karpathy's [build-nanogpt](https://github.com/karpathy/build-nanogpt) "
                "GPT-2, reimplemented natively on the Hugging Face stack). It was exported from a model folder that "
                "holds no record of its training: how, on what and from what it was trained is not stated here. ")
    parts.append(
        f"A GPT-2 style language model ({params}) {what}"
        + (f"This export is the checkpoint at step {inputs.step:,}. " if inputs.step is not None else "")
        + f"Weights: `model.safetensors` ({inputs.dtype}).\n"
    )
    if inputs.format == "gpt2repro":
        parts.append("Architecture code ships with the weights (`configuration_gpt2repro.py`, "
                     "`modeling_gpt2repro.py`): load it with `trust_remote_code=True`. The same weights in the stock "
                     "transformers GPT-2 format load with no remote code: `python export.py RUN --format gpt2`.\n")
    else:
        parts.append("This folder is in the **stock transformers GPT-2 format** (`GPT2LMHeadModel`, 50,257-row "
                     "vocabulary): it needs no remote code and works with any tool that knows GPT-2.\n")

    parts.append(_results_section(inputs, at))
    rows = training_rows(cfg, inputs.metrics, inputs.step)
    if rows:
        parts.append("## Training\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n")
    if inputs.plots:
        # reference lines are drawn on the HellaSwag plot, and on the loss plot for FineWeb-Edu only
        dashed = (any("hellaswag" in path for _, path in inputs.plots)
                  or val_loss_reference_applies(inputs.datasets))
        parts.append("## Curves\n\n" + "\n\n".join(f"![{caption}]({path})" for caption, path in inputs.plots)
                     + ("\n\nDashed lines: published references under the same scorer (OpenAI GPT-2 124M, "
                        "GPT-3 small from its paper).\n" if dashed else "\n"))
    parts.append(_usage_section(inputs, repo))
    parts.append(_evaluation_section(inputs, repo))
    parts.append(
        "## Limitations\n\nA small base model trained for research and education: it continues text, it does not "
        "follow instructions, and it reproduces the biases and errors of its training data. Not for production use.\n"
    )
    return "\n".join(parts)


def _published_set(record: dict | None) -> bool:
    """Whether a HellaSwag record was scored on the published validation set: yes for records that do not say
    (lm-eval reading Rowan/hellaswag from the Hub; runs from before fingerprints were recorded)."""
    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT

    record = record or {}
    return record.get("data_fingerprint") in (None, ORIGINAL_VAL_FINGERPRINT) and "data_unchecked" not in record


def _other_set(record: dict | None) -> str:
    """What the results text adds for a record scored on another file, or one that could not be checked."""
    if _published_set(record):
        return ""
    if "data_unchecked" in record:
        return (f" (scored on {public_path(record['data_unchecked'])}, which could not be read here to check that it "
                "holds the published HellaSwag validation set: not in this card's model-index)")
    return (f" (**not the published HellaSwag validation set**: a file with other rows, content fingerprint "
            f"{record['data_fingerprint'][:12]}; not comparable with the references below)")


def _measured(hella: dict) -> str:
    """Where a HellaSwag record comes from: the training loop, or a scorer run on the checkpoint afterwards."""
    return hella.get("measured") or f"in-loop, step {hella['step']:,}"


def _results_section(inputs: CardInputs, at: dict) -> str:
    hella, lm_eval, val = at.get("hellaswag"), inputs.lm_eval_results, at.get("val_loss")
    if not (hella or lm_eval or val):
        return "## Results\n\nNo evaluation was recorded for this checkpoint.\n"
    lines = ["## Results\n"]
    ours = "**this model**"
    if lm_eval or (hella and hella.get("acc_norm") is not None):
        acc, acc_norm = (lm_eval["acc"], lm_eval["acc_norm"]) if lm_eval else (hella["acc"], hella["acc_norm"])
        where = ((lm_eval.get("where") or f"lm-eval {lm_eval.get('lm_eval_version') or ''} run on this export")
                 .replace("  ", " ") if lm_eval else _measured(hella))
        n = (lm_eval or hella).get("n")
        lines.append(f"HellaSwag validation, 0-shot, {SCORER_DESCRIPTIONS[SCORER_LM_EVAL]}; {where}"
                     + (f", {int(n):,} examples" if n else "") + _other_set(lm_eval or hella) + ":\n")
        lines.append("| model | acc | acc_norm |\n|---|---|---|")
        lines.append(f"| {ours} | {_fmt(acc)} | {_fmt(acc_norm)} |")
        gpt2, gpt3 = HELLASWAG_ACC_NORM[SCORER_LM_EVAL]
        lines.append(f"| {gpt2.label} | {_fmt(HELLASWAG_ACC[SCORER_LM_EVAL].value)} | {_fmt(gpt2.value)} |")
        lines.append(f"| {gpt3.label} | | {_fmt(gpt3.value, 3)} |\n")
        stderr = (lm_eval or {}).get("acc_norm_stderr")
        lines.append(_uncertainty_note(n, acc_norm, stderr, _published_set(lm_eval or hella)))
    if hella and hella.get("acc_tokennorm") is not None:
        lines.append(f"HellaSwag validation, {SCORER_DESCRIPTIONS[SCORER_BUILD_NANOGPT]}; {_measured(hella)}"
                     + (f", {int(hella['n']):,} examples" if hella.get("n") else "") + _other_set(hella) + ":\n")
        gpt2, gpt3 = HELLASWAG_ACC_NORM[SCORER_BUILD_NANOGPT]
        lines.append("| model | acc_norm |\n|---|---|")
        lines.append(f"| {ours} | {_fmt(hella['acc_tokennorm'])} |")
        lines.append(f"| {gpt2.label} | {_fmt(gpt2.value)} |\n| {gpt3.label} | {_fmt(gpt3.value, 3)} |\n")
        lines.append(_uncertainty_note(hella.get("n"), hella["acc_tokennorm"], None, _published_set(hella)))
    if val:
        planned = inputs.run_config.get("val_tokens")  # an upper bound: a smaller val split gives fewer
        over = (f" over {int(val['tokens']):,} tokens" if val.get("tokens")
                else f" over (at most) {int(planned):,} tokens (`val_tokens`)" if planned else "")
        over += f" ({val['measured']})" if val.get("measured") else ""
        lines.append(f"Validation loss at step {val['step']:,}: **{val['value']:.4f}** nats/token{over}"
                     + (f" ({', '.join(inputs.datasets)} held-out tokens)" if inputs.datasets else "")
                     + (f". For scale: {VAL_LOSS.label} scores {VAL_LOSS.value:.4f} on build-nanogpt's FineWeb-Edu "
                        "val split (comparable only on that data)" if val_loss_reference_applies(inputs.datasets)
                        else "") + ".\n")
    if hella or lm_eval:
        lines.append("Never compare HellaSwag numbers across scorers: the same OpenAI GPT-2 scores 0.3114 acc_norm "
                     "under lm-eval and 0.2955 under build-nanogpt's scorer.\n")
    return "\n".join(lines)




def _uncertainty_note(n, accuracy, stderr, published: bool = True) -> str:
    """One standard error of an accuracy measured on n examples (lm-eval's own when given, else computed as lm-eval
    does: the sample standard deviation of the 0/1 outcomes, n - 1 in its denominator, over sqrt(n)), and a
    warning when n is a subset: the reference rows are on all 10,042 examples. Scored on another file
    (`published` False), its rows are not known to be the first n of the published set, so that is not claimed
    (the results line already says the file is another one)."""
    if not n or accuracy is None:
        return ""
    # sqrt(n p (1 - p) / (n - 1)) / sqrt(n) = sqrt(p (1 - p) / (n - 1)); one example has no spread to measure
    stderr = stderr if stderr is not None else math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(int(n) - 1, 1))
    note = f"Standard error of this model's acc_norm: ±{stderr:.4f} ({int(n):,} examples)."
    if published and int(n) < HELLASWAG_EXAMPLES:
        note += (f" Measured on the first {int(n):,} of the {HELLASWAG_EXAMPLES:,} examples, the references on all of "
                 "them: differences within about two standard errors are noise.")
    return note + "\n"


def _usage_section(inputs: CardInputs, repo: str) -> str:
    branch = _branch(inputs)
    at = f', revision="{branch}"' if branch else ""
    if inputs.format == "gpt2repro":
        load = (
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo}"{at}, trust_remote_code=True)\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}"{at}, trust_remote_code=True)\n'
            'inputs = tokenizer("Hello, I\'m a language model,", return_tensors="pt")\n'
            "out = model.generate(**inputs, max_new_tokens=32)  # generation_config.json: top-k 50 sampling\n"
            "print(tokenizer.decode(out[0]))\n```\n\n"
            "`trust_remote_code=True` runs the two `.py` files of this repo: read them first (they are short). "
            "Pass `trust_remote_code` to `AutoTokenizer` too (the tokenizer itself is stock GPT-2; left unset, "
            "transformers may stop and ask y/N). Without remote code, use the stock "
            "GPT-2 export of the same weights (`python export.py RUN --out DIR --format gpt2`), which loads with "
            "`GPT2LMHeadModel.from_pretrained(DIR)`.\n"
        )
    else:
        load = (
            "```python\nfrom transformers import GPT2LMHeadModel, AutoTokenizer\n\n"
            f'model = GPT2LMHeadModel.from_pretrained("{repo}"{at})\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}"{at})\n'
            'inputs = tokenizer("Hello, I\'m a language model,", return_tensors="pt")\n'
            "out = model.generate(**inputs, max_new_tokens=32)  # generation_config.json: top-k 50 sampling\n"
            "print(tokenizer.decode(out[0]))\n```\n\n"
            "No remote code: this is transformers' own GPT-2 class, so `pipeline(\"text-generation\", model=...)`, "
            "lm-eval, vLLM and other GPT-2-aware tools load it as they load `openai-community/gpt2`.\n"
        )
    if branch:
        load += (f"\nThis model is on the branch `{branch}` of the repo: without `revision=\"{branch}\"` the "
                 "calls above load the default branch, which may hold another model.\n")
    return "## How to use\n\n" + load


def _branch(inputs: CardInputs) -> str | None:
    """The branch the card's snippets must name: None for the default branch."""
    from huggingface_hub import constants

    return inputs.revision if inputs.revision and inputs.revision != constants.DEFAULT_REVISION else None


def _evaluation_section(inputs: CardInputs, repo: str) -> str:
    remote = ",trust_remote_code=True" if inputs.format == "gpt2repro" else ""
    revision = f",revision={_branch(inputs)}" if _branch(inputs) else ""
    hella = results_at_step(inputs.metrics, inputs.step).get("hellaswag") or {}
    lm_eval = inputs.lm_eval_results
    if hella:
        n = int(hella.get("n") or HELLASWAG_EXAMPLES)
        examples = (f"{n:,} examples of a file that is not the published validation set" if not _published_set(hella)
                    else f"the first {n:,} of the 10,042 validation examples" if n != HELLASWAG_EXAMPLES
                    else "the 10,042 validation examples")
        hellaswag = (
            f"- HellaSwag ({_measured(hella)}): {examples}, "
            "0-shot, each ending scored by the sum of its token log-probabilities after the "
            "context. `acc` takes the best sum; `acc_norm` (lm-eval) divides by the ending's length in characters, "
            "exactly as lm-evaluation-harness's `hellaswag` task; build-nanogpt's `acc_norm` uses the raw context "
            "and divides by the token count.\n")
    elif lm_eval:
        when = "after training" if lm_eval.get("where") else "on this export"
        hellaswag = ("- HellaSwag: not measured in training up to this checkpoint; the lm-eval result above was "
                     f"measured {when}.\n")
    elif inputs.metrics is None:  # no training log: whether training measured it is unknown
        hellaswag = "- HellaSwag: no result recorded with this folder; the command below scores it.\n"
    else:
        hellaswag = "- HellaSwag: not measured in training up to this checkpoint; the command below scores it.\n"
    shown = lm_eval or hella or {}  # the record the lm-eval table above shows
    other_file = bool(shown) and not _published_set(shown)  # lm-eval's `hellaswag` cannot reproduce it
    command = ("Score the published HellaSwag validation set on this export with lm-eval (the number above is on "
               "another file, which this command does not read)" if other_file
               else "Reproduce the lm-eval number on this export" if lm_eval or hella.get("acc_norm") is not None
               else "Score HellaSwag on this export with lm-eval")
    # the number above may be on the first n examples: the command that reproduces it scores those, not all 10,042
    n = None if other_file else shown.get("n")
    limit = f" --limit {int(n)}" if n and int(n) < HELLASWAG_EXAMPLES else ""
    if limit:
        command += f" (the first {int(n):,} examples, as above; without `--limit` all {HELLASWAG_EXAMPLES:,})"
    return (
        "## Evaluation\n\n"
        + hellaswag
        + ("- Validation loss: as build-nanogpt's `train_gpt2.py` measured it (mean cross-entropy on "
           "batches of its validation shard).\n" if inputs.converted_from and "val_loss" in _results(inputs)
           else "- Validation loss: not recorded with this folder.\n" if inputs.converted_from
           else "- Validation loss: mean cross-entropy over a fixed number of held-out tokens (the same windows for "
           "any number of GPUs).\n" if inputs.metrics is None or inputs.metrics.val_loss
           else "- Validation loss: not measured in training.\n")
        + f"- {command}:\n\n"
        + f"```bash\nlm_eval --model hf --model_args pretrained={repo}{revision}{remote},dtype=float32 "
        "--tasks hellaswag "
        f"--batch_size 32{limit}\n```\n"
    )
