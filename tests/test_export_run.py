"""A tiny trained run, exported in both formats: loads in a fresh offline process (remote code for ours, stock
GPT2LMHeadModel for `--format gpt2`) and generates; the model card parses and carries the numbers of the
exported step; the plots exist; the dry run lists the folder; the real push fails cleanly here."""

import json
import re
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors import safe_open

import export as export_cli
from publish.export_model import export_model, not_written_by_export
from publish.metrics import load_metrics
from publish.plots import make_figure
from publish.model_card import METRIC_ACC, METRIC_ACC_NORM, METRIC_ACC_TOKENNORM, METRIC_VAL_LOSS
from build_nanogpt_checkpoint import save_checkpoint
from publish_run_fixture import SAVE_AT, UNCOMMITTED, hellaswag_fixture, make_tiny_run

FIRST, LAST = SAVE_AT  # committed checkpoints: the run's newest is exported as ours, the first as gpt2

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel
    ours_dir, stock_dir, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out = {}
    for key, folder in (("ours", ours_dir), ("stock", stock_dir)):
        if key == "ours":
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        else:
            model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(folder)
            out["stock_auto_class"] = type(AutoModelForCausalLM.from_pretrained(folder)).__name__
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor(ids)).logits[..., :50257]
        torch.manual_seed(0)
        prompt = tok("Hello, I'm a language model,", return_tensors="pt")
        sampled = model.generate(**prompt, max_new_tokens=12)  # generation_config.json: top-k 50 sampling
        out[key] = {"module": type(model).__module__, "logprobs": torch.log_softmax(logits, -1).flatten().tolist(),
                    "text": tok.decode(sampled[0]), "new_tokens": sampled.shape[1] - prompt.input_ids.shape[1],
                    "top_k": model.generation_config.top_k, "do_sample": model.generation_config.do_sample}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    ours = export_model(tiny_run, root / "tiny-gpt2repro", repo_id="me/tiny-gpt2repro")
    stock = export_model(tiny_run / "checkpoints" / f"step_{FIRST:08d}", root / "tiny-gpt2", format="gpt2",
                         dtype="bfloat16")
    return ours, stock


def source_logprobs(tiny_run, step, ids, dtype=torch.float32):
    from modeling_gpt2repro import GPT2ReproForCausalLM

    model = GPT2ReproForCausalLM.from_pretrained(tiny_run / "checkpoints" / f"step_{step:08d}" / "model",
                                                 dtype=torch.float32).eval()
    model = model.to(dtype).to(torch.float32)  # the export's rounding, computed in fp32
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[..., :50257], -1).flatten()


def test_export_folders_hold_the_promised_files(exports):
    ours, stock = exports
    assert ours.step == LAST  # the newest COMPLETE checkpoint; the later UNCOMMITTED one has no COMPLETE
    assert stock.step == FIRST
    common = {"README.md", "config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "vocab.json", "merges.txt", "plots/loss.png", "plots/hellaswag.png",
              "logs/metrics.jsonl", "logs/run_config.yaml"}
    assert set(ours.files) == common | {"configuration_gpt2repro.py", "modeling_gpt2repro.py"}
    assert set(stock.files) == common
    config = json.loads((ours.out_dir / "config.json").read_text())
    assert config["model_type"] == "gpt2repro" and "AutoModelForCausalLM" in config["auto_map"]
    stock_config = json.loads((stock.out_dir / "config.json").read_text())
    assert stock_config["model_type"] == "gpt2" and "auto_map" not in stock_config
    assert stock_config["vocab_size"] == 50257
    with safe_open(stock.out_dir / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    with safe_open(ours.out_dir / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    umask = os.umask(0)
    os.umask(umask)
    for export in (ours, stock):
        modes = {f: (export.out_dir / f).stat().st_mode & 0o777 for f in export.files}
        assert set(modes.values()) == {0o666 & ~umask}, modes  # the weights too (transformers writes them 0600)
        generation = json.loads((export.out_dir / "generation_config.json").read_text())
        assert generation["do_sample"] is True and generation["top_k"] == 50 and generation["eos_token_id"] == 50256
        # no length: a saved max_new_tokens would override every caller's max_length (lm-eval passes max_length)
        assert "max_new_tokens" not in generation and "max_length" not in generation
        # truncation=True cuts at the model's context, not at GPT-2's 1024
        tokenizer_config = json.loads((export.out_dir / "tokenizer_config.json").read_text())
        assert tokenizer_config["model_max_length"] == config["n_positions"] < 1024
    from data.tokenizer import gpt2_tokenizer

    assert gpt2_tokenizer().model_max_length == 1024  # the process-wide cached tokenizer is left as it was


def test_exports_load_and_generate_in_a_fresh_offline_process(exports, tiny_run, tmp_path):
    ours, stock = exports
    ids = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(3))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(ours.out_dir), str(stock.out_dir), json.dumps(ids.tolist())],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[y/N]" not in result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ours"]["module"].startswith("transformers_modules")  # the exported code ran, not ours
    assert out["stock"]["module"] == "transformers.models.gpt2.modeling_gpt2"
    assert out["stock_auto_class"] == "GPT2LMHeadModel"  # no remote code anywhere
    got = torch.tensor(out["ours"]["logprobs"])
    assert (got - source_logprobs(tiny_run, LAST, ids)).abs().max() < 1e-5
    got = torch.tensor(out["stock"]["logprobs"])
    assert (got - source_logprobs(tiny_run, FIRST, ids, torch.bfloat16)).abs().max() < 1e-3
    for key in ("ours", "stock"):
        assert out[key]["top_k"] == 50 and out[key]["do_sample"] is True
        assert out[key]["new_tokens"] > 0 and out[key]["text"].startswith("Hello, I'm a language model,")


def card_metrics(folder):
    card = ModelCard.load(folder / "README.md")
    return card, {result.metric_name: result for result in card.data.eval_results}


def test_model_card_parses_and_reads_back_the_numbers_of_the_exported_step(exports, tiny_run):
    ours, stock = exports
    val = dict(load_metrics(tiny_run).val_loss)
    for export, step in ((ours, LAST), (stock, FIRST)):
        card, metrics = card_metrics(export.out_dir)
        expected = hellaswag_fixture(step)
        assert metrics[METRIC_ACC].metric_value == expected["acc"]
        assert metrics[METRIC_ACC_NORM].metric_value == expected["acc_norm"]
        assert metrics[METRIC_ACC_TOKENNORM].metric_value == expected["acc_tokennorm"]
        assert metrics[METRIC_ACC].dataset_type == "Rowan/hellaswag"
        assert metrics[METRIC_ACC].dataset_args == {"num_fewshot": 0, "limit": 40}  # a subset: said so
        assert metrics[METRIC_ACC].dataset_name == "HellaSwag (first 40 of 10,042 examples)"  # where the Hub shows it
        assert metrics[METRIC_VAL_LOSS].metric_value == round(val[step], 4)
        assert card.data.license == "mit" and card.data.library_name == "transformers"
        assert card.data.datasets == ["HuggingFaceFW/fineweb-edu"] and card.data.base_model is None
        assert f"at step {step}" in card.text and "![train and validation loss](plots/loss.png)" in card.text
    assert "custom_code" in card_metrics(ours.out_dir)[0].data.tags
    assert 'from_pretrained("me/tiny-gpt2repro", trust_remote_code=True)' in card_metrics(ours.out_dir)[0].text
    assert "GPT2LMHeadModel.from_pretrained" in card_metrics(stock.out_dir)[0].text


def test_evaluations_run_after_training_reach_the_model_card(tiny_run, tmp_path):
    """A run that measured no HellaSwag in training, scored afterwards with eval.hellaswag (and lm-eval): the
    export of that checkpoint reports both, and says where they come from."""
    import shutil

    from eval.hellaswag import save_results

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["type"] != "hellaswag"))
    scored = {"acc": 0.26, "acc_norm": 0.27, "acc_tokennorm": 0.28, "n": 100}
    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT

    saved = save_results(run, scored, data="hellaswag_val.jsonl", limit=100, data_fingerprint=ORIGINAL_VAL_FINGERPRINT)
    assert saved == run / "eval_results" / f"step_{LAST:08d}" / "hellaswag_scorer.json"
    card = (export_model(run, tmp_path / "export").out_dir / "README.md").read_text()
    assert f"eval.hellaswag on checkpoint step {LAST} after training" in card
    assert "| **this model** | 0.2600 | 0.2700 |" in card and "not measured" not in card
    lm_eval = {"results": {"hellaswag": {"acc,none": 0.3, "acc_norm,none": 0.31}}, "lm_eval_version": "0.4.13",
               "n-shot": {"hellaswag": 0}}
    (saved.parent / "lm_eval.json").write_text(json.dumps(lm_eval))
    card = (export_model(run, tmp_path / "export", overwrite=True).out_dir / "README.md").read_text()
    assert f"lm-eval on checkpoint step {LAST} after training" in card and "| **this model** | 0.3000 | 0.3100 |" in card
    # files that cannot go into the card are skipped with a warning, never stop the export
    for content in ({"results": {"arc_easy": {"acc,none": 0.5}}}, {**lm_eval, "n-shot": {"hellaswag": 10}}, "{oops"):
        (saved.parent / "lm_eval.json").write_text(content if isinstance(content, str) else json.dumps(content))
        saved.write_text("[1, 2]")
        with pytest.warns(UserWarning, match="not in the model card"):
            card = (export_model(run, tmp_path / "export", overwrite=True).out_dir / "README.md").read_text()
        assert "0.3100" not in card and "0.2700" not in card
    # scored on another file than the published validation set (eval.hellaswag records what it held): said
    (saved.parent / "lm_eval.json").unlink()
    save_results(run, scored, data="my_hellaswag.jsonl", limit=100, data_fingerprint="f" * 64)
    card = (export_model(run, tmp_path / "export", overwrite=True).out_dir / "README.md").read_text()
    assert "0.2700" in card and "not the published HellaSwag validation set" in card and "ffffffffffff" in card


def test_the_card_describes_the_training_of_the_exported_checkpoint_not_a_later_sessions_config(tiny_run, tmp_path):
    """run_config.yaml is rewritten when a session starts: a resume launched with another schedule (here stopped
    before its first checkpoint) left max_lr 0.01 there, but the exported weights trained with 0.003. The card
    and the published logs/run_config.yaml take the run config saved in the checkpoint's meta.json (what that
    step trained with)."""
    import shutil

    import yaml

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    trained = yaml.safe_load((run / "run_config.yaml").read_text())
    meta_path = run / "checkpoints" / f"step_{LAST:08d}" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "run_config": trained}))
    later = {**trained, "max_lr": 0.01, "warmup_steps": 7, "max_steps": 2 * trained["max_steps"]}
    (run / "run_config.yaml").write_text(yaml.safe_dump(later, sort_keys=False))
    export_model(run, tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    assert f"linear warmup 5 steps to 0.003, cosine to 0.0003, reached after step {trained['max_steps']}" in card
    assert f"{LAST:,} of {trained['max_steps']:,} planned" in card
    assert "0.01" not in card.split("## Training")[1].split("## Curves")[0]
    assert "another schedule" not in card  # every logged lr follows the checkpoint's schedule
    # the run config published beside the card is that one too, not the later session's run_config.yaml
    published = yaml.safe_load((tmp_path / "export" / "logs" / "run_config.yaml").read_text())
    assert published["max_lr"] == trained["max_lr"] == 0.003 and published["max_steps"] == trained["max_steps"]


def test_plots_exist_and_mark_the_exported_step(exports):
    for export in exports:
        for name in ("loss", "hellaswag"):
            with Image.open(export.out_dir / "plots" / f"{name}.png") as image:
                assert image.format == "PNG" and image.size == (780, 540)
    # The first checkpoint's curves run on past it: its plots mark the exported step; the last's need no marker.
    metrics = load_metrics(exports[0].out_dir / "logs" / "metrics.jsonl")
    labels = lambda step: [line.get_label() for line in make_figure([metrics], mark_step=step).axes[0].get_lines()]
    assert f"exported step {FIRST}" in labels(FIRST)
    assert not any(label.startswith("exported step") for label in labels(LAST))


def test_cli_dry_run_lists_exactly_the_folder(tiny_run, tmp_path, capsys):
    out = tmp_path / "dry"
    code = export_cli.main([str(tiny_run), "--out", str(out), "--push_to_hub", "me/tiny", "--private",
                            "--dry_run"])  # train.py's underscore style is taken too
    printed = capsys.readouterr().out
    assert code == 0 and "dry run: nothing is sent" in printed and "me/tiny (private" in printed
    listed = [line.split()[-1] for line in printed.splitlines() if line.startswith("  ") and line.split()[0][0].isdigit()]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert listed == on_disk and len(listed) == 14
    # the card is titled with the name it is published under, not the local folder's ("# dry")
    assert (out / "README.md").read_text().count("# tiny\n") == 1 and "# dry\n" not in (out / "README.md").read_text()
    # pushed to a branch, its card loads that branch
    assert export_cli.main([str(tiny_run), "--out", str(out), "--overwrite", "--push-to-hub", "me/tiny", "--revision",
                            "step-20", "--dry-run"]) == 0
    assert "branch:   step-20" in capsys.readouterr().out
    assert 'from_pretrained("me/tiny", revision="step-20", trust_remote_code=True)' in (out / "README.md").read_text()


def test_cli_refuses_a_bad_repo_id_before_exporting(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(tiny_run), "--out", str(out), "--push-to-hub", "not a repo"])
    assert exit_info.value.code == 2 and "is not a Hub repo id" in capsys.readouterr().err
    assert not out.exists()  # refused before minutes of export, not after


def test_cli_push_that_cannot_happen_is_refused_before_the_export(tiny_run, tmp_path, capsys, monkeypatch):
    """Offline mode or no token: said at once, not after the export (minutes for a 124M model) that the push
    could not use anyway."""
    import publish.hub as hub

    monkeypatch.setenv("HF_TOKEN", "hf_notARealTokenButLongEnough0123456789")
    out = tmp_path / "push"
    code = export_cli.main([str(tiny_run), "--out", str(out), "--format", "gpt2", "--push-to-hub", "me/tiny"])
    captured = capsys.readouterr()
    assert code == 2 and not out.exists()
    assert "cannot push to me/tiny: HF_HUB_OFFLINE=1 is set" in captured.err
    assert "nothing was exported or uploaded" in captured.err and "exported step" not in captured.out
    assert "hf_notARealToken" not in captured.out + captured.err
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    assert export_cli.main([str(tiny_run), "--out", str(out), "--push-to-hub", "me/tiny"]) == 2 and not out.exists()
    assert "cannot push to me/tiny: no Hugging Face token: run `hf auth login`" in capsys.readouterr().err
    # a dry run needs neither
    assert export_cli.main([str(tiny_run), "--out", str(out), "--push-to-hub", "me/tiny", "--dry-run"]) == 0


def test_cli_push_that_fails_at_the_hub_keeps_the_export(tiny_run, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub.errors import HfHubHTTPError

    import publish.hub as hub

    token = "hf_notARealTokenButLongEnough0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)

    class RefusingApi:  # the Hub says 403 at the upload, echoing the token
        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            raise HfHubHTTPError(f"403 Forbidden for {token}", response=SimpleNamespace(status_code=403, headers={},
                                                                                        request=None))

    monkeypatch.setattr(hub, "HfApi", RefusingApi)
    out = tmp_path / "push"
    code = export_cli.main([str(tiny_run), "--out", str(out), "--format", "gpt2", "--push-to-hub", "me/tiny"])
    captured = capsys.readouterr()
    assert code == 1
    assert "push to me/tiny failed while uploading: the token may not write to me/tiny (403)" in captured.err
    assert "nothing was uploaded" in captured.err and "pushed" not in captured.out
    assert token not in captured.out + captured.err
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_refusals(tiny_run, tmp_path, capsys):
    assert export_cli.main([str(tiny_run / "checkpoints" / f"step_{UNCOMMITTED:08d}"), "--out", str(tmp_path / "a")]) == 2
    assert "has no COMPLETE file" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    assert export_cli.main([str(tiny_run), "--out", str(tmp_path / "b")]) == 2
    assert "not an earlier export" in capsys.readouterr().err and (tmp_path / "b" / "keep.txt").is_file()
    assert not any(p.name.startswith(".a.tmp") or p.name.startswith(".b.tmp") for p in tmp_path.iterdir())


def test_overwrite_never_deletes_the_source_or_any_training_state(tiny_run, tmp_path, capsys):
    """`--out` pointing at the run, a checkpoint, a folder holding the run, another run, its checkpoints/, a
    checkpoint's model/, a prepared data folder or any non-export folder: refused with exit 2 even with --overwrite,
    every file still there afterwards. An earlier export is what --overwrite replaces."""
    import shutil

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, run)
    other = tmp_path / "other_run"
    shutil.copytree(tiny_run, other)
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    (data / "train_000000.npy").write_bytes(b"x")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "plan.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    other_ckpt = other / "checkpoints" / f"step_{FIRST:08d}"
    for out, message in ((run, "is or contains the export's source"),
                         (run / "checkpoints" / f"step_{LAST:08d}", "is or contains the export's source"),
                         (tmp_path / "runs", "is or contains the export's source"),
                         (other, "holds training state"),
                         (other / "checkpoints", "holds no config.json"),
                         (other_ckpt, "inside a checkpoint or a run's checkpoints/"),
                         (other_ckpt / "model", "inside a checkpoint"),
                         (data, "holds training state (manifest.json)"),
                         (notes, "not an earlier export")):
        assert export_cli.main([str(run), "--out", str(out), "--overwrite"]) == 2, out
        assert message in capsys.readouterr().err, out
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    # what --overwrite is for: replacing an earlier export (here one beside the checkpoints)
    assert export_cli.main([str(run), "--out", str(run / "export")]) == 0
    assert export_cli.main([str(run), "--out", str(run / "export")]) == 2
    assert "holds an earlier export" in capsys.readouterr().err
    assert export_cli.main([str(run), "--out", str(run / "export"), "--overwrite", "--dtype", "bfloat16"]) == 0
    assert "bfloat16" in (run / "export" / "config.json").read_text()


@pytest.mark.parametrize("recorded_by", ["eval.lm_eval_run", "lm_eval"])
def test_lm_eval_results_of_another_checkpoint_are_refused(tiny_run, tmp_path, recorded_by):
    """eval.lm_eval_run names the checkpoint it scored, and the lm_eval command line its --model_args: passing the
    file of step FIRST to the export of step LAST would publish FIRST's HellaSwag as 'lm-eval run on this
    export'."""
    from publish.model_card import load_lm_eval_results

    first = tiny_run / "checkpoints" / f"step_{FIRST:08d}"
    results = tmp_path / "lm_eval.json"
    record = {"results": {"hellaswag": {"acc,none": 0.3, "acc_norm,none": 0.31}}}
    if recorded_by == "eval.lm_eval_run":
        record["model"] = str(first / "model")
    else:  # lm-eval 0.4's results file: config.model_args as given on its command line
        record["config"] = {"model": "hf", "model_args": f"pretrained={first / 'model'},trust_remote_code=True"}
    results.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"measured on .*step {FIRST}.*not on the exported checkpoint"):
        export_model(tiny_run, tmp_path / "export", lm_eval_results=load_lm_eval_results(results))
    assert not (tmp_path / "export").exists()
    card = (export_model(first, tmp_path / "export", lm_eval_results=load_lm_eval_results(results)).out_dir
            / "README.md").read_text()  # the checkpoint it was measured on: accepted
    assert "| **this model** | 0.3000 | 0.3100 |" in card


@pytest.mark.parametrize("format", ["gpt2repro", "gpt2"])
def test_a_model_with_added_tokens_is_exported_with_its_own_tokenizer(tmp_path, format):
    """add_special_tokens + resize_token_embeddings, then save_pretrained (the usual first step of a chat or SFT
    fine-tune): the export wrote GPT-2's 50257-id tokenizer beside a 50260-id model, so "<|user|>" came back as
    five ordinary tokens and the trained rows 50257-50259 were unreachable."""
    from model_helpers import tiny_model

    from data.tokenizer import tokenizer_for_context
    from transformers import AutoTokenizer

    model, tok = tiny_model(), tokenizer_for_context(128)
    tok.add_special_tokens({"pad_token": "<|pad|>", "additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    model.resize_token_embeddings(len(tok))
    source = tmp_path / "sft"
    model.save_pretrained(source)
    tok.save_pretrained(source)
    export_model(source, tmp_path / "out", format=format)
    exported = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(exported) == 50260 and exported.pad_token == "<|pad|>" and exported.model_max_length == 128
    assert exported("<|user|> hi").input_ids[0] == tok.convert_tokens_to_ids("<|user|>") == 50258
    assert {"vocab.json", "merges.txt"} <= {p.name for p in (tmp_path / "out").iterdir()}

    # without its tokenizer the export still happens, with GPT-2's and a warning that says what is lost
    (source / "tokenizer.json").unlink()
    (source / "tokenizer_config.json").unlink()
    with pytest.warns(UserWarning, match="50,260 token ids .* never produces ids 50,257-50,259"):
        export_model(source, tmp_path / "out2", format=format)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "out2")) == 50257


def test_the_export_publishes_no_absolute_local_path_and_leaves_the_run_as_it_was(tiny_run, tmp_path):
    """The exported logs went to the Hub as the run wrote them: run_config.yaml with `config:
    /home/alice/gpt2repro/configs/...`, `output_dir` and `hellaswag_file` as typed, metrics.jsonl with a resume's
    checkpoint folder and error messages naming local files: the user name and the machine's layout, published.
    The export keeps relative paths (the project's layout) and reduces absolute ones to their last name; the run
    folder itself is not touched."""
    import shutil

    import yaml

    home = tmp_path / "home" / "alice"
    run = home / "runs" / "tiny"
    shutil.copytree(tiny_run, run)
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    cfg.update(config=str(home / "gpt2repro" / "configs" / "tiny.yaml"), output_dir=str(run),
               hellaswag_file=str(home / "data" / "hellaswag_val.jsonl"), init_from="scratch",
               data_dir="out/data/fineweb-edu-tiny")
    (run / "run_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    url = "https://huggingface.co/me/tiny/commit/abc"
    with (run / "metrics.jsonl").open("a") as log:
        for record in ({"type": "resume", "step": 10, "checkpoint": str(run / "checkpoints" / "step_00000010")},
                       {"type": "error", "step": 20, "message": f"cannot write '{run}/checkpoints/step_00000020': "
                                                                 "No space left on device"},
                       {"type": "upload", "step": 20, "ok": True, "url": url, "error": None}):
            log.write(json.dumps(record) + "\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    out = export_model(run, tmp_path / "export").out_dir
    for path in out.rglob("*"):
        if path.is_file():
            assert str(home).encode() not in path.read_bytes(), path
            assert b"/alice/" not in path.read_bytes(), path
    published = yaml.safe_load((out / "logs" / "run_config.yaml").read_text())
    assert published["config"] == "<local>/tiny.yaml" and published["output_dir"] == "<local>/tiny"
    assert published["hellaswag_file"] == "<local>/hellaswag_val.jsonl"
    assert published["data_dir"] == "out/data/fineweb-edu-tiny" and published["init_from"] == "scratch"
    assert published["max_lr"] == cfg["max_lr"]  # everything else as it was
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["type"] == "resume"][0]["checkpoint"] == "<local>/step_00000010"
    assert [r for r in rows if r["type"] == "error"][0]["message"] == (
        "cannot write '<local>/step_00000020': No space left on device")
    assert [r for r in rows if r["type"] == "upload"][0]["url"] == url  # URLs are not local paths
    original = [json.loads(line) for line in before[run / "metrics.jsonl"].decode().splitlines()]
    assert [r for r in rows if r["type"] == "train"] == [r for r in original if r["type"] == "train"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # the run folder as it was


def test_pushing_another_export_to_the_same_repo_leaves_that_export_not_a_mix(tiny_run, tmp_path, monkeypatch):
    """upload_folder adds and replaces files, it deletes none: a repo updated with the stock-format export of a
    model folder kept the first export's remote code, logs and plots, beside a card and config that no longer
    mention them. The push removes the files an export owns that the new one lacks; others (a LICENSE added on
    the Hub, .gitattributes) stay. HfApi's own deletion and addition planning is used, over a repo held in memory."""
    from pathlib import Path

    from huggingface_hub import HfApi

    import publish.hub as hub

    repo: dict[str, bytes] = {".gitattributes": b"*.safetensors filter=lfs\n", "LICENSE": b"mine\n"}

    class InMemoryHub(HfApi):
        def create_repo(self, repo_id, **kwargs):
            return repo_id

        def list_repo_files(self, repo_id, **kwargs):
            return sorted(repo)

        def _validate_yaml(self, *args, **kwargs):
            return None

        def upload_folder(self, *, repo_id, folder_path, delete_patterns=None, ignore_patterns=None, **kwargs):
            deletions = self._prepare_folder_deletions(repo_id=repo_id, repo_type="model", revision=None,
                                                       path_in_repo="", delete_patterns=delete_patterns)
            additions = self._prepare_upload_folder_additions(
                folder_path, "", ignore_patterns=list(ignore_patterns or []) + list(hub.DEFAULT_IGNORE_PATTERNS))
            added = {op.path_in_repo for op in additions}
            for op in deletions:
                if op.path_in_repo not in added:
                    del repo[op.path_in_repo]
            for op in additions:
                repo[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setenv("HF_TOKEN", "hf_notARealTokenButLongEnough0123456789")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HfApi", InMemoryHub)
    first, second = tmp_path / "first", tmp_path / "second"
    assert export_cli.main([str(tiny_run), "--out", str(first), "--push-to-hub", "me/tiny"]) == 0
    assert {"modeling_gpt2repro.py", "logs/metrics.jsonl", "plots/loss.png", "LICENSE"} <= set(repo)
    import shutil

    model_folder = tmp_path / "model"  # a plain model folder: no run record, so no logs and no plots
    shutil.copytree(tiny_run / "checkpoints" / f"step_{LAST:08d}" / "model", model_folder)
    assert export_cli.main([str(model_folder), "--out", str(second), "--format", "gpt2", "--push-to-hub",
                            "me/tiny"]) == 0
    exported = {p.relative_to(second).as_posix(): p.read_bytes() for p in second.rglob("*") if p.is_file()}
    assert not any(path.startswith(("logs/", "plots/")) for path in exported)
    assert not not_written_by_export(second)  # the stock-GPT-2 format's files are known too
    assert set(repo) == set(exported) | {".gitattributes", "LICENSE"}
    assert all(repo[path] == data for path, data in exported.items())


def test_overwrite_keeps_files_the_user_put_into_an_earlier_export(tiny_run, tmp_path, capsys):
    """--overwrite replaced an earlier export whole: what else was in it went with it, such as the eval_results/
    that `python -m eval.hellaswag --model EXPORT` writes there, a .git of the Hub repo cloned into it, or notes.
    Now such a folder is refused (exit 2), naming them, and nothing in it changes; a clean export is replaced."""
    import shutil

    out = tmp_path / "export"
    assert export_cli.main([str(tiny_run), "--out", str(out)]) == 0
    assert not_written_by_export(out) == []  # EXPORT_FILE_PATTERNS knows every file an export writes
    (out / "eval_results").mkdir()
    (out / "eval_results" / "hellaswag_scorer.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert export_cli.main([str(tiny_run), "--out", str(out), "--overwrite", "--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert "holds eval_results/, notes.txt, which export does not write" in err and "move them out" in err
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (out / "notes.txt").unlink()
    shutil.rmtree(out / "eval_results")
    assert export_cli.main([str(tiny_run), "--out", str(out), "--overwrite", "--dtype", "bfloat16"]) == 0
    assert "bfloat16" in (out / "config.json").read_text()


def test_exporting_an_export_warns_that_its_records_stay_behind(exports, tmp_path):
    """An export as the source (e.g. to change its format) is a plain model folder: the new card had no numbers
    and said "No evaluation was recorded" without a word on why. Now a warning says to export from the run."""
    ours, _ = exports
    with pytest.warns(UserWarning, match="is an export: its card's numbers, logs/ and plots/ are not carried"):
        export_model(ours.out_dir, tmp_path / "again", format="gpt2")


def test_an_unreadable_lm_eval_results_file_is_named_by_its_flag(tmp_path, capsys):
    """It printed a bare `error: [Errno 2] No such file or directory: '...'`, not saying which argument. The model
    is one export takes: only the missing file stops it."""
    from model_helpers import tiny_model

    tiny_model().save_pretrained(tmp_path / "model")
    assert export_cli.main([str(tmp_path / "model"), "--out", str(tmp_path / "out"),
                            "--lm-eval-results", str(tmp_path / "nope.json")]) == 2
    assert "error: --lm-eval-results " + str(tmp_path / "nope.json") + ": No such file or directory; nothing was " \
        "exported" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case,message", [
    # n_layer raised in config.json after saving: the new layers' weights are not in the file. export wrote them
    # at random (exit 0, "reload check 0.00e+00"), and --init_from trained from them
    ("more_layers", r"its weights do not match its config.json \(\d+ weights missing, e.g. \['transformer.h.\d"),
    # lowered: the last block's weights were dropped without a word
    ("fewer_layers", r"it holds weights its config.json has no place for \(\d+, e.g. \['transformer.h.1"),
    ("wider", r"the weight shapes do not match its config.json"),
    # an invalid config: its reason was cut off after "Invalid GPT2ReproConfig:"
    ("invalid_config", r"Invalid GPT2ReproConfig: - n_embd \(64\) must be divisible by n_head \(3\)"),
    ("truncated_weights", r"the weights file model.safetensors is damaged or incomplete"),
    ("cut_config", r"config.json is not valid JSON .*copy or export the model again"),
])
def test_a_model_folder_whose_weights_do_not_fit_its_config_is_refused_by_export_and_init_from(
        tiny_run, tmp_path, capsys, case, message):
    import shutil

    from training.model_init import load_pretrained

    folder = tmp_path / "model"
    shutil.copytree(tiny_run / "checkpoints" / f"step_{LAST:08d}" / "model", folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if case == "more_layers":
        config["n_layer"] += 1
        config_path.write_text(json.dumps(config))
    elif case == "fewer_layers":
        config["n_layer"] -= 1
        config_path.write_text(json.dumps(config))
    elif case == "wider":
        config["n_embd"] *= 2
        config_path.write_text(json.dumps(config))
    elif case == "invalid_config":
        config["n_head"] = 3
        config_path.write_text(json.dumps(config))
    elif case == "truncated_weights":
        weights = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    else:
        config_path.write_text(config_path.read_text()[:40])
    assert export_cli.main([str(folder), "--out", str(tmp_path / "out")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=message):
        load_pretrained(str(folder))


def test_a_full_disk_during_export_keeps_the_earlier_export_and_says_so(tiny_run, tmp_path, capsys, monkeypatch):
    """safetensors reports ENOSPC as its own SafetensorError, which export did not catch: a traceback (bad-input
    audit, on a small tmpfs). The earlier export must stay as it was, and no staging folder be left behind."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    out = tmp_path / "export"
    assert export_cli.main([str(tiny_run), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def full_disk(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                              'space left on device" })')

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    assert export_cli.main([str(tiny_run), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "error: could not write the export in" in err and "StorageFull" in err and "Traceback" not in err
    assert f"the earlier export at {out} is unchanged: free some space" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no .export.tmp-* staging folder


def test_export_of_another_model_type_says_what_it_takes(tmp_path, capsys):
    """A stock GPT-2 folder is pointed to convert_gpt2.py; a Llama folder was given the same advice, which does not
    apply to it (bad-input audit)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(tmp_path / "stock")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for folder, message in (("stock", "holds a stock GPT-2 model, not gpt2repro: convert it first with "
                                      "`python convert_gpt2.py --from-gpt2"),
                            ("llama", "holds a 'llama' model: export takes gpt2repro models")):
        assert export_cli.main([str(tmp_path / folder), "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_converted_build_nanogpt_checkpoint_exports_with_its_origin_and_logged_curves(tmp_path, random_gpt2,
                                                                                      build_nanogpt_main, capsys):
    """convert_gpt2.py --from-build-nanogpt carries the run's log.txt (found beside the checkpoint) and a record
    of the checkpoint; export then writes a card that says where the model came from, with the numbers that run
    logged at the checkpoint's step (not at later steps) and its curves. Without log.txt the card says so."""
    import hashlib

    import convert_gpt2

    log_dir = tmp_path / "log"
    log_dir.mkdir()
    ckpt = save_checkpoint(log_dir / "model_00200.pt", random_gpt2, step=200, val_loss=5.00002)
    lines = []
    for step in range(0, 301, 10):
        lines.append(f"{step} train {10.0 - step / 50:.6f}")
        if step % 100 == 0:  # build-nanogpt's eval cadence; the run went on past the checkpoint
            lines += [f"{step} val {9.0 - step / 50:.4f}", f"{step} hella {0.25 + step / 10000:.4f}"]
    (log_dir / "log.txt").write_text("\n".join(lines) + "\n")

    convert_gpt2.main(["--from-build-nanogpt", str(ckpt), "--out", str(tmp_path / "ours")])
    assert "(build-nanogpt step 200, val loss 5.0000, its log.txt in logs/build-nanogpt-log.txt)" in \
        capsys.readouterr().out
    origin = json.loads((tmp_path / "ours" / "converted_from.json").read_text())
    assert origin["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest() and origin["step"] == 200
    result = export_model(tmp_path / "ours", tmp_path / "export", datasets=["HuggingFaceFW/fineweb-edu"])
    assert result.step == 200
    assert (tmp_path / "export" / "logs" / "build-nanogpt-log.txt").read_text() == (log_dir / "log.txt").read_text()
    assert {"plots/loss.png", "plots/hellaswag.png"} <= set(result.files)
    card = ModelCard.load(tmp_path / "export" / "README.md")
    text = card.text
    assert "trained with Karpathy's [build-nanogpt]" in text
    assert "converted from its checkpoint `model_00200.pt`" in text
    assert "This export is the checkpoint at step 200." in text
    assert "| **this model** | 0.2700 |" in text  # build-nanogpt's own acc_norm at step 200, not 0.2800 at 300
    assert "Validation loss at step 200: **5.0000**" in text
    assert "as build-nanogpt's `train_gpt2.py` measured it" in text
    assert "lm-evaluation-harness `hellaswag` task" not in text  # nothing was scored the lm-eval way
    metrics = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert metrics[METRIC_ACC_TOKENNORM] == pytest.approx(0.27) and metrics[METRIC_VAL_LOSS] == pytest.approx(5.0)
    # our scorer run on a few examples afterwards does not replace the number the run logged on all of them
    (tmp_path / "ours" / "eval_results").mkdir()
    (tmp_path / "ours" / "eval_results" / "hellaswag_scorer.json").write_text(json.dumps(
        {"results": {"acc": 0.3, "acc_norm": 0.35, "acc_tokennorm": 0.4, "n": 40}}))
    with pytest.warns(UserWarning, match="scored on 40 examples, where the run's log has step 200's number on all"):
        export_model(tmp_path / "ours", tmp_path / "export2", datasets=["HuggingFaceFW/fineweb-edu"])
    assert "| **this model** | 0.2700 |" in (tmp_path / "export2" / "README.md").read_text()

    # build-nanogpt empties log.txt when it starts again: a log that does not hold this checkpoint's validation
    # loss at its step (none there, or another value) is another run's, whose numbers would have been published
    # as this model's; the card says what the checkpoint itself recorded
    for name, log, why, foreign in (
            ("bare", "0 val 9.1234\n0 hella 0.2400\n0 train 9.5\n", "it logs no validation loss at step 200",
             ("0.2400", "9.1234")),
            ("other", "200 val 4.1000\n200 hella 0.3300\n200 train 4.2\n",
             "its validation loss at step 200 is 4.1, the checkpoint's 5.0000", ("4.1000", "0.3300"))):
        (log_dir / "log.txt").write_text(log)
        with pytest.warns(UserWarning, match=rf"log.txt is not carried into .*: {re.escape(why)}"):
            convert_gpt2.main(["--from-build-nanogpt", str(ckpt), "--out", str(tmp_path / name)])
        assert not (tmp_path / name / "logs").exists()
        export_model(tmp_path / name, tmp_path / f"{name}-export")
        text = (tmp_path / f"{name}-export" / "README.md").read_text()
        assert "No log of that run came with it" in text and not any(number in text for number in foreign)
        assert "Validation loss at step 200: **5.0000**" in text and "recorded in the checkpoint" in text
