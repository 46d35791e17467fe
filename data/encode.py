"""Batched document encoding for `datasets.map`: text -> `[50256] + ids(text)` as uint16 arrays.

Two interchangeable backends over the SAME BPE files (`data.tokenizer.gpt2_bpe_files()`, sha256-checked):
- "tiktoken" (default): tiktoken's BPE built from those files, ~2.5M tokens/s per core here, the speed of
  build-nanogpt's hand-written fineweb.py;
- "hf": `data.tokenizer.gpt2_tokenizer()` (GPT2TokenizerFast), the project's reference, ~5x slower.
Both treat a literal "<|endoftext|>" inside a document as ordinary text, so only our own 50256 separates
documents; tests check the two backends and tiktoken's own `encode_ordinary` agree id for id.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from datasets import Features, List, Value

from data.tokenizer import EOT_ID, TOKENIZER_VOCAB_SIZE, gpt2_bpe_files, gpt2_tokenizer

BACKENDS = ("tiktoken", "hf")
# The output schema of the map: one uint16 list per document (datasets defaults to int64 lists, 4x the bytes).
TOKEN_FEATURES = Features({"ids": List(Value("uint16"))})
# GPT-2's pre-tokenizer regex, the one tiktoken's `gpt2` encoding and HF's ByteLevel pre-tokenizer both use.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def tiktoken_gpt2():
    """tiktoken's `gpt2` encoding, built offline from the project's checked BPE files (one per process)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, vocab_bpe = gpt2_bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
    return tiktoken.Encoding(
        name="gpt2-local",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_ID},
        explicit_n_vocab=TOKENIZER_VOCAB_SIZE,
    )


def encode_batch(texts: list[str | None], backend: str = "tiktoken") -> list[list[int]]:
    """Token ids of each text WITHOUT the leading EOT; None counts as an empty document."""
    texts = [t if t is not None else "" for t in texts]
    if backend == "tiktoken":
        enc = tiktoken_gpt2()  # one thread per process: datasets' num_proc gives the parallelism
        return [enc.encode_ordinary(t) for t in texts]
    if backend == "hf":
        # Same call as data.tokenizer.encode_document, on a whole batch; verbose=False silences the
        # "longer than 1024 tokens" warning, which is meaningless for pretraining documents.
        return gpt2_tokenizer()(texts, split_special_tokens=True, add_special_tokens=False, verbose=False)["input_ids"]
    raise ValueError(f"unknown tokenizer backend {backend!r}: choose one of {BACKENDS}")


def tokenize_batch(batch: dict, backend: str = "tiktoken") -> dict:
    """`datasets.map(batched=True)` function: {"text": [...]} -> {"ids": [uint16 array per document]}."""
    ids = encode_batch(batch["text"], backend)
    out = []
    for doc in ids:
        arr = np.empty(len(doc) + 1, dtype=np.uint16)  # (1 + n,): EOT then the document's ids
        arr[0] = EOT_ID
        arr[1:] = doc
        out.append(arr)
    return {"ids": out}
