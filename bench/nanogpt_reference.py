"""The reference for GPU throughput: GPT-2 and its training step written as plain PyTorch, the way
build-nanogpt's final train_gpt2.py runs them (our own code, written from the description of that recipe).

What makes it that recipe, and therefore a fair, strong baseline:
- one module, fused q/k/v Linear, `F.scaled_dot_product_attention(is_causal=True)` (flash kernel on CUDA),
  tanh-GELU MLP, pre-LayerNorm blocks, tied embedding / head, vocabulary padded to 50304;
- `torch.compile(model)`, bf16 autocast around forward + loss, TF32 matmuls, fused AdamW with weight decay
  on dim >= 2 tensors;
- a sequential loader over a token tensor (build-nanogpt's `DataLoaderLite`): the next B*T+1 tokens, no
  shuffling, `.to(device)` per micro-batch;
- per step: loss / grad_accum, backward, `clip_grad_norm_(1.0)`, LR set, `optimizer.step()`,
  `torch.cuda.synchronize()`, `loss_accum.item()` for its log line.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class RefConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304


class SelfAttention(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.out = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.out.residual_scale = True

    def forward(self, x):  # x: (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.proj.residual_scale = True

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class RefGPT(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied
        self.apply(self._init)

    def _init(self, module):
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if getattr(module, "residual_scale", False) else 0.02
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx, targets=None):  # idx, targets: (B, T) int64
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


class SequentialLoader:
    """build-nanogpt's DataLoaderLite over the train shards of a `data.prepare` folder, concatenated: the next
    B*T+1 tokens each call, wrapping around at the end."""

    def __init__(self, shard_arrays: list[np.ndarray], B: int, T: int):
        self.tokens = torch.from_numpy(np.concatenate(shard_arrays).astype(np.int64))
        self.B, self.T, self.pos = B, T, 0
        if len(self.tokens) < B * T + 1:
            raise ValueError(f"{len(self.tokens)} train tokens: fewer than one batch of {B}x{T}+1")

    def next_batch(self):
        B, T = self.B, self.T
        if self.pos + B * T + 1 > len(self.tokens):
            self.pos = 0
        buf = self.tokens[self.pos:self.pos + B * T + 1]
        self.pos += B * T
        return buf[:-1].view(B, T), buf[1:].view(B, T)


def run_reference(cfg: RefConfig, loader: SequentialLoader, *, steps: int, grad_accum: int, device: torch.device,
                  bf16: bool, compile: bool, log=print) -> list[tuple[int, float]]:
    """Train `steps` optimizer steps; returns [(step, wall-clock time after the step's log line)]."""
    torch.manual_seed(1337)
    model = RefGPT(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda" or None)
    run = torch.compile(model) if compile else model
    stamps = []
    for step in range(steps):
        t0 = time.time()
        optimizer.zero_grad()
        loss_accum = torch.zeros((), device=device)
        for _ in range(grad_accum):
            x, y = loader.next_batch()
            x, y = x.to(device), y.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                _, loss = run(x, y)
            loss = loss / grad_accum
            loss_accum += loss.detach()
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = 6e-4 * min(1.0, (step + 1) / 715)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        tok_s = grad_accum * loader.B * loader.T / dt
        log(f"ref step {step + 1:5d} | loss {loss_accum.item():.6f} | lr {lr:.4e} | norm {norm:.4f} | "
            f"dt {1000 * dt:.2f}ms | tok/s {tok_s:,.0f}")
        stamps.append((step + 1, time.time()))
    return stamps
