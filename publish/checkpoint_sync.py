"""Checkpoints that outlive the machine: upload each committed checkpoint, with the metrics so far, to a Hub
repo during training, one branch per save, from a background thread.

    uploader = CheckpointUploader("me/gpt2repro-124M-run1", private=True)   # main process only; fails fast
    ...
    # after checkpoints/step_00001000/COMPLETE is written:
    uploader.submit(run_dir / "checkpoints/step_00001000", run_dir / "metrics.jsonl", step=1000)
    ...
    results = uploader.close()     # at the end of training: waits for the last upload, never raises

What lands on the Hub: branch `step-0001000` holds the checkpoint folder's files at its root (`model/`,
training state, meta.json, COMPLETE), `metrics.jsonl` as it was at submit time, and `run_config.yaml` when it
sits beside metrics.jsonl. Load a saved model with
`AutoModelForCausalLM.from_pretrained(repo, revision="step-0001000", subfolder="model", trust_remote_code=True)`,
or `hf download repo --revision step-0001000 --local-dir ...` to resume from it.

Never blocking the training step: `submit` only hard-links the checkpoint's files into a staging folder (so the
trainer may delete the checkpoint at once, e.g. by retention) and copies metrics.jsonl; the upload runs in one
worker thread. If saves come faster than uploads, a waiting upload is replaced by the newer checkpoint (the
one in flight finishes). Failures are logged and returned by `close()`, never raised into the training loop;
only the constructor raises (no token, offline, bad token), so a misconfigured run stops before it starts.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import validate_repo_id

from publish.hub import PublishError, UploadPlan, create_repo, explain_error, resolve_token

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"  # docs/CONTRACTS.md: a checkpoint folder is committed once this file exists
_STEP_IN_NAME = re.compile(r"step_(\d+)$")


@dataclass
class UploadResult:
    step: int
    branch: str
    ok: bool
    commit_url: str | None = None
    error: str | None = None
    seconds: float = 0.0
    superseded: bool = False  # replaced by a newer checkpoint before its upload started


@dataclass
class _Job:
    step: int
    branch: str
    source: Path
    staging: Path
    copy_in_worker: bool  # hard links failed (another filesystem): copy in the worker thread instead


class CheckpointUploader:
    """Background uploader of committed checkpoints to `repo_id`, one branch per save.

    Args:
        repo_id: "namespace/name" of a model repo; created (with `private`) if it does not exist.
        private: visibility if the repo is created now.
        token: a Hub token; default huggingface_hub's lookup (HF_TOKEN, then `hf auth login`). Never logged.
        branch_format: branch name per step.
        retries: extra attempts per upload after a network failure (not after 401/403), `backoff_s` apart.
        api: an HfApi-like object (tests).
    """

    def __init__(
        self,
        repo_id: str,
        *,
        private: bool = True,
        token: str | None = None,
        branch_format: str = "step-{step:07d}",
        retries: int = 2,
        backoff_s: float = 30.0,
        api: HfApi | None = None,
    ):
        try:
            validate_repo_id(repo_id)
        except ValueError as err:
            raise PublishError(f"{repo_id!r} is not a valid Hub repo id (expected 'namespace/name'): {err}") from err
        self.repo_id = repo_id
        self.branch_format = branch_format
        self.retries = retries
        self.backoff_s = backoff_s
        self._token = resolve_token(token)
        self._api = api or HfApi()
        # One synchronous call at start: offline, a bad token or no write access stop the run before it trains.
        create_repo(self._api, UploadPlan(repo_id, Path("."), [], private=private), self._token,
                    otherwise="pass --push_private false")
        self._lock = threading.Condition()
        self._pending: _Job | None = None
        self._closing = False
        self._results: list[UploadResult] = []
        self._worker = threading.Thread(target=self._run, name="checkpoint-uploader", daemon=True)
        self._worker.start()

    # ---- called from the training loop -------------------------------------------------------------------

    def submit(self, checkpoint_dir: str | Path, metrics_path: str | Path | None = None,
               step: int | None = None) -> str:
        """Queue a committed checkpoint for upload and return its branch name at once (milliseconds)."""
        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / COMPLETE_MARKER).is_file():
            raise ValueError(f"{checkpoint_dir} is not a committed checkpoint (no {COMPLETE_MARKER} file)")
        if step is None:
            match = _STEP_IN_NAME.search(checkpoint_dir.name)
            if not match:
                raise ValueError(f"cannot tell the step of {checkpoint_dir}: pass step=")
            step = int(match.group(1))
        with self._lock:
            if self._closing:
                raise RuntimeError("CheckpointUploader.submit() after close()")
        branch = self.branch_format.format(step=step)
        # Staged beside checkpoints/, not in it: the trainer owns the checkpoints folder (scans, retention).
        staging = checkpoint_dir.parent.parent / ".hub_upload" / checkpoint_dir.name
        if staging.exists():
            shutil.rmtree(staging)
        copy_in_worker = not _link_tree(checkpoint_dir, staging)
        if metrics_path is not None and Path(metrics_path).is_file():
            staging.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(metrics_path, staging / "metrics.jsonl")  # the metrics so far, frozen now
            run_config = Path(metrics_path).parent / "run_config.yaml"
            if run_config.is_file():
                shutil.copyfile(run_config, staging / "run_config.yaml")
        job = _Job(step, branch, checkpoint_dir, staging, copy_in_worker)
        with self._lock:
            if self._pending is not None:  # never queue up behind a slow network: the newest checkpoint wins
                old = self._pending
                shutil.rmtree(old.staging, ignore_errors=True)
                self._results.append(UploadResult(old.step, old.branch, ok=False, superseded=True,
                                                  error=f"superseded by step {step} before its upload started"))
                logger.warning("checkpoint upload of step %d skipped: step %d arrived first", old.step, step)
            self._pending = job
            self._lock.notify_all()
        return branch

    def close(self, timeout: float | None = None) -> list[UploadResult]:
        """Finish the upload in flight and the one waiting, stop the worker, return every result. Never raises."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._worker.join(timeout)
        if self._worker.is_alive():
            logger.warning("checkpoint uploads still running after %.0f s; leaving them to the daemon thread",
                           timeout or 0)
        with self._lock:
            return list(self._results)

    @property
    def results(self) -> list[UploadResult]:
        with self._lock:
            return list(self._results)

    def __enter__(self) -> CheckpointUploader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- worker thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._closing:
                    self._lock.wait()
                job, self._pending = self._pending, None
                if job is None:  # closing and nothing left
                    return
            result = self._upload(job)
            with self._lock:
                self._results.append(result)

    def _upload(self, job: _Job) -> UploadResult:
        start = time.monotonic()
        try:
            if job.copy_in_worker:
                shutil.copytree(job.source, job.staging, dirs_exist_ok=True)
            plan = UploadPlan(self.repo_id, job.staging, [], revision=job.branch,
                              commit_message=f"Checkpoint at step {job.step}")
            for attempt in range(self.retries + 1):
                try:
                    self._api.create_branch(self.repo_id, branch=job.branch, token=self._token, exist_ok=True,
                                            repo_type="model")
                    commit = self._api.upload_folder(
                        repo_id=self.repo_id, folder_path=str(job.staging), revision=job.branch,
                        commit_message=plan.commit_message, token=self._token, repo_type="model",
                    )
                    url = str(getattr(commit, "commit_url", commit))
                    logger.info("checkpoint step %d uploaded to %s@%s", job.step, self.repo_id, job.branch)
                    return UploadResult(job.step, job.branch, True, url, seconds=time.monotonic() - start)
                except Exception as err:  # noqa: BLE001 - never into the training loop
                    error = explain_error(err, plan, f"uploading step {job.step}", self._token)
                    status = getattr(getattr(err, "response", None), "status_code", None)
                    if attempt == self.retries or status in (401, 403):
                        raise error from err
                    logger.warning("%s; retrying in %.0f s", error, self.backoff_s)
                    time.sleep(self.backoff_s)
        except Exception as err:  # noqa: BLE001
            logger.error("checkpoint upload failed: %s", err)
            return UploadResult(job.step, job.branch, False, error=str(err), seconds=time.monotonic() - start)
        finally:
            shutil.rmtree(job.staging, ignore_errors=True)
        raise AssertionError("unreachable")


def _link_tree(source: Path, target: Path) -> bool:
    """Hard-link every file of `source` into `target` (same layout). False if linking is not possible."""
    try:
        for path in sorted(source.rglob("*")):
            destination = target / path.relative_to(source)
            if path.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, destination)
        target.mkdir(parents=True, exist_ok=True)
        return True
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        return False
