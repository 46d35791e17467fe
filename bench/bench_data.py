"""Benchmark: tokenization throughput of `data.prepare` vs a hand-written build-nanogpt-style tokenizer loop.

    python bench/bench_data.py [--data ../shared/data/fineweb/fineweb_legal_2800docs.parquet] [--num-proc 1 2]

For each process count it runs, on the same documents (read once into memory for the baseline):
(a) `data.prepare.prepare(...)` end to end (parquet -> datasets.map -> uint16 shards with sha256 -> manifest),
    once with the tiktoken backend and once with the HF tokenizer backend;
(b) the hand-written baseline of build-nanogpt's fineweb.py: `multiprocessing.Pool.imap` over documents,
    `[EOT] + encode_ordinary(text)` as uint16, written with `np.save` as a val shard (the first 100,000 tokens,
    like our val split) and a train shard (the rest; fineweb.py's 100M-token shards, of which this data fills
    less than one). No checksums, no manifest, no resume.
It checks that (a) and (b) produce the same tokens, and prints documents/s and tokens/s (wall clock, after
imports, including torch, and tokenizer construction; best of --repeat runs). Output folders go to
out/bench_data/ (deleted after each run).

Then the training loader: `data.loader.TrainBatches` over the prepared shards, batches of B=64 x T=1024
(shuffled windows gathered from the memmap, int64 x/y tensors) on one torch thread, in batches/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from data.tokenizer import tiktoken_gpt2  # noqa: E402
from data.prepare import prepare  # noqa: E402
from data.tokenizer import EOT_ID, gpt2_tokenizer  # noqa: E402

OUT = REPO / "out" / "bench_data"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fineweb" / "fineweb_legal_2800docs.parquet"


def _baseline_encode(text: str) -> np.ndarray:
    return np.array([EOT_ID] + tiktoken_gpt2().encode_ordinary(text), dtype=np.uint16)


def baseline(texts: list[str], num_proc: int, val_tokens: int = 100_000) -> np.ndarray:
    """build-nanogpt's approach: a process pool mapping documents to uint16 arrays, in order, saved as shards."""
    with mp.get_context("fork").Pool(num_proc) as pool:
        tokens = np.concatenate(list(pool.imap(_baseline_encode, texts, chunksize=16)))
    out = OUT / f"baseline_{num_proc}"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "shard_val_000000.npy", tokens[:val_tokens])
    np.save(out / "shard_train_000001.npy", tokens[val_tokens:])
    return tokens


def loader_throughput(data: Path, batch_size: int = 64, seq_len: int = 1024, batches: int = 300) -> dict:
    """batches/s of TrainBatches on one thread, after 10 warm-up batches; data prepared once (not timed)."""
    import torch

    from data.loader import TrainBatches

    out = OUT / "loader_data"
    shutil.rmtree(out, ignore_errors=True)
    prepare(str(data), out, shard_tokens=100_000_000, val_tokens=100_000, num_proc=1, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loader = TrainBatches(out, batch_size, seq_len, seed=0)
        for _ in range(10):
            next(loader)
        t0 = time.perf_counter()
        for _ in range(batches):
            x, y = next(loader)
        dt = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    assert x.shape == (batch_size, seq_len) and y.shape == (batch_size, seq_len)
    shutil.rmtree(out)
    return {"method": "TrainBatches (1 thread)", "batch": f"{batch_size}x{seq_len}", "batches": batches,
            "seconds": round(dt, 3), "batches_per_s": round(batches / dt, 1),
            "tokens_per_s": round(batches * batch_size * seq_len / dt), "epochs_seen": loader.epoch}


def run_prepare(data: Path, num_proc: int, backend: str) -> tuple[float, np.ndarray, dict]:
    out = OUT / f"prepare_{backend}_{num_proc}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = prepare(str(data), out, shard_tokens=100_000_000, val_tokens=100_000, num_proc=num_proc,
                       tokenizer=backend, progress=False)
    dt = time.perf_counter() - t0
    tokens = np.concatenate([np.load(out / s["file"]) for s in manifest["shards"]])
    shutil.rmtree(out)
    return dt, tokens, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is reported")
    ap.add_argument("--loader-batches", type=int, default=300, help="B=64 x T=1024 batches timed (0 = skip)")
    args = ap.parse_args()
    import pyarrow.parquet as pq

    texts = pq.read_table(args.data, columns=["text"]).column("text").to_pylist()
    tiktoken_gpt2(), gpt2_tokenizer()  # built before timing (and inherited by forked workers)
    import torch  # noqa: F401  datasets' streaming imports torch on first use (~5 s here): keep it out of timings
    rows = []
    reference_tokens = None  # every method must produce exactly these tokens, in this order
    for n in args.num_proc:
        for name, fn in (("prepare (tiktoken)", lambda: run_prepare(args.data, n, "tiktoken")),
                         ("prepare (hf)", lambda: run_prepare(args.data, n, "hf")),
                         ("hand-written Pool baseline", None)):
            times = []
            for _ in range(args.repeat):  # shared 2-core machines are noisy: report the best of `repeat` runs
                if fn is None:
                    t0 = time.perf_counter()
                    tokens = baseline(texts, n)
                    times.append(time.perf_counter() - t0)
                    shutil.rmtree(OUT / f"baseline_{n}")
                else:
                    dt, tokens, _ = fn()
                    times.append(dt)
            dt = min(times)
            if reference_tokens is None:
                reference_tokens = tokens
            assert np.array_equal(tokens, reference_tokens), f"{name} (num_proc {n}) produced other tokens"
            rows.append({"method": name, "num_proc": n, "seconds": round(dt, 2), "docs_per_s": round(len(texts) / dt),
                         "tokens_per_s": round(len(tokens) / dt), "tokens": int(len(tokens))})
            print(json.dumps(rows[-1]), flush=True)
    if args.loader_batches:
        print(json.dumps(loader_throughput(args.data, batches=args.loader_batches)), flush=True)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "load_average": os.getloadavg(), "documents": len(texts)}))


if __name__ == "__main__":
    main()
