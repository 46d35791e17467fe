"""Attention backends through transformers' interface: same logits, and each backend really runs."""

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import modeling_gpt2repro
from model_helpers import tiny_model

pytestmark = pytest.mark.model


def _counting(fn, counter):
    def wrapped(*args, **kwargs):
        counter["calls"] += 1
        return fn(*args, **kwargs)

    return wrapped


def _logits_with(impl, monkeypatch, x, attention_mask=None):
    """Logits of the seeded tiny model on backend `impl`, asserting that backend's function was called."""
    counter = {"calls": 0}
    if impl == "eager":  # the default passed to get_interface, looked up in our module at call time
        monkeypatch.setattr(modeling_gpt2repro, "eager_attention_forward",
                            _counting(modeling_gpt2repro.eager_attention_forward, counter))
    else:
        monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, impl,
                            _counting(ALL_ATTENTION_FUNCTIONS._global_mapping[impl], counter))
    model = tiny_model(seed=0, attn_implementation=impl)
    assert model.config._attn_implementation == impl
    with torch.no_grad():  # flex_attention has no CPU backward
        logits = model(x, attention_mask=attention_mask).logits[..., :50257]
    assert counter["calls"] == model.config.n_layer, f"{impl} was not the backend that ran"
    monkeypatch.undo()
    return logits


def test_eager_sdpa_and_flex_give_the_same_logits(monkeypatch):
    torch.manual_seed(0)
    x = torch.randint(0, 50257, (2, 24))
    eager = _logits_with("eager", monkeypatch, x)
    sdpa = _logits_with("sdpa", monkeypatch, x)
    flex = _logits_with("flex_attention", monkeypatch, x)
    assert (sdpa - eager).abs().max().item() <= 1e-5
    assert (flex - eager).abs().max().item() <= 1e-5


def test_padded_batch_gives_same_logits_on_eager_and_sdpa(monkeypatch):
    torch.manual_seed(1)
    x = torch.randint(0, 50257, (2, 12))
    mask = torch.ones_like(x)
    mask[0, :5] = 0  # left padding in row 0
    eager = _logits_with("eager", monkeypatch, x, mask)
    sdpa = _logits_with("sdpa", monkeypatch, x, mask)
    assert (sdpa[0, 5:] - eager[0, 5:]).abs().max().item() <= 1e-5
    assert (sdpa[1] - eager[1]).abs().max().item() <= 1e-5


def test_unpadded_sdpa_takes_the_is_causal_path(monkeypatch):
    """No mask tensor for unpadded input: SDPA gets is_causal=True, which is what selects the flash kernel."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny_model(attn_implementation="sdpa")
    with torch.no_grad():
        model(torch.randint(0, 50257, (2, 16)))
    assert seen and all(mask is None and causal for mask, causal in seen)


def test_compiled_training_forward_gives_sdpa_no_mask_and_is_causal():
    """Under torch.compile too: transformers' create_causal_mask cannot prove the skip while tracing and would
    build a full (B, 1, T, T) mask, sending SDPA to its masked kernel (2.5x the attention time on an H200). The
    graph dynamo captures must call SDPA with no mask and is_causal=True."""
    seen = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function" and "scaled_dot_product_attention" in str(node.target):
                mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 else None)
                seen.append((mask, node.kwargs.get("is_causal")))
        return gm.forward

    torch._dynamo.reset()
    model = tiny_model(attn_implementation="sdpa").train()
    x = torch.randint(0, 50257, (2, 16))
    torch.compile(model, backend=backend)(input_ids=x, shift_labels=x).loss.backward()
    torch._dynamo.reset()
    assert len(seen) == 2 and all(mask is None and causal is True for mask, causal in seen), seen


def test_set_attn_implementation_switches_the_backend():
    model = tiny_model(attn_implementation="sdpa")
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert model.transformer.h[0].attn.config._attn_implementation == "eager"
