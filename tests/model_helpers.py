"""Small builders shared by the model tests (tiny configs, seeded weights)."""

import torch

from configuration_gpt2repro import GPT2ReproConfig
from modeling_gpt2repro import GPT2ReproForCausalLM

TINY = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128)


def tiny_config(**overrides) -> GPT2ReproConfig:
    return GPT2ReproConfig(**{**TINY, **overrides})


def randomize_all_parameters(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random, biases and LayerNorms included (default init zeroes biases and sets LN to 1,
    which would hide a mapping bug in them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def tiny_model(seed: int = 0, attn_implementation: str | None = None, **overrides) -> GPT2ReproForCausalLM:
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = GPT2ReproForCausalLM._from_config(tiny_config(**overrides), **kwargs)
    randomize_all_parameters(model, seed)
    return model.eval()


def assert_padded_ids_impossible(logits: torch.Tensor, n_real: int = 50257) -> None:
    """Logits of the padded ids (>= n_real) are finite (PADDED_LOGIT plus a tiny matmul term) and have exactly
    zero probability."""
    assert torch.isfinite(logits).all()
    assert (torch.softmax(logits.float(), dim=-1)[..., n_real:] == 0).all()
    assert (logits[..., n_real:] < -29_000).all()


def spy_chunked_loss(monkeypatch) -> list:
    """Count calls of the fused chunked loss (one per forward that takes it): proof that a code path really
    used it, not just that its result equals the default path's."""
    import modeling_gpt2repro

    calls = []
    original = modeling_gpt2repro._ChunkedLinearCrossEntropy.apply

    def counting(*args):
        calls.append(args[3].numel())  # targets: tokens in this forward
        return original(*args)

    monkeypatch.setattr(modeling_gpt2repro._ChunkedLinearCrossEntropy, "apply", counting)
    return calls
