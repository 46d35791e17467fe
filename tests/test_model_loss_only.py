"""`return_logits=False`: the training forward returns the loss only, and under torch.compile the backward graph
no longer takes a (B, T, V) gradient of the logits (llm.c's PyTorch baseline made the same change for speed)."""

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from model_helpers import tiny_model

pytestmark = pytest.mark.model


def _compiled_step(return_logits: bool):
    """One compiled forward/backward; returns (output, gradients, shapes of the backward graph's gradient inputs)."""
    tangent_shapes = []

    def forward_compiler(gm, example_inputs):
        return make_boxed_func(gm.forward)

    def backward_compiler(gm, example_inputs):
        tangent_shapes.extend(tuple(node.meta["val"].shape) for node in gm.graph.nodes
                              if node.op == "placeholder" and node.name.startswith("tangents"))
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    model = tiny_model(seed=0).train()
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler))
    out = compiled(input_ids=x, shift_labels=x, return_logits=return_logits)
    out.loss.backward()
    torch._dynamo.reset()
    return out, [p.grad for p in model.parameters()], tangent_shapes


def test_loss_only_forward_drops_the_logits_gradient_from_backward():
    full, full_grads, full_tangents = _compiled_step(return_logits=True)
    lean, lean_grads, lean_tangents = _compiled_step(return_logits=False)
    vocab = full.logits.shape[-1]
    assert (2, 16, vocab) in full_tangents  # what the default costs: a zero (B, T, V) gradient read in backward
    assert lean.logits is None and all(vocab not in shape for shape in lean_tangents), lean_tangents
    assert torch.equal(lean.loss, full.loss)
    assert all(torch.equal(a, b) for a, b in zip(lean_grads, full_grads))


def test_return_logits_false_without_targets_still_returns_logits():
    """Nothing else to return: inference callers that pass the flag by habit still get their logits."""
    model = tiny_model(seed=0).eval()
    x = torch.randint(0, 50257, (1, 8))
    with torch.no_grad():
        out = model(input_ids=x, return_logits=False)
    assert out.loss is None and out.logits.shape == (1, 8, model.config.vocab_size)
