"""A file or folder the user may not read (or write) gets one line naming it from every command, not a
traceback (bad-input audit: data.prepare, train.py, eval and export all printed PermissionError tracebacks).

The commands run in subprocesses without root's override of file modes (as root, chmod 000 blocks nothing:
`setpriv` drops the capabilities that let root ignore them)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        from conftest import _in_ci

        why = "running as root without setpriv (util-linux): file modes cannot be enforced here"
        (pytest.fail if _in_ci() else pytest.skip)(why)  # CI never skips silently
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def _run(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(_unprivileged() + [sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def locked(tmp_path):
    """A readable tiny prepared data folder, and locked copies: a source file, a data folder, a preset."""
    from data.prepare import prepare

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(f'{{"text": "document {i} says a few words about the weather"}}\n' for i in range(50)))
    data = tmp_path / "data"
    prepare(str(src), data, val_tokens=64, shard_tokens=512, num_proc=1, progress=False)
    locked_data = tmp_path / "locked_data"
    shutil.copytree(data, locked_data)
    preset = tmp_path / "preset.yaml"
    preset.write_text("max_steps: 2\n")
    src_folder = tmp_path / "sources"  # a folder of sources: was "holds no ... files", as listing it found none
    src_folder.mkdir()
    shutil.copy(src, src_folder)
    locked_paths = (src, locked_data, preset, src_folder)
    for path in locked_paths:
        path.chmod(0)
    yield {"src": src, "data": data, "locked_data": locked_data, "preset": preset, "src_folder": src_folder}
    for path in locked_paths:
        path.chmod(0o755)


def test_unreadable_inputs_are_named_in_one_line(locked, tmp_path):
    runs = {
        "prepare source": (_run("-m", "data.prepare", str(locked["src"]), "--out", str(tmp_path / "out")),
                           locked["src"]),
        "prepare folder": (_run("-m", "data.prepare", str(locked["src_folder"]), "--out", str(tmp_path / "out")),
                           locked["src_folder"]),
        "train data_dir": (_run("train.py", "--config", "configs/demo.yaml", "--data_dir", str(locked["locked_data"]),
                                "--output_dir", str(tmp_path / "run")), locked["locked_data"]),
        "train preset": (_run("train.py", "--config", str(locked["preset"]), "--data_dir", str(locked["data"]),
                              "--output_dir", str(tmp_path / "run")), locked["preset"]),
    }
    for what, (proc, path) in runs.items():
        assert proc.returncode == 2, (what, proc.stderr[-2000:])
        # the path itself or a file in it (up to Python 3.12 pathlib's is_file() raises on the folder's manifest.json;
        # later ones return False, and the missing manifest's advice says the folder cannot be read)
        assert str(path) in proc.stderr and "ermission denied" in proc.stderr, (what, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (what, proc.stderr[-2000:])
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_an_export_into_a_folder_it_may_not_write_names_that_folder(tmp_path):
    from model_helpers import tiny_model

    tiny_model().save_pretrained(tmp_path / "model")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        proc = _run("export.py", str(tmp_path / "model"), "--out", str(read_only / "export"))
    finally:
        read_only.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"permission denied: {read_only}: " in proc.stderr  # not the staging folder inside it
    assert list(read_only.iterdir()) == []


def test_an_unreadable_weights_file_is_not_called_missing(tmp_path):
    """transformers said 'No such file or directory' of a model.safetensors it may not read (bad-input audit)."""
    from model_helpers import tiny_model

    tiny_model().save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.chmod(0)
    try:
        procs = {"export": _run("export.py", str(tmp_path / "model"), "--out", str(tmp_path / "out")),
                 "eval": _run("-m", "eval.sample", "--model", str(tmp_path / "model"), "--num-samples", "1",
                              "--max-new-tokens", "2")}
    finally:
        weights.chmod(0o644)
    for what, proc in procs.items():
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (what, proc.stderr[-2000:])
        assert f"{weights}: permission denied: check that this user can read it" in proc.stderr, (what, proc.stderr)
        assert "No such file" not in proc.stderr

    # an evaluation's own input, read after the model loaded; a model folder that cannot even be listed
    data = tmp_path / "hellaswag_val.jsonl"
    data.write_text("{}\n")
    data.chmod(0)
    try:
        procs = {"data": _run("-m", "eval.hellaswag", "--model", str(weights.parent), "--data", str(data))}
        weights.parent.chmod(0)
        procs["folder"] = _run("-m", "eval.sample", "--model", str(weights.parent))
    finally:
        data.chmod(0o644)
        weights.parent.chmod(0o755)
    for what, proc in procs.items():
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (what, proc.stderr[-2000:])
        assert "ermission denied" in proc.stderr and str(data if what == "data" else weights.parent) in proc.stderr, \
            (what, proc.stderr[-2000:])


def test_an_unreadable_shard_of_another_tool_is_named(tmp_path):
    """data.import_shards: build-nanogpt's shards, one of them unreadable (.npy), or llm.c's (.bin)."""
    import numpy as np

    from other_tool_shards import write_shards

    stream = np.tile(np.array([50256, 464, 3290, 13], dtype=np.uint16), 100)
    procs = {}
    for ext in ("npy", "bin"):
        paths = write_shards(stream, tmp_path / ext, ext=ext, shard_size=150)
        paths[1].chmod(0)
        try:
            procs[paths[1]] = _run("-m", "data.import_shards", str(tmp_path / ext), "--out", str(tmp_path / f"out_{ext}"))
        finally:
            paths[1].chmod(0o644)
    for path, proc in procs.items():
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (path, proc.stderr[-2000:])
        assert f"permission denied: {path}: check that this user can read it" in proc.stderr, (path, proc.stderr)
