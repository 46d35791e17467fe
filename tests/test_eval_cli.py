"""The eval/ commands end to end: lm_eval CLI on an export in a fresh process, our CLIs, bad-input messages."""

import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import transformers

from eval.errors import EvalInputError, run_cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 12


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, gpt2_tokenizer):
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
    from test_eval_hellaswag import tiny_model

    path = tmp_path_factory.mktemp("export")
    tiny_model(seed=1).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=REPO_ROOT)


def test_lm_eval_cli_on_export_in_fresh_process_matches_our_scorer(export_dir, tmp_path, shared_data):
    """Must-show 5: `lm_eval --model hf ... trust_remote_code=True --include_path eval/tasks --tasks hellaswag_local`."""
    data = shared_data("hellaswag/hellaswag_val.jsonl")
    out = tmp_path / "lm_eval_out"
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "hf", "--model_args",
           f"pretrained={export_dir},trust_remote_code=True", "--include_path", "eval/tasks",
           "--tasks", "hellaswag_local", "--limit", str(LIMIT), "--batch_size", "8", "--output_path", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = out.rglob("results*.json")
    theirs = json.loads(result_file.read_text())["results"]["hellaswag_local"]

    from eval.hellaswag import HellaSwagScorer
    from eval.load import load_model

    model, tok = load_model(export_dir)
    ours = HellaSwagScorer.from_file(data, tok, limit=LIMIT, max_length=128).evaluate(model)
    assert ours["acc"] == pytest.approx(theirs["acc,none"]) and ours["acc_norm"] == pytest.approx(theirs["acc_norm,none"])


def test_hellaswag_cli_saves_json_beside_model(export_dir, shared_data, capsys):
    from eval.hellaswag import main

    data = shared_data("hellaswag/hellaswag_val.jsonl")
    result = main(["--model", str(export_dir), "--data", str(data), "--limit", "8", "--mc"])
    saved = json.loads((export_dir / "eval_results" / "hellaswag_scorer.json").read_text())
    assert saved["results"] == result and result["n"] == 8
    # what the number was measured with: the original rowanz file (sha256 in ../shared/data/SOURCES.md), versions
    env = saved["environment"]
    assert env["data_sha256"] == "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"
    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT  # ... the published set, by content (model card)

    assert saved["data_fingerprint"] == ORIGINAL_VAL_FINGERPRINT
    assert env["torch"] == torch.__version__ and env["transformers"] == transformers.__version__
    assert {"acc", "acc_norm", "acc_tokennorm", "acc_mc"} <= set(result)
    printed = capsys.readouterr().out
    assert "OpenAI GPT-2 124M: acc 0.2892  acc_norm 0.3114" in printed and "0.2955" in printed


def test_lm_eval_run_in_process_saves_json(export_dir, shared_data, monkeypatch, caplog):
    from eval.lm_eval_run import main

    """Offline through $HELLASWAG_FILE (what --data would name): lm-eval's own task on that file."""
    data = shared_data("hellaswag/hellaswag_val.jsonl")
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("HELLASWAG_FILE", str(data))
    with caplog.at_level(logging.INFO):
        main(["--model", str(export_dir), "--limit", "4", "--batch-size", "8"])
    # no warnings that read as if something were wrong: lm-eval's about the model object we pass (ignored model
    # arguments, one process: both intended), and our task files overriding lm-eval's `multiple_choice` tag
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warned if "not of type `str`" in w or "already-initialized" in w or "overrides" in w], warned
    saved = json.loads((export_dir / "eval_results" / "lm_eval.json").read_text())
    assert saved["data"] == str(data)
    assert saved["environment"]["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert saved["results"]["hellaswag"]["acc,none"] == saved["results"]["hellaswag_local"]["acc,none"]
    from publish.model_card import load_lm_eval_results  # the model card reads this file

    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT

    read_back = load_lm_eval_results(export_dir / "eval_results" / "lm_eval.json")
    assert read_back["n"] == 4 and read_back["data_fingerprint"] == ORIGINAL_VAL_FINGERPRINT
    assert saved["n-shot"]["hellaswag"] == 0
    # few-shot on the local file is refused: lm-eval drew the examples from the validation rows it scores (its
    # hellaswag uses the train split) and the number was filed as "hellaswag"
    with pytest.raises(EvalInputError, match="no train split"):
        main(["--model", str(export_dir), "--limit", "2", "--batch-size", "8", "--num-fewshot", "1"])
    assert json.loads((export_dir / "eval_results" / "lm_eval.json").read_text())["n-shot"]["hellaswag"] == 0


@pytest.mark.parametrize("content,expected", [
    (None, "HellaSwag file not found"),
    ('{"ctx": 1}\n', "line 1: missing field"),
    ('{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "ctx": "b c", "endings": ["x"], "label": 0}\n',
     "line 1: 'endings' must be a list of 4 strings"),
    ("\n" + "not json\n", "line 2: not valid JSON"),
])
def test_bad_hellaswag_file_message_without_traceback(tmp_path, export_dir, capsys, content, expected):
    from eval.hellaswag import main

    path = tmp_path / "hs.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--model", str(export_dir), "--data", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, nothing else (the model is not loaded)
    assert expected in err and str(path) in err


def test_cli_on_missing_model_is_one_line(tmp_path, shared_data):
    data = shared_data("hellaswag/hellaswag_val.jsonl")
    proc = subprocess.run([sys.executable, "-m", "eval.hellaswag", "--model", str(tmp_path / "nope"), "--data", str(data),
                           "--limit", "1"],
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "model path not found" in proc.stderr


def test_hub_default_fails_clearly_offline(export_dir):
    from eval.hellaswag import main

    with pytest.raises(EvalInputError, match="pass --data"):
        main(["--model", str(export_dir), "--limit", "2"])


def test_a_hub_download_is_kept_once_and_shared_by_the_cli_and_training(export_dir, shared_data, monkeypatch,
                                                                        tmp_path, capsys):
    """Rowan/hellaswag (label as a string, as the Hub has it) is written whole to one file; after that neither
    `python -m eval.hellaswag` nor train.py's 'auto' downloads again, offline included."""
    import datasets
    import huggingface_hub.constants

    import publish.hub
    from eval import hellaswag_data
    from eval.hellaswag import main
    from training.evaluator import resolve_hellaswag

    rows = [json.loads(line) for line in shared_data("hellaswag/hellaswag_val.jsonl").open()][:3]
    hub_rows = datasets.Dataset.from_list([{**row, "label": str(row["label"])} for row in rows])
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return hub_rows

    kept = tmp_path / "hf_home" / "gpt2repro" / "hellaswag_val.jsonl"
    monkeypatch.setattr(hellaswag_data, "downloaded_file", lambda: kept)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(publish.hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    first = main(["--model", str(export_dir), "--output", str(tmp_path / "r1.json")])
    assert calls == [("Rowan/hellaswag", "validation")] and first["n"] == 3
    assert [p.name for p in kept.parent.iterdir()] == ["hellaswag_val.jsonl"]  # no partial file left
    assert json.loads((tmp_path / "r1.json").read_text())["data"] == str(kept)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    again = main(["--model", str(export_dir), "--output", str(tmp_path / "r2.json")])
    assert again == first and resolve_hellaswag("auto", log=pytest.fail) == str(kept)
    assert len(calls) == 1


def test_hub_default_without_network_fails_at_once_without_offline_mode(export_dir, monkeypatch):
    """No network and HF_HUB_OFFLINE unset: the message comes from the reachability check, before datasets spends
    its retries; it names both ways out."""
    import datasets
    import huggingface_hub.constants

    import publish.hub
    from eval.hellaswag import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(publish.hub, "hub_reachable", lambda timeout=3.0: False)

    def no_download(*args, **kwargs):
        raise AssertionError("load_dataset called although the Hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    with pytest.raises(EvalInputError, match="could not reach huggingface.co.*HF_HUB_OFFLINE=1.*--data"):
        main(["--model", str(export_dir), "--limit", "2"])


def test_lm_eval_task_without_local_data_fails_clearly_offline(export_dir, monkeypatch, tmp_path):
    """A task whose dataset is on the Hub (arc_easy), offline: one message that says what to do, not a
    ConnectionError traceback."""
    from eval.lm_eval_run import main

    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # empty caches: a copy of arc_easy cached by an earlier online run must not make this pass for another reason
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HELLASWAG_FILE", str(tmp_path / "gone.jsonl"))  # a HellaSwag setting: not this task's
    with pytest.raises(EvalInputError, match="Hub is not reachable.*--data"):
        main(["--model", str(export_dir), "--tasks", "arc_easy", "--limit", "2"])


def test_a_stale_hellaswag_file_variable_is_named_in_the_message(export_dir, tmp_path, monkeypatch):
    from eval.hellaswag import main

    monkeypatch.setenv("HELLASWAG_FILE", str(tmp_path / "gone.jsonl"))
    with pytest.raises(EvalInputError, match=r"\$HELLASWAG_FILE is .*gone.jsonl', which is not a file"):
        main(["--model", str(export_dir), "--limit", "2"])


def test_eval_commands_take_the_underscore_spelling_of_their_flags(export_dir, capsys):
    """train.py's flags are --max_new_tokens style; the eval commands' are --max-new-tokens: both work."""
    from eval.errors import hyphenated
    from eval.sample import main

    assert hyphenated(["--max_new_tokens", "4", "--prompt=a_b", "--top_k=5", "x_y"]) == [
        "--max-new-tokens", "4", "--prompt=a_b", "--top-k=5", "x_y"]  # values stay as they are
    main(["--model", str(export_dir), "--num_samples", "1", "--max_new_tokens", "3"])
    assert "Hello, I'm a language model," in capsys.readouterr().out


COMMANDS = {  # module -> the extra arguments it needs to reach its --output check
    "eval.hellaswag": lambda data: ["--data", str(data), "--limit", "2"],
    "eval.val_loss": lambda data: ["--data", str(data.parent)],
    "eval.lm_eval_run": lambda data: ["--data", str(data), "--limit", "2"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("output", ["model.safetensors", "config.json", "new_file.json", "sub/x.json", ".", "DATA"])
def test_output_that_would_overwrite_the_model_or_the_data_is_refused(export_dir, tmp_path, shared_data, capsys,
                                                                       command, output):
    """`--output E/model.safetensors` used to replace the weights with a JSON file (rc 0). Inside the model folder
    only its eval_results/ may be written; an existing directory and the input data are refused too; nothing is
    written, before any work."""
    import importlib
    import shutil

    model = tmp_path / "E"
    shutil.copytree(export_dir, model)
    data = tmp_path / "hs" / "hellaswag_val.jsonl"
    data.parent.mkdir()
    shutil.copy(shared_data("hellaswag/hellaswag_val.jsonl"), data)
    def files():
        return {p: p.read_bytes() for p in [*model.rglob("*"), data] if p.is_file()}

    before = files()
    target = data if output == "DATA" else model / output
    main = importlib.import_module(command).main
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--model", str(model), *COMMANDS[command](data), "--output", str(target)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output ") and err.count("\n") == 1, err
    assert files() == before
    assert not (model / "sub").exists() and not (model / "new_file.json").exists()


def test_output_check_allows_eval_results_and_guards_a_run_folder(tmp_path, export_dir):
    """An export may be written under its eval_results/; a run's checkpoint under <run>/eval_results/step_N/ or as
    a file directly in <run>/eval_results/ (anywhere else in the run folder: a checkpoint, its checksums,
    run_config.yaml, metrics.jsonl or another step's results, which its export would report)."""
    import shutil

    from eval.load import output_path

    assert output_path(export_dir, None, "x.json") == export_dir / "eval_results" / "x.json"
    mine = export_dir / "eval_results" / "mine.json"
    assert output_path(export_dir, str(mine), "x.json") == mine
    assert output_path(export_dir, str(tmp_path / "elsewhere.json"), "x.json") == tmp_path / "elsewhere.json"
    with pytest.raises(EvalInputError, match=f"--output {tmp_path} is a directory: pass a file path such as"):
        output_path(export_dir, str(tmp_path), "x.json")
    with pytest.raises(EvalInputError, match="is a file, not a folder"):
        output_path(export_dir, str(export_dir / "config.json" / "x.json"), "x.json")

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000100"
    shutil.copytree(export_dir, ckpt / "model", ignore=shutil.ignore_patterns("eval_results"))
    (ckpt / "COMPLETE").touch()
    (run / "metrics.jsonl").write_text("{}\n")
    model_dir = ckpt / "model"
    for ok in (run / "eval_results" / "step_00000100" / "y.json", run / "eval_results" / "full_hellaswag.json"):
        assert output_path(model_dir, str(ok), "x.json") == ok
    for bad in (model_dir / "eval_results" / "y.json", ckpt / "y.json", run / "metrics.jsonl", run / "y.json",
                run / "eval_results" / "step_00000050" / "y.json"):  # another step's results, read by its export
        # the message names both places a file may go
        with pytest.raises(EvalInputError, match=f"inside the run folder {run}.*eval_results/step_00000100/ or "
                                                 f"directly in {run}/eval_results/ "):
            output_path(model_dir, str(bad), "x.json")


@pytest.mark.parametrize("change,expected", [
    ({"label": 7}, "line 2: 'label' must be 0..3, got 7"),
    ({"endings": ["a", "b"]}, "line 2: 'endings' must be a list of 4 strings"),
])
def test_lm_eval_run_refuses_a_malformed_hellaswag_file(export_dir, tmp_path, shared_data, capsys, change, expected):
    """A row with label 7 was scored by lm-eval as a wrong answer (acc 0, rc 0); now the file is checked as
    eval.hellaswag checks it, before the model is loaded, and nothing is written."""
    from eval.lm_eval_run import main

    rows = [json.loads(line) for line in shared_data("hellaswag/hellaswag_val.jsonl").open()][:3]
    rows[1].update(change)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "lm_eval.json"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--model", str(export_dir), "--data", str(path), "--limit", "3", "--output", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err and str(path) in err
    assert not out.exists()


@pytest.mark.parametrize("encode", ["utf-16", "binary"])
def test_a_hellaswag_file_that_is_not_utf8_is_a_message(export_dir, tmp_path, shared_data, capsys, encode):
    """A UTF-16 or binary file gave a UnicodeDecodeError traceback from read_hellaswag (also train.py's
    --hellaswag_file, so the message names the file, not --data)."""
    from eval.hellaswag import main
    from eval.hellaswag_data import read_hellaswag

    text = "".join(shared_data("hellaswag/hellaswag_val.jsonl").open().readlines()[:2])
    path = tmp_path / "hs.jsonl"
    path.write_bytes(text.encode("utf-16") if encode == "utf-16" else bytes(range(255, -1, -1)) * 4)
    with pytest.raises(EvalInputError, match="line 1: not UTF-8 text") as err:
        read_hellaswag(path)
    assert str(path) in str(err.value) and "--data" not in str(err.value)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--model", str(export_dir), "--data", str(path)])
    assert exit_info.value.code == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"error: {path}, line 1: not UTF-8 text") and printed.count("\n") == 1


@pytest.mark.parametrize("command,flag,value,expected", [
    ("eval.hellaswag", "--batch-size", "0", "must be an integer >= 1, got 0"),
    ("eval.hellaswag", "--limit", "0", "must be an integer >= 1, got 0"),  # was a ValueError traceback (no rows)
    ("eval.hellaswag", "--limit", "-2", "must be an integer >= 1, got -2"),  # scored all rows but the last 2
    ("eval.val_loss", "--batch-size", "0", "must be an integer >= 1, got 0"),
    ("eval.val_loss", "--max-tokens", "0", "must be an integer >= 1, got 0"),  # was taken as "the default"
    ("eval.val_loss", "--seq-len", "0", "must be an integer >= 1, got 0"),  # was taken as "the default"
    ("eval.val_loss", "--seq_len", "-3", "must be an integer >= 1, got -3"),
    ("eval.lm_eval_run", "--batch-size", "abc", "expected an integer >= 1 or 'auto', got 'abc'"),
    ("eval.lm_eval_run", "--batch-size", "0", "expected an integer >= 1 or 'auto', got '0'"),
    ("eval.lm_eval_run", "--limit", "0", "must be an integer >= 1, got 0"),  # lm-eval: "did not find any docs"
    ("eval.lm_eval_run", "--limit", "-1", "must be an integer >= 1, got -1"),  # lm-eval: an islice traceback
    ("eval.lm_eval_run", "--num-fewshot", "-1", "must be an integer >= 0, got -1"),  # was run, filed as "-1-shot"
    ("eval.sample", "--top-k", "0", "must be an integer >= 1, got 0"),  # accepted; train.py refuses sample_top_k 0
    ("eval.sample", "--num-samples", "0", "must be an integer >= 1, got 0"),
    ("eval.sample", "--seed", "99999999999999999999", "must be in [-2**63, 2**63)"),  # "Overflow when unpacking"
    ("eval.sample", "--seed", "-99999999999999999999", "must be in [-2**63, 2**63)"),
    ("eval.sample", "--max-new-tokens", "0", "must be an integer >= 1, got 0"),
])
def test_sizes_below_one_are_refused_before_any_work(tmp_path, capsys, command, flag, value, expected):
    """`--batch-size 0` gave a ValueError traceback, `--batch-size abc` (lm_eval_run) an int() traceback, and
    val_loss took `--max-tokens 0` / `--seq-len 0` as "not given"; now argparse says which flag is wrong."""
    import importlib

    main = importlib.import_module(command).main
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--model", str(tmp_path / "nope"), "--data", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag.replace('_', '-')}: {expected}" in err and "Traceback" not in err


@pytest.mark.parametrize("tasks", ["", ",", " , "])
def test_lm_eval_run_without_a_task_name_is_a_message(export_dir, tasks):
    """`--tasks ""` reached lm-eval, which raised "No tasks specified" with a traceback after loading the model."""
    from eval.lm_eval_run import main

    with pytest.raises(EvalInputError, match="names no task"):
        main(["--model", str(export_dir), "--tasks", tasks])


def test_lm_eval_batch_size_takes_auto_or_a_positive_int():
    from eval.errors import positive_int_or_auto

    assert positive_int_or_auto("auto") == "auto" and positive_int_or_auto("8") == 8


def test_bf16_on_a_cpu_is_recorded_as_not_used(export_dir, tmp_path, shared_data, capsys, monkeypatch):
    """--bf16 is CUDA only: on a CPU the scores are fp32, so the saved JSON said "bf16": true for a run without
    it. It now records what ran and says the flag was ignored."""
    import torch

    from eval.hellaswag import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "hs.json"
    main(["--model", str(export_dir), "--data", str(shared_data("hellaswag/hellaswag_val.jsonl")), "--limit", "2",
          "--bf16", "--output", str(out)])
    assert json.loads(out.read_text())["bf16"] is False
    notes = [line for line in capsys.readouterr().out.splitlines() if "--bf16" in line]
    assert notes == ["note: --bf16 ignored: bf16 autocast is CUDA only; scoring in fp32 on cpu"]


@pytest.fixture(scope="module")
def short_context_export(tmp_path_factory, gpt2_tokenizer):
    """A tiny export with 64 positions: HellaSwag example 581 has a 72-token ending (cloze form), longer."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    path = tmp_path_factory.mktemp("ctx64")
    GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("command", ["eval.hellaswag", "eval.lm_eval_run"])
def test_an_ending_longer_than_the_context_is_a_message(short_context_export, shared_data, tmp_path, capsys,
                                                        command):
    """A model with fewer positions than a HellaSwag ending has tokens ended in a ValueError traceback from the
    scorer (eval.hellaswag, and train.py at start-up) or a bare AssertionError inside lm-eval (eval.lm_eval_run)."""
    import importlib

    main = importlib.import_module(command).main
    data = shared_data("hellaswag/hellaswag_val.jsonl")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--model", str(short_context_export), "--data", str(data), "--limit", "600",
                       "--output", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: HellaSwag example 581 has an ending of 72 tokens" in err and "--limit" in err
    assert not (tmp_path / "out.json").exists()


def test_other_lm_eval_tasks_leave_the_hellaswag_results_in_place(export_dir, shared_data, tmp_path):
    """Both runs wrote <model>/eval_results/lm_eval.json: running another task list after HellaSwag replaced the
    HellaSwag results, the ones export puts into the model card."""
    import shutil

    from eval.lm_eval_run import main

    model = tmp_path / "export"
    shutil.copytree(export_dir, model, ignore=shutil.ignore_patterns("eval_results"))
    data = str(shared_data("hellaswag/hellaswag_val.jsonl"))
    main(["--model", str(model), "--data", data, "--limit", "2"])
    main(["--model", str(model), "--data", data, "--limit", "2", "--tasks", "hellaswag_mc_local"])
    assert "hellaswag" in json.loads((model / "eval_results" / "lm_eval.json").read_text())["results"]
    other = json.loads((model / "eval_results" / "lm_eval_hellaswag_mc_local.json").read_text())
    assert list(other["results"]) == ["hellaswag_mc_local"]
    from eval.lm_eval_run import results_file

    # --mc adds hellaswag_mc to a list without hellaswag: the name says the file holds it
    assert results_file(["arc_easy"], mc=True) == "lm_eval_arc_easy+hellaswag_mc.json"
    assert results_file(["hellaswag"], mc=True) == results_file(["hellaswag_local"]) == "lm_eval.json"


def test_a_first_example_too_long_suggests_no_limit(shared_data, gpt2_tokenizer):
    from eval.hellaswag import HellaSwagScorer
    from eval.hellaswag_data import read_hellaswag

    examples = read_hellaswag(shared_data("hellaswag/hellaswag_val.jsonl"), limit=2)
    with pytest.raises(EvalInputError, match="HellaSwag example 1 has an ending") as err:
        HellaSwagScorer(examples, gpt2_tokenizer, max_length=4, formulations=("cloze",))
    assert "first 0 examples" not in str(err.value) and "--hellaswag_file off" in str(err.value)


def _unreadable(monkeypatch, path):
    """`path` raises PermissionError when opened, as a file of another user does (the tests may run as root)."""
    from pathlib import Path

    real_open = Path.open

    def guarded(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)


def test_an_unreadable_hellaswag_file_is_a_message(export_dir, tmp_path, shared_data, capsys, monkeypatch):
    """A HellaSwag file that exists but cannot be read (permissions, an I/O error) gave a PermissionError
    traceback from read_hellaswag, in eval.hellaswag and on train.py's main process (the known case); a folder
    given for the file was said to be "not found". Now both are one `error:` line naming the file, exit 2."""
    from eval.hellaswag import main

    path = tmp_path / "hs.jsonl"
    path.write_text("".join(shared_data("hellaswag/hellaswag_val.jsonl").open().readlines()[:2]))
    _unreadable(monkeypatch, path)
    for data, expected in ((path, f"error: could not read the HellaSwag file {path} (Permission denied)"),
                           (tmp_path, f"error: {tmp_path} is a folder, not a HellaSwag file")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, ["--model", str(export_dir), "--data", str(data), "--output", str(tmp_path / "o.json")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "o.json").exists()


def test_an_unreadable_hellaswag_file_is_refused_by_train_on_every_rank(tmp_path, monkeypatch):
    """train.py's Evaluator reads hellaswag_file on the main process and sends a problem to every rank; a
    PermissionError escaped it there alone (a traceback, the other ranks waiting in the broadcast)."""
    from types import SimpleNamespace

    from training.evaluator import Evaluator
    from training.run_config import RunConfig

    path = tmp_path / "hs.jsonl"
    path.write_text("{}\n")
    _unreadable(monkeypatch, path)
    one_process = SimpleNamespace(is_main_process=True, num_processes=1)
    with pytest.raises(EvalInputError, match=rf"could not read the HellaSwag file {path} \(Permission denied\)"):
        Evaluator(RunConfig(hellaswag_file=str(path)), one_process, tokenizer=None, log=print)


def test_a_hub_download_that_cannot_be_saved_is_a_message(tmp_path, monkeypatch):
    """The Rowan/hellaswag download is written to $HF_HOME/gpt2repro/: a read-only or full disk there raised
    OSError from find_hellaswag_file (train.py: on its main process alone) instead of the 'HellaSwag skipped'
    line; no partial file is left."""
    import sys
    import types

    from eval import hellaswag_data
    from training.evaluator import resolve_hellaswag

    class Rows:
        def to_json(self, path, lines):
            with open(path, "w") as f:
                f.write("{")
            raise OSError(28, "No space left on device")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: Rows()))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    target = tmp_path / "home" / "gpt2repro" / "hellaswag_val.jsonl"
    monkeypatch.setattr(hellaswag_data, "downloaded_file", lambda: target)
    lines = []
    assert resolve_hellaswag("auto", log=lines.append) is None
    assert len(lines) == 1 and f"could not save Rowan/hellaswag to {target} (No space left on device)" in lines[0]
    assert list(target.parent.iterdir()) == []


def test_a_full_disk_keeps_the_earlier_result_whole_and_says_so(tmp_path, monkeypatch, capsys):
    """eval.hellaswag wrote its JSON in place: a full disk left a 0-byte file where the earlier result was, after a
    traceback (bad-input audit, on a small tmpfs). The write fails here as ENOSPC does, at the fsync."""
    import errno

    from data import shards
    from eval.errors import run_cli
    from eval.hellaswag import save_results

    (tmp_path / "config.json").write_text("{}")  # a model folder, for the record's "model"
    out = tmp_path / "hellaswag_scorer.json"
    out.write_text('{"earlier": true}\n')

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.os, "fsync", full_disk)
    result = {"n": 1, "acc": 0.25, "acc_norm": 0.25}
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda argv: save_results(tmp_path, result, data="x.jsonl", limit=None, output=out,
                                          data_fingerprint="f" * 64))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: could not write {out}: No space left on device (" in err and "GB free there)" in err
    assert out.read_text() == '{"earlier": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", out.name]  # no staging file left

    def read_only(fd):  # a file system mounted read-only: no space to free, another place to choose
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(shards.os, "fsync", read_only)
    with pytest.raises(SystemExit):
        run_cli(lambda argv: save_results(tmp_path, result, data="x.jsonl", limit=None, output=out,
                                          data_fingerprint="f" * 64))
    assert capsys.readouterr().err == (f"error: could not write {out}: Read-only file system: choose a location on a "
                                       "writable file system\n")
