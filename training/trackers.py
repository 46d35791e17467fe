"""Experiment trackers, through Accelerate's: which one a run uses, and how each is started for a run folder.

`log_with`: 'auto' = TensorBoard if installed, else trackio, else none (both write locally, no account);
'tensorboard', 'trackio' or 'wandb' by name (the package must be installed: checked with the run config).
Accelerate starts them on the main process only; each writes into the run folder:
- TensorBoard: OUTPUT_DIR/gpt2repro/ (a resumed run adds event files to the same folder);
- W&B: OUTPUT_DIR/wandb/, a run named and grouped after the run folder, under the project "gpt2repro". Online,
  its id is kept in OUTPUT_DIR/wandb_run_id and a resumed training continues the same W&B run; steps it logs
  again after an interruption are dropped by W&B, which keeps the first values (a resume logs the same values
  unless its settings changed). Offline (WANDB_MODE=offline: no account or network needed) W&B cannot continue
  a run, so each session is a run of its own in the same group; `wandb sync OUTPUT_DIR/wandb/offline-run-*`
  uploads them later.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import uuid
from pathlib import Path

PROJECT = "gpt2repro"
BY_NAME = ("tensorboard", "trackio", "wandb")  # run config's log_with choices besides 'auto' and 'none'
WANDB_ID_FILE = "wandb_run_id"


def is_installed(tracker: str) -> bool:
    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec(tracker) is not None
    return False


def resolve_trackers(setting: str) -> list[str]:
    if setting == "none":
        return []
    if setting == "auto":
        return next(([name] for name in ("tensorboard", "trackio") if is_installed(name)), [])
    return [setting]


def init_kwargs(trackers: list[str], out_dir: Path) -> dict:
    """Per-tracker keyword arguments for `Accelerator.init_trackers` (main process: it writes the W&B id)."""
    kwargs = {}
    if "wandb" in trackers:
        name = out_dir.resolve().name
        kwargs["wandb"] = {"dir": str(out_dir), "name": name, "group": name}
        if os.environ.get("WANDB_MODE", "").lower() not in ("offline", "dryrun", "disabled"):
            id_file = out_dir / WANDB_ID_FILE
            if not id_file.is_file():
                id_file.write_text(uuid.uuid4().hex[:12] + "\n")
            kwargs["wandb"].update(id=id_file.read_text().strip(), resume="allow")
    return kwargs


def start_error(setting: str, err: Exception) -> str:
    """What to tell the user when a tracker fails to start (nothing has been trained yet)."""
    hint = "or --log_with none"
    if resolve_trackers(setting) == ["wandb"]:
        hint = "`wandb login`, WANDB_API_KEY, or WANDB_MODE=offline to log locally (or --log_with none)"
    return f"log_with {setting!r}: the tracker could not start ({type(err).__name__}: {err}): {hint}"
