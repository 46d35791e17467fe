"""Interrupted and repeated prepare runs: kill -9 then re-run gives byte-identical shards; damaged or partial
files are redone; a folder prepared with other settings is refused and left untouched."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.prepare import prepare
from data.shards import DataError

LEGAL_2800 = "fineweb/fineweb_legal_2800docs.parquet"
EDU_150 = "fineweb-edu/fineweb_edu_150docs.parquet"
REPO = Path(__file__).resolve().parents[1]
SMALL = dict(shard_tokens=200_000, val_tokens=100_000)  # ~23 shards for the 4.4M-token file


def shard_hashes(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return {s["file"]: s["sha256"] for s in manifest["shards"]}


def test_kill_9_mid_run_then_rerun_gives_byte_identical_shards(shared_data, tmp_path):
    src = str(shared_data(LEGAL_2800))
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data.prepare", src, "--out", str(killed), "--shard-tokens", "200000",
           "--val-tokens", "100000", "--chunk-docs", "150", "--num-proc", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "prepare_state.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:  # wait until a few shards are committed
            try:
                if len(json.loads(state.read_text())["shards"]) >= 3:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.01)
        assert proc.poll() is None, "prepare finished before it could be killed: make the test run slower"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (killed / "manifest.json").exists()  # an interrupted run never looks complete
    kept = len(json.loads(state.read_text())["shards"])
    assert 3 <= kept < 20

    # Re-run in-process (same settings); the reference is an uninterrupted run with another chunking.
    prepare(src, killed, chunk_docs=400, num_proc=1, progress=False, **SMALL)
    reference = tmp_path / "reference"
    prepare(src, reference, chunk_docs=1000, num_proc=1, progress=False, **SMALL)
    assert shard_hashes(killed) == shard_hashes(reference) and len(shard_hashes(reference)) > 20
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in reference.iterdir())
    for name in shard_hashes(reference):
        assert (killed / name).read_bytes() == (reference / name).read_bytes()


def crash_after(monkeypatch, n_shards: int):
    """Make prepare die (like a crash) when it is about to write shard number n_shards + 1."""
    import data.prepare as prepare_module

    real, calls = prepare_module.write_shard, []

    def failing(path, tokens):
        calls.append(path)
        if len(calls) > n_shards:
            raise KeyboardInterrupt("simulated crash")
        return real(path, tokens)

    monkeypatch.setattr(prepare_module, "write_shard", failing)
    return lambda: monkeypatch.setattr(prepare_module, "write_shard", real)


def test_resume_rewrites_damaged_shards_and_ignores_partial_files(shared_data, tmp_path, monkeypatch, caplog):
    src = str(shared_data(EDU_150))
    args = dict(shard_tokens=10_000, val_tokens=5_000, num_proc=1, chunk_docs=20, progress=False)
    ref = tmp_path / "ref"
    prepare(src, ref, **args)
    out = tmp_path / "out"
    restore = crash_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, **args)
    restore()
    state = json.loads((out / "prepare_state.json").read_text())
    assert len(state["shards"]) == 5 and not (out / "manifest.json").exists()
    damaged = out / state["shards"][2]["file"]
    data = bytearray(damaged.read_bytes())
    data[-7] ^= 0x01  # one flipped bit in a finished shard
    damaged.write_bytes(bytes(data))
    (out / f".train_000004.npy.tmp-{os.getpid() + 1}").write_bytes(b"partial")  # a write cut short by kill -9
    caplog.set_level("INFO", logger="data.prepare")
    prepare(src, out, **args)
    assert f"rewriting from {damaged.name}" in caplog.text
    assert shard_hashes(out) == shard_hashes(ref)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())


def test_finished_folder_is_verified_and_left_alone(shared_data, tmp_path):
    src = str(shared_data(EDU_150))
    prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)
    data_files = lambda: {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != ".lock"}  # noqa: E731
    before = data_files()  # (.lock gets the pid of each run that holds the folder)
    prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)
    assert data_files() == before
    hashes = shard_hashes(tmp_path)
    shard = tmp_path / "train_000000.npy"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated: a finished folder re-run must notice
    # ... and say how to repair it; the advice it gives (--overwrite) must really repair it
    with pytest.raises(DataError, match="train_000000.npy.*truncated.*with --overwrite"):
        prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)
    prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False, overwrite=True)
    assert shard_hashes(tmp_path) == hashes
    prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)  # verified intact again
    manifest = tmp_path / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])  # a damaged manifest: the advised --overwrite repairs it too
    with pytest.raises(DataError, match="manifest.json is not valid JSON.*--overwrite"):
        prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)
    prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False, overwrite=True)
    assert shard_hashes(tmp_path) == hashes


def test_other_settings_are_refused_without_touching_the_folder(shared_data, tmp_path):
    src = str(shared_data(EDU_150))
    prepare(src, tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DataError, match=r"differing: \['shard_tokens', 'val_tokens'\].*--overwrite"):
        prepare(src, tmp_path, shard_tokens=20_000, val_tokens=6_000, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    m = prepare(src, tmp_path, shard_tokens=20_000, val_tokens=6_000, overwrite=True, progress=False)
    assert m["settings"]["shard_tokens"] == 20_000 and set(shard_hashes(tmp_path)) == {
        p.name for p in tmp_path.iterdir() if p.suffix == ".npy"}


def test_folder_with_foreign_files_is_refused(shared_data, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes.txt.*empty or new --out"):
        prepare(str(shared_data(EDU_150)), tmp_path, shard_tokens=30_000, val_tokens=5_000, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("crash_at", [1, 3, 6])  # inside val (3 val shards), right after val, inside train
def test_crash_anywhere_then_resume_equals_uninterrupted(shared_data, tmp_path, monkeypatch, crash_at):
    src = str(shared_data(EDU_150))
    args = dict(shard_tokens=10_000, val_tokens=25_000, max_tokens=52_345, num_proc=1, chunk_docs=13, progress=False)
    ref = prepare(src, tmp_path / "ref", **args)
    assert [s["split"] for s in ref["shards"]][:4] == ["val", "val", "val", "train"]
    restore = crash_after(monkeypatch, crash_at)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tmp_path / "out", **args)
    restore()
    resumed = prepare(src, tmp_path / "out", **{**args, "chunk_docs": 50})
    assert resumed["shards"] == ref["shards"] and resumed["splits"] == ref["splits"]


def test_out_inside_the_source_folder_resumes_and_reverifies(tmp_path, monkeypatch, caplog):
    """`prepare data/ --out data/tok`: the re-run read data/tok's prepare_state.json / manifest.json as documents
    ("line 1 is malformed JSON"; "mixes formats" for parquet), so the folder could be neither resumed nor verified."""
    src = tmp_path / "data"
    src.mkdir()
    for part in range(2):
        (src / f"part{part}.jsonl").write_text("".join(json.dumps({"text": f"document {part}-{i} " * 20}) + "\n"
                                                       for i in range(20)))
    args = dict(shard_tokens=500, val_tokens=100, num_proc=1, progress=False)
    ref = prepare(str(src), tmp_path / "ref", **args)
    restore = crash_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(src), src / "tok", **args)
    restore()
    assert (src / "tok" / "prepare_state.json").exists()
    assert prepare(str(src), src / "tok", **args)["shards"] == ref["shards"]  # resumed
    caplog.set_level("INFO", logger="data")  # data.prepare and data.out_folder
    assert prepare(str(src), src / "tok", **args)["shards"] == ref["shards"]  # verified
    assert "already complete" in caplog.text
    # another --out beside it (and a glob reaching into it) reads the same documents
    assert prepare(str(src / "**" / "*"), src / "tok2", **args)["shards"] == ref["shards"]


def test_overwrite_with_a_source_that_cannot_be_read_keeps_the_previous_data(tmp_path):
    """--overwrite removed the previous dataset before the new source was opened: a mistyped Hub name (or no
    network) left an empty folder and an error."""
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 10}) + "\n" for i in range(20)))
    out = tmp_path / "out"
    prepare(str(tmp_path / "docs.jsonl"), out, shard_tokens=100, val_tokens=30, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match=r"could not load Hub dataset 'someone/mistyped-name'"):  # offline in tests
        prepare("someone/mistyped-name", out, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_unreadable_state_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    """A damaged prepare_state.json used to end the re-run in a JSONDecodeError traceback."""
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 10}) + "\n" for i in range(20)))
    args = dict(shard_tokens=100, val_tokens=30, num_proc=1, progress=False)
    ref = prepare(str(tmp_path / "docs.jsonl"), tmp_path / "ref", **args)
    out = tmp_path / "out"
    restore = crash_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(tmp_path / "docs.jsonl"), out, **args)
    restore()
    (out / "prepare_state.json").write_text('{"settings": ')
    with pytest.raises(DataError, match=r"prepare_state.json, the record of an interrupted run, is unreadable .*"
                                        r"nothing was changed. Re-run with --overwrite"):
        prepare(str(tmp_path / "docs.jsonl"), out, **args)
    assert prepare(str(tmp_path / "docs.jsonl"), out, overwrite=True, **args)["shards"] == ref["shards"]


def test_a_folder_another_prepare_is_writing_is_refused_untouched(tmp_path):
    """Two data.prepare runs into one --out (a second terminal, a re-submitted job) wrote the same shards and
    resume records over each other; the second is now refused while the first holds the folder."""
    from data.out_folder import PREPARING
    from training.run_lock import lock_run_folder

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 10}) + "\n" for i in range(20)))
    args = dict(shard_tokens=100, val_tokens=30, num_proc=1, progress=False)
    out = tmp_path / "out"
    holder, busy = lock_run_folder(out, PREPARING)  # stands in for the other run (flock: per open file)
    assert busy is None
    with pytest.raises(DataError, match=rf"{out} is in use by another data.prepare or data.import_shards \(pid {os.getpid()}\): wait for "
                                        r"it to finish .*, or pick another --out; nothing was changed"):
        prepare(str(tmp_path / "docs.jsonl"), out, **args)
    assert [p.name for p in out.iterdir()] == [".lock"]
    holder.close()
    first = prepare(str(tmp_path / "docs.jsonl"), out, **args)
    assert prepare(str(tmp_path / "docs.jsonl"), out, **args) == first  # the lock file is not a foreign file
    _, busy = lock_run_folder(out, PREPARING)  # released when prepare returned
    assert busy is None


def test_a_finished_folder_that_cannot_be_written_is_verified_without_a_lock(tmp_path, monkeypatch):
    """A read-only copy of a prepared dataset (a shared mount) has no room for a lock file; checking it writes
    nothing, so it is verified as before."""
    import data.prepare as prep

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 10}) + "\n" for i in range(20)))
    args = dict(shard_tokens=100, val_tokens=30, num_proc=1, progress=False)
    out = tmp_path / "out"
    first = prepare(str(tmp_path / "docs.jsonl"), out, **args)
    (out / ".lock").unlink()
    real_access = os.access
    monkeypatch.setattr(prep.os, "access", lambda path, mode: False if Path(path) == out else real_access(path, mode))
    assert prepare(str(tmp_path / "docs.jsonl"), out, **args) == first
    assert not (out / ".lock").exists()


def test_a_full_disk_is_a_message_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    """A shard that could not be written (disk full, the folder turned read-only) ended data.prepare in an
    OSError traceback; it is now `error: could not write ...` (exit 2) saying how to go on, and the same command
    resumes to the same shards as an uninterrupted run."""
    import data.prepare as prepare_module

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 10}) + "\n" for i in range(20)))
    args = dict(shard_tokens=100, val_tokens=30, num_proc=1, progress=False)
    ref = prepare(str(tmp_path / "docs.jsonl"), tmp_path / "ref", **args)
    real, calls = prepare_module.write_shard, []

    def full_disk(path, tokens):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return real(path, tokens)

    monkeypatch.setattr(prepare_module, "write_shard", full_disk)
    out = tmp_path / "out"
    argv = [str(tmp_path / "docs.jsonl"), "--out", str(out), "--shard-tokens", "100", "--val-tokens", "30",
            "--num-proc", "1", "--no-progress"]
    assert prepare_module.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write to {out} (No space left on device) after 2 finished shards")
    assert "re-run the same command" in err
    monkeypatch.setattr(prepare_module, "write_shard", real)
    assert prepare_module.main(argv) == 0
    assert json.loads((out / "manifest.json").read_text())["shards"] == ref["shards"]
