"""KV-cache generation: cache == no cache, one token per decode step, left padding, seeded sampling, compile."""

import pytest
import torch

from model_helpers import tiny_model

pytestmark = pytest.mark.model


def test_greedy_with_cache_equals_without_and_decode_steps_get_one_token():
    model = tiny_model(seed=2)
    prompt = torch.randint(0, 50257, (1, 7))
    seen_lengths = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen_lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                            use_cache=True, pad_token_id=50256)
    hook.remove()
    uncached = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                              use_cache=False, pad_token_id=50256)
    assert cached.shape == (1, 19)
    assert torch.equal(cached, uncached)
    assert seen_lengths[0] == 7 and all(n == 1 for n in seen_lengths[1:]), seen_lengths


def test_left_padded_batch_equals_prompts_one_by_one(gpt2_tokenizer):
    model = tiny_model(seed=4)
    tok = gpt2_tokenizer
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    prompts = ["Hello, I'm a language model,", "The capital of France is a city where people"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][0].min() == 0  # the first prompt really is padded
    together = model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=50256)
    for i, prompt in enumerate(prompts):
        single = tok(prompt, return_tensors="pt")
        alone = model.generate(**single, max_new_tokens=10, do_sample=False, pad_token_id=50256)
        assert together[i, -10:].tolist() == alone[0, -10:].tolist()


def test_seeded_top_k_sampling_is_reproducible_and_never_emits_padded_ids():
    model = tiny_model(seed=6)
    prompt = torch.randint(0, 50257, (4, 5))
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        runs.append(model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                                   max_new_tokens=15, pad_token_id=50256))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(99)
    other = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=50,
                           max_new_tokens=15, pad_token_id=50256)
    assert not torch.equal(runs[0], other)
    assert runs[0].max().item() < 50257


def test_position_ids_are_honoured():
    model = tiny_model(seed=7)
    x = torch.randint(0, 50257, (1, 6))
    with torch.no_grad():
        default = model(x).logits
        explicit = model(x, position_ids=torch.arange(6).unsqueeze(0)).logits
        shifted = model(x, position_ids=torch.arange(3, 9).unsqueeze(0)).logits
    assert torch.equal(default, explicit)
    assert not torch.allclose(default, shifted)


def test_sequence_longer_than_n_positions_is_refused():
    model = tiny_model(n_positions=16)
    with pytest.raises(ValueError, match="longer than the model's n_positions"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_compiled_training_step_and_compiled_generation_match_eager():
    torch.manual_seed(0)
    model = tiny_model(seed=8, n_layer=1)
    model.train()
    x = torch.randint(0, 50257, (2, 16))
    y = torch.randint(0, 50257, (2, 16))
    eager_loss = model(input_ids=x, shift_labels=y).loss
    eager_loss.backward()
    eager_grad = model.transformer.wte.weight.grad.clone()
    model.zero_grad(set_to_none=True)

    compiled = torch.compile(model)
    loss = compiled(input_ids=x, shift_labels=y).loss
    loss.backward()
    assert abs(loss.item() - eager_loss.item()) <= 1e-5
    assert (model.transformer.wte.weight.grad - eager_grad).abs().max().item() <= 1e-5

    # generation with a compiled forward (what train.py does for in-loop samples)
    model.eval()
    prompt = torch.randint(0, 50257, (1, 5))
    reference = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                               do_sample=False, pad_token_id=50256)
    model.forward = torch.compile(model.forward)
    try:
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                             do_sample=False, pad_token_id=50256)
    finally:
        del model.forward
    assert torch.equal(out, reference)
