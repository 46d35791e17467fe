"""GPT2ReproConfig: GPT-2 124M defaults, canonical names, and every invalid value reported at once."""

import pytest

from configuration_gpt2repro import GPT2ReproConfig
from modeling_gpt2repro import GPT2ReproForCausalLM

pytestmark = pytest.mark.model


def test_defaults_are_gpt2_small_with_124_475_904_parameters():
    config = GPT2ReproConfig()
    assert (config.n_layer, config.n_head, config.n_embd, config.n_positions) == (12, 12, 768, 1024)
    assert (config.vocab_size, config.tokenizer_vocab_size) == (50304, 50257)
    assert config.tie_word_embeddings and config.bos_token_id == config.eos_token_id == 50256
    # canonical names through attribute_map, for caches, masks, lm-eval's max length
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (768, 12, 12)
    assert config.max_position_embeddings == 1024
    model = GPT2ReproForCausalLM(config)
    # parameters() counts the tied wte/lm_head once
    assert sum(p.numel() for p in model.parameters()) == 124_475_904


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n_embd=100, n_head=3), "must be divisible by n_head"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer"),
        (dict(vocab_size=50000), "tokenizer_vocab_size (50257) cannot exceed vocab_size (50000)"),
        (dict(n_head=2.5), "n_head must be a positive integer"),
        (dict(eos_token_id=60000), "eos_token_id (60000) must be an id in [0, 50257)"),
        (dict(layer_norm_epsilon=0), "layer_norm_epsilon must be > 0"),
        (dict(dropout=1.5), "dropout must be in [0, 1)"),
    ],
)
def test_invalid_values_raise_a_clear_value_error(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        GPT2ReproConfig(**kwargs)
    assert fragment in str(err.value)


def test_canonical_names_set_the_gpt2_fields_and_are_checked_too():
    """Generic code builds configs with hidden_size / num_attention_heads / ...: they are the same fields."""
    config = GPT2ReproConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=3, max_position_embeddings=32)
    assert (config.n_embd, config.n_head, config.n_layer, config.n_positions) == (64, 2, 3, 32)
    with pytest.raises(ValueError, match="must be divisible by n_head"):
        GPT2ReproConfig(hidden_size=100, num_attention_heads=3)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ValueError) as err:
        GPT2ReproConfig(n_positions=0, initializer_range=-1, dropout=2)
    message = str(err.value)
    assert "n_positions" in message and "initializer_range" in message and "dropout" in message


def test_config_round_trips_through_json(tmp_path):
    config = GPT2ReproConfig(n_layer=3, n_head=4, n_embd=32, dropout=0.1)
    config.save_pretrained(tmp_path)
    loaded = GPT2ReproConfig.from_pretrained(tmp_path)
    assert loaded.to_dict()["n_layer"] == 3 and loaded.n_embd == 32 and loaded.dropout == 0.1
    assert loaded.tokenizer_vocab_size == 50257 and loaded.tie_word_embeddings
