"""What transformers users expect of a causal LM, against transformers' own GPT-2 where it applies:
hidden states and attention maps, return_dict=False, gradient checkpointing, resize_token_embeddings, a
StaticCache in a plain forward, and a refusal to convert an untied GPT-2 head."""

import pytest
import torch

from convert_gpt2 import load_stock_gpt2, to_stock_gpt2
from model_helpers import assert_padded_ids_impossible, tiny_model

pytestmark = pytest.mark.model
REAL = 50257  # GPT-2 ids; our logits have padded (zero-probability) columns beyond them


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


def test_token_type_ids_are_used_as_stock_gpt2_uses_them():
    """Stock GPT-2 adds `wte(token_type_ids)` to its input; ours ignored the argument without a word."""
    ours = tiny_model()
    stock = to_stock_gpt2(ours).eval()
    x = torch.randint(0, REAL, (2, 6))
    types = torch.zeros_like(x)
    types[:, 3:] = 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, token_type_ids=types).logits[..., :REAL],
                                   stock(x, token_type_ids=types).logits, rtol=1e-5, atol=1e-5)
    mask = torch.ones_like(x)
    ours_ids = ours.generate(x, attention_mask=mask, token_type_ids=types, max_new_tokens=4, do_sample=False,
                             pad_token_id=50256)
    stock_ids = stock.generate(x, attention_mask=mask, token_type_ids=types, max_new_tokens=4, do_sample=False,
                               pad_token_id=50256)
    assert torch.equal(ours_ids, stock_ids)


def test_return_dict_false_gives_tuples():
    model = tiny_model()
    x = torch.randint(0, REAL, (1, 5))
    logits, *_ = model(x, return_dict=False)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 5, model.config.vocab_size)
    hidden, *_ = model.transformer(x, return_dict=False)
    assert isinstance(hidden, torch.Tensor) and hidden.shape == (1, 5, model.config.n_embd)


def _enable_checkpointing(model, **kwargs) -> None:
    """transformers 5.23 renamed gradient_checkpointing_enable (the old name now warns and goes in v6); 5.17 has only
    the old one."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(**kwargs)


@pytest.mark.parametrize("every_n_layers", [1, 2])
def test_gradient_checkpointing_gives_the_same_gradients(every_n_layers):
    """Every block recomputed in backward, or (transformers >= 5.23's every_n_layers) only every other one."""
    from transformers import PreTrainedModel

    if every_n_layers > 1 and not hasattr(PreTrainedModel, "activation_checkpointing_enable"):
        pytest.skip("every_n_layers is new in transformers 5.23")  # the 5.17 run of the model tests
    x = torch.randint(0, REAL, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(dropout=0.0, n_layer=4).train()
        if checkpointing:
            _enable_checkpointing(model, **({"every_n_layers": every_n_layers} if every_n_layers > 1 else {}))
            # the blocks that recompute (GradientCheckpointingLayer reads this flag in each call)
            assert [block.gradient_checkpointing for block in model.transformer.h] == \
                [i % every_n_layers == 0 for i in range(4)]
        model(x, labels=x).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=0, msg=name)


def test_gradient_checkpointing_with_a_cache_uses_none_as_stock_gpt2_does():
    """A checkpointed block runs again in backward: a cache it wrote to would hold every token twice (transformers
    5.17), or come back empty as if it were a real cache (5.24). Stock GPT-2 turns the cache off, with a warning."""
    from transformers import DynamicCache

    from modeling_gpt2repro import CACHE_NAME

    x = torch.randint(0, REAL, (2, 8))
    reference = tiny_model().train()
    reference(x, labels=x).loss.backward()
    model = tiny_model().train()
    _enable_checkpointing(model)
    out = model(x, labels=x, use_cache=True)
    out.loss.backward()
    assert getattr(out, CACHE_NAME) is None
    given = DynamicCache(config=model.config)
    out = model(x, **{CACHE_NAME: given})
    out.logits.sum().backward()
    assert getattr(out, CACHE_NAME) is None and given.get_seq_length() == 0  # never written, not even in backward
    model.zero_grad()
    model(x, labels=x, use_cache=True).loss.backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)
    with torch.no_grad():  # a cache that holds a prefix: dropping it would silently lose that context
        model.eval()
        model(x[:, :4], **{CACHE_NAME: given}, use_cache=True)
        model.train()
    with pytest.raises(ValueError, match="cache holding 4 tokens cannot be used with gradient checkpointing"):
        model(x[:, 4:], **{CACHE_NAME: given})


def test_resized_embeddings_make_new_ids_predictable_and_reload(tmp_path):
    """A token added to the tokenizer (e.g. a pad token) gets a finite logit and loss, as in stock GPT-2, and the
    resized model saves and loads."""
    from modeling_gpt2repro import GPT2ReproForCausalLM

    model = tiny_model()
    rows = model.config.vocab_size  # 50304: padded for fast matmuls
    model.resize_token_embeddings(REAL + 1)  # what resize_token_embeddings(len(tokenizer)) asks after add_tokens
    weight = model.transformer.wte.weight
    # the matrix keeps its fast shape (and its tie); the new id takes the first padded row, set to the mean of
    # the real rows (transformers' mean_resizing), not left at the padded row's old value
    assert weight.shape[0] == rows and model.lm_head.weight is weight
    torch.testing.assert_close(weight[REAL], weight[:REAL].mean(dim=0))
    z = torch.tensor([[1, 2, 3, REAL]])
    out = model(z, labels=z)
    assert torch.isfinite(out.logits[0, -1, REAL]) and torch.isfinite(out.loss)
    assert_padded_ids_impossible(out.logits, REAL + 1)
    model.save_pretrained(tmp_path)
    reloaded = GPT2ReproForCausalLM.from_pretrained(tmp_path)
    assert (reloaded.config.vocab_size, reloaded.config.tokenizer_vocab_size) == (rows, REAL + 1)
    torch.testing.assert_close(reloaded(z).logits, model(z).logits)
    grown = tiny_model()
    grown.resize_token_embeddings(rows + 10)  # beyond the padding: transformers adds rows; old padded rows are real
    weight = grown.transformer.wte.weight
    assert weight.shape[0] == grown.config.tokenizer_vocab_size == rows + 10
    torch.testing.assert_close(weight[REAL:rows], weight[:REAL].mean(dim=0).expand(rows - REAL, -1))
    padded = tiny_model()
    padded.resize_token_embeddings(REAL + 1, pad_to_multiple_of=64)  # rows beyond the new id stay impossible
    assert padded.config.tokenizer_vocab_size == REAL + 1 < padded.config.vocab_size
    logits = padded(z).logits[0, -1]
    assert_padded_ids_impossible(logits, REAL + 1)


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


def test_trainer_sees_labels_only_and_reports_eval_loss(tmp_path):
    """Trainer takes every forward parameter named *label* for a label column: with `shift_labels` in the signature
    it waited for a column no collator gives and reported no eval_loss (so metric_for_best_model="eval_loss"
    failed). Same as stock GPT-2 now."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from transformers.utils import find_labels

    from data.tokenizer import gpt2_tokenizer

    model = tiny_model()
    assert find_labels(type(model)) == ["labels"]
    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    rows = [{"input_ids": tokenizer(f"sample number {i} of a tiny evaluation set")["input_ids"]} for i in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, eval_dataset=rows,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    metrics = trainer.evaluate()
    assert 9.0 < metrics["eval_loss"] < 12.0  # ~ln(50257) for an untrained model


def test_trainer_label_smoothing_shifts_the_labels_as_for_stock_gpt2(tmp_path):
    """With `label_smoothing_factor` Trainer computes the loss itself and shifts the labels only for class names in
    transformers' causal-LM table (Auto registration does not add to it): ours were smoothed against unshifted
    labels, each position scored on its own input token."""
    import torch.nn.functional as F
    from transformers import Trainer, TrainingArguments

    model = tiny_model()
    args = TrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=0.1, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args)
    ids = torch.randint(0, REAL, (2, 12))
    with torch.no_grad():
        loss = trainer.compute_loss(model, {"input_ids": ids, "labels": ids.clone()})
        logits = model(ids).logits.float()
    vocab = logits.shape[-1]
    shifted = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1), label_smoothing=0.1)
    unshifted = F.cross_entropy(logits.reshape(-1, vocab), ids.reshape(-1), label_smoothing=0.1)
    assert abs(shifted - unshifted) > 1e-3  # the check below can tell the two apart
    torch.testing.assert_close(loss, shifted, rtol=1e-5, atol=1e-5)


def test_packed_sequences_with_labels_in_eval_mode_do_not_attend_across(tmp_path):
    """Two sequences packed in one row with restarting position_ids (DataCollatorWithFlattening): in eval mode a
    default cache used to hide the packing from transformers' mask code, and tokens attended to the other
    sequence. A loss needs no cache: each packed sequence now gets its own logits."""
    model = tiny_model().eval()
    a, b = torch.randint(0, REAL, (1, 5)), torch.randint(0, REAL, (1, 7))
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0)
    with torch.no_grad():
        out = model(packed, position_ids=positions, labels=packed)
        alone = torch.cat([model(a).logits, model(b).logits], dim=1)
    torch.testing.assert_close(out.logits[..., :REAL], alone[..., :REAL], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_padded_ids_have_zero_probability_and_leave_entropy_and_kl_finite(dtype):
    """Padded ids: exactly zero probability in every dtype, and the maths RL and distillation do on logits
    (entropy, KL against another model, differences) stays finite; with -inf logits it gave NaN (0 * -inf)."""
    model = tiny_model().to(dtype)
    x = torch.randint(0, REAL, (2, 9))
    with torch.no_grad():
        logits = model(x).logits
        other = tiny_model(seed=1).to(dtype)(x).logits
    assert_padded_ids_impossible(logits)
    logp, other_logp = logits.float().log_softmax(-1), other.float().log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    kl = torch.nn.functional.kl_div(logp, other_logp, log_target=True, reduction="batchmean")
    assert torch.isfinite(entropy).all() and torch.isfinite(kl) and torch.isfinite(logits - other).all()
    # the real ids' distribution is the cropped model's
    torch.testing.assert_close(logp[..., :REAL], logits[..., :REAL].float().log_softmax(-1), rtol=0, atol=1e-5)


def test_labels_with_an_explicit_cache_return_the_cache():
    """A loss needs no cache by default, but a cache the caller passes is used and handed back, as stock GPT-2
    does."""
    from transformers import DynamicCache

    model = tiny_model()
    x = torch.randint(0, REAL, (1, 4))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(x, labels=x, cache=cache)
        default = model(x, labels=x)
    assert out.cache is cache if hasattr(out, "cache") else out.past_key_values is cache
    assert cache.get_seq_length() == 4
    assert getattr(default, "cache", None) is None and getattr(default, "past_key_values", None) is None


def test_resize_mean_initialises_an_untied_head_too():
    model = tiny_model(tie_word_embeddings=False)
    assert model.lm_head.weight is not model.transformer.wte.weight
    model.resize_token_embeddings(REAL + 2)
    for weight in (model.transformer.wte.weight, model.lm_head.weight):
        torch.testing.assert_close(weight[REAL:REAL + 2], weight[:REAL].mean(dim=0).expand(2, -1))


def test_resize_that_would_drop_a_special_id_is_refused_not_saved_unloadable(tmp_path):
    """Shrinking below eos (50256) gave a model that saved, but whose config.json no longer loaded (our config
    checks that bos/eos/pad are ids of the vocabulary): a Trainer checkpoint could not be reloaded."""
    from modeling_gpt2repro import GPT2ReproForCausalLM

    model = tiny_model()
    with pytest.raises(ValueError, match="eos_token_id=50256"):
        model.resize_token_embeddings(50200)
    assert model.transformer.wte.weight.shape[0] == model.config.vocab_size == 50304  # nothing changed
    model.config.bos_token_id = model.config.eos_token_id = 0
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = 0
    model.resize_token_embeddings(50200)  # allowed once the special ids stay in the vocabulary
    model.save_pretrained(tmp_path)
    assert GPT2ReproForCausalLM.from_pretrained(tmp_path).config.tokenizer_vocab_size == 50200
