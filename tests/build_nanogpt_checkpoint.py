"""build-nanogpt checkpoints for tests, written the way its train_gpt2.py writes them: `torch.save` of a dict with
the model's state dict (names prefixed `_orig_mod.` by torch.compile), its `GPTConfig` dataclass pickled as
`__main__.GPTConfig`, the step and the validation loss. The weights come from transformers' own GPT-2 (random),
laid out as build-nanogpt's nn.Linear modules hold them, with the embedding padded to 50304 trained rows.

Its fixtures live in conftest.py: `build_nanogpt_main` (GPTConfig pickles as `__main__.GPTConfig`) and
`random_gpt2` (the weights).
"""

import dataclasses

import torch

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclasses.dataclass
class GPTConfig:  # the fields of build-nanogpt's config
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768


def build_nanogpt_state(stock, prefix="_orig_mod.") -> dict:
    """transformers' GPT-2 weights as build-nanogpt's model holds them: Linear (out, in) layout, 50304 embedding
    rows (the 47 extra rows are trained there, so random here), one tensor shared by wte and lm_head."""
    state = {}
    for name, tensor in stock.state_dict().items():
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")) and tensor.dim() > 1:
            continue
        state[name] = tensor.t().contiguous() if name.endswith(CONV1D) else tensor.clone()
    extra = torch.randn(50304 - 50257, stock.config.n_embd, generator=torch.Generator().manual_seed(5)) * 0.1
    state["transformer.wte.weight"] = torch.cat([state["transformer.wte.weight"], extra])
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return {prefix + k: v for k, v in state.items()}


def save_checkpoint(path, stock, **entries):
    c = stock.config
    checkpoint = {"model": build_nanogpt_state(stock),
                  "config": GPTConfig(block_size=c.n_positions, vocab_size=50304, n_layer=c.n_layer, n_head=c.n_head,
                                      n_embd=c.n_embd),
                  "step": 5000, "val_loss": 3.0712}
    checkpoint.update(entries)
    torch.save(checkpoint, path)
    return path
