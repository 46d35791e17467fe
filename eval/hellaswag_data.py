"""HellaSwag examples: read the original jsonl and build the three prompt formulations we score.

Owns the text side only (no tokenizer, no model):
- `find_hellaswag_file(how)` finds the file: $HELLASWAG_FILE, an earlier download, else Rowan/hellaswag from
  the Hub, kept as jsonl for the next time (training and `python -m eval.hellaswag` share this one copy);
- `read_hellaswag(path, limit)` validates every line and says which file and line is wrong;
- `preprocess` / `cloze_query` mirror lm-eval's `hellaswag` task (`lm_eval/tasks/hellaswag/utils.py`) so the
  in-loop scorer needs no lm-eval at run time; tests/test_eval_hellaswag.py checks them against lm-eval's own
  `process_docs` on all 10,042 validation rows;
- `mc_prompt` is the multiple-choice formulation, the same text as `eval/tasks/hellaswag_mc.yaml` renders;
- `file_fingerprint(path)` identifies a file's rows by content, so results can say whether they were scored on
  the published validation set (`ORIGINAL_VAL_FINGERPRINT`) in whatever JSON layout it was saved.

The three formulations:
    cloze      lm-eval `hellaswag`: context `activity_label: ctx_a Ctx_b` (preprocessed), continuation
               `" " + ending` (preprocessed); acc = argmax sum log p, acc_norm = argmax sum log p / len(chars).
    tokennorm  build-nanogpt: raw `ctx`, continuation `" " + raw ending`, argmax mean log p per token.
    mc         context + the four endings labelled A-D + "Answer:", continuation " A" .. " D".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from eval.errors import EvalInputError

MC_LETTERS = ("A", "B", "C", "D")
# `file_fingerprint` of the published validation set (rowanz/hellaswag data/hellaswag_val.jsonl, 10,042 rows; file
# sha256 0aa3b888..., the checksum huggingface/datasets records for it), computed from ../shared/data's copy and
# checked against it by tests/test_eval_hellaswag.py. The copy `datasets` writes for Rowan/hellaswag has other bytes
# (key order, spacing, labels as strings) but the same rows, hence the same fingerprint.
ORIGINAL_VAL_FINGERPRINT = "9bfeb176d4a3f8322629389ca51be9f0fe5bf75c24a78ea45ea7ceb1315bf920"
_REQUIRED = {"activity_label": str, "ctx_a": str, "ctx_b": str, "ctx": str, "endings": list, "label": (int, str)}


@dataclass(frozen=True)
class HellaSwagExample:
    """One validation row, with the fields the three formulations need."""

    activity_label: str
    ctx_a: str
    ctx_b: str
    ctx: str  # raw context (build-nanogpt uses this one)
    endings: tuple[str, str, str, str]  # raw endings
    label: int  # index of the true ending, 0..3


def preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: strip, `" [title]"` -> `". "`, drop `[...]` (WikiHow artifacts), `"  "` -> `" "`."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def cloze_query(ex: HellaSwagExample) -> str:
    """lm-eval's `query`: `preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())`."""
    return preprocess(ex.activity_label + ": " + ex.ctx_a + " " + ex.ctx_b.capitalize())


def cloze_choices(ex: HellaSwagExample) -> list[str]:
    """lm-eval's `choices`: the preprocessed endings (the acc_norm divisor is their length in characters)."""
    return [preprocess(e) for e in ex.endings]


def mc_prompt(ex: HellaSwagExample) -> str:
    """The multiple-choice prompt: query, the four choices labelled A-D, then "Answer:" (scored: " A" .. " D")."""
    lines = [cloze_query(ex)] + [f"{letter}. {choice}" for letter, choice in zip(MC_LETTERS, cloze_choices(ex))]
    return "\n".join(lines) + "\nAnswer:"


HUB_DATASET = "Rowan/hellaswag"  # the validation split is the original hellaswag_val.jsonl, label as a string


def downloaded_file() -> Path:
    """Where a Hub download is kept: $HF_HOME/gpt2repro/hellaswag_val.jsonl."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "gpt2repro" / "hellaswag_val.jsonl"


def local_hellaswag_file() -> Path | None:
    """$HELLASWAG_FILE if set (it must exist: EvalInputError), else an earlier download if there is one, else
    None."""
    if os.environ.get("HELLASWAG_FILE"):
        path = Path(os.environ["HELLASWAG_FILE"])
        if not path.is_file():
            raise EvalInputError(f"$HELLASWAG_FILE is {str(path)!r}, which is not a file: point it at "
                                 "hellaswag_val.jsonl, or unset it")
        return path
    return downloaded_file() if downloaded_file().is_file() else None


def find_hellaswag_file(how: str) -> Path:
    """The local file (`local_hellaswag_file`), else the Hub's validation split written to `downloaded_file()`.
    Raises `EvalInputError` ending with `how` (the caller's way to pass a file) when neither can be had.

    Offline (HF_HUB_OFFLINE=1) only the datasets cache is read. With no network and no offline mode the check
    takes about a second instead of the libraries' retries."""
    local = local_hellaswag_file()
    if local is not None:
        return local
    from huggingface_hub import constants

    from publish.hub import hub_reachable

    if not constants.HF_HUB_OFFLINE and not hub_reachable():
        raise EvalInputError(f"could not reach huggingface.co to download {HUB_DATASET} (if it is in your datasets "
                             f"cache already, HF_HUB_OFFLINE=1 reads it from there); {how}")
    try:
        from datasets import load_dataset

        rows = load_dataset(HUB_DATASET, split="validation")
    except Exception as err:  # noqa: BLE001 - offline and not cached, Hub down, no datasets: all mean "a file"
        why = ("HF_HUB_OFFLINE is set and it is not in the datasets cache" if constants.HF_HUB_OFFLINE
               else type(err).__name__)
        raise EvalInputError(f"could not load {HUB_DATASET} from the Hub ({why}); {how}") from None
    path = downloaded_file()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # renamed whole: a crash leaves no half file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.to_json(str(partial), lines=True)
        partial.replace(path)
    except OSError as err:  # a read-only or full $HF_HOME: a message, not a traceback on the main process alone
        partial.unlink(missing_ok=True)
        raise EvalInputError(f"could not save {HUB_DATASET} to {path} ({err.strerror or type(err).__name__}); "
                             f"{how}") from None
    return path


def read_hellaswag(path: str | Path, limit: int | None = None) -> list[HellaSwagExample]:
    """Read the first `limit` rows (all if None) of a HellaSwag jsonl file (the original `hellaswag_val.jsonl`
    format, also what `datasets` writes for Rowan/hellaswag). Raises `EvalInputError` naming file and line
    (not UTF-8, not JSON, a missing or wrong field)."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise EvalInputError(f"--limit must be >= 1, got {limit}")
    examples = []
    try:  # unreadable (permissions, an I/O error): a message, not a traceback (train.py's main process alone)
        if path.is_dir():
            raise EvalInputError(f"{path} is a folder, not a HellaSwag file: name the jsonl file in it "
                                 "(e.g. ../shared/data/hellaswag/hellaswag_val.jsonl)")
        if not path.is_file():
            raise EvalInputError(
                f"HellaSwag file not found: {path}. Pass the original hellaswag_val.jsonl "
                "(e.g. ../shared/data/hellaswag/hellaswag_val.jsonl)."
            )
        with path.open("rb") as fh:  # decoded line by line: a file that is not UTF-8 is reported with its line
            for line_no, raw in enumerate(fh, start=1):
                if limit is not None and len(examples) >= limit:
                    break
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise EvalInputError(
                        f"{path}, line {line_no}: not UTF-8 text (a binary or UTF-16 file?); expected a HellaSwag "
                        ".jsonl file such as the original hellaswag_val.jsonl"
                    ) from None
                if not line.strip():
                    continue
                examples.append(_parse_row(line, path, line_no))
    except OSError as err:
        raise EvalInputError(f"could not read the HellaSwag file {path} ({err.strerror or type(err).__name__}): "
                             "check that it is readable by this user, or pass another copy") from None
    if not examples:
        raise EvalInputError(f"{path} holds no HellaSwag rows (empty file?)")
    return examples


def rows_fingerprint(examples: list[HellaSwagExample]) -> str:
    """sha256 over every row's scored fields (activity_label, ctx_a, ctx_b, ctx, endings, label), row by row:
    equal for any JSON layout of the same rows, different for an edited, reordered or shortened file."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.activity_label, ex.ctx_a, ex.ctx_b, ex.ctx, list(ex.endings), ex.label])
                      .encode() + b"\n")
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str:
    """`rows_fingerprint` of every row of the file at `path`."""
    return rows_fingerprint(read_hellaswag(path))


def _parse_row(line: str, path: Path, line_no: int) -> HellaSwagExample:
    where = f"{path}, line {line_no}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{where}: not valid JSON ({err.msg}); is this a HellaSwag .jsonl file?") from None
    if not isinstance(row, dict):
        raise EvalInputError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
    missing = [key for key in _REQUIRED if key not in row]
    if missing:
        raise EvalInputError(f"{where}: missing field(s) {missing}; a HellaSwag row has {sorted(_REQUIRED)}")
    for key, kind in _REQUIRED.items():
        if not isinstance(row[key], kind):
            raise EvalInputError(f"{where}: field {key!r} has type {type(row[key]).__name__}")
    endings = row["endings"]
    if len(endings) != 4 or not all(isinstance(e, str) for e in endings):
        raise EvalInputError(f"{where}: 'endings' must be a list of 4 strings, got {endings!r:.80}")
    try:
        label = int(row["label"])
    except ValueError:
        raise EvalInputError(f"{where}: 'label' must be 0..3, got {row['label']!r}") from None
    if not 0 <= label < 4:
        raise EvalInputError(f"{where}: 'label' must be 0..3, got {label}")
    return HellaSwagExample(
        activity_label=row["activity_label"],
        ctx_a=row["ctx_a"],
        ctx_b=row["ctx_b"],
        ctx=row["ctx"],
        endings=tuple(endings),
        label=label,
    )
