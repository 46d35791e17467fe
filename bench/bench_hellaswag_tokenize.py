"""Benchmark: building the HellaSwag scorer (reading + tokenising every example once) with tiktoken, as it does
for GPT-2's tokenizer, against the tokenizer's own batched call (lm-eval's way), alternating in one process.

    python bench/bench_hellaswag_tokenize.py [--data ../shared/data/hellaswag/hellaswag_val.jsonl] [--rounds 3]

Both builds must produce identical requests (checked); prints the median seconds of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import eval.hellaswag as hs  # noqa: E402
from data.tokenizer import gpt2_tokenizer, tiktoken_gpt2  # noqa: E402


def build(data: Path, fast: bool, formulations: tuple[str, ...]):
    real = hs.is_gpt2_tokenizer
    hs.is_gpt2_tokenizer = real if fast else (lambda tokenizer: False)
    try:
        t0 = time.perf_counter()
        scorer = hs.HellaSwagScorer.from_file(data, gpt2_tokenizer(), max_length=1024, formulations=formulations)
        return time.perf_counter() - t0, scorer
    finally:
        hs.is_gpt2_tokenizer = real


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hellaswag" / "hellaswag_val.jsonl")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--formulations", default="cloze,tokennorm", help="comma-separated (train.py's default)")
    args = ap.parse_args(argv)
    formulations = tuple(args.formulations.split(","))
    gpt2_tokenizer(), tiktoken_gpt2()  # both built before timing
    times = {"tiktoken": [], "tokenizer": []}
    for _ in range(args.rounds):
        for name in times:
            seconds, scorer = build(args.data, name == "tiktoken", formulations)
            times[name].append(seconds)
            if name == "tiktoken":
                fast = scorer
            elif (scorer._rows, scorer._requests) != (fast._rows, fast._requests):
                raise SystemExit("the two builds made different requests")
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {scorer.n} examples, "
          f"formulations {formulations}, {args.rounds} rounds (identical requests)")
    for name, t in times.items():
        print(f"  {name:9s} median {med[name]:.2f} s   ({', '.join(f'{x:.2f}' for x in t)})")
    print(f"  tokenizer / tiktoken: {med['tokenizer'] / med['tiktoken']:.2f}x")


if __name__ == "__main__":
    main()
