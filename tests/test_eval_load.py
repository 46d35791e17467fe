"""eval.load.load_model on export / checkpoint / run folders, and clear errors for bad model folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval.errors import EvalInputError
from eval.load import load_model, resolve_model_dir

REPO = Path(__file__).resolve().parents[1]


def _tiny(seed=0):
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(seed)
    return GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128)).eval()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, gpt2_tokenizer):
    path = tmp_path_factory.mktemp("export")
    _tiny().save_pretrained(path)
    gpt2_tokenizer.save_pretrained(path)
    return path


def test_export_folder_loads_fp32_eval_same_logits(export_dir):
    model, tok = load_model(export_dir)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    x = torch.tensor([tok.encode("Hello, I'm a language model,")])
    torch.testing.assert_close(model(input_ids=x).logits, _tiny()(input_ids=x).logits)
    assert len(tok) == 50257


def test_run_folder_uses_newest_complete_checkpoint(tmp_path, export_dir):
    import shutil

    for step, complete in ((100, True), (200, True), (300, False)):
        ckpt = tmp_path / "checkpoints" / f"step_{step:08d}"
        shutil.copytree(export_dir, ckpt / "model")
        if complete:
            (ckpt / "COMPLETE").touch()
    assert resolve_model_dir(tmp_path) == tmp_path / "checkpoints" / "step_00000200" / "model"
    assert resolve_model_dir(tmp_path / "checkpoints" / "step_00000100") == tmp_path / "checkpoints" / "step_00000100" / "model"
    # results of a checkpoint go to the run's eval_results/step_N/, not inside the checkpoint (where keep_last
    # would delete them); an export keeps its own eval_results/
    from eval.load import results_path

    assert results_path(tmp_path, "x.json") == tmp_path / "eval_results" / "step_00000200" / "x.json"
    assert results_path(tmp_path / "checkpoints" / "step_00000100" / "model", "x.json") == \
        tmp_path / "eval_results" / "step_00000100" / "x.json"
    assert results_path(export_dir, "x.json") == export_dir / "eval_results" / "x.json"


def test_folder_without_tokenizer_falls_back_for_our_config(tmp_path, capsys):
    _tiny().save_pretrained(tmp_path)
    _, tok = load_model(tmp_path)
    assert len(tok) == 50257 and "no tokenizer files" in capsys.readouterr().out


def test_stock_gpt2_without_tokenizer_is_an_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(tmp_path)
    with pytest.raises(EvalInputError, match="no tokenizer"):
        load_model(tmp_path)


def test_a_tokenizer_that_does_not_fit_the_model_is_an_error(tmp_path, export_dir, gpt2_tokenizer):
    """A malformed tokenizer.json raised TypeError from the tokenizers library (caught were OSError and
    ValueError: a traceback from every eval command), and a tokenizer with more ids than the model has
    embedding rows loaded, then failed at the first forward with IndexError."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    tok = json.loads((broken / "tokenizer.json").read_text())
    tok["model"]["merges"] = 5
    (broken / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(EvalInputError, match=f"could not load the tokenizer in {broken}"):
        load_model(broken)
    small = tmp_path / "small"
    GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(small)
    gpt2_tokenizer.save_pretrained(small)
    with pytest.raises(EvalInputError, match=f"{small}: its tokenizer has 50,257 ids but the model only 1,000 "):
        load_model(small)


@pytest.mark.parametrize("case", ["missing", "no_config", "bad_json", "other_arch", "wrong_weights", "empty_run",
                                  "run_before_its_first_save", "truncated_weights", "garbled_weights",
                                  "empty_weights"])
def test_bad_model_folders_give_clear_errors(tmp_path, export_dir, case):
    import shutil

    expected = {"missing": "not found", "no_config": "no config.json", "bad_json": "not valid JSON",
                "other_arch": "'llama' model", "wrong_weights": "another architecture",
                "empty_run": "without a complete checkpoint",
                "run_before_its_first_save": "a run folder without a complete checkpoint",
                }.get(case, "weights file model.safetensors is damaged")
    path = tmp_path / "m"
    if case == "no_config":
        path.mkdir()
    elif case == "bad_json":
        path.mkdir()
        (path / "config.json").write_text("{not json")
    elif case == "other_arch":
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    elif case == "wrong_weights":  # our config, weights of a different shape
        shutil.copytree(export_dir, path)
        config = json.loads((path / "config.json").read_text())
        config["n_embd"] = 128
        (path / "config.json").write_text(json.dumps(config))
    elif case == "empty_run":
        (path / "checkpoints" / "step_00000010").mkdir(parents=True)
    elif case == "run_before_its_first_save":  # stopped before checkpoints/ was made: was "has no config.json"
        path.mkdir()
        (path / "run_config.yaml").write_text("max_steps: 10\n")
        (path / "metrics.jsonl").write_text("")
    elif case.endswith("_weights"):  # a copy cut short, overwritten by something else, or empty
        shutil.copytree(export_dir, path)
        weights = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes({"truncated_weights": weights[:len(weights) // 2],
                                                  "garbled_weights": weights[:8] + b"x" * 64 + weights[72:],
                                                  "empty_weights": b""}[case])
    with pytest.raises(EvalInputError, match=expected) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_a_mistyped_relative_path_is_not_reported_as_a_hub_problem(tmp_path, monkeypatch):
    """`--model runs/demoo` (a typo of a local run folder) has the form of a Hub id; offline the message said only
    "could not get runs/demoo from the Hub: We couldn't connect to 'https://huggingface.co'", a network problem."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    # runs/ is a folder here: a local path, refused at once (no Hub request: offline, huggingface_hub retried for
    # ~30 s before the message)
    import transformers

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(EvalInputError, match=r"model path not found: runs/demoo \(runs/ holds no demoo"):
        load_model("runs/demoo")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalInputError, match="nuns/demo is not a local folder .*check it"):  # no such folder: Hub
        load_model("nuns/demo")
    # a Hub model whose owner is also a folder name here is still a Hub id when the Hub cache holds it
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo_id, filename: f"/cache/{repo_id}/{filename}" if repo_id == "runs/model" else None)
    assert resolve_model_dir("runs/model") == "runs/model"
    with pytest.raises(EvalInputError, match="model path not found: runs/demoo"):
        resolve_model_dir("runs/demoo")


def test_a_short_hub_name_is_answered_with_the_full_id(tmp_path, monkeypatch):
    """build-nanogpt's `-m gpt2` given as --model gpt2 was told only to check the name of a local folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvalInputError, match=r"model path not found: gpt2 .*pass its full id: openai-community/gpt2$"):
        resolve_model_dir("gpt2")
    with pytest.raises(EvalInputError, match=r"model path not found: mymodel .*full id, 'owner/name'$"):
        resolve_model_dir("mymodel")


def test_cli_output_prints_our_warnings_as_one_line_and_hides_progress_bars():
    """A damaged checkpoint skipped by eval/export was reported as Python's `file:line: UserWarning: ...` plus the
    source line, and every model load drew a 'Loading weights' bar. Run as a command (pytest records warnings
    instead of printing them)."""
    code = ("import warnings\n"
            "from transformers.utils import logging as hf_logging\n"
            "from eval.errors import cli_output\n"
            "with cli_output():\n"
            "    exec(compile('import warnings; warnings.warn(\"checkpoint step_00000008 is unusable\")',"
            " 'eval/load.py', 'exec'))\n"
            "    warnings.warn_explicit(\"a library's warning\", UserWarning, '/elsewhere/lib.py', 7)\n"
            "    assert not hf_logging.is_progress_bar_enabled()\n"
            "assert hf_logging.is_progress_bar_enabled()\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: checkpoint step_00000008 is unusable\n" in done.stderr
    assert "eval/load.py" not in done.stderr and "warnings.warn(" not in done.stderr
    assert "/elsewhere/lib.py:7: UserWarning: a library's warning" in done.stderr  # others as Python prints them


def test_cli_output_keeps_recorded_warnings_library_warnings_and_progress_bar_state(tmp_path, monkeypatch):
    """cli_output replaced warnings.showwarning, so a project warning inside it bypassed pytest.warns /
    catch_warnings(record=True); it took every UserWarning under the repository for its own, also those of the
    libraries in a `.venv` there (where scripts/setup.sh puts it); and it turned progress bars on at the end
    even when they had been off (HF_HUB_DISABLE_PROGRESS_BARS=1: huggingface_hub then warned on every exit)."""
    import warnings

    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    import eval.errors
    from eval.errors import cli_output

    with pytest.warns(UserWarning, match="unusable"), cli_output():  # as around run_cli(main, argv)
        exec(compile("import warnings; warnings.warn('step_00000008 is unusable')", eval.errors.__file__, "exec"))

    repo = tmp_path / "repo"
    ours, lib = repo / "eval" / "x.py", repo / ".venv" / "lib" / "python3" / "site-packages" / "lib" / "x.py"
    for f in (ours, lib):
        f.parent.mkdir(parents=True)
        f.write_text("")
    monkeypatch.setattr(eval.errors, "REPO_ROOT", repo)
    with cli_output():
        assert warnings.formatwarning("ours", UserWarning, str(ours), 1) == "warning: ours\n"
        assert "x.py:1: UserWarning: theirs" in warnings.formatwarning("theirs", UserWarning, str(lib), 1)

    were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with cli_output():
            pass
        assert not hf_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
    finally:
        if were_on:
            hf_logging.enable_progress_bar()


def test_results_that_cannot_be_written_are_refused_before_the_work(tmp_path, export_dir, monkeypatch):
    """A read-only model folder (a shared export) failed only when the results were saved, after all the scoring."""
    import os

    from eval.load import output_path

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == export_dir else real_access(path, mode))
    with pytest.raises(EvalInputError, match=f"{export_dir} is not writable; pass --output PATH"):
        output_path(export_dir, None, "val_loss.json")  # <export>/eval_results/ does not exist yet: the export
    assert output_path(export_dir, tmp_path / "elsewhere" / "r.json", "val_loss.json") == tmp_path / "elsewhere" / "r.json"
