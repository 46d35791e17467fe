"""Read a run's metrics into one shape: our `metrics.jsonl` (docs/CONTRACTS.md) or a build-nanogpt `log.txt`.

build-nanogpt's log.txt has one line per measurement, `"{step} {kind} {value}"` with kind `train` (train loss),
`val` (validation loss) or `hella` (HellaSwag acc_norm from its own token-normalised scorer).

A resumed run appends to the same file: its `resume` row drops what the abandoned session logged past the
checkpoint it resumes from (those steps are trained again, maybe with other evaluations), and a step logged twice
keeps the later line, as it describes the run that continued. A truncated last JSONL line (a run killed mid-write) is skipped with a warning; a bad line
anywhere else is an error that names the line.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from publish.references import SCORER_BUILD_NANOGPT, SCORER_LM_EVAL

# Which field of our `hellaswag` record holds the acc_norm of each scorer.
_HELLASWAG_FIELDS = {SCORER_LM_EVAL: "acc_norm", SCORER_BUILD_NANOGPT: "acc_tokennorm"}
_LOG_TXT_KINDS = ("train", "val", "hella")
# where a build-nanogpt run's log.txt is kept in a model folder converted from its checkpoint, and in its export
# (publish.nanogpt_checkpoint)
BUILD_NANOGPT_LOG = "logs/build-nanogpt-log.txt"


@dataclass
class RunMetrics:
    """The curves of one run. Every series is a step-sorted list of (step, value)."""

    name: str
    path: Path
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    # scorer name (publish.references) -> acc_norm under that scorer
    hellaswag: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    # the full `hellaswag` records (acc, acc_norm, acc_tokennorm, n), by step; acc_tokennorm alone for log.txt
    hellaswag_records: dict[int, dict] = field(default_factory=dict)
    train_records: dict[int, dict] = field(default_factory=dict)
    val_tokens: dict[int, int] = field(default_factory=dict)  # step -> tokens the validation loss averaged over
    summary: dict | None = None
    # step a session started from -> its `session` record (device, world_size, precision), step-sorted
    sessions: dict[int, dict] = field(default_factory=dict)

    @property
    def last_step(self) -> int | None:
        steps = [s for s, _ in self.train_loss] + [s for s, _ in self.val_loss]
        steps += [s for series in self.hellaswag.values() for s, _ in series]
        return max(steps) if steps else None


def load_metrics(path: str | Path, name: str | None = None) -> RunMetrics:
    """Read a `metrics.jsonl`, a build-nanogpt `log.txt`, or a folder holding one: a run folder, an export
    (`logs/metrics.jsonl`), a converted build-nanogpt checkpoint or its export (`logs/build-nanogpt-log.txt`)."""
    path = Path(path)
    if path.is_dir():
        inside = [path / name for name in ("metrics.jsonl", "logs/metrics.jsonl", BUILD_NANOGPT_LOG)]
        found = next((p for p in inside if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path} is a folder without metrics.jsonl: pass a run folder, an export, a "
                                    "metrics.jsonl or a build-nanogpt log.txt")
        if name is None and found.parent.name == "logs":  # "export/124M/logs/metrics.jsonl" -> "124M"
            name = path.name
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"no such metrics file: {path}")
    if name is None:
        # "runs/124M/metrics.jsonl" -> "124M"; "log/log.txt" -> "log"
        name = path.parent.name or path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:  # said without the file: "'utf-8' codec can't decode byte 0xff ..."
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start} is not): pass a run's metrics.jsonl, a run "
                         "folder or a build-nanogpt log.txt") from None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return _parse_jsonl(text, path, name)
    return _parse_log_txt(text, path, name)


def _parse_jsonl(text: str, path: Path, name: str) -> RunMetrics:
    train, val, val_tokens, records, train_records, sessions = {}, {}, {}, {}, {}, {}
    summary, known = None, 0  # known: records of a type train.py writes (docs/CONTRACTS.md)
    lines = text.splitlines()
    last_nonblank = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == last_nonblank and not text.endswith("\n"):
                warnings.warn(f"{path}:{i + 1}: skipping a truncated last line (run killed mid-write?)")
                continue
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({err.msg}): fix or delete that line (train.py "
                             "writes one JSON object per line)") from err
        kind = record.get("type") if isinstance(record, dict) else None
        known += kind in ("train", "val", "hellaswag", "sample", "session", "resume", "error", "upload", "summary")
        try:
            if kind == "train":
                train[int(record["step"])] = float(record["loss"])
                train_records[int(record["step"])] = record
            elif kind == "val":
                val[int(record["step"])] = float(record["val_loss"])
                if isinstance(record.get("val_tokens"), int):
                    val_tokens[int(record["step"])] = record["val_tokens"]
            elif kind == "hellaswag":
                records[int(record["step"])] = record
            elif kind == "summary":
                summary = record
            elif kind == "session":
                sessions[int(record["step"])] = record
            elif kind == "resume":  # the run goes on from this checkpoint: rows logged past it were the abandoned
                resumed = int(record["step"])  # session's (killed after its last save), never part of this run
                for series in (train, train_records, val, val_tokens, records, sessions):
                    for step in [step for step in series if step > resumed]:
                        del series[step]
            # other types (sample, ...) carry nothing we plot
        except KeyError as err:
            raise ValueError(f"{path}:{i + 1}: a {kind!r} record without its {err} field: fix or delete that "
                             "line") from err
        except (TypeError, ValueError) as err:  # a value that is not a number: str(err) is the conversion's text
            raise ValueError(f"{path}:{i + 1}: a {kind!r} record with a value that is not a number ({err}): fix "
                             "or delete that line") from err
    if not known and last_nonblank >= 0:
        raise ValueError(f"{path} holds no records train.py writes (rows with \"type\": \"train\", \"val\", ...): "
                         "pass a run's metrics.jsonl, a run folder or a build-nanogpt log.txt")
    hellaswag = {
        scorer: sorted((step, float(rec[key])) for step, rec in records.items() if rec.get(key) is not None)
        for scorer, key in _HELLASWAG_FIELDS.items()
    }
    return RunMetrics(
        name=name,
        path=path,
        train_loss=sorted(train.items()),
        val_loss=sorted(val.items()),
        hellaswag={scorer: series for scorer, series in hellaswag.items() if series},
        hellaswag_records=dict(sorted(records.items())),
        train_records=dict(sorted(train_records.items())),
        val_tokens=val_tokens,
        summary=summary,
        sessions=dict(sorted(sessions.items())),
    )


def _log_txt_line(line: str, path: Path, number: int) -> tuple[str, int, float]:
    """'5000 val 3.0712' -> ('val', 5000, 3.0712); ValueError naming the file and line otherwise."""
    parts = line.split()
    if len(parts) != 3 or parts[1] not in _LOG_TXT_KINDS:
        raise ValueError(f"{path}:{number}: expected a build-nanogpt log line '<step> train|val|hella <value>', got "
                         f"{line!r}")
    try:
        return parts[1], int(parts[0]), float(parts[2])
    except ValueError as err:
        raise ValueError(f"{path}:{number}: bad number in {line!r}") from err


def _parse_log_txt(text: str, path: Path, name: str) -> RunMetrics:
    series: dict[str, dict[int, float]] = {kind: {} for kind in _LOG_TXT_KINDS}
    lines = text.splitlines()
    last_nonblank = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            kind, step, value = _log_txt_line(line, path, i + 1)
        except ValueError as err:
            if i != last_nonblank or text.endswith("\n"):
                raise
            # the run was stopped while writing its last line (as for metrics.jsonl): the rest is good
            warnings.warn(f"{path}: skipping a truncated last line ({line!r}): {err}", stacklevel=3)
            continue
        series[kind][step] = value
    hella = sorted(series["hella"].items())
    return RunMetrics(
        name=name,
        path=path,
        train_loss=sorted(series["train"].items()),
        val_loss=sorted(series["val"].items()),
        hellaswag={SCORER_BUILD_NANOGPT: hella} if hella else {},
        # its `hella` value is build-nanogpt's token-normalised acc_norm: our `acc_tokennorm` (no acc, no count)
        hellaswag_records={s: {"acc_tokennorm": v} for s, v in hella},
    )
