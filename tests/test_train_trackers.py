"""Experiment trackers end to end (tiny CPU runs, as in test_train_runs): what TensorBoard and W&B receive is what
the step lines and metrics.jsonl say, a resumed run continues the same W&B run, and a tracker that cannot
start stops the run before step 1 with what to do."""

import glob
import shutil
from pathlib import Path

import pytest

from test_train_runs import _args, _run, setup  # noqa: F401  (setup is a fixture)
from training.metrics import read_metrics
from training.trackers import as_verbatim_markdown


def test_tensorboard_receives_the_logged_metrics(setup, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    proc = _run(_args(setup, out, "--max_steps", "4", "--log_with", "tensorboard"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = EventAccumulator(str(out / "gpt2repro"))
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}

    train_rows = read_metrics(out / "metrics.jsonl", "train")
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for row in train_rows:
        assert scalars["train/loss"][row["step"]] == pytest.approx(row["loss"], rel=1e-6)
        assert scalars["train/lr"][row["step"]] == pytest.approx(row["lr"], rel=1e-6)
        assert scalars["train/tokens"][row["step"]] == row["tokens"] == 256 * row["step"]
    assert "perf/mfu" not in scalars  # no known peak on a CPU: no made-up MFU
    val = read_metrics(out / "metrics.jsonl", "val")
    assert {r["step"]: pytest.approx(r["val_loss"], rel=1e-6) for r in val} == scalars["val/loss"]
    hellaswag = read_metrics(out / "metrics.jsonl", "hellaswag")
    for name in ("acc_norm", "acc", "acc_tokennorm"):
        assert scalars[f"hellaswag/{name}"] == {4: pytest.approx(hellaswag[-1][name], rel=1e-6)}
    assert "tracker tensorboard -> " in proc.stdout + proc.stderr  # the banner says where the events go
    samples = read_metrics(out / "metrics.jsonl", "sample")[-1]
    texts = [events.Tensors(f"samples/{i}/text_summary")[-1] for i in range(len(samples["texts"]))]
    assert [(t.step, t.tensor_proto.string_val[0].decode()) for t in texts] == [
        (4, as_verbatim_markdown(x)) for x in samples["texts"]]
    # the run config as text, in the run itself (Accelerate's hparams added timestamped subfolders per session)
    config_text = events.Tensors("run_config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "    max_steps: 4\n" in config_text and "    log_with: tensorboard\n" in config_text
    assert [p.name for p in (out / "gpt2repro").iterdir() if p.is_dir()] == []

    # An interrupted session logged steps 3-4 after its last checkpoint (step 2): the resumed session's
    # values replace them, each step shows once.
    shutil.rmtree(out / "checkpoints" / "step_00000004")
    resumed = _run(_args(setup, out, "--max_steps", "4", "--log_with", "tensorboard"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = EventAccumulator(str(out / "gpt2repro"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


def _wandb_runs(out: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(out / "wandb" / "offline-run-*")))


def test_wandb_offline_sessions_are_runs_of_their_own_named_after_the_folder(setup, tmp_path, monkeypatch):  # noqa: F811
    """Offline W&B cannot continue a run (two sessions with one id would overwrite each other when synced): a
    resumed training's offline session is a new run with the folder's name and group."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "my-run"
    first = _run(_args(setup, out, "--max_steps", "2", "--log_with", "wandb"))
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(_args(setup, out, "--max_steps", "4", "--log_with", "wandb"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr

    runs = _wandb_runs(out)
    ids = {r.name.rsplit("-", 1)[1] for r in runs}
    assert len(runs) == 2 and len(ids) == 2 and not (out / "wandb_run_id").exists()
    # The offline record files (protobuf records; wandb ships no Python reader for them any more) hold the
    # metric names, the run name and the group as text.
    logs = [(r / f"run-{r.name.rsplit('-', 1)[1]}.wandb").read_bytes() for r in runs]
    assert all(b"train/loss" in log and b"my-run" in log for log in logs)
    assert read_metrics(out / "metrics.jsonl", "val")[-1]["step"] == 4 and b"val/loss" in logs[1]


def test_wandb_online_keeps_one_run_id_per_folder_and_resumes_it(tmp_path, monkeypatch):
    """Online, every session of a run folder starts W&B with the folder's one id and resume='allow'."""
    from training.trackers import init_kwargs

    monkeypatch.delenv("WANDB_MODE", raising=False)
    first, again = init_kwargs(["wandb"], tmp_path, 0)["wandb"], init_kwargs(["wandb"], tmp_path, 300)["wandb"]
    assert first == again and first["resume"] == "allow" and len(first["id"]) == 12
    assert first["name"] == first["group"] == tmp_path.name and first["dir"] == str(tmp_path)

    from training.trackers import describe, project_name

    monkeypatch.setenv("WANDB_PROJECT", "my-project")  # W&B's own setting for where runs go is honoured
    assert project_name(["wandb"]) == "my-project" and project_name(["tensorboard"]) == "gpt2repro"
    assert "online, project my-project" in describe("wandb", tmp_path)


def test_a_tracker_that_cannot_start_stops_the_run_before_step_1(setup, tmp_path, monkeypatch):  # noqa: F811
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    out = tmp_path / "run"
    proc = _run(_args(setup, out, "--max_steps", "2", "--log_with", "wandb"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "log_with 'wandb': the tracker could not start" in proc.stderr
    assert "WANDB_MODE=offline" in proc.stderr and "Traceback" not in proc.stderr
    # nothing of ours left in the folder: no config, metrics, checkpoints or W&B id (a later run starts clean)
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") in ([], ["wandb"])


def test_samples_show_verbatim_in_tensorboard():
    """TensorBoard renders text as Markdown: a sample's `__init__` came out bold and its line breaks vanished."""
    import numpy as np
    from tensorboard.plugins.text.text_plugin import text_array_to_html

    sample = "def __init__(self, *a):\n\n    return <b>x</b>"
    html = text_array_to_html(np.array(as_verbatim_markdown(sample).encode()), True)
    assert html == "<pre><code>def __init__(self, *a):\n\n    return &lt;b&gt;x&lt;/b&gt;\n</code></pre>"


class _FakeAccelerator:
    """What trackers.start / log_texts use of an Accelerator, recording the calls (no tracker package needed)."""

    def __init__(self, log_with):
        self.log_with, self.is_main_process, self.calls = log_with, True, []

    def init_trackers(self, project, config=None, init_kwargs=None):
        self.calls.append(("init_trackers", project, config, init_kwargs))

    def log(self, values, step=None):
        self.calls.append(("log", values, step))


def test_trackio_runs_are_named_after_the_folder_and_a_resumed_session_is_a_run_of_its_own(tmp_path, monkeypatch):
    """trackio cannot take back steps an interrupted session logged after its checkpoint (resuming its run would
    log them twice), so each session is a run of its own in the folder's group, with the run config passed to
    trackio.init (Accelerate's store_init_configuration added an 'allow_val_change' key to it)."""
    from training.trackers import start

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "store"))
    config = {"max_steps": 4, "log_with": "trackio"}
    out = tmp_path / "my-run"
    acc = _FakeAccelerator(["trackio"])
    assert start(acc, config, out, 0) is None and start(acc, config, out, 300) is None
    (_, project, first_config, first), (_, _, again_config, again) = acc.calls
    assert project == "gpt2repro" and first_config is None and again_config is None
    assert first["trackio"] == {"name": "my-run", "group": "my-run", "resume": "never", "config": config}
    assert again["trackio"] == {"name": "my-run-from-step-300", "group": "my-run", "resume": "never",
                                "config": config}


def test_trackio_gets_the_samples_as_markdown(monkeypatch):
    """trackio's dashboard plots numbers and shows trackio.Markdown values (Reports page); a plain string is
    stored but shown nowhere. (A stand-in trackio module: the test must not need trackio installed.)"""
    import sys
    import types

    from training.trackers import log_texts

    class Markdown:
        def __init__(self, text):
            self.text = text

    monkeypatch.setitem(sys.modules, "trackio", types.SimpleNamespace(Markdown=Markdown))
    acc = _FakeAccelerator(["trackio"])
    log_texts(acc, {"samples/0": "def f():\n    return 1"}, 8)
    ((_, values, step),) = acc.calls
    assert step == 8 and list(values) == ["samples/0"] and isinstance(values["samples/0"], Markdown)
    assert values["samples/0"].text == as_verbatim_markdown("def f():\n    return 1")


def test_trackio_banner_says_where_the_data_goes_and_a_store_it_cannot_write_stops_the_run(tmp_path, monkeypatch):
    from training.trackers import describe, start

    for name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "my-run"
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "store"))
    assert describe("trackio", out) == (f"tracker trackio (project gpt2repro, group my-run) -> {tmp_path / 'store'} "
                                        "(trackio show --project gpt2repro)")
    monkeypatch.delenv("TRACKIO_DIR")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # trackio's default: $HF_HOME/trackio
    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(tmp_path / "hf"))
    assert f"-> {tmp_path / 'hf' / 'trackio'} (trackio show" in describe("trackio", out)
    monkeypatch.setenv("TRACKIO_SERVER_URL", "https://example.org/trackio?write_token=secret")
    assert describe("trackio", out).endswith("-> server https://example.org/trackio")  # not the token
    monkeypatch.setenv("TRACKIO_SPACE_ID", "me/board")
    assert describe("trackio", out).endswith("-> Space me/board")

    # trackio itself starts with a store it cannot write, warns at every flush and keeps nothing
    for name in ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(name)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "a-file"))
    acc = _FakeAccelerator(["trackio"])
    message = start(acc, {"max_steps": 4}, out, 0)
    assert acc.calls == [] and message.startswith("log_with 'trackio': the tracker could not start (FileExistsError")
    assert f"its local store is {tmp_path / 'a-file'}: TRACKIO_DIR to write elsewhere" in message
