"""CheckpointUploader: submit() returns at once, each checkpoint goes to its own branch with the metrics as they
were at submit time, the trainer may delete the checkpoint right away, failures never reach the training loop."""

import shutil
import threading

import pytest

from publish.checkpoint_sync import CheckpointUploader
from publish.hub import PublishError

FAKE_TOKEN = "hf_notARealTokenButLongEnough0123456789"


class SlowApi:
    """Stands in for HfApi: upload_folder blocks until released and snapshots the folder it was given."""

    def __init__(self, fail_steps=(), existing_public=False):
        self.release = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()  # set when an upload_folder call returns or raises
        self.uploads, self.branches, self.repos = [], [], []
        self.fail_steps = set(fail_steps)
        self.public = existing_public  # a public repo of that name is already there

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs["private"]))
        self.public = self.public or not kwargs["private"]

    def repo_info(self, repo_id, **kwargs):
        return type("ModelInfo", (), {"id": repo_id, "private": not self.public})()

    def create_branch(self, repo_id, *, branch, **kwargs):
        self.branches.append(branch)

    def upload_folder(self, *, folder_path, revision, commit_message, **kwargs):
        self.started.set()
        try:
            assert self.release.wait(10)
            if any(revision.endswith(f"{s:07d}") for s in self.fail_steps):
                raise ConnectionError("network went away")
            from pathlib import Path

            root = Path(folder_path)
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
            self.uploads.append((revision, commit_message, files))
            return type("CommitInfo", (), {"commit_url": f"https://hf.co/commit/{revision}"})()
        finally:
            self.finished.set()


def make_run(tmp_path, steps=(100,)):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run_config.yaml").write_text("max_steps: 300\n")
    (run / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 10.0}\n')
    for step in steps:
        ckpt = run / "checkpoints" / f"step_{step:08d}"
        (ckpt / "model").mkdir(parents=True)
        (ckpt / "model" / "model.safetensors").write_bytes(b"w" * 1000 + bytes([step % 256]))
        (ckpt / "optimizer.pt").write_bytes(b"o" * 10)
        (ckpt / "COMPLETE").write_text("sha\n")
    return run


def test_submit_returns_at_once_and_the_upload_holds_the_checkpoint_and_metrics_of_that_moment(tmp_path):
    run = make_run(tmp_path)
    api = SlowApi()
    uploader = CheckpointUploader("me/run", private=True, token=FAKE_TOKEN, api=api, retries=0)
    assert api.repos == [("me/run", True)]  # created (private) before training starts
    branch = uploader.submit(run / "checkpoints" / "step_00000100", run / "metrics.jsonl", step=100)
    assert branch == "step-0000100"
    # submit returned while the upload is still in flight, blocked on the network (a submit that uploads itself
    # would return only after the upload ended): no clock involved
    assert api.started.wait(5) and not api.finished.is_set()
    # training goes on: more metrics, and retention deletes the checkpoint while it uploads
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "step": 2, "loss": 9.0}\n')
    shutil.rmtree(run / "checkpoints" / "step_00000100")
    api.release.set()
    results = uploader.close()
    assert [(r.step, r.branch, r.ok) for r in results] == [(100, "step-0000100", True)]
    revision, message, files = api.uploads[0]
    assert revision == "step-0000100" and message == "Checkpoint at step 100"
    assert sorted(files) == ["COMPLETE", "metrics.jsonl", "model/model.safetensors", "optimizer.pt",
                             "run_config.yaml"]
    assert files["model/model.safetensors"] == b"w" * 1000 + bytes([100])
    assert files["metrics.jsonl"].count(b"\n") == 1  # frozen at submit: step 2 came later
    assert not (run / ".hub_upload").exists() or not any((run / ".hub_upload").iterdir())  # staging cleaned


def test_a_waiting_upload_is_replaced_by_a_newer_checkpoint(tmp_path):
    run = make_run(tmp_path, steps=(100, 200, 300))
    api = SlowApi()
    uploader = CheckpointUploader("me/run", token=FAKE_TOKEN, api=api, retries=0)
    uploader.submit(run / "checkpoints" / "step_00000100", run / "metrics.jsonl")
    assert api.started.wait(5)
    uploader.submit(run / "checkpoints" / "step_00000200", run / "metrics.jsonl")  # waits behind 100
    uploader.submit(run / "checkpoints" / "step_00000300", run / "metrics.jsonl")  # replaces 200
    api.release.set()
    results = {r.step: r for r in uploader.close()}
    assert results[100].ok and results[300].ok
    assert results[200].superseded and not results[200].ok
    assert [revision for revision, _, _ in api.uploads] == ["step-0000100", "step-0000300"]


def test_upload_failure_is_reported_not_raised(tmp_path):
    run = make_run(tmp_path)
    api = SlowApi(fail_steps=[100])
    api.release.set()
    with CheckpointUploader("me/run", token=FAKE_TOKEN, api=api, retries=1, backoff_s=0.01) as uploader:
        uploader.submit(run / "checkpoints" / "step_00000100", run / "metrics.jsonl")
    (result,) = uploader.results
    assert not result.ok and "cannot reach" in result.error and FAKE_TOKEN not in result.error
    assert api.branches == ["step-0000100", "step-0000100"]  # retried once


def test_uncommitted_checkpoint_is_refused(tmp_path):
    run = make_run(tmp_path)
    (run / "checkpoints" / "step_00000100" / "COMPLETE").unlink()
    api = SlowApi()
    uploader = CheckpointUploader("me/run", token=FAKE_TOKEN, api=api)
    with pytest.raises(ValueError, match="not a committed checkpoint"):
        uploader.submit(run / "checkpoints" / "step_00000100", run / "metrics.jsonl")
    assert uploader.close() == []


def test_constructor_fails_fast_offline_with_the_real_client():
    """HF_HUB_OFFLINE=1 (tests/conftest.py): the run must not start training believing it is backed up."""
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE=1 is set") as info:
        CheckpointUploader("me/run", token=FAKE_TOKEN)
    assert FAKE_TOKEN not in str(info.value)


def test_private_checkpoint_pushes_into_an_existing_public_repo_stop_the_run_before_it_trains(tmp_path):
    """push_private (the default) made no difference to an existing public repo: every checkpoint, optimizer state
    included, would have been published. Refused at start, like a missing token."""
    api = SlowApi(existing_public=True)
    with pytest.raises(PublishError, match="asked private, but the repository exists and is public.*push_private"):
        CheckpointUploader("me/run", private=True, token=FAKE_TOKEN, api=api, retries=0)
    api = SlowApi(existing_public=True)
    CheckpointUploader("me/run", private=False, token=FAKE_TOKEN, api=api, retries=0).close()  # public on purpose
