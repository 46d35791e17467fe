"""Model card pieces without a model: numbers at the exported step, lm-eval results, base model, datasets."""

import json

import pytest
from lm_eval.api.metrics import mean_stderr
from huggingface_hub import ModelCard

from publish.export_model import describe_local_data, guess_datasets
from publish.metrics import load_metrics
from publish.model_card import (
    METRIC_ACC,
    METRIC_ACC_NORM,
    METRIC_ACC_TOKENNORM,
    CardInputs,
    build_model_card,
    load_lm_eval_results,
    results_at_step,
)


@pytest.fixture
def metrics(tmp_path):
    records = [{"type": "val", "step": s, "val_loss": 4.0 - s / 100} for s in (0, 50, 100)]
    records += [{"type": "hellaswag", "step": s, "acc": 0.25 + s / 1000, "acc_norm": 0.26 + s / 1000,
                 "acc_tokennorm": 0.255 + s / 1000, "n": 10042} for s in (0, 50, 100)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_metrics(path)


def test_results_are_those_at_or_before_the_exported_step(metrics):
    at = results_at_step(metrics, 75)  # exported between two evaluations: the one before, never a later one
    assert at["hellaswag"]["step"] == 50 and at["hellaswag"]["acc_norm"] == 0.31
    assert at["val_loss"] == {"step": 50, "value": 3.5, "tokens": None}  # rows without val_tokens
    assert results_at_step(metrics, None)["val_loss"]["step"] == 100


def test_lm_eval_results_replace_the_in_loop_lm_eval_numbers(metrics, tmp_path):
    lm_eval = tmp_path / "results.json"
    lm_eval.write_text(json.dumps({
        "results": {"hellaswag": {"acc,none": 0.2891, "acc_norm,none": 0.3113, "acc_stderr,none": 0.0045}},
        "versions": {"hellaswag": 1.0}, "n-samples": {"hellaswag": {"original": 10042, "effective": 10042}},
        "lm_eval_version": "0.4.13",
    }))
    card = build_model_card(CardInputs(model_name="m", step=100, metrics=metrics,
                                       lm_eval_results=load_lm_eval_results(lm_eval),
                                       run_config={"init_from": "gpt2"}))
    card = ModelCard(str(card))  # through text, as the Hub reads it
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values[METRIC_ACC] == 0.2891 and values[METRIC_ACC_NORM] == 0.3113
    assert values[METRIC_ACC_TOKENNORM] == 0.355  # only the run measured this scorer
    assert card.data.base_model == "openai-community/gpt2"  # continued from GPT-2
    assert "lm-eval 0.4.13 run on this export" in card.text


@pytest.mark.parametrize("content,expected", [
    ("[1, 2]", "no HellaSwag acc/acc_norm"),
    ('{"results": {"hellaswag": {"acc,none": 0.3}}}', "no HellaSwag acc/acc_norm"),
    ('{"results": {"arc_easy": {"acc,none": 0.5}}}', "no HellaSwag acc/acc_norm"),
    ('{"results": {"hellaswag": {"acc,none": 0.3, "acc_norm,none": 0.31}}, "n-shot": {"hellaswag": 10}}',
     "10-shot; the model card reports 0-shot"),
    ("{oops", "is not valid JSON"),
])
def test_unusable_lm_eval_results_are_refused_with_a_reason(tmp_path, content, expected):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=expected):
        load_lm_eval_results(path)


def test_card_names_a_local_starting_point(tmp_path):
    card = build_model_card(CardInputs(model_name="m", run_config={"init_from": "runs/demo"}))
    assert "continued from a local model (`demo`)" in card.text and "from scratch" not in card.text  # no local path
    # a folder convert_gpt2.py made from a build-nanogpt checkpoint is named as that
    converted = tmp_path / "bnano"
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    (converted / "converted_from.json").write_text(json.dumps(
        {"format": "build-nanogpt", "checkpoint": "model_19072.pt", "step": 19072}))
    card = build_model_card(CardInputs(model_name="m", run_config={"init_from": str(converted)}))
    assert "continued from a [build-nanogpt](https://github.com/karpathy/build-nanogpt) checkpoint " \
        "(`model_19072.pt`, step 19,072, converted)" in card.text and str(tmp_path) not in card.text


def test_card_without_metrics_still_builds_and_says_so():
    card = build_model_card(CardInputs(model_name="bare", format="gpt2"))
    assert card.data.eval_results is None and "No evaluation was recorded" in card.text
    assert "custom_code" not in card.data.tags
    # no HellaSwag measured: the card does not describe an evaluation that never ran
    # (no training log at all here: whether training measured it is not known)
    assert "HellaSwag: no result recorded with this folder; the command below scores it" in card.text
    assert "10,042 validation examples" not in card.text
    assert "Reproduce the lm-eval number" not in card.text and "Score HellaSwag on this export" in card.text
    assert "Never compare HellaSwag numbers" not in card.text
    # lm-eval run on the export, nothing in training: the card says where the number comes from
    lm_eval = {"acc": 0.29, "acc_norm": 0.31, "acc_stderr": 0.005, "acc_norm_stderr": 0.005, "n": 10042}
    card = build_model_card(CardInputs(model_name="bare", format="gpt2", lm_eval_results=lm_eval))
    assert "the lm-eval result above was measured on this export" in card.text
    assert "Reproduce the lm-eval number" in card.text and "the command below scores it" not in card.text


def test_datasets_from_the_data_manifest_or_folder_name(tmp_path):
    hub_data, local_data = tmp_path / "fw", tmp_path / "fineweb-edu-local"
    for folder, source in ((hub_data, {"kind": "hub", "name": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT"}),
                           (local_data, {"kind": "local", "files": []})):
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"settings": {"source": source}}))
    assert guess_datasets({"data_dir": str(hub_data)}) == ["HuggingFaceFW/fineweb-edu"]
    assert guess_datasets({"data_dir": str(local_data)}) == []  # local files: the name alone proves nothing
    assert guess_datasets({"data_dir": "data/fineweb_edu_10B"}) == ["HuggingFaceFW/fineweb-edu"]  # no manifest here
    assert guess_datasets({}) == []
    for prefix, expected in (("edufineweb", ["HuggingFaceFW/fineweb-edu"]), ("edu_fineweb", ["HuggingFaceFW/fineweb-edu"]),
                             ("fineweb", ["HuggingFaceFW/fineweb"]), ("shakespeare", [])):  # data.import_shards
        imported = tmp_path / f"imported-{prefix}"
        imported.mkdir()
        source = {"kind": "import", "tool": "llm.c", "prefix": prefix}
        (imported / "manifest.json").write_text(json.dumps({"settings": {"source": source}}))
        assert guess_datasets({"data_dir": str(imported)}) == expected
    assert describe_local_data({"data_dir": str(imported)}) == "token shards imported from llm.c (`shakespeare_*`)"


def test_card_names_local_and_builtin_training_data(tmp_path):
    """Data that is not on the Hub is described in the card's first paragraph, not called "the run's data"."""
    local, builtin = tmp_path / "local", tmp_path / "builtin"
    files = [{"name": f"part-{i}.jsonl", "bytes": 2_500_000} for i in range(5)]
    for folder, source in ((local, {"kind": "local", "format": "json", "files": files}),
                           (builtin, {"kind": "builtin", "name": "python-docs", "description": "pydoc topics"})):
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"settings": {"source": source}}))
    text = describe_local_data({"data_dir": str(local)})
    assert text == "local json files (`part-0.jsonl`, `part-1.jsonl`, `part-2.jsonl` and 2 more; 12.5 MB)"
    assert describe_local_data({"data_dir": str(builtin)}) == "the offline built-in corpus `python-docs` (pydoc topics)"
    assert describe_local_data({"data_dir": str(tmp_path / "no-manifest")}) is None
    card = build_model_card(CardInputs(model_name="m", data_description=text,
                                       plots=[("train and validation loss", "plots/loss.png")]))
    assert f"pretrained from scratch on {text} with gpt2repro" in card.text
    assert "Dashed lines" not in card.text  # not FineWeb-Edu, no HellaSwag plot: no reference lines drawn
    assert "biases and errors of its training data" in card.text
    assert card.data.datasets is None  # no Hub id to put in the metadata


def test_training_time_and_throughput_cover_every_session_of_a_resumed_run(tmp_path):
    """A run killed after step 3 and resumed: the train rows of both sessions count (step 3, logged again after
    the resume, counts once, with its later time); the last session's summary row does not decide the numbers."""
    from publish.model_card import training_rows

    rows = [{"type": "train", "step": s, "loss": 5.0, "dt_ms": 1000.0, "tok_per_s": 1000.0, "mfu": 0.1,
             "tokens": 1000 * s} for s in range(1, 4)]
    rows += [{"type": "resume", "step": 2, "checkpoint": "c"}]
    rows += [{"type": "train", "step": s, "loss": 4.0, "dt_ms": 500.0, "tok_per_s": 2000.0, "mfu": 0.2,
              "tokens": 1000 * s} for s in range(3, 11)]
    rows += [{"type": "summary", "steps": 10, "tokens": 10000, "wall_time_s": 4.0, "mean_tok_per_s": 2000.0,
              "device": "cpu", "world_size": 1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = dict(training_rows({"total_batch_size": 1000, "max_steps": 10}, load_metrics(path), None))
    assert table["training time"].startswith("6 s")  # 2 x 1 s + 8 x 0.5 s, not the last session's 4 s
    # steady state: the first 10% (1 of 10 steps) left out -> 9 steps, 9,000 tokens in 1 + 8 x 0.5 = 5 s
    assert table["throughput"].startswith("1,800 tokens/s")
    assert table["MFU"].startswith("18.0%")  # 0.1 per 1,000 tokens/s


def test_a_hellaswag_subset_is_shown_with_its_standard_error_and_a_warning(tmp_path):
    records = [{"type": "hellaswag", "step": 10, "acc": 0.25, "acc_norm": 0.31, "acc_tokennorm": 0.30, "n": 100},
               {"type": "val", "step": 10, "val_loss": 6.1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    card = str(build_model_card(CardInputs(model_name="m", metrics=load_metrics(path), step=10,
                                           run_config={"val_tokens": 8192})))
    outcomes = [1.0] * 31 + [0.0] * 69  # acc_norm 0.31 on 100 examples, as lm-eval computes its stderr
    assert f"±{mean_stderr(outcomes):.4f} (100 examples)" in card and "±0.0465 (100 examples)" in card
    assert "first 100 of the 10,042 examples" in card and "within about two standard errors are noise" in card
    # when it was scored, as recorded (it said 'every `hellaswag_every` steps' also of a run that scored it once)
    assert "- HellaSwag (in-loop, step 10): the first 100 of the 10,042 validation examples" in card
    assert "--tasks hellaswag --batch_size 32 --limit 100\n" in card  # reproduces the 100, not all 10,042
    assert "over (at most) 8,192 tokens (`val_tokens`)" in card  # the row does not say how many
    records[1]["val_tokens"] = 2048  # train.py's rows do: a val split smaller than val_tokens gives fewer
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    card = str(build_model_card(CardInputs(model_name="m", metrics=load_metrics(path), step=10,
                                           run_config={"val_tokens": 8192})))
    assert "**6.1000** nats/token over 2,048 tokens" in card and "8,192" not in card


def test_a_schedule_changed_by_a_resume_is_said_next_to_the_last_sessions_schedule(tmp_path):
    """Steps 1-12 decayed to step 12, then the run was resumed with max_steps 16: the config (the checkpoint's)
    describes only steps 13-16, so the card says the earlier steps followed another schedule; an unchanged run
    gets no such note."""
    from types import SimpleNamespace

    from publish.model_card import training_rows
    from training.optim import lr_at

    first = dict(max_lr=3e-3, min_lr=3e-4, warmup_steps=2, max_steps=12, lr_decay_steps=None)
    extended = {**first, "max_steps": 16}

    def card_lr(sessions, cfg):
        rows = [{"type": "train", "step": step + 1, "loss": 5.0, "lr": lr_at(step, SimpleNamespace(**schedule))}
                for schedule, steps in sessions for step in steps]
        path = tmp_path / "metrics.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return dict(training_rows(cfg, load_metrics(path), None))["learning rate"]

    changed = card_lr([(first, range(12)), (extended, range(12, 16))], extended)
    assert changed.startswith("linear warmup 2 steps to 0.003, cosine to 0.0003, reached after step 16 (this checkpoint's")
    assert "earlier steps followed another schedule" in changed
    assert "another schedule" not in card_lr([(extended, range(16))], extended)


def test_the_model_index_never_files_a_hellaswag_number_under_another_example_count(metrics, tmp_path):
    """huggingface_hub merges the HellaSwag metrics into one model-index entry with the first one's args: an
    in-loop number on 40 examples next to an lm-eval run on all 10,042 must not be shown as on all 10,042."""
    records = [{"type": "hellaswag", "step": 10, "acc": 0.25, "acc_norm": 0.31, "acc_tokennorm": 0.30, "n": 40}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    lm_eval = tmp_path / "results.json"
    lm_eval.write_text(json.dumps({
        "results": {"hellaswag": {"acc,none": 0.2891, "acc_norm,none": 0.3113}},
        "n-samples": {"hellaswag": {"original": 10042, "effective": 10042}},
    }))
    card = ModelCard(str(build_model_card(CardInputs(model_name="m", step=10, metrics=load_metrics(path),
                                                     lm_eval_results=load_lm_eval_results(lm_eval)))))
    hella = {r.metric_name: r for r in card.data.eval_results if r.dataset_type == "Rowan/hellaswag"}
    assert hella[METRIC_ACC_NORM].metric_value == 0.3113 and "limit" not in hella[METRIC_ACC_NORM].dataset_args
    assert hella[METRIC_ACC_NORM].dataset_name == "HellaSwag"  # all 10,042
    assert METRIC_ACC_TOKENNORM not in hella  # 40 examples: not in an entry that says 10,042
    assert "| **this model** | 0.3000 |" in card.text  # the text still reports it, with its count
    assert "in-loop, step 10, 40 examples" in card.text


def test_a_run_resumed_from_another_run_folder_says_its_first_steps_are_not_in_its_log(tmp_path):
    """Resumed into a new --output_dir from another run's step-4 checkpoint: this metrics.jsonl starts at step 5,
    so its times are those of steps 5-12 and the config's schedule may not be the one steps 1-4 followed."""
    from publish.model_card import training_rows

    rows = [{"type": "resume", "step": 4, "checkpoint": "/runs/a/checkpoints/step_00000004"}]
    rows += [{"type": "train", "step": s, "loss": 5.0, "lr": 1e-3, "dt_ms": 500.0, "tokens": 256 * s}
             for s in range(5, 13)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = dict(max_lr=1e-3, min_lr=6e-5, warmup_steps=2, max_steps=12, total_batch_size=256)
    table = dict(training_rows(cfg, load_metrics(path), 12))
    assert table["optimizer steps"] == "12 of 12 planned" and table["tokens seen"].startswith("3,072")
    assert table["training time"].startswith("4 s (sum of the optimizer steps' times; steps 5-12 only: steps 1-4 "
                                             "were trained in another run folder")
    assert "steps 1-4 were trained in another run folder" in table["learning rate"]


def test_gpt2s_fineweb_edu_val_loss_is_quoted_only_for_fineweb_edu_data(metrics):
    """references.VAL_LOSS was measured on FineWeb-Edu's val split: the card quotes it for that data only."""
    def card(datasets):
        return build_model_card(CardInputs(model_name="m", metrics=metrics, step=100, datasets=datasets)).text

    assert "Validation loss at step 100: **3.0000**" in card([])
    assert "For scale" not in card([]) and "For scale" not in card(["HuggingFaceFW/fineweb"])
    assert "For scale: OpenAI GPT-2 124M (FineWeb-Edu val) scores 3.2924" in card(["HuggingFaceFW/fineweb-edu"])


@pytest.mark.parametrize("extra,n", [
    ({"n-samples": {"hellaswag": {"original": 10042, "effective": 40}}, "config": {"limit": 40}}, 40),
    ({"config": {"limit": 20}}, 20),            # an lm-eval that writes no n-samples: its --limit says it
    ({"limit": 30}, 30),                        # eval.lm_eval_run's own record
    ({"config": {"limit": 0.01}}, 101),         # a fraction of the task, as lm-eval reads a limit below 1
    ({"config": {"limit": None}}, None),        # all 10,042
], ids=["n-samples", "config-limit", "our-limit", "fraction", "no-limit"])
def test_the_example_count_of_lm_eval_results_comes_from_n_samples_or_the_limit(tmp_path, extra, n):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": {"hellaswag": {"acc,none": 0.3, "acc_norm,none": 0.31}}, **extra}))
    assert load_lm_eval_results(path).get("n") == n


@pytest.mark.parametrize("where", ["in-loop", "lm-eval"])
def test_hellaswag_scored_on_another_file_is_said_and_kept_out_of_the_model_index(tmp_path, where):
    """A run pointed at another HellaSwag file (edited, translated, a subset) still writes "HellaSwag": the card
    says it is not the published validation set, and files no number under Rowan/hellaswag."""
    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT

    def card_for(fingerprint):
        record = {"type": "hellaswag", "step": 10, "acc": 0.25, "acc_norm": 0.31, "acc_tokennorm": 0.30,
                  "n": 10042, "data_fingerprint": fingerprint}
        if where == "lm-eval":
            record.pop("data_fingerprint")
        path = tmp_path / "metrics.jsonl"
        path.write_text(json.dumps(record) + "\n" + json.dumps({"type": "val", "step": 10, "val_loss": 6.1}) + "\n")
        lm_eval = None
        if where == "lm-eval":
            results = tmp_path / "results.json"
            results.write_text(json.dumps({
                "results": {"hellaswag": {"acc,none": 0.2891, "acc_norm,none": 0.3113}},
                "n-samples": {"hellaswag": {"original": 10042, "effective": 10042}},
                "data_fingerprint": fingerprint}))
            lm_eval = load_lm_eval_results(results)
        return ModelCard(str(build_model_card(CardInputs(model_name="m", step=10, metrics=load_metrics(path),
                                                         lm_eval_results=lm_eval))))

    other = card_for("0" * 64)
    assert "not the published HellaSwag validation set" in other.text
    assert "content fingerprint 000000000000" in other.text
    if where == "in-loop":
        assert "10,042 examples of a file that is not the published validation set, 0-shot" in other.text
    indexed = {r.metric_name for r in other.data.eval_results if r.dataset_type == "Rowan/hellaswag"}
    assert indexed == ({METRIC_ACC_TOKENNORM} if where == "lm-eval" else set())  # only the in-loop file is the original there
    assert {r.metric_name for r in other.data.eval_results if r.metric_type == "loss"}  # the rest stays

    original = card_for(ORIGINAL_VAL_FINGERPRINT)
    assert "not the published" not in original.text
    assert {r.metric_name for r in original.data.eval_results if r.dataset_type == "Rowan/hellaswag"} == {
        METRIC_ACC, METRIC_ACC_NORM, METRIC_ACC_TOKENNORM}


def test_lm_eval_results_of_the_local_hellaswag_task_are_read(tmp_path):
    """The README's offline shell command (`lm_eval ... --include_path eval/tasks --tasks hellaswag_local
    --output_path ...`) writes its results under `hellaswag_local`: export --lm-eval-results takes that file."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "results": {"hellaswag_local": {"alias": "hellaswag_local", "acc,none": 0.25, "acc_norm,none": 0.31}},
        "versions": {"hellaswag_local": 1.0}, "n-shot": {"hellaswag_local": 0},
        "n-samples": {"hellaswag_local": {"original": 10042, "effective": 100}}, "config": {"limit": 100.0},
    }))
    loaded = load_lm_eval_results(path)
    assert (loaded["acc"], loaded["acc_norm"], loaded["n"], loaded["version"]) == (0.25, 0.31, 100, 1.0)
    path.write_text(json.dumps({"results": {"hellaswag_local": {"acc,none": 0.3, "acc_norm,none": 0.31}},
                                "n-shot": {"hellaswag_local": 10}}))
    with pytest.raises(ValueError, match="10-shot"):
        load_lm_eval_results(path)


def test_card_of_a_model_folder_claims_no_training_it_has_no_record_of(tmp_path):
    """export.py on a save_pretrained / Trainer / earlier-export folder has no run config and no metrics: the card
    said 'pretrained from scratch on the run's data with gpt2repro' and 'HellaSwag: not measured in training' of
    a model that may have been fine-tuned, continued from GPT-2, or evaluated in training."""
    card = build_model_card(CardInputs(model_name="m", n_params=7_248_640)).text
    assert "from scratch" not in card and "the run's data" not in card and "not measured in training" not in card
    assert "holds no record of its training" in card
    # a run that recorded metrics but never scored HellaSwag: that is known, and said
    metrics_file = tmp_path / "metrics.jsonl"
    metrics_file.write_text(json.dumps({"type": "val", "step": 10, "val_loss": 5.0}) + "\n")
    card = build_model_card(CardInputs(model_name="m", step=10, metrics=load_metrics(metrics_file),
                                       run_config={"init_from": "scratch"})).text
    assert "pretrained from scratch on the run's data with gpt2repro" in card
    assert "HellaSwag: not measured in training up to this checkpoint" in card
    card = build_model_card(CardInputs(model_name="m", run_config={"init_from": "gpt2"})).text
    assert "whose pretraining continued from [openai-community/gpt2]" in card and "pretrained continued" not in card


def test_lm_eval_cli_results_of_the_local_task_are_checked_against_the_published_set(tmp_path, shared_data,
                                                                                   monkeypatch):
    """The lm_eval command line records no fingerprint, only the task config's data_files (relative to where it
    ran): the file it names is fingerprinted; one that cannot be found is not vouched for in the model-index."""
    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT

    original = shared_data("hellaswag/hellaswag_val.jsonl")
    edited = tmp_path / "edited.jsonl"
    lines = original.read_text().splitlines()
    row = json.loads(lines[7])
    row["label"] = (row["label"] + 1) % 4
    edited.write_text("\n".join(lines[:7] + [json.dumps(row)] + lines[8:]) + "\n")

    def card_for(data_file):
        path = tmp_path / "results.json"
        path.write_text(json.dumps({  # the shape lm-eval 0.4.13 writes
            "results": {"hellaswag_local": {"acc,none": 0.2891, "acc_norm,none": 0.3113}},
            "n-samples": {"hellaswag_local": {"original": 10042, "effective": 10042}},
            "configs": {"hellaswag_local": {"task": "hellaswag_local", "dataset_path": "json",
                                            "dataset_kwargs": {"data_files": {"validation": data_file}}}}}))
        loaded = load_lm_eval_results(path)
        return loaded, ModelCard(str(build_model_card(CardInputs(model_name="m", lm_eval_results=loaded))))

    monkeypatch.chdir(original.parent.parent)  # relative to where lm_eval ran: here
    loaded, card = card_for("hellaswag/hellaswag_val.jsonl")
    assert loaded["data_fingerprint"] == ORIGINAL_VAL_FINGERPRINT
    assert {r.metric_name for r in card.data.eval_results} == {METRIC_ACC, METRIC_ACC_NORM}
    loaded, card = card_for(str(edited))
    assert loaded["data_fingerprint"] != ORIGINAL_VAL_FINGERPRINT and card.data.eval_results is None
    assert "not the published HellaSwag validation set" in card.text
    loaded, card = card_for("elsewhere/hellaswag_val.jsonl")  # ran in another folder: not checkable here
    assert card.data.eval_results is None
    assert "elsewhere/hellaswag_val.jsonl, which could not be read here to check" in card.text
    loaded, card = card_for("/home/alice/data/hellaswag_val.jsonl")  # another machine's absolute path: not published
    assert "alice" not in card.text and "<local>/hellaswag_val.jsonl, which could not be read here" in card.text


@pytest.mark.parametrize("text, public", [
    ("/home/alice/runs/x/checkpoints/step_1", "<local>/step_1"),
    ("cannot write '/scratch/alice/run/ckpt': disk full", "cannot write '<local>/ckpt': disk full"),
    (r"C:\Users\alice\runs\x failed", "<local>/x failed"),
    ("https://huggingface.co/me/model/commit/abc", "https://huggingface.co/me/model/commit/abc"),
    ("runs/124M/checkpoints/step_1 and ~/data/x", "runs/124M/checkpoints/step_1 and ~/data/x"),
    ("loss 3.2/4 steps, ratio 1/2", "loss 3.2/4 steps, ratio 1/2"),
])
def test_absolute_local_paths_in_free_text_keep_their_last_name_only(text, public):
    from publish.local_paths import public_path, scrub_paths

    assert scrub_paths(text) == public
    assert public_path("/home/alice/data/fineweb") == "<local>/fineweb" and public_path("../../alice/x") == "<local>/x"
    kept = ["auto", "gpt2", "out/data/pydocs", None]
    assert [public_path(v) for v in kept] == kept


@pytest.mark.parametrize("format", ["gpt2repro", "gpt2"])
def test_a_card_pushed_to_a_branch_loads_that_branch(format):
    """export --push-to-hub me/m --revision step-1000: the card on that branch told visitors to
    from_pretrained("me/m"), which loads main, another model or none."""
    card = build_model_card(CardInputs(model_name="m", repo_id="me/m", revision="step-1000", format=format)).text
    assert 'from_pretrained("me/m", revision="step-1000"' in card and 'from_pretrained("me/m")' not in card
    assert "--model_args pretrained=me/m,revision=step-1000" in card and "branch `step-1000`" in card
    for revision in (None, "main"):
        card = build_model_card(CardInputs(model_name="m", repo_id="me/m", revision=revision, format=format)).text
        assert "revision" not in card


def test_a_hellaswag_subset_of_another_file_is_not_called_the_first_rows_of_the_published_set(tmp_path):
    """30 examples scored on a file that is not the published validation set (rows picked from anywhere, edited,
    translated): the card must not say they are 'the first 30 of the 10,042 examples', nor offer an lm-eval
    `--limit 30` command on the published set as what reproduces them."""
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"type": "hellaswag", "step": 10, "acc": 0.25, "acc_norm": 0.3, "acc_tokennorm": 0.2,
                                "n": 30, "data_fingerprint": "0" * 64}) + "\n")
    text = str(build_model_card(CardInputs(model_name="m", step=10, metrics=load_metrics(path))))
    assert "not the published HellaSwag validation set" in text and "30 examples of a file" in text
    assert "the first 30" not in text and "--limit 30" not in text and "Reproduce the lm-eval number" not in text
    assert "Score the published HellaSwag validation set on this export with lm-eval" in text
    assert "Standard error of this model's acc_norm: ±0.0851 (30 examples)." in text  # the uncertainty stays


def test_a_run_resumed_on_other_hardware_names_the_hardware_of_each_span_of_steps(tmp_path):
    """A preempted job going on with fewer GPUs: the card took the hardware from the last session's summary row and
    said '4 x H100' of a model mostly trained on 8."""
    from publish.model_card import training_rows

    h100 = "NVIDIA H100 80GB HBM3"
    rows = [{"type": "session", "step": 0, "device": h100, "world_size": 8, "precision": "bf16"}]
    rows += [{"type": "train", "step": s, "loss": 5.0, "dt_ms": 100.0, "tokens": 1000 * s} for s in range(1, 8)]
    rows += [{"type": "session", "step": 6, "device": h100, "world_size": 4, "precision": "bf16"},
             {"type": "resume", "step": 6, "checkpoint": "c"}]  # step 7 of the killed session is abandoned
    rows += [{"type": "train", "step": s, "loss": 4.0, "dt_ms": 200.0, "tokens": 1000 * s} for s in range(7, 11)]
    rows += [{"type": "summary", "steps": 10, "device": h100, "world_size": 4}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = load_metrics(path)
    hardware = dict(training_rows({}, metrics, None))["hardware"]
    assert hardware == f"8 x {h100} (steps 1-6), 4 x {h100} (steps 7-10)"
    assert dict(training_rows({}, metrics, 6))["hardware"] == f"8 x {h100}"  # exported at step 6: one span
    sessions = [r for r in rows if r["type"] != "session"]  # a log from before session rows: the summary says it
    path.write_text("".join(json.dumps(r) + "\n" for r in sessions))
    assert dict(training_rows({}, load_metrics(path), None))["hardware"] == f"4 x {h100}"


def test_small_runs_are_described_in_their_own_terms(tmp_path):
    """A demo-sized run's card said 'tokens seen 24,576 (0.00B)', 'linear warmup 0 steps' and described a
    validation loss it never measured (new-user review)."""
    from publish.model_card import training_rows

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"type": "train", "step": s, "loss": 5.0, "lr": 3e-3, "tokens": 4096 * s}) + "\n"
                            for s in range(1, 7)))
    metrics = load_metrics(path)
    cfg = dict(max_lr=3e-3, min_lr=3e-4, warmup_steps=0, max_steps=6, total_batch_size=4096)
    table = dict(training_rows(cfg, metrics, 6))
    assert table["tokens seen"] == "24,576"
    assert table["learning rate"].startswith("no warmup: 0.003 from the first step, cosine to 0.0003")
    assert dict(training_rows({**cfg, "warmup_steps": 2}, metrics, 6))["learning rate"].startswith("linear warmup 2")
    text = str(build_model_card(CardInputs(model_name="m", step=6, metrics=metrics, run_config=cfg)))
    assert "- Validation loss: not measured in training." in text and "Validation loss: mean cross-entropy" not in text
    big = dict(training_rows({**cfg, "total_batch_size": 524288}, None, 19073))["tokens seen"]  # 19,073 x 524,288
    assert big == "9,999,745,024 (10.00B)"
    assert dict(training_rows({**cfg, "total_batch_size": 4_100_000}, None, 6))["tokens seen"] == "24,600,000 (24.6M)"
    # the curve of a run without validation is captioned as what it shows
    from publish.export_model import _write_plots

    assert _write_plots(metrics, tmp_path / "plots", 6, []) == [("train loss", "plots/loss.png")]
