"""Architecture config of the GPT-2 reproduction: `GPT2ReproConfig` (model_type "gpt2repro").

Architecture only (no training hyperparameters): this file is saved with every checkpoint and export, and
`save_pretrained` copies it next to the weights so the model loads with `trust_remote_code=True`.

Defaults are GPT-2 small (124M):
    n_layer=12, n_head=12, n_embd=768, n_positions=1024,
    vocab_size=50304           embedding / lm_head rows: 50257 padded up to a multiple of 64 (and 128) for fast
                               matmuls; rows >= tokenizer_vocab_size are never produced (logit -30000: probability 0)
    tokenizer_vocab_size=50257 ids that exist in the GPT-2 BPE tokenizer
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class GPT2ReproConfig(PreTrainedConfig):
    model_type = "gpt2repro"
    # What `register_for_auto_class()` would set: save_pretrained then writes `auto_map` and copies this file.
    _auto_class = "AutoConfig"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    # Generic code (caches, masks, lm-eval's max length, generation) reads the canonical names.
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
    }

    def __init__(
        self,
        vocab_size: int = 50304,
        tokenizer_vocab_size: int = 50257,
        n_positions: int = 1024,
        n_embd: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        dropout: float = 0.0,  # one rate for embeddings, attention and residuals; 0 for GPT-2 pretraining
        tie_word_embeddings: bool = True,  # transformers 5 removed this from the base config: declare it
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        pad_token_id: int | None = None,
        use_cache: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.tokenizer_vocab_size = tokenizer_vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.dropout = dropout
        self.tie_word_embeddings = tie_word_embeddings
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.use_cache = use_cache
        super().__init__(**kwargs)
        self._check_values()  # after super(): canonical aliases (hidden_size=...) land in n_embd etc. there

    def _check_values(self) -> None:
        """Collect every invalid value and raise once, saying what is wrong and what would be valid."""
        errors = []
        for name in ("vocab_size", "tokenizer_vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                errors.append(f"{name} must be a positive integer, got {value!r}")
        if not errors:
            if self.n_embd % self.n_head != 0:
                errors.append(
                    f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                    f"each head gets n_embd / n_head channels"
                )
            if self.tokenizer_vocab_size > self.vocab_size:
                errors.append(
                    f"tokenizer_vocab_size ({self.tokenizer_vocab_size}) cannot exceed vocab_size "
                    f"({self.vocab_size}), the number of embedding rows"
                )
        for id_name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, id_name)
            if value is not None and isinstance(self.tokenizer_vocab_size, int):
                if not isinstance(value, int) or not 0 <= value < self.tokenizer_vocab_size:
                    errors.append(f"{id_name} ({value!r}) must be an id in [0, {self.tokenizer_vocab_size})")
        if not isinstance(self.layer_norm_epsilon, (int, float)) or self.layer_norm_epsilon <= 0:
            errors.append(f"layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            errors.append(f"initializer_range must be > 0, got {self.initializer_range!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            errors.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if errors:
            raise ValueError("Invalid GPT2ReproConfig:\n  - " + "\n  - ".join(errors))


__all__ = ["GPT2ReproConfig"]
