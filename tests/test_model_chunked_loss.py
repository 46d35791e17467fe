"""The fused chunked loss (`loss_chunk_tokens=N`, `chunked_linear_cross_entropy`) against the default path
(full logits, transformers' ForCausalLMLoss): same loss, same gradients, with ignored targets, the padded
vocabulary's padded-ids bias, chunks that do not divide the batch, autocast, no_grad and torch.compile."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from model_helpers import tiny_model
from modeling_gpt2repro import chunked_linear_cross_entropy

pytestmark = pytest.mark.model


def _batch(B=3, T=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50257, (B, T), generator=g)
    y = torch.randint(0, 50257, (B, T), generator=g)
    y[0, :7] = -100  # ignored targets (e.g. padding) must not count in the mean
    return x, y


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, as a fraction of b's largest entry."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _loss_and_grads(model, call=None, **kwargs):
    """(output, {parameter name: gradient}) of one forward/backward of `call` (default: the model itself)."""
    model.zero_grad(set_to_none=True)
    out = (model if call is None else call)(**kwargs)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("chunk", [1, 7, 60, 1000])
def test_chunked_loss_equals_full_logits_loss_and_gradients(chunk):
    model = tiny_model().train()
    assert model.config.vocab_size > model.config.tokenizer_vocab_size  # the padded-ids bias is in play
    x, y = _batch()
    full, full_grads = _loss_and_grads(model, input_ids=x, shift_labels=y)
    chunked, chunked_grads = _loss_and_grads(model, input_ids=x, shift_labels=y, loss_chunk_tokens=chunk)
    assert chunked.logits is None  # the point: no (B, T, V) tensor
    torch.testing.assert_close(chunked.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert full_grads.keys() == chunked_grads.keys()
    for name, grad in full_grads.items():  # fp32 summation order differs: ~1e-5 of each tensor's largest entry
        assert _relative_error(chunked_grads[name], grad) < 1e-4, name
    assert full_grads["transformer.wte.weight"].abs().max() > 0  # the tied embedding / head got its gradient


def test_chunked_loss_of_an_fp64_model_is_computed_in_fp64():
    """An fp64 model's chunked loss and gradients are computed in fp64, as F.cross_entropy on its fp64 logits does
    (the softmax once ran in fp32 whatever the model's dtype: errors of ~1e-7 instead of ~1e-15). The default
    path is not the reference here: transformers' loss casts the logits to fp32."""
    model = tiny_model().double().train()
    x, y = _batch()
    ref_loss = lambda **kw: SimpleNamespace(loss=F.cross_entropy(model(**kw).logits.flatten(0, 1), y.flatten()))  # noqa: E731
    ref, ref_grads = _loss_and_grads(model, call=ref_loss, input_ids=x)
    chunked, chunked_grads = _loss_and_grads(model, input_ids=x, shift_labels=y, loss_chunk_tokens=7)
    assert chunked.loss.dtype == torch.float64
    torch.testing.assert_close(chunked.loss, ref.loss, rtol=1e-12, atol=1e-12)
    for name, grad in ref_grads.items():
        assert _relative_error(chunked_grads[name], grad) < 1e-10, name


def test_chunked_loss_with_unshifted_labels_matches_transformers_shift():
    model = tiny_model()
    x, _ = _batch()
    labels = x.clone()
    labels[1, 5:] = -100
    full = model(input_ids=x, labels=labels).loss
    chunked = model(input_ids=x, labels=labels, loss_chunk_tokens=16).loss
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6)


def test_chunked_loss_under_bf16_autocast_matches_the_full_path():
    """bf16 matmuls, fp32 softmax in both paths: equal up to bf16 rounding of the partial sums."""
    model = tiny_model().train()
    x, y = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full, full_grads = _loss_and_grads(model, input_ids=x, shift_labels=y)
        chunked, chunked_grads = _loss_and_grads(model, input_ids=x, shift_labels=y, loss_chunk_tokens=16)
    torch.testing.assert_close(chunked.loss, full.loss, rtol=1e-3, atol=1e-3)
    for name, grad in full_grads.items():
        assert chunked_grads[name].dtype == grad.dtype == torch.float32, name
        assert _relative_error(chunked_grads[name], grad) < 2e-2, name


def test_function_gradients_match_autograd_of_f_cross_entropy():
    """The function alone, with a trainable bias and a frozen weight, against autograd through F.linear +
    F.cross_entropy; and under no_grad it returns just the loss."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(13, 8, generator=g, requires_grad=True)
    weight = torch.randn(11, 8, generator=g)  # frozen: no gradient asked for
    bias = torch.randn(11, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (13,), generator=g)
    targets[4] = -100
    ref = F.cross_entropy(F.linear(hidden, weight, bias), targets)
    ref_h, ref_b = torch.autograd.grad(ref, (hidden, bias))
    loss = chunked_linear_cross_entropy(hidden, weight, bias, targets, chunk_tokens=5)
    (2.0 * loss).backward()  # a loss gradient other than 1 must scale the stored gradients
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(hidden.grad, 2 * ref_h)
    torch.testing.assert_close(bias.grad, 2 * ref_b)
    assert weight.grad is None
    with torch.no_grad():
        torch.testing.assert_close(chunked_linear_cross_entropy(hidden, weight, bias, targets, 4), ref.detach())


def test_fp16_and_bad_chunk_sizes_are_refused_with_a_reason():
    """fp16 gradients made in forward would sit out of the loss scaler's reach: refused, as is a chunk < 1."""
    hidden, weight, targets = torch.randn(4, 8), torch.randn(11, 8), torch.randint(0, 11, (4,))
    with pytest.raises(ValueError, match="does not support fp16"):
        chunked_linear_cross_entropy(hidden.half(), weight.half(), None, targets, 2)
    with torch.autocast("cpu", dtype=torch.float16), pytest.raises(ValueError, match="does not support fp16"):
        chunked_linear_cross_entropy(hidden, weight, None, targets, 2)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
            chunked_linear_cross_entropy(hidden, weight, None, targets, bad)


def test_all_targets_ignored_gives_nan_loss_but_zero_gradients_like_f_cross_entropy():
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    targets = torch.full((5,), -100)
    ref = F.cross_entropy(F.linear(hidden, weight), targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    loss = chunked_linear_cross_entropy(hidden, weight, None, targets, 2)
    grads = torch.autograd.grad(loss, (hidden, weight))
    assert torch.isnan(ref) and torch.isnan(loss)
    for got, want in zip(grads, ref_grads):
        assert torch.equal(got, want) and not got.any()


def test_no_grad_computes_the_loss_only():
    """Under no_grad (evaluation) no gradient matmul runs: F.linear once per chunk and nothing else."""
    hidden = torch.randn(12, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    targets = torch.randint(0, 11, (12,))
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        loss = chunked_linear_cross_entropy(hidden, weight, None, targets, 5)
    torch.testing.assert_close(loss, F.cross_entropy(F.linear(hidden, weight), targets).detach())
    assert flops.get_total_flops() == 2 * 12 * 8 * 11  # the logits' matmul only


def test_double_backward_is_refused_not_silently_wrong():
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    loss = chunked_linear_cross_entropy(hidden, weight, None, torch.randint(0, 11, (6,)), 4)
    (grad,) = torch.autograd.grad(loss, hidden, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        grad.sum().backward()


def test_replaced_head_falls_back_to_the_full_logits_loss():
    """A head with a hook is not a plain F.linear: the model calls it and returns logits as usual."""
    model = tiny_model()
    x, y = _batch()
    seen = []
    model.lm_head.register_forward_hook(lambda *args: seen.append(1))
    out = model(input_ids=x, shift_labels=y, loss_chunk_tokens=8)
    assert seen and out.logits is not None and torch.isfinite(out.loss)


def test_compiled_chunked_loss_is_one_graph_with_the_same_gradients():
    model = tiny_model().train()
    x, y = _batch(B=2, T=16)
    explained = torch._dynamo.explain(model)(input_ids=x, shift_labels=y, loss_chunk_tokens=10)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()
    eager, eager_grads = _loss_and_grads(model, input_ids=x, shift_labels=y)
    compiled, compiled_grads = _loss_and_grads(model, torch.compile(model), input_ids=x, shift_labels=y, loss_chunk_tokens=10)
    torch.testing.assert_close(compiled.loss, eager.loss, rtol=1e-5, atol=1e-6)
    for name, grad in eager_grads.items():
        assert _relative_error(compiled_grads[name], grad) < 1e-4, name
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_chunked_loss_on_cuda_bf16_compiled_matches_the_full_path():
    """As train.py runs it on a GPU: bf16 autocast + torch.compile (inductor/Triton), full 124M width and vocab."""
    from configuration_gpt2repro import GPT2ReproConfig
    from modeling_gpt2repro import GPT2ReproForCausalLM

    torch.manual_seed(0)
    model = GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2)).cuda().train()
    x, y = (t.cuda() for t in _batch(B=4, T=256))
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        full, full_grads = _loss_and_grads(model, compiled, input_ids=x, shift_labels=y)
        chunked, chunked_grads = _loss_and_grads(model, compiled, input_ids=x, shift_labels=y, loss_chunk_tokens=384)
    torch.testing.assert_close(chunked.loss, full.loss, rtol=2e-3, atol=2e-3)
    for name, grad in full_grads.items():
        assert _relative_error(chunked_grads[name], grad) < 2e-2, name
    torch._dynamo.reset()
