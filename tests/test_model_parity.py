"""Weight mapping both ways with transformers' own GPT-2, init statistics, and the weight tie."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from convert_gpt2 import load_stock_gpt2, save_stock_gpt2, to_stock_gpt2
from model_helpers import assert_padded_ids_impossible, randomize_all_parameters, tiny_config, tiny_model
from modeling_gpt2repro import GPT2ReproForCausalLM

pytestmark = pytest.mark.model


def _random_stock_gpt2(tmp_path):
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=50257)
    stock = GPT2LMHeadModel(config)
    randomize_all_parameters(stock, seed=1)
    stock.tie_weights()
    stock.save_pretrained(tmp_path / "stock")
    return stock.eval()


def test_stock_gpt2_to_ours_and_back_gives_equal_logits_and_loss(tmp_path):
    torch.manual_seed(0)
    stock = _random_stock_gpt2(tmp_path)
    ours = load_stock_gpt2(str(tmp_path / "stock"))
    assert ours.config.vocab_size == 50304 and ours.config.tokenizer_vocab_size == 50257
    x = torch.randint(0, 50257, (3, 40))
    with torch.no_grad():
        ref = stock(x, labels=x)
        out = ours(x, labels=x)
        back = to_stock_gpt2(ours)(x, labels=x)
    assert (out.logits[..., :50257] - ref.logits).abs().max().item() <= 1e-5
    assert_padded_ids_impossible(out.logits)
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-5
    assert (back.logits - ref.logits).abs().max().item() <= 1e-5
    assert abs(back.loss.item() - ref.loss.item()) <= 1e-5


def test_stock_export_loads_without_remote_code_and_matches_probabilities(tmp_path, gpt2_tokenizer):
    ours = tiny_model(seed=3)
    save_stock_gpt2(ours, tmp_path / "gpt2", gpt2_tokenizer)
    config_text = (tmp_path / "gpt2" / "config.json").read_text()
    assert '"model_type": "gpt2"' in config_text and "auto_map" not in config_text
    assert not list((tmp_path / "gpt2").glob("*.py"))  # no code to trust
    stock = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2").eval()
    assert stock.lm_head.weight.shape[0] == 50257
    x = torch.randint(0, 50257, (2, 32))
    with torch.no_grad():
        ours_probs = ours(x).logits.softmax(-1)[..., :50257]
        stock_probs = stock(x).logits.softmax(-1)
    assert (ours_probs - stock_probs).abs().max().item() <= 1e-5


def test_unsupported_gpt2_variant_is_refused_with_the_field_named(tmp_path):
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=50257, activation_function="relu")
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="activation_function='relu'"):
        load_stock_gpt2(str(tmp_path))


def test_another_architecture_is_not_loaded_as_a_random_gpt2(tmp_path):
    """from_pretrained fills what a checkpoint lacks with random weights and only logs it: a BERT folder with
    GPT-2's vocabulary size used to train from random weights under init_from."""
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=50304, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is not a GPT-2 checkpoint \\(model_type 'bert'"):
        load_stock_gpt2(str(tmp_path))


def test_missing_gpt2_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="local folder with config.json"):
        load_stock_gpt2(str(tmp_path / "nope"))


def test_init_statistics_follow_the_gpt2_recipe():
    torch.manual_seed(0)
    config = tiny_config(n_layer=4, n_embd=256, n_head=4)
    model = GPT2ReproForCausalLM(config)
    std = config.initializer_range
    residual_std = std / math.sqrt(2 * config.n_layer)
    for name, p in model.named_parameters():
        if name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight")):
            assert p.std().item() == pytest.approx(residual_std, rel=0.05), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(std, rel=0.05), name
            assert abs(p.mean().item()) < 3 * std / math.sqrt(p.numel()) + 1e-4, name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        elif ".ln_" in name and name.endswith("weight"):
            assert torch.all(p == 1), name


def test_weight_tie_survives_save_and_load(tmp_path):
    model = tiny_model(seed=5)
    assert model.lm_head.weight is model.transformer.wte.weight
    model.save_pretrained(tmp_path)
    loaded = GPT2ReproForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    x = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_from_pretrained_keeps_checkpoint_dtype_unless_asked(tmp_path):
    tiny_model().to(torch.bfloat16).save_pretrained(tmp_path)
    assert GPT2ReproForCausalLM.from_pretrained(tmp_path).dtype == torch.bfloat16
    assert GPT2ReproForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).dtype == torch.float32


def test_padded_ids_masked_the_same_when_the_head_is_hooked_or_replaced():
    """The fused path (bias inside the head matmul) and the general path (a head with hooks, or a replaced
    module: quantized, adapters) give the same logits, padded ids impossible, and the hook really runs."""
    model = tiny_model(seed=4)
    x = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        fused = model(x).logits
        seen = []
        handle = model.lm_head.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
        hooked = model(x).logits
        handle.remove()
        model.lm_head = torch.nn.Sequential(model.lm_head)  # stands in for a replaced module
        replaced = model(x).logits
    assert seen == [(2, 16, 50304)]
    for logits in (hooked, replaced):
        torch.testing.assert_close(logits[..., :50257], fused[..., :50257], rtol=0, atol=1e-6)
        assert_padded_ids_impossible(logits)
    assert_padded_ids_impossible(fused)


def test_convert_cli_takes_a_run_folder_and_says_errors_in_one_line(tmp_path, capsys):
    """`convert_gpt2.py --to-gpt2` accepts what export.py and eval/ accept (a run folder: its newest checkpoint),
    and bad input is one `error:` line with exit 2, not a traceback; an --out that holds files is not written into
    (converting into the source folder would overwrite the model being read)."""
    import convert_gpt2

    ours = tiny_model(seed=4)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000004"
    ours.save_pretrained(checkpoint / "model")
    (checkpoint / "COMPLETE").write_text("done\n")
    convert_gpt2.main(["--to-gpt2", str(tmp_path / "run"), "--out", str(tmp_path / "stock")])
    stock = GPT2LMHeadModel.from_pretrained(tmp_path / "stock").eval()
    assert (tmp_path / "stock" / "tokenizer.json").is_file()
    x = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        assert (ours(x).logits.softmax(-1)[..., :50257] - stock(x).logits.softmax(-1)).abs().max().item() <= 1e-5
    capsys.readouterr()
    for argv in (["--to-gpt2", str(tmp_path / "stock"), "--out", str(tmp_path / "again")],  # already stock GPT-2
                 ["--from-gpt2", str(tmp_path / "missing"), "--out", str(tmp_path / "ours")],
                 ["--from-gpt2", str(tmp_path / "stock"), "--out", str(tmp_path / "stock")],
                 ["--from-gpt2", str(checkpoint / "model"), "--out", str(tmp_path / "ours")]):  # ours already
        with pytest.raises(SystemExit) as exit_info:
            convert_gpt2.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "again").exists() and not (tmp_path / "ours").exists()
    assert "auto_map" not in (tmp_path / "stock" / "config.json").read_text()  # the source was not overwritten

    # a stock folder with a cut-off weights file was a SafetensorError traceback, one with 50,000 embedding rows
    # said only "Invalid GPT2ReproConfig:" (its reason was on the next line) (bad-input audit)
    import shutil

    cut, small = tmp_path / "cut", tmp_path / "small"
    shutil.copytree(tmp_path / "stock", cut)
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    GPT2LMHeadModel(GPT2Config(vocab_size=50000, n_layer=1, n_head=2, n_embd=32, n_positions=64)).save_pretrained(small)
    for source, message in ((cut, "its weights file is damaged or incomplete"),
                            (small, "Invalid GPT2ReproConfig: - bos_token_id (50256) must be an id in [0, 50000)")):
        with pytest.raises(SystemExit) as exit_info:
            convert_gpt2.main(["--from-gpt2", str(source), "--out", str(tmp_path / "ours")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err
