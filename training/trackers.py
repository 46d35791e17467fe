"""Experiment trackers, through Accelerate's: which one a run uses, how it is started for a run folder, and
what the start-up banner says about it.

`log_with`: 'auto' = TensorBoard if installed, else trackio, else none (both keep their data locally, no
account); 'tensorboard', 'trackio' or 'wandb' by name (the package must be installed: checked with the run
config). Accelerate starts them on the main process only.
- TensorBoard: OUTPUT_DIR/gpt2repro/, the run config as text (tag run_config). A resumed training purges the
  steps after its checkpoint that an interrupted session had logged, so each step shows once (SummaryWriter's
  purge_step).
- W&B: OUTPUT_DIR/wandb/, a run named and grouped after the run folder, in the project $WANDB_PROJECT (default
  "gpt2repro"). Online, its id is kept in OUTPUT_DIR/wandb_run_id and a resumed training continues the same
  W&B run; steps it logs again after an interruption are dropped by W&B, which keeps the first values (a
  resume logs the same values unless its settings changed). Offline (WANDB_MODE=offline: no account or network
  needed) W&B cannot continue a run, so each session is a run of its own in the same group;
  `wandb sync OUTPUT_DIR/wandb/offline-run-*` uploads them later.
- trackio: its own local store, $TRACKIO_DIR (default $HF_HOME/trackio, one database per project), in the project
  "gpt2repro": a run named and grouped after the run folder, with the run config. trackio cannot take back steps
  an interrupted session logged, and resuming one of its runs would log them twice: a resumed training's session
  is a run of its own in the folder's group, named FOLDER-from-step-N (as W&B offline). Samples are logged as
  trackio Markdown (its dashboard shows no plain strings). TRACKIO_SPACE_ID / TRACKIO_SERVER_URL, trackio's own
  settings, send the data to a Space or a server instead.
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


def project_name(trackers: list[str]) -> str:
    return (os.environ.get("WANDB_PROJECT") or PROJECT) if trackers == ["wandb"] else PROJECT


def wandb_offline() -> bool:
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled")


def trackio_remote() -> str | None:
    """Where trackio sends its data instead of its local store, set by its own environment variables."""
    if os.environ.get("TRACKIO_SPACE_ID"):
        return f"Space {os.environ['TRACKIO_SPACE_ID']}"
    if os.environ.get("TRACKIO_SERVER_URL"):
        return f"server {os.environ['TRACKIO_SERVER_URL'].split('?')[0]}"  # not its write_token
    return None


def trackio_dir() -> Path:
    """trackio's local store (its own rule: $TRACKIO_DIR, else $HF_HOME/trackio)."""
    if os.environ.get("TRACKIO_DIR"):
        return Path(os.environ["TRACKIO_DIR"])
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "trackio"


def trackio_run_name(out_dir: Path, start_step: int) -> str:
    name = out_dir.resolve().name
    return name if start_step == 0 else f"{name}-from-step-{start_step}"


def init_kwargs(trackers: list[str], out_dir: Path, start_step: int, config: dict | None = None) -> dict:
    """Per-tracker keyword arguments for `Accelerator.init_trackers` (main process: it may write the W&B id)."""
    kwargs = {}
    if "trackio" in trackers:
        # Its config here, not through Accelerate (whose trackio.config.update(..., allow_val_change=True) on a
        # plain dict stored an 'allow_val_change' key in it); resume 'never': see the module's docstring.
        kwargs["trackio"] = {"name": trackio_run_name(out_dir, start_step), "group": out_dir.resolve().name,
                             "resume": "never", "config": config}
    if "tensorboard" in trackers and start_step > 0:
        kwargs["tensorboard"] = {"purge_step": start_step + 1}  # hide what an interrupted session logged after it
    if "wandb" in trackers:
        name = out_dir.resolve().name
        kwargs["wandb"] = {"dir": str(out_dir), "name": name, "group": name}
        if not wandb_offline():
            id_file = out_dir / WANDB_ID_FILE
            if not id_file.is_file():
                id_file.write_text(uuid.uuid4().hex[:12] + "\n")
            kwargs["wandb"].update(id=id_file.read_text().strip(), resume="allow")
    return kwargs


def active(accelerator) -> list[str]:
    return [str(t) for t in accelerator.log_with or []]  # LoggerType values: 'tensorboard', 'wandb', ...


def start(accelerator, config: dict, out_dir: Path, start_step: int) -> str | None:
    """Start the run's tracker (a no-op without one); returns what to tell the user if it could not start."""
    trackers = active(accelerator)
    if not trackers:
        return None
    had_id = (out_dir / WANDB_ID_FILE).is_file()
    try:
        if trackers == ["trackio"] and accelerator.is_main_process and not trackio_remote():
            check_writable(trackio_dir())  # else trackio starts, warns on each write and stores nothing
        # Not TensorBoard's: Accelerate writes its config as hparams into two new timestamped subfolders per
        # session (extra "runs" in TensorBoard, with no metrics); it gets the config as text below instead.
        # trackio gets it with its init_kwargs.
        accelerator.init_trackers(project_name(trackers), config=config if trackers == ["wandb"] else None,
                                  init_kwargs=init_kwargs(trackers, out_dir, start_step, config)
                                  if accelerator.is_main_process else {})
    except Exception as err:  # e.g. W&B without an API key or network: said before step 1, not as a traceback
        if not had_id:
            (out_dir / WANDB_ID_FILE).unlink(missing_ok=True)
        return start_error(trackers, err)
    if trackers == ["tensorboard"] and accelerator.is_main_process:
        import yaml

        text = yaml.safe_dump(config, sort_keys=False)
        accelerator.get_tracker("tensorboard", unwrap=True).add_text("run_config", as_verbatim_markdown(text),
                                                                     start_step)
    return None


def check_writable(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in {folder}")


def start_error(trackers: list[str], err: Exception) -> str:
    hint = "or --log_with none"
    if trackers == ["trackio"]:
        remote = trackio_remote()
        hint = (f"trackio sends the data to the {remote} (TRACKIO_SPACE_ID / TRACKIO_SERVER_URL): unset it to log in "
                f"{trackio_dir()}; or --log_with none" if remote else
                f"its local store is {trackio_dir()}: TRACKIO_DIR to write elsewhere; or --log_with none")
    if trackers == ["wandb"]:
        hint = ("not logged in: `wandb login` or WANDB_API_KEY; W&B not reachable (no network): WANDB_MODE=offline "
                "logs locally; or --log_with none")
    return f"log_with {trackers[0]!r}: the tracker could not start ({type(err).__name__}: {err}): {hint}"


def log_texts(accelerator, texts: dict[str, str], step: int) -> None:
    """Text values (samples) to the tracker. TensorBoard renders text as Markdown (`__init__` turned bold, line
    breaks dropped): it gets an indented block, shown verbatim."""
    if "tensorboard" in active(accelerator):
        if accelerator.is_main_process:
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            for tag, text in texts.items():
                writer.add_text(tag, as_verbatim_markdown(text), step)
    elif "trackio" in active(accelerator):
        if accelerator.is_main_process:
            from trackio import Markdown  # its dashboard shows Markdown values (Reports), not plain strings

            accelerator.log({tag: Markdown(as_verbatim_markdown(text)) for tag, text in texts.items()}, step=step)
    else:
        accelerator.log(texts, step=step)


def as_verbatim_markdown(text: str) -> str:
    return "    " + text.replace("\n", "\n    ")  # an indented code block


def describe(setting: str, out_dir: Path) -> str:
    """The banner's tracker line: which one 'auto' became and where its data goes."""
    trackers = resolve_trackers(setting)
    if not trackers:
        return f"tracker none ({'log_with none' if setting == 'none' else 'neither tensorboard nor trackio installed'})"
    if trackers == ["tensorboard"]:
        return f"tracker tensorboard -> {out_dir / PROJECT} (tensorboard --logdir {out_dir})"
    if trackers == ["wandb"]:
        if os.environ.get("WANDB_MODE", "").lower() == "disabled":
            return "tracker wandb disabled (WANDB_MODE=disabled: nothing is logged)"
        mode = "offline" if wandb_offline() else "online"
        return f"tracker wandb ({mode}, project {project_name(trackers)}) -> {out_dir / 'wandb'}"
    if trackers == ["trackio"]:
        where = trackio_remote() or f"{trackio_dir()} (trackio show --project {PROJECT})"
        return f"tracker trackio (project {PROJECT}, group {out_dir.resolve().name}) -> {where}"
    return f"tracker {trackers[0]} (project {PROJECT})"
