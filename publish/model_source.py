"""Find the model a path names, and what an export needs with it: a run folder (its newest good checkpoint), a
checkpoint folder or a model folder (layout: docs/CONTRACTS.md).

    src = resolve_source("runs/124M")              # run folder: newest checkpoint with a COMPLETE file
    src = resolve_source("runs/124M/checkpoints/step_00019073")
    src = resolve_source("some/save_pretrained/folder")
    src.model_dir, src.step, src.metrics_path, src.run_config()

This is the one place that turns a user's path into a model folder: export (publish/) and evaluation
(eval/load.py) both resolve through it. A checkpoint without COMPLETE was not committed (killed mid-save): it
is never used, and asking for it by name is an error that says so. A checkpoint written by train.py also
carries MANIFEST.json (size + sha256 of every file): it is verified, so a truncated or corrupted checkpoint is
never exported or evaluated; in a run folder the newest good one is used, with a warning for each bad one.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from publish.metrics import BUILD_NANOGPT_LOG

COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class RunSource:
    model_dir: Path  # config.json + weights (save_pretrained output)
    checkpoint_dir: Path | None = None  # checkpoints/step_XXXXXXXX, when the model came from one
    run_dir: Path | None = None  # the run folder (run_config.yaml, metrics.jsonl), when known
    step: int | None = None
    # a model folder converted from another tool's checkpoint: its converted_from.json (publish.nanogpt_checkpoint)
    converted_from: dict | None = None

    @property
    def eval_results_dir(self) -> Path:
        """Where evaluations of this model are saved: for a run's checkpoint `<run>/eval_results/step_N/` (inside
        the checkpoint keep_last would delete them, and they would change its checksums), else beside the model."""
        if self.run_dir is not None and self.checkpoint_dir is not None:
            return self.run_dir / "eval_results" / self.checkpoint_dir.name
        return self.model_dir / "eval_results"

    @property
    def metrics_path(self) -> Path | None:
        """The run's metrics.jsonl; for a converted build-nanogpt checkpoint, the copy of its run's log.txt."""
        path = (self.run_dir / "metrics.jsonl" if self.run_dir
                else self.model_dir / BUILD_NANOGPT_LOG if self.converted_from else None)
        return path if path and path.is_file() else None

    def meta(self) -> dict:
        """This checkpoint's meta.json (run config, data manifest hash, ...); empty for a model folder that is not
        a checkpoint, or a damaged meta.json: nothing known (the checksums vouch for it)."""
        path = self.checkpoint_dir / "meta.json" if self.checkpoint_dir else None
        if not path or not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def trained_with(self) -> dict:
        """The run config this checkpoint was trained with (its meta.json: right for this step even if a later
        session changed run_config.yaml); empty for a model folder that is not a checkpoint."""
        trained = self.meta().get("run_config")
        return trained if isinstance(trained, dict) else {}

    def run_config(self) -> dict:
        """The resolved run config that train.py saved (empty when there is none)."""
        path = self.run_dir / "run_config.yaml" if self.run_dir else None
        if not path or not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a mapping of run-config fields")
        return data


def resolve_source(path: str | Path) -> RunSource:
    """A run folder, a checkpoint folder or a model folder -> where the model, metrics and step are."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass a run folder, a checkpoint folder or a model folder")
    if (path / "config.json").is_file():
        checkpoint = path.parent if path.name == "model" and _STEP_DIR.match(path.parent.name) else None
        if checkpoint is not None:
            return _from_checkpoint(checkpoint)
        converted = converted_from(path)
        return RunSource(model_dir=path, converted_from=converted,
                         step=converted.get("step") if isinstance((converted or {}).get("step"), int) else None)
    if (path / "model" / "config.json").is_file() or _STEP_DIR.match(path.name):
        return _from_checkpoint(path)
    if (path / "checkpoints").is_dir() or (path / "run_config.yaml").is_file():  # the latter: stopped before a save
        from training.checkpoint import committed_checkpoints

        for checkpoint in reversed(committed_checkpoints(path)):  # newest first; a corrupted one is skipped, loudly
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return _from_checkpoint(checkpoint)
            warnings.warn(f"checkpoint {checkpoint} is unusable ({problem}); using the previous one", stacklevel=2)
        raise FileNotFoundError(
            f"{path} is a run folder without a complete checkpoint (no intact checkpoints/step_*/COMPLETE): "
            "train until the first save (save_every), or pass a model folder"
        )
    if path.is_file() or any(path.glob("model_*.pt")):  # a .pt file, or build-nanogpt's log/ folder
        raise FileNotFoundError(
            f"{path} is not a model folder: a build-nanogpt checkpoint (log/model_NNNNN.pt) becomes one with "
            "`python convert_gpt2.py --from-build-nanogpt FILE --out DIR`; otherwise pass a model, checkpoint or run "
            "folder")
    raise FileNotFoundError(
        f"{path} has no config.json: expected a model folder (config.json), a checkpoint folder (model/ + "
        "COMPLETE) or a run folder (checkpoints/step_*/COMPLETE)"
    )


def converted_from(model_dir: Path) -> dict | None:
    """The folder's record of the checkpoint it was converted from (None when it has none, or one unreadable:
    the card then says nothing of the origin rather than something wrong)."""
    from publish.nanogpt_checkpoint import CONVERTED_FROM

    path = model_dir / CONVERTED_FROM
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        warnings.warn(f"{path} is unreadable: the model's origin is not stated", stacklevel=3)
        return None
    return record if isinstance(record, dict) else None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """None if `checkpoint` may be used; else what is wrong with it. A train.py checkpoint (MANIFEST.json, whose
    sha256 is in COMPLETE) is checked file by file; a folder made by hand with only a COMPLETE marker (not a
    sha256) is taken as it is."""
    if not (checkpoint / COMPLETE_MARKER).is_file():
        return f"no {COMPLETE_MARKER} file: the save did not finish"
    marker = (checkpoint / COMPLETE_MARKER).read_text(errors="replace").strip()
    if (checkpoint / "MANIFEST.json").is_file() or re.fullmatch(r"[0-9a-f]{64}", marker):
        # train.py's COMPLETE holds the manifest's sha256: such a checkpoint without its manifest is damaged
        from training.checkpoint import verify

        return verify(checkpoint)
    return None


def _from_checkpoint(checkpoint: Path) -> RunSource:
    if not (checkpoint / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(
            f"{checkpoint} has no {COMPLETE_MARKER} file: the save did not finish; use an earlier checkpoint "
            "or the run folder (its newest complete checkpoint)"
        )
    if not (checkpoint / "model" / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}/model/config.json is missing: not a checkpoint written by train.py")
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise FileNotFoundError(f"{checkpoint} is damaged: {problem}; use an earlier checkpoint or the run folder")
    match = _STEP_DIR.match(checkpoint.name)
    step = int(match.group(1)) if match else _step_from_meta(checkpoint)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    return RunSource(model_dir=checkpoint / "model", checkpoint_dir=checkpoint, run_dir=run_dir, step=step)


def _step_from_meta(checkpoint: Path) -> int | None:
    meta = checkpoint / "meta.json"
    if meta.is_file():
        step = json.loads(meta.read_text()).get("step")
        return int(step) if step is not None else None
    return None
