"""What an export publishes about the machine it was made on: no absolute local paths.

A run's record holds paths as they were typed or resolved (`config: /home/alice/gpt2repro/configs/x.yaml`,
`data_dir: /scratch/alice/fineweb`, an error message naming a checkpoint folder): on the Hub they would show
the user name, the home and scratch layout of that machine, and nothing a reader can use. The exported copies
(`logs/run_config.yaml`, `logs/metrics.jsonl`, the model card) keep a path's last name only:

    public_path("/home/alice/data/fineweb_edu_10B")   -> "<local>/fineweb_edu_10B"
    public_path("out/data/pydocs")                     -> "out/data/pydocs"   (relative: the project's layout)
    scrub_paths("cannot write /home/alice/runs/x/checkpoints/step_1: disk full")
                                                       -> "cannot write <local>/step_1: disk full"

The run folder itself is never changed: only what goes into the export is.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath

LOCAL = "<local>"
# run-config fields that hold local paths (values such as 'auto', 'off', 'scratch' or 'gpt2' are not paths)
RUN_CONFIG_PATHS = ("config", "data_dir", "output_dir", "init_from", "resume", "hellaswag_file")
# An absolute path inside free text: POSIX (/a/b/c, not the // or /x of a URL) or Windows (C:\a\b). Its folders
# go, its last name stays.
_POSIX = r"(?<![\w./~:-])/(?:[\w.@+%=-]+/)+(?=[\w.@+%=-])"
_WINDOWS = r"\b[A-Za-z]:[\\/](?:[^\\/\s'\"]+[\\/])+(?=[^\\/\s'\"])"
_ABSOLUTE_IN_TEXT = re.compile(f"{_POSIX}|{_WINDOWS}")


def _is_local(value: str) -> bool:
    return (value.startswith("/") or PureWindowsPath(value).is_absolute()
            or ".." in PurePosixPath(value.replace("\\", "/")).parts)


def public_path(value):
    """`value` with an absolute path (or one climbing out with '..') reduced to `<local>/NAME`; anything else as is."""
    if not isinstance(value, str) or not _is_local(value):
        return value
    name = PurePosixPath(value.replace("\\", "/").rstrip("/")).name
    return f"{LOCAL}/{name}" if name and name != ".." else LOCAL


def scrub_paths(text):
    """Free text (an error message) with each absolute path reduced to `<local>/NAME`; anything else as is."""
    return _ABSOLUTE_IN_TEXT.sub(f"{LOCAL}/", text) if isinstance(text, str) else text


def public_run_config(run_config: dict) -> dict:
    """The run config to publish: the path fields through `public_path`, every other string through
    `scrub_paths` (a prompt or a tracker setting that names a path)."""
    return {key: public_path(value) if key in RUN_CONFIG_PATHS else scrub_paths(value)
            for key, value in run_config.items()}


def public_metrics_record(record: dict) -> dict:
    """A metrics.jsonl record to publish: paths in its strings (a resume's checkpoint, an error or upload message)
    reduced; the generated samples of a `sample` record are the model's text and stay as they are."""
    if record.get("type") == "sample":
        return record
    return {key: public_path(value) if key == "checkpoint" else scrub_paths(value) for key, value in record.items()}
