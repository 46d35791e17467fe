"""eval.sample.generate_samples and eval.val_loss against direct computations."""

import json

import pytest
import torch

from data.loader import TokenDataset
from eval.sample import generate_samples
from eval.val_loss import evaluate_val_loss


@pytest.fixture(scope="module")
def model():
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(0)
    return GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128)).eval()


def test_samples_reproducible_and_leave_global_rng_alone(model, gpt2_tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = generate_samples(model, gpt2_tokenizer, prompt="Hello, I'm a language model,", num_samples=3, max_new_tokens=6)
    assert torch.rand(1) == expected_next  # training randomness untouched
    b = generate_samples(model, gpt2_tokenizer, prompt="Hello, I'm a language model,", num_samples=3, max_new_tokens=6)
    c = generate_samples(model, gpt2_tokenizer, num_samples=3, max_new_tokens=6, seed=7)
    assert a == b and a != c and len(a) == 3
    assert all(t.startswith("Hello, I'm a language model,") for t in a)
    assert len(set(a)) > 1  # sampled, not greedy
    ids = gpt2_tokenizer(a[0])["input_ids"]
    assert len(ids) >= len(gpt2_tokenizer("Hello, I'm a language model,")["input_ids"]) + 1


def test_an_empty_prompt_gives_unconditional_samples_from_end_of_text(model, gpt2_tokenizer):
    """'' starts each sample at <|endoftext|> (a document boundary); the strings hold only what was generated."""
    texts = generate_samples(model, gpt2_tokenizer, prompt="", num_samples=2, max_new_tokens=5)
    assert len(texts) == 2 and not any(t.startswith("<|endoftext|>") for t in texts)
    # the same as sampling after an explicit end-of-text prompt, minus that prompt
    explicit = generate_samples(model, gpt2_tokenizer, prompt="<|endoftext|>", num_samples=2, max_new_tokens=5)
    assert [f"<|endoftext|>{t}" for t in texts] == explicit


def test_samples_on_compiled_module_use_the_original(model, gpt2_tokenizer):
    compiled = torch.compile(model, backend="eager")
    assert generate_samples(compiled, gpt2_tokenizer, num_samples=2, max_new_tokens=4) == \
        generate_samples(model, gpt2_tokenizer, num_samples=2, max_new_tokens=4)


def test_samples_longer_than_the_context_are_refused_before_generating(model, gpt2_tokenizer):
    prompt_tokens = len(gpt2_tokenizer("Hello, I'm a language model,")["input_ids"])
    with pytest.raises(ValueError, match=f"generate at most {128 - prompt_tokens} new tokens"):
        generate_samples(model, gpt2_tokenizer, num_samples=1, max_new_tokens=500)
    assert len(generate_samples(model, gpt2_tokenizer, num_samples=1, max_new_tokens=128 - prompt_tokens)) == 1


def test_val_loss_equals_token_weighted_mean_of_model_losses(model):
    torch.manual_seed(1)
    batches = [(torch.randint(0, 50257, (b, 16)), torch.randint(0, 50257, (b, 16))) for b in (3, 5)]
    loss, n = evaluate_val_loss(model, batches)
    with torch.no_grad():
        expected = sum(model(input_ids=x, shift_labels=y).loss.item() * y.numel() for x, y in batches) / 128
    assert n == 128 and loss == pytest.approx(expected, rel=1e-5)
    # reduce_fn sees (loss_sum, tokens); a fake second rank with the same numbers doubles both: same mean
    loss2, n2 = evaluate_val_loss(model, batches, reduce_fn=lambda t: t * 2)
    assert n2 == 256 and loss2 == pytest.approx(loss)
    assert not model.training


def test_val_loss_cli_on_prepared_folder(tmp_path, shared_data, gpt2_tokenizer, monkeypatch, capsys):
    import data.shards
    from data.prepare import prepare
    from eval.val_loss import main

    text = shared_data("tinyshakespeare/input.txt")
    prepare(str(text), tmp_path / "data", txt_sample_by="paragraph", shard_tokens=20_000, val_tokens=5_000,
            max_tokens=20_000)
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(0)
    GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128)).save_pretrained(tmp_path / "m")
    gpt2_tokenizer.save_pretrained(tmp_path / "m")
    hashed = []  # the shards whose sha256 the command computes
    monkeypatch.setattr(data.shards, "sha256_file", lambda path, _hash=data.shards.sha256_file: hashed.append(
        path.name) or _hash(path))
    record = main(["--model", str(tmp_path / "m"), "--data", str(tmp_path / "data"), "--max-tokens", "2048"])
    assert record["val_tokens"] == 2048 - 2048 % 128 and 10 < record["val_loss"] < 12  # ~ln(50257) untrained
    # only the val shards it reads are verified (it hashed every train shard too: ~40 s for 10B tokens)
    assert hashed and all(name.startswith("val_") for name in hashed), hashed
    saved = json.loads((tmp_path / "m" / "eval_results" / "val_loss.json").read_text())
    assert saved["val_loss"] == record["val_loss"] and saved["dtype"] == "float32" and saved["batch_size"] == 8
    assert saved["data_manifest_hash"] == TokenDataset(tmp_path / "data").manifest_hash
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["device"] == "cpu"
    assert "holds fewer than" not in capsys.readouterr().out
    # more tokens asked than the ~5,000-token val split holds: the loss is over what there is, and that is said
    record = main(["--model", str(tmp_path / "m"), "--data", str(tmp_path / "data"), "--max-tokens", "100000"])
    assert 2048 < record["val_tokens"] < 100_000
    assert "holds fewer than the 100,000 tokens asked" in capsys.readouterr().out


def test_val_loss_on_other_data_keeps_the_result_on_the_first(tmp_path, shared_data, gpt2_tokenizer, capsys):
    """Comparing validation sets: the default eval_results/val_loss.json was overwritten by each run, whatever data
    it measured. A result on other data is now kept and the new one named after its data's manifest hash; the
    same data measured again (other settings) replaces its own file."""
    from configuration_gpt2repro import GPT2ReproConfig
    from data.prepare import prepare
    from eval.val_loss import main
    from modeling_gpt2repro import GPT2ReproForCausalLM

    text = str(shared_data("tinyshakespeare/input.txt"))
    for name, val_tokens in (("a", 5_000), ("b", 6_000)):  # another val split: another manifest
        prepare(text, tmp_path / name, txt_sample_by="paragraph", shard_tokens=20_000, val_tokens=val_tokens,
                max_tokens=20_000)
    torch.manual_seed(0)
    GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128)).save_pretrained(tmp_path / "m")
    gpt2_tokenizer.save_pretrained(tmp_path / "m")
    results = tmp_path / "m" / "eval_results"
    run = lambda data, tokens: main(["--model", str(tmp_path / "m"), "--data", str(tmp_path / data),  # noqa: E731
                                     "--max-tokens", str(tokens)])

    a = run("a", 1024)
    first = (results / "val_loss.json").read_bytes()
    b = run("b", 1024)
    hash_b = TokenDataset(tmp_path / "b").manifest_hash
    assert hash_b != a["data_manifest_hash"]
    assert (results / "val_loss.json").read_bytes() == first  # the result on data a is kept
    beside = results / f"val_loss_{hash_b[:12]}.json"
    assert json.loads(beside.read_text())["val_loss"] == b["val_loss"]
    assert "holds the loss on other data" in capsys.readouterr().out

    again = run("a", 2048)  # data a, other settings: replaces its own result
    assert json.loads((results / "val_loss.json").read_text())["val_tokens"] == again["val_tokens"] == 2048
    assert sorted(p.name for p in results.iterdir()) == sorted(["val_loss.json", beside.name])  # no temporaries


def test_val_loss_says_when_the_training_data_folder_was_prepared_again(tmp_path, shared_data, gpt2_tokenizer, capsys):
    """With the checkpoint's own data_dir (the default) the command printed "(data, seq_len, val_tokens as in
    training)" even when that folder had been prepared again since: its number need not repeat the log's."""
    import json

    from data.prepare import prepare
    from eval.val_loss import main

    prepare(str(shared_data("tinyshakespeare/input.txt")), tmp_path / "data", txt_sample_by="paragraph",
            shard_tokens=20_000, val_tokens=5_000, max_tokens=20_000)
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000001"
    GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=1, n_head=2, n_embd=32, n_positions=128)).save_pretrained(
        checkpoint / "model")
    gpt2_tokenizer.save_pretrained(checkpoint / "model")
    (checkpoint / "COMPLETE").write_text("done\n")  # a hand-made checkpoint (no MANIFEST.json): taken as it is
    run_config = {"data_dir": str(tmp_path / "data"), "seq_len": 128, "val_tokens": 1024}
    for recorded, as_logged in (("f" * 64, False), (None, True)):  # another manifest; then the folder's own
        recorded = recorded or TokenDataset(tmp_path / "data").manifest_hash
        (checkpoint / "meta.json").write_text(json.dumps({"run_config": run_config, "data_manifest_hash": recorded}))
        record = main(["--model", str(checkpoint)])
        printed = capsys.readouterr().out
        assert record["data_as_in_training"] is as_logged
        assert ("as in training" in printed) is as_logged and ("may not repeat" in printed) is not as_logged
    # the same data under another spelling of its path (given with --data): still the data training read
    record = main(["--model", str(checkpoint), "--data", f"{tmp_path}/run/../data/"])
    assert record["data_as_in_training"] is True and "may not repeat" not in capsys.readouterr().out
