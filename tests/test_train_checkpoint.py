"""Checkpoint files on their own: atomic commit, integrity checks that catch partial / truncated / bit-flipped
checkpoints, fallback with a warning, retention only after a commit, compat checks, RNG round trip."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from training import checkpoint as ckpt


def _save(out: Path, step: int, keep_last: int = 2, payload: bytes = b"weights") -> Path:
    stage = ckpt.prepare_staging(out, step)
    (stage / "model").mkdir()
    (stage / "model" / "model.safetensors").write_bytes(payload * 100)
    (stage / "optimizer.pt").write_bytes(b"opt" * 50)
    (stage / "meta.json").write_text(json.dumps({"step": step}))
    return ckpt.commit(stage, keep_last, log=lambda m: None)


def test_commit_is_sealed_and_verifies(tmp_path):
    final = _save(tmp_path, 3)
    assert final == tmp_path / "checkpoints" / "step_00000003"
    assert (final / "COMPLETE").is_file() and (final / "MANIFEST.json").is_file()
    manifest = json.loads((final / "MANIFEST.json").read_text())["files"]
    assert set(manifest) == {"model/model.safetensors", "optimizer.pt", "meta.json"}
    assert ckpt.verify(final) is None
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_committed_files_get_the_umask_mode_not_0600(tmp_path):
    """transformers writes model.safetensors 0600: on a shared disk the team could not read the weights."""
    import os

    stage = ckpt.prepare_staging(tmp_path, 1)
    (stage / "model").mkdir()
    weights = stage / "model" / "model.safetensors"
    weights.write_bytes(b"w")
    weights.chmod(0o600)
    old = os.umask(0o027)
    try:
        final = ckpt.commit(stage, 2, log=lambda m: None)
    finally:
        os.umask(old)
    assert (final / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o640  # 0666 & ~027


@pytest.mark.parametrize("damage,reason", [
    ("no_marker", "no COMPLETE marker"),
    ("truncate", "truncated"),
    ("flip", "does not match its sha256"),
    ("delete", "is missing"),
    ("edit_manifest", "does not match the hash recorded in COMPLETE"),
])
def test_damaged_newest_falls_back_with_warning(tmp_path, damage, reason):
    _save(tmp_path, 2)
    newest = _save(tmp_path, 4)
    weights = newest / "model" / "model.safetensors"
    if damage == "no_marker":
        (newest / "COMPLETE").unlink()
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[17] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        (newest / "optimizer.pt").unlink()
    elif damage == "edit_manifest":
        (newest / "MANIFEST.json").write_text((newest / "MANIFEST.json").read_text().replace("optimizer", "optimiser"))
    assert reason in ckpt.verify(newest)
    logged = []
    found = ckpt.find_resumable(tmp_path, log=logged.append)  # train.py's way: its log
    assert found == tmp_path / "checkpoints" / "step_00000002"
    assert "step_00000004 is unusable" in logged[0] and reason in logged[0]
    with pytest.warns(UserWarning, match="step_00000004 is unusable"):  # the library's way: a warning
        assert ckpt.find_resumable(tmp_path) == found


def test_killed_save_leaves_stray_staging_that_is_ignored_then_cleaned(tmp_path):
    good = _save(tmp_path, 2)
    stray = ckpt.prepare_staging(tmp_path, 4)  # a save killed before its commit
    (stray / "optimizer.pt").write_bytes(b"half")
    assert ckpt.find_resumable(tmp_path) == good
    _save(tmp_path, 6)
    assert not stray.exists()


def test_a_new_save_first_frees_the_space_of_every_killed_saves_leftovers(tmp_path):
    """A preemption's SIGTERM saves at an off-schedule step; a SIGKILL at the end of the grace period leaves that
    staging folder (a checkpoint's worth of bytes, hidden by its dot) and the resumed run never saves that step
    again. It was removed only by the next commit's retention, after the new checkpoint was written beside it:
    on a disk with room for one more checkpoint, every save failed as "disk full"."""
    good = _save(tmp_path, 2)
    killed = ckpt.prepare_staging(tmp_path, 3)  # the signal's save, killed
    (killed / "optimizer.pt").write_bytes(b"half")
    trash = tmp_path / "checkpoints" / (ckpt.TRASH_PREFIX + "step_00000001")  # a retention delete, killed
    trash.mkdir()
    (trash / "optimizer.pt").write_bytes(b"old")
    stage = ckpt.prepare_staging(tmp_path, 4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [stage.name, good.name]


def test_retention_deletes_only_after_the_new_checkpoint_commits(tmp_path, monkeypatch):
    for step in (2, 4, 6):
        _save(tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]

    # a save that dies while committing (disk full, kill) must not have deleted anything
    stage = ckpt.prepare_staging(tmp_path, 8)
    (stage / "meta.json").write_text("{}")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "rename", boom)
    with pytest.raises(OSError):
        ckpt.commit(stage, keep_last=2)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    assert all(ckpt.verify(p) is None for p in ckpt.list_checkpoints(tmp_path))


def test_a_retention_delete_killed_half_way_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    """An old checkpoint is renamed out of step_* before its files go: killed during the delete (here: rmtree
    stops after one file), what is left is a trash folder the next save removes, not a step_ folder holding
    half a checkpoint forever."""
    import shutil

    for step in (2, 4):
        _save(tmp_path, step, keep_last=2)
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, ignore_errors=False):
        path = Path(path)
        if path.is_dir() and path.name.endswith("step_00000002"):
            next(f for f in path.rglob("*") if f.is_file()).unlink()
            raise KeyboardInterrupt  # stands in for the kill
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 6, keep_last=2)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    _save(tmp_path, 8, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000006", "step_00000008"]


def test_recommit_of_an_existing_step_replaces_it(tmp_path):
    """A committed step_N (e.g. re-saving a step after falling back past a corrupted copy) is replaced."""
    _save(tmp_path, 4, payload=b"old")
    again = _save(tmp_path, 4, payload=b"new")
    assert ckpt.verify(again) is None
    assert (again / "model" / "model.safetensors").read_bytes().startswith(b"new")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000004"]


def test_a_save_keeps_an_incomplete_folder_of_its_step_aside(tmp_path):
    """A step_N without a COMPLETE marker is not a save of ours (saves are renamed into place whole): someone's
    copy, partial or still being made. Retention never deletes one; a save of that step deleted it. Now it is
    renamed aside, said, and then left alone by later saves."""
    partial = ckpt.checkpoint_root(tmp_path) / "step_00000004"
    (partial / "model").mkdir(parents=True)
    (partial / "model" / "model.safetensors").write_bytes(b"copied so far")
    lines = []
    stage = ckpt.prepare_staging(tmp_path, 4)
    (stage / "meta.json").write_text(json.dumps({"step": 4}))
    saved = ckpt.commit(stage, 2, log=lines.append)
    assert ckpt.verify(saved) is None and json.loads((saved / "meta.json").read_text()) == {"step": 4}
    kept = [p for p in ckpt.checkpoint_root(tmp_path).iterdir() if p.name.startswith("incomplete-step_00000004-")]
    assert len(kept) == 1 and (kept[0] / "model" / "model.safetensors").read_bytes() == b"copied so far"
    assert any(f"kept as {kept[0]}" in line for line in lines), lines
    for step in (6, 8, 10):  # retention and later saves leave it alone
        _save(tmp_path, step)
    assert kept[0].is_dir() and ckpt.find_resumable(tmp_path).name == "step_00000010"


def test_keep_last_below_two_is_refused(tmp_path):
    stage = ckpt.prepare_staging(tmp_path, 1)
    with pytest.raises(ckpt.CheckpointError, match="keep_last must be >= 2"):
        ckpt.commit(stage, keep_last=1)


def test_compat_errors_name_every_difference():
    from configuration_gpt2repro import GPT2ReproConfig

    saved_cfg = GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128)
    meta = {"model_config": saved_cfg.to_dict(), "data_manifest_hash": "aaa", "world_size": 2,
            "tokenizer_fingerprint": "gpt2-bpe:x",
            "run_config": {"total_batch_size": 256, "micro_batch_size": 4, "seq_len": 32, "data_seed": 1,
                           "overfit_single_batch": False, "init_from": "scratch", "data_dir": "out/data/a"}}
    same = dict(model_config=GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128),
                run_config=dict(meta["run_config"]), world_size=2, data_manifest_hash="aaa",
                tokenizer_fingerprint="gpt2-bpe:x")
    assert ckpt.compat_errors(meta, **same) == []
    changed = dict(same, model_config=GPT2ReproConfig(n_layer=3, n_head=2, n_embd=64, n_positions=128),
                   world_size=1, data_manifest_hash="bbb",
                   run_config={**same["run_config"], "seq_len": 64, "data_dir": "out/data/b"})
    errors = ckpt.compat_errors(meta, **changed)
    assert "architecture: n_layer is 3 now, 2 in the checkpoint" in errors
    # both folders named (only the hashes were, which said nothing of which data each was)
    assert ("data: other tokens than the checkpoint trained on (now 'out/data/b', manifest hash bbb; the "
            "checkpoint's 'out/data/a', aaa)") in " ".join(errors)
    assert any(e.startswith("run config: seq_len is 64 now, 32") for e in errors)
    assert len(errors) == 3  # the world size is not among them: each step reads the same windows on any
    # number of processes and micro-batch size (elastic resume) ...
    assert ckpt.compat_errors(meta, **dict(same, world_size=4, run_config={**same["run_config"],
                                                                          "micro_batch_size": 1})) == []
    # ... except for overfit_single_batch, whose one batch is each rank's first micro-batch
    single = {**same["run_config"], "overfit_single_batch": True}
    errors = ckpt.compat_errors({**meta, "run_config": single}, **dict(same, world_size=1, run_config=single))
    assert errors == ["overfit_single_batch: the single batch is each rank's first micro-batch, so it resumes only "
                      "with the checkpoint's world size (2) and micro_batch_size (4)"]


def test_rng_state_round_trip_without_pickle(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    ckpt.save_rank_state(tmp_path, 0, {"windows_consumed": 12})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    state = ckpt.load_rank_state(tmp_path, 0)  # torch.load(weights_only=True) inside
    assert state["data"] == {"windows_consumed": 12}
    ckpt.set_rng_state(state["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
    with pytest.raises(ckpt.CheckpointError, match="checkpoint is incomplete"):
        ckpt.load_rank_state(tmp_path, 1)


def test_weights_load_refuses_a_different_model(tmp_path):
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    small = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=1, n_head=2, n_embd=64, n_positions=128))
    small.save_pretrained(tmp_path / "m")
    copy = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=1, n_head=2, n_embd=64, n_positions=128))
    ckpt.load_weights(copy, tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), copy.state_dict().values()))
    assert copy.lm_head.weight is copy.transformer.wte.weight  # still tied
    bigger = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128))
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_weights(bigger, tmp_path / "m")
    shutil.rmtree(tmp_path / "m")


def test_save_failure_tells_a_disk_error_from_a_bug_and_never_raises(tmp_path, monkeypatch):
    """The exit-5 message must not send the user to free space for an error that is not the disk's (a bug repeats
    at the next save, after save_every more steps of training); and it is computed on a failing rank while the
    others wait for it, so it may not raise itself."""
    stage = ckpt.prepare_staging(tmp_path, 4)
    for err in (OSError(28, "No space left on device"),
                RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6784 vs 6676"),
                RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')):
        assert ckpt.looks_like_storage(err), err
        assert "disk full, quota or permissions?" in ckpt.save_failure(stage, 4, err)
    bug = ckpt.save_failure(stage, 4, TypeError("Object of type Foo is not JSON serializable"))
    assert "not a disk error" in bug and "disk full" not in bug and "Free space (" not in bug
    assert "committed checkpoints are intact (newest: none)" in bug

    def unlistable(output_dir):
        raise PermissionError(13, "Permission denied", str(output_dir))

    monkeypatch.setattr(ckpt, "committed_checkpoints", unlistable)
    assert "cannot be listed" in ckpt.save_failure(stage, 4, PermissionError(13, "Permission denied"))


def test_the_shared_folder_check_says_when_the_main_process_cannot_write_there(tmp_path):
    """check_shared's file is written by the main process alone: an OSError there (a full disk) was raised on it
    alone, while the other ranks waited in the broadcast. Now it is the message every rank returns."""
    from types import SimpleNamespace

    from training.run_folder import check_shared

    main = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1), world=2, main=True)  # collectives: as is
    assert check_shared(main, str(tmp_path)) is None and list(tmp_path.iterdir()) == []  # seen, and removed
    missing = tmp_path / "not-created"
    assert check_shared(main, str(missing)).startswith(f"cannot write into output_dir '{missing}' (No such file")
