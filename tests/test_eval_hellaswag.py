"""The in-loop HellaSwag scorer against lm-eval (same counts), a direct per-example computation, and compile."""

import os

import pytest
import torch

from eval.hellaswag import HellaSwagScorer
from eval.hellaswag_data import cloze_choices, cloze_query, read_hellaswag

N_EXAMPLES = 32
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_model(seed: int = 0):
    """Our tiny GPT2Repro with seeded, enlarged weights: peaked predictions, so no near-ties between choices
    (at the default 0.02 init every continuation is almost uniform and the counts would hinge on float noise)."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(seed)
    model = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=32, n_positions=128))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def hellaswag_file(shared_data):
    return shared_data("hellaswag/hellaswag_val.jsonl")


def trained_tiny_model(text: str, steps: int = 40):
    """A small *trained* model (must-show 1): our 2-layer GPT2Repro after `steps` seeded AdamW steps on
    FineWeb-Edu text, so its answers come from learned statistics rather than from random weights."""
    from configuration_gpt2repro import GPT2ReproConfig
    from data.tokenizer import gpt2_tokenizer
    from modeling_gpt2repro import GPT2ReproForCausalLM

    ids = torch.tensor(gpt2_tokenizer()(text)["input_ids"], dtype=torch.long)
    torch.manual_seed(0)
    model = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=32, n_positions=128))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (8,))
        window = torch.stack([ids[s:s + 65] for s in starts])  # (8, 65)
        loss = model(input_ids=window[:, :-1], shift_labels=window[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 2, losses  # it learned something (10.8 -> below 8.8)
    return model.eval()


@pytest.fixture(scope="module")
def model(shared_data):
    import pyarrow.parquet as pq

    docs = pq.read_table(shared_data("fineweb-edu/fineweb_edu_150docs.parquet"), columns=["text"]).column("text")
    return trained_tiny_model("\n\n".join(docs.to_pylist()[:60]))


@pytest.fixture(scope="module")
def scorer(hellaswag_file, gpt2_tokenizer):
    return HellaSwagScorer.from_file(hellaswag_file, gpt2_tokenizer, limit=N_EXAMPLES, max_length=128,
                                     formulations=("cloze", "tokennorm", "mc"))


@pytest.fixture(scope="module")
def ours(scorer, model):
    return scorer.loglikelihoods(model, batch_size=16)


def test_preprocessing_equals_lm_eval_on_every_row(hellaswag_file):
    """Our copy of lm-eval's hellaswag preprocessing gives its query/choices on all 10,042 rows."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    examples = read_hellaswag(hellaswag_file)
    docs = process_docs(datasets.load_dataset("json", data_files=str(hellaswag_file), split="train"))
    assert len(examples) == len(docs) == 10042
    assert [cloze_query(ex) for ex in examples] == docs["query"]
    assert [cloze_choices(ex) for ex in examples] == docs["choices"]
    assert [ex.label for ex in examples] == docs["gold"]


def test_counts_equal_lm_eval(scorer, model, ours, gpt2_tokenizer, hellaswag_file, monkeypatch):
    """Must-show 1 (subset): acc / acc_norm / mc counts and per-example answers equal lm-eval's HFLM."""
    from eval.lm_eval_run import run_lm_eval

    monkeypatch.chdir(REPO_ROOT)
    out = run_lm_eval(model, gpt2_tokenizer, ["hellaswag"], data_file=hellaswag_file, mc=True, limit=N_EXAMPLES,
                      batch_size=8, log_samples=True)
    metrics = scorer.metrics(ours)
    for task, ll_key in (("hellaswag_local", "cloze"), ("hellaswag_mc_local", "mc")):
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        assert len(samples) == N_EXAMPLES
        theirs = torch.tensor([[r[0][0] for r in s["resps"]] for s in samples], dtype=torch.float64)  # (N, 4)
        torch.testing.assert_close(ours[ll_key], theirs, atol=2e-3, rtol=1e-5)
        if ll_key == "cloze":
            assert metrics["correct"] == sum(s["acc"] for s in samples)
            assert metrics["correct_norm"] == sum(s["acc_norm"] for s in samples)
            norm = ours["cloze"] / scorer.divisor["cloze"]
            assert norm.argmax(1).tolist() == [int(max(range(4), key=lambda j: theirs[i, j] / scorer.divisor["cloze"][i, j]))
                                               for i in range(N_EXAMPLES)]
        else:
            assert metrics["correct_mc"] == sum(s["acc"] for s in samples)
    # not a degenerate model: the answers differ between choices and formulations disagree somewhere
    assert len(set(ours["cloze"].argmax(1).tolist())) > 1
    assert 0 < metrics["correct_norm"] < N_EXAMPLES


@torch.no_grad()
def test_tokennorm_equals_direct_per_example_reference(scorer, model, ours, gpt2_tokenizer, hellaswag_file):
    """Must-show 2: build-nanogpt's score, computed one (unpadded) sequence at a time with cross_entropy."""
    examples = read_hellaswag(hellaswag_file, limit=N_EXAMPLES)
    correct = 0
    for i, ex in enumerate(examples):
        ctx = gpt2_tokenizer.encode(ex.ctx)
        mean_losses = []
        for j, ending in enumerate(ex.endings):
            end = gpt2_tokenizer.encode(" " + ending)
            seq = torch.tensor((ctx + end)[-129:])  # the model has 128 positions: keep the last 128 inputs
            logits = model(input_ids=seq[None, :-1], logits_to_keep=len(end)).logits[0].float()  # (n_end, V)
            loss = torch.nn.functional.cross_entropy(logits, seq[-len(end):], reduction="none")
            assert ours["tokennorm"][i, j].item() == pytest.approx(-loss.sum().item(), abs=1e-3)
            mean_losses.append(loss.mean().item())
        correct += int(min(range(4), key=lambda j: mean_losses[j]) == ex.label)
    assert scorer.metrics(ours)["correct_tokennorm"] == correct


def test_results_do_not_depend_on_batch_plan(scorer, model, ours):
    """Batch size changes the packing, not the answers."""
    other = scorer.loglikelihoods(model, batch_size=5)
    for key in ours:
        torch.testing.assert_close(other[key], ours[key], atol=1e-3, rtol=1e-5)
    assert scorer.metrics(other) == scorer.metrics(ours)


def test_full_logits_path_equals_logits_to_keep_path(scorer, model, ours):
    """Models without `logits_to_keep` (full logits, then the scored positions) give the same numbers."""

    class NoKeep(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids)

    full = scorer.loglikelihoods(NoKeep(model), batch_size=16)
    assert scorer.metrics(full) == scorer.metrics(ours)


def test_scorer_on_compiled_model_without_recompiling(hellaswag_file, gpt2_tokenizer, model):
    """Must-show 4: a torch.compile'd model scores the same; a second call compiles nothing new.
    (aot_eager: dynamo's tracing, guards and recompiles as with inductor, without its minutes of codegen on CPU.)"""
    from torch._dynamo.utils import counters

    small = HellaSwagScorer.from_file(hellaswag_file, gpt2_tokenizer, limit=40, max_length=128)
    plan = small._plan(16)  # 16 rows per forward: many batches, of several padded shapes
    shapes = {tuple(b.input_ids.shape) for b in plan}
    assert len(plan) >= 10 and len(shapes) >= 2
    eager = small.evaluate(model, batch_size=16)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager")
    first = small.evaluate(compiled, batch_size=16)
    graphs = counters["stats"]["unique_graphs"]
    second = small.evaluate(compiled, batch_size=16)
    # bounded by the shapes, not by the batches; the second call (every shape seen) compiles nothing
    assert 0 < graphs <= len(shapes) + 1 < len(plan)
    assert counters["stats"]["unique_graphs"] == graphs
    assert first == second == eager


def test_guard_against_context_longer_than_model(hellaswag_file, gpt2_tokenizer, model):
    scorer = HellaSwagScorer.from_file(hellaswag_file, gpt2_tokenizer, limit=2, max_length=1024,
                                       formulations=("cloze",))
    with pytest.raises(ValueError, match="max_length=128"):
        scorer.evaluate(model)


def test_tiktoken_tokenising_gives_the_requests_the_tokenizer_gives(hellaswag_file, gpt2_tokenizer, monkeypatch):
    """For GPT-2's tokenizer the scorer tokenises with tiktoken (faster); forcing the tokenizer's own path must
    build the very same rows, requests and divisors (every formulation, the first 2,000 examples)."""
    import eval.hellaswag as hs

    args = dict(limit=2000, max_length=1024, formulations=("cloze", "tokennorm", "mc"))
    fast = HellaSwagScorer.from_file(hellaswag_file, gpt2_tokenizer, **args)
    monkeypatch.setattr(hs, "is_gpt2_tokenizer", lambda tokenizer: False)
    plain = HellaSwagScorer.from_file(hellaswag_file, gpt2_tokenizer, **args)
    assert fast._rows == plain._rows and fast._requests == plain._requests
    for name in args["formulations"]:
        assert torch.equal(fast.request_index[name], plain.request_index[name]), name
    for name in fast.divisor:
        assert torch.equal(fast.divisor[name], plain.divisor[name]), name


def test_the_original_validation_set_is_recognised_by_content_in_any_json_layout(hellaswag_file, tmp_path):
    """The model card says when HellaSwag was scored on another file than the published validation set. Bytes
    cannot tell: the copy `datasets` writes for Rowan/hellaswag (other key order and spacing, labels as strings)
    is the same set in another layout. The fingerprint is of the rows' content."""
    import json

    from datasets import load_dataset

    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT, file_fingerprint

    assert file_fingerprint(hellaswag_file) == ORIGINAL_VAL_FINGERPRINT
    rows = load_dataset("json", data_files=str(hellaswag_file), split="train")
    rows = rows.cast_column("label", __import__("datasets").Value("string"))  # as on the Hub
    rows.to_json(str(tmp_path / "from_datasets.jsonl"), lines=True)
    assert (tmp_path / "from_datasets.jsonl").read_bytes() != hellaswag_file.read_bytes()
    assert file_fingerprint(tmp_path / "from_datasets.jsonl") == ORIGINAL_VAL_FINGERPRINT

    lines = hellaswag_file.read_text().splitlines()
    row = json.loads(lines[5000])
    row["endings"][0] += " (edited)"
    (tmp_path / "edited.jsonl").write_text("\n".join(lines[:5000] + [json.dumps(row)] + lines[5001:]) + "\n")
    assert file_fingerprint(tmp_path / "edited.jsonl") != ORIGINAL_VAL_FINGERPRINT
    (tmp_path / "first_100.jsonl").write_text("\n".join(lines[:100]) + "\n")  # a subset is another file too
    assert file_fingerprint(tmp_path / "first_100.jsonl") != ORIGINAL_VAL_FINGERPRINT


def test_saved_scorer_results_record_which_rows_they_were_scored_on(hellaswag_file, tmp_path):
    """Every writer of eval.hellaswag results gets the fingerprint, not only the CLI: training.demo called
    save_results without it, so a score on an edited file reached the card's model-index as Rowan/hellaswag."""
    import json

    from eval.hellaswag import save_results
    from eval.hellaswag_data import ORIGINAL_VAL_FINGERPRINT, file_fingerprint

    (tmp_path / "config.json").write_text("{}")  # a model folder, for the record's "model"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(hellaswag_file.read_text().splitlines()[:3]) + "\n")
    result = {"acc": 0.25, "acc_norm": 0.3, "acc_tokennorm": 0.3, "n": 3}
    out = save_results(tmp_path, result, data=edited, limit=None, output=tmp_path / "r.json")  # as training.demo
    assert json.loads(out.read_text())["data_fingerprint"] == file_fingerprint(edited) != ORIGINAL_VAL_FINGERPRINT
    out = save_results(tmp_path, result, data=hellaswag_file, limit=3, output=tmp_path / "r.json")
    assert json.loads(out.read_text())["data_fingerprint"] == ORIGINAL_VAL_FINGERPRINT
