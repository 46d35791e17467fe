"""Run lm-evaluation-harness in-process on a checkpoint or export (HFLM wraps the loaded model: no remote code).

    python -m eval.lm_eval_run --model PATH                          # hellaswag: $HELLASWAG_FILE, else the Hub
    python -m eval.lm_eval_run --model PATH --data hellaswag_val.jsonl [--mc] [--limit N]   # offline
    python -m eval.lm_eval_run --model PATH --tasks hellaswag,arc_easy,piqa      # any lm-eval task names

With `--data`, `hellaswag` becomes our `hellaswag_local` task (eval/tasks/hellaswag_local.yaml: lm-eval's own
hellaswag task reading FILE) and `--mc` adds the multiple-choice form (`hellaswag_mc[_local]`). Saves lm-eval's
results as JSON beside the model (`<model dir>/eval_results/lm_eval.json`; for a run's checkpoint
`<run>/eval_results/step_N/lm_eval.json`; a task list without hellaswag goes to `lm_eval_<task>+<task>.json`
there instead, leaving the HellaSwag results the model card reads in place; or `--output`, which may not
overwrite the model, a checkpoint or the data: see eval.load.output_path).
The same from a shell, in a fresh process, on an exported folder (remote code):
    lm_eval --model hf --model_args pretrained=EXPORT_DIR,trust_remote_code=True --tasks hellaswag
    lm_eval --model hf --model_args pretrained=EXPORT_DIR,trust_remote_code=True \
        --include_path eval/tasks --tasks hellaswag_local,hellaswag_mc_local      # offline, from the repo root
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from data.shards import atomic_write
from eval.errors import EvalInputError, hyphenated, non_negative_int, positive_int, positive_int_or_auto, run_cli

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
RESULTS_FILE = "lm_eval.json"  # what export looks for in <run>/eval_results/step_N/
LOCAL_TASKS = ("hellaswag_local", "hellaswag_mc_local")  # eval/tasks/: the validation split of a local file only


def write_local_tasks(data_file: str | Path, folder: str | Path) -> Path:
    """Write `hellaswag_local.yaml` and `hellaswag_mc_local.yaml` into `folder`, reading `data_file`
    (they include the shipped yamls and override only the data file). Use `folder` as lm-eval's include path."""
    data_file = Path(data_file).resolve()
    folder = Path(folder)
    for name in ("hellaswag_local", "hellaswag_mc_local"):
        (folder / f"{name}.yaml").write_text(
            f"include: {json.dumps(str(TASKS_DIR / f'{name}.yaml'))}\n"
            f"task: {name}\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {json.dumps(str(data_file))}\n"
        )
    return folder


def results_file(tasks: list[str], mc: bool = False) -> str:
    """The default JSON name: `lm_eval.json` (what export reads into the model card) when HellaSwag is run, else
    one per task list (`lm_eval_arc_easy+piqa.json`; `--mc` adds hellaswag_mc to it), so that running other tasks
    never replaces the HellaSwag results of the same checkpoint."""
    if any(t in ("hellaswag", "hellaswag_local") for t in tasks):
        return RESULTS_FILE
    return f"lm_eval_{'+'.join(tasks + (['hellaswag_mc'] if mc else []))}.json"


def resolve_tasks(tasks: list[str], local: bool, mc: bool) -> list[str]:
    """Map `hellaswag` to the local task when reading a file; add the multiple-choice form with `mc`."""
    out = [("hellaswag_local" if local and t == "hellaswag" else t) for t in tasks]
    if mc:
        out.append("hellaswag_mc_local" if local else "hellaswag_mc")
    return list(dict.fromkeys(out))


def run_lm_eval(model, tokenizer, tasks: list[str], data_file: str | Path | None = None, mc: bool = False,
                limit: int | None = None, batch_size: int | str = 16, num_fewshot: int | None = None,
                log_samples: bool = False) -> dict:
    """`lm_eval.simple_evaluate` on an already loaded model; returns lm-eval's result dict. `data_file` is
    checked row by row first (`read_hellaswag`): lm-eval would score a malformed file (a label 7 just counts as
    wrong) or fail with a traceback deep in `datasets`."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from eval.hellaswag import HellaSwagScorer
    from eval.hellaswag_data import read_hellaswag

    examples = read_hellaswag(data_file) if data_file is not None else None  # EvalInputError naming file and line
    # lm-eval warns that a model object (not a name) ignores its other model arguments and runs one process: both
    # are how this command runs it, and the two warnings read as if something were wrong
    hflm_log = logging.getLogger("lm_eval.models.huggingface")
    level = hflm_log.level
    hflm_log.setLevel(logging.ERROR)
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    finally:
        hflm_log.setLevel(level)
    if examples is not None:
        # an ending longer than the model's context stops lm-eval on a bare AssertionError; the scorer's
        # tokenisation is lm-eval's and says which example, and what to do (EvalInputError)
        HellaSwagScorer(examples[:limit], tokenizer, max_length=lm.max_length, formulations=("cloze",))
    with tempfile.TemporaryDirectory(prefix="lm_eval_tasks_") as tmp:
        include = write_local_tasks(data_file, tmp) if data_file is not None else TASKS_DIR
        task_names = resolve_tasks(tasks, data_file is not None, mc)
        manager = TaskManager(include_path=str(include))
        unknown = [t for t in task_names if t not in manager.all_tasks]
        if unknown:
            raise EvalInputError(f"unknown lm-eval task(s) {unknown}; see `lm_eval ls tasks`")
        local = [t for t in task_names if t in LOCAL_TASKS]
        if num_fewshot and local:
            # lm-eval's hellaswag draws its examples from the train split; a local file has only the validation
            # split, so lm-eval would draw them from the very rows it scores and file a number under
            # "hellaswag" that is not lm-eval's k-shot hellaswag
            raise EvalInputError(
                f"--num-fewshot {num_fewshot} with {local}: the local HellaSwag file has no train split to draw "
                "few-shot examples from (lm-eval's hellaswag uses train): run 0-shot, or few-shot without --data "
                "(and with HELLASWAG_FILE unset) so that lm-eval reads Rowan/hellaswag from the Hub")
        try:
            return lm_eval.simple_evaluate(model=lm, tasks=task_names, task_manager=manager, limit=limit,
                                           num_fewshot=num_fewshot, log_samples=log_samples)
        except Exception as err:  # noqa: BLE001 - only "no network" is reworded; everything else is re-raised
            if not _is_offline_error(err):
                raise
            text = f"{type(err).__name__}: {err}"
            raise EvalInputError(
                f"lm-eval could not download the data of {task_names} ({text[:300]}): the Hugging Face Hub is not "
                "reachable. Run online once (the datasets cache keeps it), or for HellaSwag pass --data "
                "PATH/hellaswag_val.jsonl") from None


def _is_offline_error(err: BaseException) -> bool:
    """True for "the Hub cannot be reached" (offline mode, no route, timeouts, nothing cached), decided by type; an
    HTTP answer from the Hub (401 gated, 404, ...) is a different problem and is not reworded."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if isinstance(err, HfHubHTTPError):
        return False
    offline: tuple[type, ...] = (ConnectionError, TimeoutError, LocalEntryNotFoundError)  # OfflineModeIsEnabled too
    for module, names in (("httpx", ("TransportError",)), ("requests.exceptions", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(module, fromlist=list(names))
            offline += tuple(getattr(mod, name) for name in names)
        except ImportError:
            pass
    return isinstance(err, offline)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.lm_eval_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="export folder, checkpoint folder, run folder or Hub id")
    parser.add_argument("--tasks", default="hellaswag", help="comma-separated lm-eval task names (default: %(default)s)")
    parser.add_argument("--data", help="local HellaSwag jsonl: run hellaswag offline from this file (default: "
                        "$HELLASWAG_FILE or the copy eval.hellaswag / train.py downloaded, if there is one; else "
                        "lm-eval's own Hub download)")
    parser.add_argument("--mc", action="store_true", help="also run the multiple-choice HellaSwag formulation")
    # >= 1: lm-eval fails on 0 ("did not find any docs") and on a negative limit (islice) with a traceback, after
    # the model has loaded
    parser.add_argument("--limit", type=positive_int, help="score only the first N examples of each task")
    parser.add_argument("--batch-size", type=positive_int_or_auto, default=16, help="an integer >= 1 or 'auto' (default: %(default)s)")
    parser.add_argument("--num-fewshot", type=non_negative_int, help="few-shot examples per prompt (default 0 for "
                        "hellaswag; with a local HellaSwag file only 0)")
    parser.add_argument("--output", help="JSON path (default <model dir>/eval_results/lm_eval.json, or "
                        "lm_eval_<tasks>.json for tasks without hellaswag; for a checkpoint "
                        "<run>/eval_results/step_N/; in the model's or run's folder only under those, or directly in "
                        "<run>/eval_results/)")
    args = parser.parse_args(hyphenated(argv))  # underscore spellings too (--batch_size)

    from eval.hellaswag_data import local_hellaswag_file, read_hellaswag, rows_fingerprint
    from eval.load import environment, load_model, model_dir_of, output_path

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:  # lm-eval would fail with a traceback after the model has loaded
        raise EvalInputError(f"--tasks {args.tasks!r} names no task: pass lm-eval task names such as "
                             "hellaswag or hellaswag,arc_easy")
    data = args.data
    if data is None and ("hellaswag" in tasks or args.mc):
        data = local_hellaswag_file()  # None: lm-eval downloads Rowan/hellaswag itself (and keeps no copy of ours)
    # every row (lm-eval's loader reads them all): a bad file fails before the model loads
    fingerprint = rows_fingerprint(read_hellaswag(data)) if data is not None else None
    model_dir = model_dir_of(args.model)  # once: a run folder's newest checkpoint may change while this runs
    # a bad --output fails before the work
    path = output_path(model_dir, args.output, results_file(tasks, args.mc), keep=(data,))
    model, tokenizer = load_model(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    t0 = time.perf_counter()
    out = run_lm_eval(model, tokenizer, tasks, data, args.mc, args.limit,
                      args.batch_size, args.num_fewshot)
    seconds = time.perf_counter() - t0
    from lm_eval.utils import make_table

    print(make_table(out))
    import lm_eval

    # data None: lm-eval read Rowan/hellaswag from the Hub, the published set; a local file says what it holds
    record = {"model": str(model_dir), "data": data and str(data),
              "data_fingerprint": fingerprint, "limit": args.limit,
              "seconds": round(seconds, 3), "lm_eval_version": lm_eval.__version__,
              "results": dict(out["results"]), "versions": dict(out.get("versions") or {}),
              "n-shot": dict(out.get("n-shot") or {}), "n-samples": dict(out.get("n-samples") or {}),
              "lm_eval_config": out.get("config"), "environment": environment(device, data)}
    if "hellaswag_local" in record["results"]:
        # the same task as lm-eval's `hellaswag`, on a local copy: also filed under that name, so readers of
        # lm-eval output (publish/model_card.py) find it; "data" says where it came from.
        for key in ("results", "versions", "n-shot", "n-samples"):
            if "hellaswag_local" in record[key]:
                record[key]["hellaswag"] = record[key]["hellaswag_local"]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(record, indent=2, default=str) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))  # whole or not at all, as the other eval results
    print(f"saved {path}")
    return out["results"]


if __name__ == "__main__":
    run_cli(main)
