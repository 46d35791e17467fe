"""Batched document encoding for `datasets.map` (Arrow format): text -> `[50256] + ids(text)` as list<uint16>.

Two interchangeable backends over the SAME BPE files (`data.tokenizer.gpt2_bpe_files()`, sha256-checked):
- "tiktoken" (default): tiktoken's BPE built from those files, ~3M tokens/s per thread here, on `threads`
  threads inside one process (BENCHMARKS.md: faster than build-nanogpt's hand-written process pool);
- "hf": `data.tokenizer.gpt2_tokenizer()` (GPT2TokenizerFast), the project's reference, ~5x slower.
Both treat a literal "<|endoftext|>" inside a document as ordinary text, so only our own 50256 separates
documents; tests check the two backends and tiktoken's own `encode_ordinary` agree id for id.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from datasets import Features, List, Value

from data.tokenizer import EOT_ID, gpt2_tokenizer, tiktoken_gpt2

BACKENDS = ("tiktoken", "hf")
# The output schema of the map: one uint16 list per document (datasets defaults to int64 lists, 4x the bytes).
TOKEN_FEATURES = Features({"ids": List(Value("uint16"))})
def encode_batch(texts: list[str | None], backend: str = "tiktoken", threads: int = 1) -> list:
    """Token ids of each text WITHOUT the leading EOT (a sequence of ints per text); None is an empty document.
    `threads` > 1 runs tiktoken's Rust encoder on that many threads (it releases the GIL)."""
    texts = [t if t is not None else "" for t in texts]
    if backend == "tiktoken":
        enc = tiktoken_gpt2()

        # encode_to_numpy with nothing allowed and nothing disallowed == encode_ordinary, as an int array built
        # in Rust (no Python int per token, which would hold the GIL)
        def one(text: str) -> np.ndarray:
            return enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(one, texts))
        return [one(t) for t in texts]
    if backend == "hf":
        # Same call as data.tokenizer.encode_document, on a whole batch; verbose=False silences the
        # "longer than 1024 tokens" warning, which is meaningless for pretraining documents.
        return gpt2_tokenizer()(texts, split_special_tokens=True, add_special_tokens=False, verbose=False)["input_ids"]
    raise ValueError(f"unknown tokenizer backend {backend!r}: choose one of {BACKENDS}")


def tokenize_batch(batch: pa.Table, backend: str = "tiktoken", threads: int = 1) -> pa.Table:
    """`datasets.map(batched=True)` function on the Arrow format: a table with a "text" column -> a table with
    "ids", one list<uint16> per document: EOT then the document's ids. Built as one flat uint16 array plus
    offsets, so no Python object is made per token."""
    docs = encode_batch(batch.column("text").to_pylist(), backend, threads)
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))  # (N,) with the EOT
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:  # list<> offsets are int32
        raise ValueError(f"a map() batch of {offsets[-1]:,} tokens is too large: lower the batch size")
    flat = np.empty(int(offsets[-1]), dtype=np.uint16)  # (total,)
    flat[offsets[:-1]] = EOT_ID
    for doc, start, end in zip(docs, offsets[:-1] + 1, offsets[1:]):
        flat[start:end] = doc
    ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))
    return pa.table({"ids": ids})
