"""In-loop HellaSwag scorer (used by train.py) and its command line.

    python -m eval.hellaswag --model PATH [--data FILE] [--limit N] [--batch-size 32] [--mc]

`PATH` is an export, a checkpoint or a run folder (see eval/load.py); without `--data` the file is $HELLASWAG_FILE,
else an earlier download, else the Rowan/hellaswag validation split from the Hub (eval.hellaswag_data). Prints the scores next to OpenAI GPT-2 124M's under the same scorer and
saves JSON beside the model (`<model dir>/eval_results/hellaswag_scorer.json`; for a run's checkpoint
`<run>/eval_results/step_N/hellaswag_scorer.json`; or `--output`, which may not overwrite the model, a
checkpoint or the data: see eval.load.output_path).

What it computes (text side in eval/hellaswag_data.py):
- `acc`, `acc_norm`: exactly lm-eval's `hellaswag` task (its preprocessing, continuation `" " + choice`,
  its `_encode_pair` tokenisation and left truncation, acc_norm = sum log p / len(choice in characters)).
  Same model, same tokenizer -> the same counts of correct answers as `lm_eval --tasks hellaswag`.
- `acc_tokennorm`: build-nanogpt's score (raw `ctx`, mean log p per ending token). A different number: compare
  it only with REFERENCE_GPT2_124M["acc_tokennorm"], never with lm-eval's acc_norm.
- `acc_mc` (optional): the multiple-choice formulation (endings labelled A-D in the prompt, likelihood of the
  letter), the same as `eval/tasks/hellaswag_mc.yaml` under lm-eval. Meaningful for large models only.

How it is fast: text is tokenised once (`from_file`; by tiktoken for GPT-2's tokenizer, same ids); identical inputs
are scored once; every input row is `(context + continuation)[:-1]`, rows are sorted by where their scored span
starts and packed `batch_size` rows per forward, right padded to a multiple of 32 (few distinct shapes:
torch.compile compiles them once, not on every call); the LM head runs only on the scored positions (GPT-2 / ours,
uncompiled: body, then the head on the gathered hidden states) or on a window around them (`logits_to_keep`, e.g. a
compiled model), and the log-probabilities of the scored positions are taken in cache-sized chunks (head matmul,
then fp32 `cross_entropy`, i.e. log-softmax at the target, while the chunk is still in cache).

Distributed: the batches are planned globally (independent of world size); rank r scores batches r, r+W, ...;
the per-choice log-likelihoods are summed across ranks with `reduce_fn` (each is computed by exactly one rank,
the others add 0.0), so every rank gets the same, bit-identical totals for any number of processes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from data.shards import atomic_write
from data.tokenizer import is_gpt2_tokenizer, tiktoken_gpt2
from eval.errors import EvalInputError, hyphenated, positive_int, run_cli
from eval.hellaswag_data import (
    MC_LETTERS,
    HellaSwagExample,
    cloze_choices,
    cloze_query,
    file_fingerprint,
    find_hellaswag_file,
    mc_prompt,
    read_hellaswag,
    rows_fingerprint,
)

FORMULATIONS = ("cloze", "tokennorm", "mc")
DEFAULT_FORMULATIONS = ("cloze", "tokennorm")
SEQ_BUCKET = 32  # padded row length is a multiple of this: few distinct shapes for torch.compile
KEEP_BUCKET = 8  # the window of positions given to the LM head is a multiple of this (tighter = less head work)

# OpenAI GPT-2 124M under the same scorers (docs/REFERENCE.md). No published number for the MC formulation.
REFERENCE_GPT2_124M = {
    "acc": 0.2892,  # lm-eval hellaswag
    "acc_norm": 0.3114,  # lm-eval hellaswag (char-normalised)
    "acc_tokennorm": 0.2955,  # build-nanogpt scorer (token-normalised, raw ctx)
}


@dataclass
class _Batch:
    """One forward: `input_ids` (B, L); the scored positions as (row, pos) pairs with their target tokens;
    `sum_index` (R, C) gathers each request's per-token log-probs (P entries; index P = a zero) for its sum."""

    input_ids: torch.Tensor  # (B, L) int64, right padded
    keep_start: int  # the LM head sees positions [keep_start, keep_start + keep_len)
    keep_len: int
    row: torch.Tensor  # (P,) row of each scored position
    pos: torch.Tensor  # (P,) position in the row (its logits predict `target`)
    target: torch.Tensor  # (P,) token ids
    sum_index: torch.Tensor  # (R, C) into the P log-probs; P pads
    request_ids: torch.Tensor  # (R,) global request ids


class HellaSwagScorer:
    """HellaSwag scored by completion likelihood, batched and tokenised once. Build with `from_file`.

    >>> scorer = HellaSwagScorer.from_file("hellaswag_val.jsonl", tokenizer, max_length=1024)
    >>> scorer.evaluate(model, batch_size=64, rank=r, world_size=w, reduce_fn=lambda t: accelerator.reduce(t, "sum"))
    {'acc': ..., 'acc_norm': ..., 'acc_tokennorm': ..., 'n': 10042, 'correct': ..., ...}
    """

    def __init__(self, examples: list[HellaSwagExample], tokenizer, max_length: int = 1024,
                 formulations: tuple[str, ...] = DEFAULT_FORMULATIONS):
        unknown = set(formulations) - set(FORMULATIONS)
        if unknown or not formulations:
            raise ValueError(f"formulations must be a non-empty subset of {FORMULATIONS}, got {formulations}")
        self.max_length = int(max_length)
        self.formulations = tuple(f for f in FORMULATIONS if f in formulations)
        self.n = len(examples)
        self.gold = torch.tensor([ex.label for ex in examples], dtype=torch.long)  # (N,)
        self.pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self._rows: list[tuple[int, ...]] = []  # unique input rows
        self._row_ids: dict[tuple[int, ...], int] = {}
        self._requests: list[tuple[int, tuple[int, ...]]] = []  # (row id, continuation tokens)
        self._request_ids: dict[tuple[int, tuple[int, ...]], int] = {}
        self.request_index: dict[str, torch.Tensor] = {}  # formulation -> (N, 4) request ids
        self.divisor: dict[str, torch.Tensor] = {}  # formulation -> (N, 4) float64 length normaliser
        self._plans: dict[int, list[_Batch]] = {}
        self._tokenize(examples, tokenizer)

    @classmethod
    def from_file(cls, path, tokenizer, limit: int | None = None, max_length: int = 1024,
                  formulations: tuple[str, ...] = DEFAULT_FORMULATIONS) -> HellaSwagScorer:
        """Read, preprocess and tokenise a HellaSwag jsonl once. `max_length` must not exceed the model's
        context (lm-eval uses `config.n_positions`); longer rows are truncated from the left, as lm-eval does.
        A missing or malformed file raises `EvalInputError` naming the file and line."""
        return cls(read_hellaswag(path, limit), tokenizer, max_length, formulations)

    # ---- tokenisation (once) -------------------------------------------------------------------------------

    def _tokenize(self, examples: list[HellaSwagExample], tokenizer) -> None:
        encode = _batch_encoder(tokenizer)
        n = len(examples)
        if "cloze" in self.formulations or "mc" in self.formulations:
            pairs = {}
            if "cloze" in self.formulations:
                pairs["cloze"] = [(cloze_query(ex), [" " + c for c in cloze_choices(ex)]) for ex in examples]
                self.divisor["cloze"] = torch.tensor(
                    [[float(len(c)) for c in cloze_choices(ex)] for ex in examples], dtype=torch.float64
                ).reshape(n, 4)
            if "mc" in self.formulations:
                pairs["mc"] = [(mc_prompt(ex), [" " + letter for letter in MC_LETTERS]) for ex in examples]
            for name, items in pairs.items():
                contexts, continuations = zip(*(_move_trailing_space(ctx, conts) for ctx, conts in items))
                ctx_ids = encode(list(contexts))
                whole_ids = encode([c + cont for c, conts in zip(contexts, continuations) for cont in conts])
                index = []
                for i, ctx in enumerate(ctx_ids):
                    # lm-eval `_encode_pair`: encode context+continuation whole, split at len(encode(context)).
                    index.append([self._add_request(ctx, whole_ids[4 * i + j][len(ctx):], i) for j in range(4)])
                self.request_index[name] = torch.tensor(index, dtype=torch.long).reshape(n, 4)
        if "tokennorm" in self.formulations:
            # build-nanogpt: raw ctx and " " + raw ending, tokenised separately and concatenated.
            ctx_ids = encode([ex.ctx for ex in examples])
            end_ids = encode([" " + e for ex in examples for e in ex.endings])
            self.request_index["tokennorm"] = torch.tensor(
                [[self._add_request(ctx, end_ids[4 * i + j], i) for j in range(4)] for i, ctx in enumerate(ctx_ids)],
                dtype=torch.long,
            ).reshape(n, 4)
            self.divisor["tokennorm"] = torch.tensor(
                [float(len(end_ids[k])) for k in range(4 * n)], dtype=torch.float64
            ).reshape(n, 4)

    def _add_request(self, context: list[int], continuation: list[int], example: int) -> int:
        """Register one log-likelihood request (of the 0-based `example`); identical (input, continuation) pairs
        share one id."""
        if not continuation:
            raise ValueError("empty continuation after tokenisation")
        if len(continuation) > self.max_length:
            # An ending that does not fit the context cannot be scored (lm-eval stops on an assertion there too).
            # The longest validation ending is 96 tokens (build-nanogpt's raw form): 96 positions score the whole set.
            raise EvalInputError(
                f"HellaSwag example {example + 1} has an ending of {len(continuation)} tokens, longer than the "
                f"model's context of {self.max_length} positions: scoring all of HellaSwag needs a model with at "
                f"least 96 (n_positions); "
                + (f"score only the first {example} examples (--limit; train.py: --hellaswag_limit), or " if example
                   else "")  # the first example itself: no limit helps
                + "turn HellaSwag off in training (--hellaswag_file off)")
        # lm-eval: left-truncate to max_length + 1 tokens, the model input drops the last one.
        row = tuple((context + continuation)[-(self.max_length + 1):][:-1])
        row_id = self._row_ids.setdefault(row, len(self._rows))
        if row_id == len(self._rows):
            self._rows.append(row)
        key = (row_id, tuple(continuation))
        request_id = self._request_ids.setdefault(key, len(self._requests))
        if request_id == len(self._requests):
            self._requests.append(key)
        return request_id

    @property
    def num_requests(self) -> int:
        return len(self._requests)

    @property
    def num_rows(self) -> int:
        return len(self._rows)

    # ---- batch plan (once per batch size) ------------------------------------------------------------------

    def _plan(self, batch_size: int) -> list[_Batch]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size in self._plans:
            return self._plans[batch_size]
        requests_of_row: list[list[int]] = [[] for _ in self._rows]
        for request_id, (row_id, _) in enumerate(self._requests):
            requests_of_row[row_id].append(request_id)
        span_start = [len(row) - max(len(self._requests[q][1]) for q in reqs)
                      for row, reqs in zip(self._rows, requests_of_row)]
        # Sorted by (first scored position, length): rows in a batch have similar lengths and scored windows.
        order = sorted(range(len(self._rows)), key=lambda r: (span_start[r], len(self._rows[r])))
        batches = []
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            longest = max(len(self._rows[r]) for r in rows)
            seq_len = min(_round_up(longest, SEQ_BUCKET), max(self.max_length, longest))
            input_ids = torch.full((len(rows), seq_len), self.pad_id, dtype=torch.long)  # (B, L)
            row_ix, pos_ix, targets, sums = [], [], [], []
            for b, r in enumerate(rows):
                row = self._rows[r]
                input_ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
                for q in requests_of_row[r]:
                    cont = self._requests[q][1]
                    start = len(targets)
                    # logits at positions len-n .. len-1 predict the n continuation tokens
                    row_ix += [b] * len(cont)
                    pos_ix += range(len(row) - len(cont), len(row))
                    targets += cont
                    sums.append((q, list(range(start, start + len(cont)))))
            lo = min(span_start[r] for r in rows)
            keep_len = min(_round_up(longest - lo, KEEP_BUCKET), seq_len)
            keep_start = min(lo, seq_len - keep_len)
            width = max(len(ix) for _, ix in sums)
            pad = len(targets)
            batches.append(_Batch(
                input_ids=input_ids,
                keep_start=keep_start,
                keep_len=keep_len,
                row=torch.tensor(row_ix, dtype=torch.long),
                pos=torch.tensor(pos_ix, dtype=torch.long),
                target=torch.tensor(targets, dtype=torch.long),
                sum_index=torch.tensor([ix + [pad] * (width - len(ix)) for _, ix in sums], dtype=torch.long),
                request_ids=torch.tensor([q for q, _ in sums], dtype=torch.long),
            ))
        self._plans[batch_size] = batches
        return batches

    # ---- scoring -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def loglikelihoods(self, model, batch_size: int = 32, rank: int = 0, world_size: int = 1,
                       reduce_fn=None) -> dict[str, torch.Tensor]:
        """Per-choice log-likelihoods: formulation -> (N, 4) float64 on CPU (sums of fp32 log-probs, as lm-eval)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        if world_size > 1 and reduce_fn is None:
            raise ValueError("world_size > 1 needs reduce_fn (sum across ranks), e.g. lambda t: accelerator.reduce(t, 'sum')")
        base = _unwrap(model)  # the module inside torch.compile / DDP wrappers
        device = next(base.parameters()).device
        self._check_context(base)
        mode = _scoring_mode(model)
        sharded = _is_fsdp(base)
        if sharded and mode == "head":
            mode = "keep"  # through the FSDP root's forward: calling base_model directly skips its all-gather
        batches = self._plan(batch_size)
        ll = torch.zeros(self.num_requests, dtype=torch.float64, device=device)  # (Q,)
        was_training = model.training
        model.eval()
        try:
            for batch in batches[rank::world_size]:
                input_ids = batch.input_ids.to(device, non_blocking=True)
                target = batch.target.to(device)
                if mode == "head":  # LM head on exactly the scored positions
                    hidden = base.base_model(input_ids=input_ids, use_cache=False).last_hidden_state  # (B, L, C)
                    flat = (batch.row * hidden.shape[1] + batch.pos).to(device)  # (P,) into (B*L)
                    scored = hidden.reshape(-1, hidden.shape[-1])[flat]  # (P, C)
                    head = base.get_output_embeddings()
                    n_ids = getattr(base.config, "tokenizer_vocab_size", None)

                    def logits_of(rows, head=head, scored=scored, n_ids=n_ids):  # (p, V) for a slice of the P
                        logits = head(scored[rows])
                        if n_ids is not None and n_ids < logits.shape[-1]:
                            logits[:, n_ids:] = float("-inf")  # padded ids: zero probability, as in the model's forward
                        return logits
                else:
                    if mode == "keep":  # LM head on the window of scored positions
                        keep = torch.arange(batch.keep_start, batch.keep_start + batch.keep_len, device=device)
                        logits = model(input_ids=input_ids, logits_to_keep=keep, use_cache=False).logits  # (B, K, V)
                        start = batch.keep_start
                    else:
                        logits = model(input_ids=input_ids).logits  # (B, L, V)
                        start = 0
                    flat = (batch.row * logits.shape[1] + batch.pos - start).to(device)  # (P,) into (B*K)
                    scored = logits.reshape(-1, logits.shape[-1])[flat]  # (P, V)

                    def logits_of(rows, scored=scored):
                        return scored[rows]
                vocab = head.weight.shape[0] if mode == "head" else scored.shape[-1]
                logp = _target_logprobs(logits_of, target, vocab)  # (P,)
                logp = torch.cat([logp, logp.new_zeros(1)])  # index P is the padding zero
                sums = logp[batch.sum_index.to(device)].sum(1)  # (R,) fp32, fixed order: deterministic
                ll[batch.request_ids.to(device)] = sums.double()
            if sharded:  # every forward is collective under FSDP: as many as the rank with the most batches
                for _ in range(math.ceil(len(batches) / world_size) - len(batches[rank::world_size])):
                    model(input_ids=batches[0].input_ids[:1].to(device), logits_to_keep=1, use_cache=False)
        finally:
            model.train(was_training)
        if world_size > 1:
            ll = reduce_fn(ll)  # each entry was written by exactly one rank; the others add 0.0
        ll = ll.cpu()
        return {name: ll[index] for name, index in self.request_index.items()}

    def metrics(self, lls: dict[str, torch.Tensor]) -> dict:
        """Counts and accuracies from `loglikelihoods` (argmax ties go to the first choice, like numpy/lm-eval)."""
        out: dict = {"n": self.n}
        if "cloze" in lls:
            correct = int((lls["cloze"].argmax(1) == self.gold).sum())
            correct_norm = int(((lls["cloze"] / self.divisor["cloze"]).argmax(1) == self.gold).sum())
            out.update(acc=correct / self.n, acc_norm=correct_norm / self.n, correct=correct, correct_norm=correct_norm)
        if "tokennorm" in lls:
            c = int(((lls["tokennorm"] / self.divisor["tokennorm"]).argmax(1) == self.gold).sum())
            out.update(acc_tokennorm=c / self.n, correct_tokennorm=c)
        if "mc" in lls:
            c = int((lls["mc"].argmax(1) == self.gold).sum())
            out.update(acc_mc=c / self.n, correct_mc=c)
        return out

    def evaluate(self, model, batch_size: int = 32, rank: int = 0, world_size: int = 1, reduce_fn=None) -> dict:
        """Score `model` (any HF causal LM, compiled or not; device taken from its parameters).

        Returns `dict(acc, acc_norm, acc_tokennorm, n, correct, correct_norm, correct_tokennorm)` (+ `acc_mc`,
        `correct_mc` with the "mc" formulation), identical on every rank. `batch_size` is rows (sequences) per
        forward. Runs under no_grad in eval mode (the mode is restored); the caller may wrap it in autocast.
        With `world_size > 1`, `reduce_fn(t)` must return the sum of the 1-D float64 tensor `t` across ranks.
        """
        return self.metrics(self.loglikelihoods(model, batch_size, rank, world_size, reduce_fn))

    def _check_context(self, model) -> None:
        config = getattr(model, "config", None)
        limit = None
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            if getattr(config, attr, None) is not None:
                limit = int(getattr(config, attr))
                break
        if limit is not None and self.max_length > limit:  # lm-eval would truncate to `limit`: refuse
            raise ValueError(
                f"the scorer was built with max_length={self.max_length} but the model has {limit} positions: "
                f"build it with HellaSwagScorer.from_file(..., max_length={limit})"
            )


# Architectures whose logits are exactly `lm_head(last_hidden_state)` (ours: plus the padded-ids bias): the head can
# run on the scored positions alone. Anything else goes through the model's own forward.
_HEAD_ONLY_MODEL_TYPES = ("gpt2repro", "gpt2")


def _scoring_mode(model) -> str:
    """"head": body + LM head on the scored positions only (our/GPT-2 eager modules); "keep": the model's forward
    with `logits_to_keep` (compiled modules keep their compiled forward); "full": plain forward, full logits."""
    base = _unwrap(model)
    config = getattr(base, "config", None)
    if (base is model and getattr(config, "model_type", None) in _HEAD_ONLY_MODEL_TYPES
            and getattr(base, "base_model", base) is not base and base.get_output_embeddings() is not None):
        return "head"
    if "logits_to_keep" in inspect.signature(base.forward).parameters:
        return "keep"
    return "full"


def _target_logprobs(logits_of, target: torch.Tensor, vocab: int) -> torch.Tensor:
    """log p(target[i]) for the P scored positions, as fp32 `log_softmax(logits)[target]` (lm-eval's numbers).

    `logits_of(slice)` gives the (p, V) logits of a slice of the positions. The positions go in chunks: on CPU
    small enough that a chunk's logits stay in cache between the head matmul and the softmax (~3x faster than
    one (P, V) pass for GPT-2's 50k vocabulary); on a GPU large (few kernels), bounded in memory."""
    budget = (512 << 20) if target.device.type == "cuda" else (6 << 20)
    chunk = max(1, budget // (4 * vocab))  # fp32 bytes of one row of logits
    parts = []
    for start in range(0, len(target), chunk):
        rows = slice(start, start + chunk)
        logits = logits_of(rows).float()  # (p, V)
        parts.append(-torch.nn.functional.cross_entropy(logits, target[rows], reduction="none"))
    return torch.cat(parts) if parts else torch.zeros(0, device=target.device)


def _is_fsdp(module) -> bool:
    """Sharded by FSDP2's fully_shard (its forwards all-gather the weights: every rank must run each one)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without torch.distributed
        return False
    return isinstance(module, FSDPModule)


def _unwrap(model):
    """The plain module inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while hasattr(model, "_orig_mod") or (hasattr(model, "module") and not hasattr(model, "config")):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def _batch_encoder(tokenizer):
    """strings -> ids, as lm-eval gets them: `tokenizer.encode(s)` with default special tokens (none for GPT-2),
    which also maps a literal "<|endoftext|>" to its id. For GPT-2's own tokenizer the same ids come from tiktoken
    with that special token allowed, ~3x faster on all 10,042 examples (BENCHMARKS.md "HellaSwag scorer")."""
    if is_gpt2_tokenizer(tokenizer):
        # One call per string in this thread: tiktoken's encode_batch starts a thread-pool task per string, which
        # costs more than encoding a HellaSwag line.
        encoding = tiktoken_gpt2()
        return lambda strings: [encoding.encode(s, allowed_special="all") for s in strings]
    return lambda strings: tokenizer(strings)["input_ids"] if strings else []


def _move_trailing_space(context: str, continuations: list[str]) -> tuple[str, list[str]]:
    """lm-eval `_encode_pair`: trailing whitespace of the context moves to the front of each continuation."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        return context[:-n_spaces], [context[-n_spaces:] + c for c in continuations]
    return context, continuations


def _round_up(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


# ---- command line ------------------------------------------------------------------------------------------


def format_report(result: dict) -> str:
    """Human-readable lines: our scores next to OpenAI GPT-2 124M's under the same scorer."""
    ref = REFERENCE_GPT2_124M
    lines = [f"HellaSwag, {result['n']} examples (in-loop scorer)"]
    if "acc" in result:
        lines.append(
            f"  lm-eval hellaswag (char-normalised):      acc {result['acc']:.4f}  acc_norm {result['acc_norm']:.4f}"
            f"   | OpenAI GPT-2 124M: acc {ref['acc']:.4f}  acc_norm {ref['acc_norm']:.4f}"
        )
    if "acc_tokennorm" in result:
        lines.append(
            f"  build-nanogpt (token-normalised, raw ctx): acc_tokennorm {result['acc_tokennorm']:.4f}"
            f"           | OpenAI GPT-2 124M: {ref['acc_tokennorm']:.4f}  (a different number from acc_norm)"
        )
    if "acc_mc" in result:
        lines.append(
            f"  multiple choice (A-D letter):              acc_mc {result['acc_mc']:.4f}"
            "                  | chance 0.25; meaningful only for large models"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.hellaswag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="export folder, checkpoint folder or run folder")
    parser.add_argument("--data", help="HellaSwag jsonl (default: $HELLASWAG_FILE, else the copy downloaded earlier, "
                        "$HF_HOME/gpt2repro/hellaswag_val.jsonl, else Rowan/hellaswag validation from the Hub, "
                        "downloaded there once)")
    parser.add_argument("--limit", type=positive_int, help="score only the first N examples")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sequences per forward (default 32)")
    parser.add_argument("--mc", action="store_true", help="also score the multiple-choice (A-D) formulation")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only; ignored on a CPU, "
                        "with a note, and recorded as false)")
    parser.add_argument("--output", help="JSON path (default <model dir>/eval_results/hellaswag_scorer.json; for a "
                        "checkpoint <run>/eval_results/step_N/; in the model's or run's folder only under those, or "
                        "directly in <run>/eval_results/)")
    args = parser.parse_args(hyphenated(argv))  # underscore spellings too (--batch_size)

    from eval.load import environment, load_model, model_dir_of, output_path

    # Resolved once: a run folder's newest checkpoint may change while this runs; the score stays with this one.
    model_dir = model_dir_of(args.model)  # a wrong model path is reported before any download
    data = args.data or find_hellaswag_file("pass --data path/to/hellaswag_val.jsonl (or set HELLASWAG_FILE)")
    rows = read_hellaswag(data)  # every row (the record's fingerprint is of the whole file): bad data fails now,
    examples = rows[:args.limit]  # before the model is loaded
    output = output_path(model_dir, args.output, RESULTS_FILE, keep=(data,))  # a bad --output too
    model, tokenizer = load_model(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    max_length = int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings)
    formulations = DEFAULT_FORMULATIONS + (("mc",) if args.mc else ())
    scorer = HellaSwagScorer(examples, tokenizer, max_length=max_length, formulations=formulations)
    scored = torch.compile(model) if args.compile else model
    bf16 = bool(args.bf16) and device.type == "cuda"  # what runs, and what the record says
    if args.bf16 and not bf16:
        print(f"note: --bf16 ignored: bf16 autocast is CUDA only; scoring in fp32 on {device}")
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        result = scorer.evaluate(scored, batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    print(format_report(result))
    print(f"  {result['n'] / seconds:.1f} examples/s on {device} ({seconds:.1f} s)")
    out = save_results(model_dir, result, data=data, limit=args.limit, output=output,
                       batch_size=args.batch_size, max_length=max_length, device=str(device), bf16=bf16,
                       seconds=round(seconds, 3), data_fingerprint=rows_fingerprint(rows),
                       environment=environment(device, data))
    print(f"saved {out}")
    return result


RESULTS_FILE = "hellaswag_scorer.json"  # what export looks for in <run>/eval_results/step_N/


def save_results(model_path, result: dict, *, data, limit, output=None, data_fingerprint=None, **details) -> Path:
    """Write a scorer result as JSON: `output`, or beside the model (eval.load.results_path: for a run's
    checkpoint `<run>/eval_results/step_N/`, where export picks it up for that step's model card). The record
    holds `data`'s content fingerprint (computed here unless given), which the model card needs to tell the
    published validation set from any other file."""
    from eval.load import model_dir_of, results_path

    record = {
        "model": str(model_dir_of(model_path)), "data": str(data), "limit": limit,
        "data_fingerprint": data_fingerprint or file_fingerprint(data),
        "scorer": "eval.hellaswag.HellaSwagScorer", **details,
        "results": result, "reference_openai_gpt2_124m": REFERENCE_GPT2_124M,
        "definitions": {
            "acc, acc_norm": "lm-eval hellaswag: preprocessed query, ' ' + choice, acc_norm by characters",
            "acc_tokennorm": "build-nanogpt: raw ctx, ' ' + ending, mean log-prob per ending token",
            "acc_mc": "endings labelled A-D in the prompt, likelihood of ' A'..' D'",
        },
    }
    out = Path(output) if output else results_path(model_path, RESULTS_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(record, indent=2) + "\n").encode()
    atomic_write(out, lambda f: f.write(text))  # a full disk left a 0-byte file in place of an earlier result
    return out


if __name__ == "__main__":
    run_cli(main)
