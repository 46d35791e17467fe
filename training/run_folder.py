"""The run folder (output_dir), taken once every check has passed: locked for this training, trackers started,
then the first files written (run_config.yaml, metrics.jsonl) and damaged checkpoints set aside."""

import dataclasses
import time
from pathlib import Path
from typing import Optional

from training import trackers
from training.accelerator import broadcast
from training.metrics import MetricsLog
from training.run_config import RunConfig, save_run_config
from training.run_lock import lock_run_folder
from training.session import Refusal, Session
from training.startup import Resume


def open_run_folder(session: Session, cfg: RunConfig, resume: Optional[Resume], start_step: int,
                    threads: dict) -> tuple[Optional[MetricsLog], Optional[Refusal]]:
    """(metrics.jsonl, open on the main process; None elsewhere, None) or (None, why the run cannot start: another
    training holds the folder, or a tracker cannot start). Registers the lock in `threads` (released however the
    run ends)."""
    accelerator, main = session.accelerator, session.main
    out = Path(cfg.output_dir)
    busy = None
    if main:  # one training per run folder, held until this process ends
        threads["run_lock"], busy = lock_run_folder(out)
    busy = broadcast(accelerator, busy)
    if busy:
        return None, Refusal([busy], heading="cannot start")
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
    if resume is not None:
        metrics.write("resume", step=start_step, checkpoint=str(resume.dir))
        for damaged in resume.set_aside:  # renamed, not deleted: the user may want to look at them
            kept = damaged.with_name(f"damaged-{damaged.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            damaged.rename(kept)
            session.log(f"set aside the damaged checkpoint {damaged.name} as {kept} (retention would have kept it "
                        "over this session's saves); delete it when you no longer need it")
    return metrics, None
