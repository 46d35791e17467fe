"""GPT-2 (124M) as a native transformers model: `GPT2ReproModel` and `GPT2ReproForCausalLM`.

Read top to bottom in the order the network is built: attention -> MLP -> block -> model -> LM head.
Parameter names are GPT-2's (`transformer.wte, wpe, h.{i}.ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
mlp.c_proj, ln_f, lm_head`) so that mapping OpenAI/HF GPT-2 weights is a documented transpose and nothing more
(HF stores those four matmuls as `Conv1D`, weight (in, out); we use `nn.Linear`, weight (out, in)).

What transformers gives us for free, and how we plug into it:
- attention backends through `ALL_ATTENTION_FUNCTIONS` (sdpa by default, eager, flex_attention,
  flash_attention_2/3, kernels), switchable with `attn_implementation=` / `set_attn_implementation()`;
- masks from `create_causal_mask` (None for unpadded sdpa, so SDPA can take its `is_causal` flash path);
- KV cache (`DynamicCache`), `generate()`, `save_pretrained` with our code files and `auto_map`, the causal-LM loss
  (`loss_chunk_tokens=N` swaps it for our fused chunked loss, `chunked_linear_cross_entropy`: no full logits).

Padded vocabulary: the embedding has `vocab_size` (50304) rows so the big lm_head matmul has a fast shape, but
only `tokenizer_vocab_size` (50257) ids exist. The LM head adds a bias of 0 (real ids) / PADDED_LOGIT (-30000,
padded ids), so those get exactly zero probability (exp(-30000) underflows to 0 in every float type) and the probabilities over the real ids equal those of the same model
cropped to 50257 rows; the bias rides in the matmul and costs no extra pass over the logits.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, logging

try:  # inside an exported folder (loaded as a package by transformers' remote-code machinery)
    from .configuration_gpt2repro import GPT2ReproConfig
except ImportError:  # imported from the repository root
    from configuration_gpt2repro import GPT2ReproConfig

logger = logging.get_logger(__name__)

# transformers 5.17 names the KV-cache argument/output `past_key_values`; 5.24+ names it `cache` (the old name is
# deprecated until 5.40). We accept both on input and use the installed version's name for outputs and masks.
CACHE_NAME = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"

# Logit of the padded vocabulary ids (>= tokenizer_vocab_size). Finite, unlike -inf: entropies, KL divergences
# (distillation, RL), label smoothing and `a - b` of two models' logits stay finite (-inf gave NaN: 0 * -inf).
# Still exactly zero probability: exp(-30000 - max logit) underflows to 0 in fp32, bf16 and fp16, and the value
# plus any real logit stays finite in fp16 (max 65504) and bf16.
PADDED_LOGIT = -30000.0


def eager_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Plain softmax(QK^T * scale + mask) V, the reference the fused backends must match.

    query (B, H, Tq, D), key/value (B, H, Tk, D); attention_mask: additive float or bool (B, 1, Tq, Tk) or None.
    Returns (out (B, Tq, H, D), weights (B, H, Tq, Tk)) — the attention-interface contract.
    """
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is None:
        # No mask given: plain causal attention, aligned to the end (queries are the last Tq of Tk positions).
        q_len, k_len = query.shape[-2], key.shape[-2]
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, Tq, H, D)
    return out, weights


class GPT2ReproAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection (`c_attn`), as in GPT-2."""

    def __init__(self, config: GPT2ReproConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the sdpa/flash backends
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True  # scaled init: 0.02 / sqrt(2 * n_layer)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, **kwargs):
        B, T, C = hidden_states.shape
        q, k, v = self.c_attn(hidden_states).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, past + T, D)

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.config.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # out (B, T, H, D)
        out = out.reshape(B, T, C)
        return self.resid_dropout(self.c_proj(out)), weights


class GPT2ReproMLP(nn.Module):
    """n_embd -> 4 n_embd -> GELU (tanh approximation, GPT-2's `gelu_new`) -> n_embd."""

    def __init__(self, config: GPT2ReproConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class GPT2ReproBlock(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Returns (hidden states, attention
    weights or None). A GradientCheckpointingLayer: `model.activation_checkpointing_enable()` (transformers >= 5.23,
    which also takes `every_n_layers`; `gradient_checkpointing_enable()` before) recomputes it in backward (hidden
    states go in positionally, as that requires)."""

    def __init__(self, config: GPT2ReproConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2ReproAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2ReproMLP(config)

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        residual = hidden_states
        attn_out, weights = self.attn(self.ln_1(hidden_states), attention_mask=attention_mask, cache=cache, **kwargs)
        hidden_states = residual + attn_out
        residual = hidden_states
        hidden_states = residual + self.mlp(self.ln_2(hidden_states))
        return hidden_states, weights


class GPT2ReproPreTrainedModel(PreTrainedModel):
    config_class = GPT2ReproConfig
    config: GPT2ReproConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT2ReproBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # OpenAI/HF GPT-2 checkpoints may carry the old causal-mask buffers: they are not weights.
    _keys_to_ignore_on_load_unexpected = [r"\.attn\.bias$", r"\.attn\.masked_bias$"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save_pretrained; `auto_map` names both model classes, so an export loads with
        trust_remote_code as AutoModel (the bare transformer: hidden states) as well as AutoModelForCausalLM,
        as a stock GPT-2 folder does. (By itself save_pretrained maps only the class that was saved.)"""
        module = __name__.rsplit(".", 1)[-1]  # "modeling_gpt2repro", also when this file runs as remote code
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                "AutoModel": f"{module}.GPT2ReproModel",
                                "AutoModelForCausalLM": f"{module}.GPT2ReproForCausalLM"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        """GPT-2 init: N(0, 0.02) for matmuls and embeddings, N(0, 0.02/sqrt(2*n_layer)) for the two residual
        output projections per block (attn.c_proj, mlp.c_proj), zero biases, unit LayerNorm.

        The `init.*` helpers skip tensors already loaded from a checkpoint.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_projection", False):
                std = std / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


def _pick_cache(cache, past_key_values):
    """One cache object from either argument name (see CACHE_NAME)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the KV cache once: either `cache=` or `past_key_values=`, not both.")
    return cache if cache is not None else past_key_values


class GPT2ReproModel(GPT2ReproPreTrainedModel):
    """Token + position embeddings -> n_layer blocks -> final LayerNorm. Returns hidden states (B, T, n_embd)."""

    _auto_class = "AutoModel"  # what register_for_auto_class sets: save_pretrained writes auto_map + code files

    def __init__(self, config: GPT2ReproConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([GPT2ReproBlock(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False  # set by activation/gradient_checkpointing_enable(), as on the blocks
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    @can_return_tuple  # return_dict=False -> a plain tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """`token_type_ids` (B, T), optional: stock GPT-2's segment embeddings, looked up in the token embedding
        `wte` and added to the input (GPT-2 was not trained with them; accepted so that they are not ignored)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = kwargs.pop("output_attentions", None)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        cache = _pick_cache(cache, past_key_values)
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        B, T = inputs_embeds.shape[:2]

        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if checkpointing and (use_cache or cache is not None):
            # A checkpointed block runs again in backward and would write its keys/values into the cache a second
            # time (transformers 5.17 drops only a `past_key_values=` argument there, 5.24 drops `cache=` but we
            # still returned the empty cache): no cache at all, as stock GPT-2 does. A cache that already holds tokens
            # cannot be dropped without silently losing them as context (stock GPT-2 fails there on a shape).
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError(f"a KV cache holding {cache.get_seq_length()} tokens cannot be used with gradient "
                                 "checkpointing in training (the recomputed blocks would write into it again): call "
                                 "model.activation_checkpointing_disable() (gradient_checkpointing_disable() before "
                                 "transformers 5.23), or model.eval(), or pass the tokens as input")
            logger.warning_once("`use_cache=True` is incompatible with gradient checkpointing. "
                                "Setting `use_cache=False`.")
            use_cache, cache = False, None
        # Training never needs a cache; generation and explicit use_cache=True do.
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        past = cache.get_seq_length() if cache is not None else 0
        explicit_positions = position_ids
        if position_ids is None:
            # Positions continue after the cached tokens. generate() passes position_ids computed from the
            # attention mask, which is what keeps left-padded prompts at the right learned positions.
            position_ids = torch.arange(past, past + T, device=inputs_embeds.device).unsqueeze(0)  # (1, T)
        if not torch.compiler.is_compiling() and past + T > self.config.n_positions:
            raise ValueError(
                f"Sequence of {past + T} tokens is longer than the model's n_positions ({self.config.n_positions})."
            )
        hidden_states = inputs_embeds + self.wpe(position_ids)  # (B, T, C)
        if token_type_ids is not None:
            hidden_states = hidden_states + self.wte(token_type_ids)  # as stock GPT-2 does
        hidden_states = self.drop(hidden_states)

        if (attention_mask is None and explicit_positions is None and past == 0
                and (cache is None or type(cache) is DynamicCache)  # a StaticCache's keys are longer than T
                and self.config._attn_implementation in ("sdpa", "eager")):
            # No padding, no cache, no packed positions: plain causal attention, so no mask at all; SDPA then takes
            # its is_causal (flash) path. create_causal_mask would give the same None in eager mode, but while
            # torch.compile traces it cannot prove that and builds a full (B, 1, T, T) mask, which made SDPA run
            # the masked kernel: 2.5x the attention time of a training step on an H200 (BENCHMARKS.md).
            mask = None
        else:
            # What each attention backend wants: None for unpadded sdpa/flash, 4D masks or a BlockMask otherwise.
            mask = create_causal_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **{CACHE_NAME: cache},
            )
        all_hidden = [] if output_hidden_states else None  # embeddings + each block's output (n_layer + 1)
        all_weights = [] if output_attentions else None  # per block; None entries for fused (sdpa/flash) kernels
        for block in self.h:
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            hidden_states, weights = block(hidden_states, attention_mask=mask, cache=cache, position_ids=position_ids,
                                           **kwargs)
            if all_weights is not None:
                all_weights.append(weights)
        hidden_states = self.ln_f(hidden_states)
        if all_hidden is not None:
            all_hidden.append(hidden_states)  # the last entry is after ln_f, as in transformers' GPT-2
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_weights) if all_weights is not None else None,
            **{CACHE_NAME: cache if use_cache else None})


class GPT2ReproForCausalLM(GPT2ReproPreTrainedModel, GenerationMixin):
    """GPT-2 with its tied language-model head. `model(input_ids, labels=input_ids).loss` is the causal-LM loss
    (transformers shifts the labels and ignores -100); training windows that are already shifted use
    `model(input_ids=x, shift_labels=y)`."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    _auto_class = "AutoModelForCausalLM"

    def __init__(self, config: GPT2ReproConfig):
        super().__init__(config)
        self.transformer = GPT2ReproModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple  # return_dict=False -> a plain tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_chunk_tokens: int | None = None,
        return_logits: bool = True,
        token_type_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`labels` are the inputs (transformers shifts them); `shift_labels=` (a keyword, read from kwargs so that
        Trainer, which takes every forward parameter named *label* for a label column, sees only `labels` and
        reports eval_loss) are targets already shifted, as training windows give them.

        `loss_chunk_tokens=N` (with labels or shift_labels): the loss is computed N tokens at a time together
        with its gradients (`chunked_linear_cross_entropy`), the (B, T, V) logits are never held and the output's
        `logits` is None. Same loss and gradients as the default path. Not taken (full logits as usual) when the
        head is not a plain nn.Linear (`supports_chunked_loss()`) or with `num_items_in_batch` (Trainer's
        token-count normalisation).

        `return_logits=False` (with labels or shift_labels): the output carries the loss and `logits` is None. A
        training step wants only the loss; a returned (B, T, V) logits tensor is a graph output under
        torch.compile (Accelerate's bf16 wrapper even writes it again in fp32), and autograd then fills and reads
        a zero gradient of that size in backward. Same loss and gradients either way.

        `token_type_ids`: stock GPT-2's, added as token embeddings (`GPT2ReproModel.forward`)."""
        shift_labels = kwargs.pop("shift_labels", None)
        if use_cache is None and cache is None and past_key_values is None and (
                labels is not None or shift_labels is not None):
            # A loss needs no cache, and without one transformers' mask code still finds packed sequences
            # (position_ids restarting at 0) in eval mode, where a cache would otherwise be made by default.
            use_cache = False
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache=_pick_cache(cache, past_key_values),
            token_type_ids=token_type_ids,
            **{k: v for k, v in kwargs.items() if k != "num_items_in_batch"},
        )
        hidden_states = outputs.last_hidden_state  # (B, T, C)
        # generate() only needs the last position's logits: skip the lm_head matmul for the rest.
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden_states = hidden_states[:, keep, :]
        has_targets = labels is not None or shift_labels is not None
        if loss_chunk_tokens and has_targets and self.supports_chunked_loss() and "num_items_in_batch" not in kwargs:
            if shift_labels is None:  # labels are the inputs: token t predicts t+1, the last one predicts nothing
                shift_labels = F.pad(labels[..., 1:], (0, 1), value=-100)
            weight = self.lm_head.weight
            loss = chunked_linear_cross_entropy(
                hidden_states.reshape(-1, hidden_states.shape[-1]), weight,
                self._padded_ids_bias(weight.device, weight.dtype), shift_labels.reshape(-1), loss_chunk_tokens)
            return CausalLMOutputWithPast(loss=loss, logits=None, hidden_states=outputs.hidden_states,
                                          attentions=outputs.attentions, **{CACHE_NAME: getattr(outputs, CACHE_NAME)})
        if _is_plain_linear(self.lm_head):
            # (B, T', V); the padded-ids bias rides in the matmul. Measured: an in-place masking write cost +11% per
            # step on CPU (autograd copies the whole logits gradient); on an H200 under compile the biased matmul
            # ran as fast as the plain one, and an add after it made the fused loss kernel slower.
            weight = self.lm_head.weight
            logits = F.linear(hidden_states, weight, self._padded_ids_bias(weight.device, weight.dtype))
        else:  # a replaced head (quantized, adapters, offloaded) or one with hooks: call it, then mask
            logits = self.lm_head(hidden_states)
            bias = self._padded_ids_bias(logits.device, logits.dtype)
            logits = logits if bias is None else logits + bias

        loss = None
        if has_targets:
            loss_kwargs = {"num_items_in_batch": kwargs["num_items_in_batch"]} if "num_items_in_batch" in kwargs else {}
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                shift_labels=shift_labels.contiguous() if shift_labels is not None else None,
                vocab_size=self.config.vocab_size,
                **loss_kwargs,
            )
            if not return_logits:
                logits = None
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions, **{CACHE_NAME: getattr(outputs, CACHE_NAME)})


    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """transformers' resize, and the ids the tokenizer now has (`new_num_tokens`) become real ids: only rows
        beyond them (from `pad_to_multiple_of`) keep the padded-ids bias.

        After `tokenizer.add_tokens(...)`, `resize_token_embeddings(len(tokenizer))` usually asks for fewer rows
        than the padded 50304: then the matrix keeps its fast shape and the new ids take the first padded rows.
        Padded rows that become real ids start at the mean of the old real rows (`mean_resizing`), not at their
        leftover values; rows beyond the padding are added by transformers, with its own mean_resizing.
        A size that would drop the bos/eos/pad ids is refused: the saved config would not load again."""
        old_ids, old_rows = self.config.tokenizer_vocab_size, self.config.vocab_size
        special = {name: getattr(self.config, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
        dropped = {name: value for name, value in special.items()
                   if new_num_tokens is not None and value is not None and value >= new_num_tokens}
        if dropped:  # the saved config would not load again (its special ids must be ids of the vocabulary)
            raise ValueError(f"resize_token_embeddings({new_num_tokens}) would drop the special token ids "
                             + ", ".join(f"{k}={v}" for k, v in dropped.items())
                             + f": set them in model.config (and model.generation_config) to ids below "
                             f"{new_num_tokens} first")
        if new_num_tokens is not None and pad_to_multiple_of is None and old_ids <= new_num_tokens <= old_rows:
            embeddings = self.get_input_embeddings()
        else:
            embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if new_num_tokens is not None:
            new_ids = min(new_num_tokens, self.config.vocab_size)
            reused = slice(old_ids, min(new_ids, old_rows))  # padded rows that are real ids now
            if mean_resizing and reused.start < reused.stop:
                with torch.no_grad():
                    for weight in {id(w): w for w in (embeddings.weight, self.lm_head.weight)}.values():  # once if tied
                        weight[reused] = weight[:old_ids].mean(dim=0).to(weight.dtype)
            self.config.tokenizer_vocab_size = new_ids
        return embeddings

    def supports_chunked_loss(self) -> bool:
        """Whether `loss_chunk_tokens` takes the chunked path: only with a plain, bias-free, hook-free nn.Linear
        head (a replaced or hooked head is called as a module, and the full-logits loss is used instead)."""
        return _is_plain_linear(self.lm_head)

    def _padded_ids_bias(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """(vocab_size,) bias for the LM head: 0 for real ids, PADDED_LOGIT for the padded rows (zero
        probability), or None when nothing is padded. A bias costs nothing measurable (it rides in the matmul);
        writing the value into the logits in place instead made autograd copy the whole (B, T, V) gradient (+11%
        step time on CPU)."""
        n_ids, width = self.config.tokenizer_vocab_size, self.config.vocab_size
        if n_ids >= width:
            return None
        bias = torch.zeros(width, device=device, dtype=dtype)
        bias[n_ids:] = PADDED_LOGIT
        return bias


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk_tokens: int, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of `F.linear(hidden, weight, bias)` against `targets` (ignoring `ignore_index`), as
    `F.cross_entropy` on the full logits gives it, without ever holding all the logits.

    hidden (N, C), weight (V, C), bias (V,) or None, targets (N,) -> scalar. Forward walks over `chunk_tokens` rows
    at a time: logits (chunk, V), their log-sum-exp in fp32 and, when gradients are wanted, right away the gradient
    of the loss w.r.t. those logits (softmax - one-hot) and from it the gradients of hidden, weight and bias. The
    backward pass only scales what forward stored: (N, C) + (V, C) + (V,) instead of the (N, V) logits (6.6 GB in
    bf16 for B=64, T=1024, V=50304). Under torch.compile a chunk is one matmul, one fused kernel (log-sum-exp, loss,
    gradient) and the two gradient matmuls. Matmuls follow autocast as F.linear does; the softmax runs in fp32
    (fp64 for an fp64 model).

    Limits: fp16 is refused (the gradients are made here, in forward, out of the fp16 loss scaler's reach); no
    double backward; under torch.compile the chunk loop is unrolled for the token count, so every new N compiles
    again (training shapes are fixed)."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if torch.float16 in (hidden.dtype, weight.dtype, _matmul_dtype(hidden, weight)):
        raise ValueError("the chunked loss does not support fp16 (its gradients are computed in forward, where the "
                         "fp16 loss scaler cannot reach them): use bf16 or fp32, or the default loss")
    # needs_input_grad (in forward) covers requires_grad but not no_grad: under no_grad only the loss is computed
    want_grads = torch.is_grad_enabled()
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_tokens, ignore_index, want_grads)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_tokens, ignore_index, want_grads):
        want_hidden, want_weight = want_grads and ctx.needs_input_grad[0], want_grads and ctx.needs_input_grad[1]
        want_bias = want_grads and bias is not None and ctx.needs_input_grad[2]
        mm_dtype = _matmul_dtype(hidden, weight)  # what F.linear's matmul runs in (autocast's, or the inputs')
        weight_mm = weight.to(mm_dtype) if (want_hidden or want_weight) else None  # cast once, not per chunk
        # softmax and sums in fp32, or in fp64 for an fp64 model (as F.cross_entropy computes in the logits' dtype)
        acc_dtype = torch.promote_types(mm_dtype, torch.float32)
        n_valid = (targets != ignore_index).sum()  # the mean's denominator, as F.cross_entropy counts it
        # no valid target: zero gradients (as F.cross_entropy's), not NaN
        grad_scale = 1.0 / n_valid.clamp_min(1).to(acc_dtype)
        loss_sum = hidden.new_zeros((), dtype=acc_dtype)
        hidden_grads, weight_grad = [], None
        bias_grad = torch.zeros_like(bias, dtype=acc_dtype) if want_bias else None
        for start in range(0, hidden.shape[0], chunk_tokens):
            h = hidden[start:start + chunk_tokens]  # (n, C)
            t = targets[start:start + chunk_tokens]  # (n,)
            logits = F.linear(h, weight, bias).to(acc_dtype)  # (n, V), fp32 (or fp64) for the softmax
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            valid = t != ignore_index
            safe_t = t.masked_fill(~valid, 0)[:, None]  # (n, 1), any real id where the target is ignored
            loss_sum = loss_sum + ((lse - logits.gather(1, safe_t).squeeze(1)) * valid).sum()
            if not (want_hidden or want_weight or want_bias):
                continue
            # d(mean loss)/d(logits) = (softmax - one_hot(target)) / n_valid on valid rows, 0 on ignored ones.
            # Elementwise only (the one-hot is a comparison with the column index, not a scatter), so torch.compile
            # fuses it with the log-sum-exp: read the logits, write the gradient; no fp32 (n, V) tensor is stored.
            one_hot = torch.arange(logits.shape[1], device=logits.device) == safe_t  # (n, V) bool
            grad = logits.sub_(lse[:, None]).exp_()  # softmax (in place: the fp32 logits are our own tensor)
            grad = grad.sub_(one_hot.to(grad.dtype)).mul_(valid[:, None] * grad_scale).to(mm_dtype)
            if want_hidden:
                hidden_grads.append((grad @ weight_mm).to(hidden.dtype))  # (n, C)
            if want_weight:
                # (V, C), summed by the matmul itself (addmm) in the matmul dtype. A separate fp32 sum let
                # torch.compile keep every chunk's (V, C) product alive until one final add: memory growing with
                # the number of chunks.
                pair = (grad.t(), h.to(mm_dtype))
                weight_grad = torch.mm(*pair) if weight_grad is None else torch.addmm(weight_grad, *pair)
            if want_bias:
                bias_grad += grad.to(acc_dtype).sum(0)
        # one chunk (the whole batch): its gradient as it is, without a copy through torch.cat
        hidden_grad = (hidden_grads[0] if len(hidden_grads) == 1 else torch.cat(hidden_grads)) if want_hidden else None
        ctx.save_for_backward(hidden_grad,
                              weight_grad.to(weight.dtype) if want_weight else None,
                              bias_grad.to(bias.dtype) if want_bias else None)
        return loss_sum / n_valid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        # The gradients were computed in forward for a loss gradient of 1; the chain rule only scales them.
        hidden_grad, weight_grad, bias_grad = ctx.saved_tensors
        scale = lambda g: None if g is None else g * grad_loss.to(g.dtype)  # noqa: E731
        return scale(hidden_grad), scale(weight_grad), scale(bias_grad), None, None, None, None


def _matmul_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """The dtype F.linear(a, b) computes in here: autocast's when it is on for this device, else the inputs'."""
    if torch.is_autocast_enabled(a.device.type):
        return torch.get_autocast_dtype(a.device.type)
    return torch.promote_types(a.dtype, b.dtype)


def _is_plain_linear(module: nn.Module) -> bool:
    """True when calling `module` does exactly `F.linear(x, weight)`: a bias-free nn.Linear, no hooks anywhere."""
    from torch.nn.modules import module as module_globals

    return (type(module) is nn.Linear and module.bias is None and not module._forward_hooks
            and not module._forward_pre_hooks and not module_globals._global_forward_hooks
            and not module_globals._global_forward_pre_hooks
            and "forward" not in module.__dict__ and not hasattr(module, "_hf_hook"))  # accelerate offload hooks


def _list_as_a_causal_lm() -> None:
    """Put our class in transformers' table of causal-LM class names, which Auto registration does not fill:
    Trainer shifts the labels for its label smoother (`label_smoothing_factor`) only for listed class names
    (unlisted: each position smoothed against its own token, silently wrong). The text-generation pipeline also
    reads it, for instances of a class never registered with the Auto factories. Runs on import, remote code
    included; the Auto mappings ignore the entry (they only list model types that have a known config)."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # moved in a later transformers: Trainer then smooths unshifted, as before
        return
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(GPT2ReproConfig.model_type, GPT2ReproForCausalLM.__name__)


_list_as_a_causal_lm()


def register_auto_classes() -> None:
    """Register our classes with the Auto factories in this process, so our own scripts load our folders
    with `AutoModelForCausalLM.from_pretrained(dir)` and never need `trust_remote_code`. Idempotent."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    try:
        AutoConfig.register(GPT2ReproConfig.model_type, GPT2ReproConfig)
    except ValueError:
        pass  # already registered
    for auto_class, model_class in ((AutoModel, GPT2ReproModel), (AutoModelForCausalLM, GPT2ReproForCausalLM)):
        try:
            auto_class.register(GPT2ReproConfig, model_class)
        except ValueError:
            pass

__all__ = [
    "GPT2ReproConfig",
    "GPT2ReproPreTrainedModel",
    "GPT2ReproModel",
    "GPT2ReproForCausalLM",
    "chunked_linear_cross_entropy",
    "register_auto_classes",
]
