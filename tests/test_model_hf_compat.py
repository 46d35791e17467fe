"""What transformers users expect of a causal LM, against transformers' own GPT-2 where it applies:
hidden states and attention maps, return_dict=False, gradient checkpointing, resize_token_embeddings, a
StaticCache in a plain forward, and a refusal to convert an untied GPT-2 head."""

import pytest
import torch

from convert_gpt2 import load_stock_gpt2, to_stock_gpt2
from model_helpers import tiny_model

pytestmark = pytest.mark.model
REAL = 50257  # GPT-2 ids; our logits have padded (-inf) columns beyond them


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_hidden_states_and_attentions_match_transformers_gpt2(impl):
    ours = tiny_model()
    stock = to_stock_gpt2(ours).eval()
    ours.set_attn_implementation(impl)
    stock.set_attn_implementation(impl)
    x = torch.randint(0, REAL, (2, 9))
    with torch.no_grad():
        o = ours(x, output_hidden_states=True, output_attentions=True)
        s = stock(x, output_hidden_states=True, output_attentions=impl == "eager")
    assert len(o.hidden_states) == len(s.hidden_states) == ours.config.n_layer + 1
    for a, b in zip(o.hidden_states, s.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(o.attentions) == ours.config.n_layer
    if impl == "eager":
        for a, b in zip(o.attentions, s.attentions):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    plain = ours(x)
    assert plain.hidden_states is None and plain.attentions is None  # only when asked


def test_return_dict_false_gives_tuples():
    model = tiny_model()
    x = torch.randint(0, REAL, (1, 5))
    logits, *_ = model(x, return_dict=False)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 5, model.config.vocab_size)
    hidden, *_ = model.transformer(x, return_dict=False)
    assert isinstance(hidden, torch.Tensor) and hidden.shape == (1, 5, model.config.n_embd)


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randint(0, REAL, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(dropout=0.0).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        model(x, labels=x).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=0, msg=name)


def test_resized_embeddings_make_new_ids_predictable_and_reload(tmp_path):
    """A token added to the tokenizer (e.g. a pad token) gets a finite logit and loss, as in stock GPT-2, and the
    resized model saves and loads."""
    from modeling_gpt2repro import GPT2ReproForCausalLM

    model = tiny_model()
    model.resize_token_embeddings(REAL + 1)
    z = torch.tensor([[1, 2, 3, REAL]])
    out = model(z, labels=z)
    assert torch.isfinite(out.logits[0, -1, REAL]) and torch.isfinite(out.loss)
    model.save_pretrained(tmp_path)
    reloaded = GPT2ReproForCausalLM.from_pretrained(tmp_path)
    assert (reloaded.config.vocab_size, reloaded.config.tokenizer_vocab_size) == (REAL + 1, REAL + 1)
    padded = tiny_model()
    padded.resize_token_embeddings(REAL + 1, pad_to_multiple_of=64)  # rows beyond the new id stay impossible
    assert padded.config.tokenizer_vocab_size == REAL + 1 < padded.config.vocab_size
    logits = padded(z).logits[0, -1]
    assert torch.isfinite(logits[REAL]) and torch.isinf(logits[REAL + 1:]).all()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_static_cache_in_a_plain_forward_gives_the_same_logits(impl):
    from transformers import StaticCache

    from modeling_gpt2repro import CACHE_NAME

    model = tiny_model()
    model.set_attn_implementation(impl)
    x = torch.randint(0, REAL, (2, 9))
    with torch.no_grad():
        cached = model(x, **{CACHE_NAME: StaticCache(config=model.config, max_cache_len=32)}).logits
        plain = model(x).logits
    torch.testing.assert_close(cached[..., :REAL], plain[..., :REAL], rtol=1e-5, atol=1e-5)


def test_an_untied_gpt2_head_is_refused_not_silently_tied(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    stock = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, tie_word_embeddings=False))
    torch.nn.init.normal_(stock.lm_head.weight)
    stock.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not tied to its token embedding"):
        load_stock_gpt2(str(tmp_path))
