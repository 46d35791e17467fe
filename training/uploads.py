"""Checkpoint uploads to the Hub during training (--push_checkpoints_to; publish.checkpoint_sync, main process only):
started before anything is written, so a run that could not upload stops before it trains, and waited for at the
end."""

from training.run_config import RunConfig


def start_checkpoint_uploader(cfg: RunConfig, api=None):
    """(uploader, None) or (None, why it cannot upload). Creates the repo if needed, so a run that could not
    save its checkpoints to the Hub stops before it trains."""
    from publish.checkpoint_sync import CheckpointUploader
    from publish.hub import PublishError

    try:
        return CheckpointUploader(cfg.push_checkpoints_to, private=cfg.push_private, api=api), None
    except PublishError as err:
        return None, f"{err} (train without --push_checkpoints_to, or fix the above and start again)"


def finish_uploads(uploader, metrics, log) -> None:
    """Wait for the upload in flight (the last checkpoint is the one that matters most) and report each one."""
    if uploader is None:
        return
    log(f"waiting for checkpoint uploads to {uploader.repo_id} to finish ...")
    for result in uploader.close():
        if result.ok:
            log(f"checkpoint step {result.step} uploaded: {uploader.repo_id}@{result.branch} ({result.seconds:.1f}s)")
        else:
            log(f"checkpoint step {result.step} NOT uploaded ({result.branch}): {result.error}; "
                "the local checkpoint is unaffected")
        if metrics:
            metrics.write("upload", step=result.step, repo_id=uploader.repo_id, branch=result.branch, ok=result.ok,
                          url=result.commit_url, error=result.error, seconds=result.seconds)
