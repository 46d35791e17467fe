"""What importing build-nanogpt's token shards costs next to copying them by hand.

Writes `--shards` shards of `--shard-tokens` tokens the way build-nanogpt's fineweb.py does (np.save of uint16; the
token stream of `builtin:pydocs` repeated, so every shard starts with whole GPT-2 documents), then times, in
alternating rounds in one process: (ref) `shutil.copyfile` of every shard, fsynced as the import fsyncs each shard
(a plain copy, nothing checked), (copy)
`data.import_shards` (ids checked, documents re-encoded, sha256, manifest) and (link) the same with `--link`.
Reports the median of each and the ratios to the plain copy. The files stay in the OS page cache between rounds on a
machine with the memory for them, so this measures the work on the bytes, not the disk.

    python -m bench.bench_import_shards                          # 4 shards of 100M tokens: 800 MB, ~3 GB of disk
    python -m bench.bench_import_shards --shards 2 --shard-tokens 10000000 --rounds 3
"""

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from data.builtin_corpus import pydocs_documents
from data.import_shards import import_shards
from data.tokenizer import EOT_ID, tiktoken_gpt2


def write_their_shards(folder: Path, shards: int, shard_tokens: int) -> list[Path]:
    enc = tiktoken_gpt2()
    stream = np.concatenate([np.array([EOT_ID] + enc.encode_ordinary(t), dtype=np.uint16) for t in pydocs_documents()])
    reps = -(-shards * shard_tokens // len(stream))
    tokens = np.tile(stream, reps)[:shards * shard_tokens]
    folder.mkdir(parents=True)
    paths = []
    for i in range(shards):
        path = folder / f"edufineweb_{'val' if i == 0 else 'train'}_{i:06d}.npy"
        np.save(path, tokens[i * shard_tokens:(i + 1) * shard_tokens])
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="build-nanogpt's shard size by default")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed at the end)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="bench_import_", dir=args.dir))
    try:
        paths = write_their_shards(scratch / "theirs", args.shards, args.shard_tokens)
        tokens = args.shards * args.shard_tokens

        def plain(out: Path) -> None:  # cp, then flushed to disk as the import flushes each shard
            out.mkdir()
            for path in paths:
                shutil.copyfile(path, out / path.name)
                with open(out / path.name, "rb") as f:
                    os.fsync(f.fileno())

        ways = {"plain copy (ref)": plain,
                "import": lambda out: import_shards(scratch / "theirs", out),
                "import --link": lambda out: import_shards(scratch / "theirs", out, link=True)}
        times = {name: [] for name in ways}
        for r in range(args.rounds):
            for name, run in ways.items():
                out = scratch / f"out-{r}-{len(times[name])}-{name.split()[0]}"
                start = time.perf_counter()
                run(out)
                times[name].append(time.perf_counter() - start)
                shutil.rmtree(out)
        ref = statistics.median(times["plain copy (ref)"])
        print(f"{args.shards} shards x {args.shard_tokens:,} tokens ({2 * tokens / 1e6:,.0f} MB), {args.rounds} rounds")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:18s} median {med:7.2f} s  ({tokens / med / 1e6:6.1f}M tokens/s)  ratio to the plain copy "
                  f"{med / ref:5.2f}   all: {' '.join(f'{t:.2f}' for t in ts)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
