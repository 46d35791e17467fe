"""The run folder (output_dir), taken once every check has passed: locked for this training, seen by every
machine, trackers started, then the first files written (run_config.yaml, metrics.jsonl) and damaged checkpoints
set aside."""

import dataclasses
import uuid
from pathlib import Path
from typing import Optional

from training import checkpoint as ckpt
from training import trackers
from training.accelerator import broadcast, first_error
from training.metrics import MetricsLog
from training.run_config import RunConfig, save_run_config
from training.run_lock import lock_run_folder
from training.session import Refusal, Session
from training.startup import Resume


def open_run_folder(session: Session, cfg: RunConfig, resume: Optional[Resume], start_step: int, device_name: str,
                    held: dict) -> tuple[Optional[MetricsLog], Optional[Refusal]]:
    """(metrics.jsonl, open on the main process; None elsewhere, None) or (None, why the run cannot start: another
    training holds the folder, or a tracker cannot start). Registers the lock in `held` (released however the
    run ends)."""
    accelerator, main = session.accelerator, session.main
    out = Path(cfg.output_dir)
    busy = None
    if main:  # one training per run folder, held until this process ends
        held["run_lock"], busy = lock_run_folder(out)
    busy = broadcast(accelerator, busy)
    if busy:
        return None, Refusal([busy], heading="cannot start")
    not_shared = check_shared(session, cfg.output_dir)
    if not_shared:
        return None, Refusal([not_shared], heading="cannot start")
    tracker_error = trackers.start(accelerator, {k: v for k, v in cfg.to_dict().items() if v is not None}, out,
                                   start_step)
    tracker_error = broadcast(accelerator, tracker_error)
    if tracker_error:  # before the run folder gets its config and metrics files
        return None, Refusal([tracker_error], heading="cannot start")
    if not main:
        return None, None
    # resume: auto in the saved copy: relaunched with it, the run continues from its own checkpoints (not
    # again from the folder this session may have started from)
    save_run_config(dataclasses.replace(cfg, resume="auto"), out / "run_config.yaml")
    metrics = MetricsLog(out / "metrics.jsonl", log=session.log)
    # what this session trains on: a run resumed on other hardware (a preempted 8-GPU job going on with 4) is
    # described session by session in the model card (a summary row is written by a session that finishes only)
    metrics.write("session", step=start_step, device=device_name, world_size=session.world,
                  precision=session.accelerator.mixed_precision)
    if resume is not None:
        metrics.write("resume", step=start_step, checkpoint=str(resume.dir))
        for damaged in resume.set_aside:  # renamed, not deleted: the user may want to look at them
            kept = ckpt.set_aside(damaged, "damaged")
            session.log(f"set aside the damaged checkpoint {damaged.name} as {kept} (retention would have kept it "
                        "over this session's saves); delete it when you no longer need it")
    return metrics, None


def check_shared(session: Session, output_dir: str) -> Optional[str]:
    """With several processes: None when every rank sees the main process's output_dir, else the message (named by
    the ranks that do not). Every rank writes its part of each checkpoint into one staging folder that the main
    process creates, so a folder on each machine's own disk failed only at the first save, hours in, with a write
    error that named no cause. The main process creates a file of a new name there (closed before the others
    look: NFS shows a closed file to other clients, and a name never looked up has no cached absence); every rank
    looks for it; the main process removes it."""
    accelerator = session.accelerator
    if session.world == 1:
        return None
    marker, problem = None, None
    if session.main:
        marker = Path(output_dir) / f".shared-check-{uuid.uuid4().hex}"
        try:  # raised on the main process alone, the others would wait in the broadcast
            marker.write_text("written by the main process of a training starting here; removed at once\n")
        except OSError as err:
            problem = (f"cannot write into output_dir '{output_dir}' ({err.strerror or err}): check its free space and "
                       "permissions")
    marker, problem = broadcast(accelerator, (marker, problem))
    if problem:
        return problem
    problem = None if marker.is_file() else (
        f"output_dir '{output_dir}' on this machine is not the main process's folder (a file the main process just "
        f"wrote there is not to be seen): every process writes its part of each checkpoint into output_dir, so it "
        f"must be one folder on a filesystem every machine mounts (NFS, Lustre, ...) at the same path")
    problem = first_error(accelerator, problem)  # a collective: every rank has looked once it returns
    if session.main:
        marker.unlink(missing_ok=True)
    return problem
