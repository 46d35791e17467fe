"""The golden run: one fixed tiny training run whose numbers are stored in tests/golden/tiny_fineweb_edu.json.

`tests/test_train_golden.py` repeats it and compares step by step, so a change to any number that training
produces (weight init, data order, loss, LR schedule, gradient accumulation, clipping, AdamW, validation) shows up
as a failing test instead of as a different curve hours into a real run. Real text (the 150 FineWeb-Edu documents
in ../shared/data) through `data.prepare`, then `train.py`'s own entry point: fp32 on CPU, one thread.

After a change that is meant to move the numbers, regenerate the file and say why in the commit:

    python tests/golden_run.py --update
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "fineweb-edu" / "fineweb_edu_150docs.parquet"
GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_fineweb_edu.json"

VAL_TOKENS = 4096
# grad_clip 0.5: below the unclipped norms (0.8-1.6 here), so clipping acts on every step and is checked too.
# Every flag that decides a number, spelled out so a changed default in RunConfig cannot move the run silently.
TRAIN_ARGS = [
    "--init_from", "scratch", "--seed", "1337", "--data_seed", "1337", "--attn_implementation", "sdpa",
    "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--n_positions", "64", "--vocab_size", "50304",
    "--seq_len", "64", "--micro_batch_size", "4", "--total_batch_size", "512",  # grad_accum 2
    "--max_steps", "12", "--lr_decay_steps", "12", "--warmup_steps", "3",
    "--max_lr", "3e-3", "--min_lr", "3e-4", "--weight_decay", "0.1", "--grad_clip", "0.5",
    "--beta1", "0.9", "--beta2", "0.95", "--adam_eps", "1e-8",
    "--mixed_precision", "no", "--compile", "false", "--loss_chunk_tokens", "0",
    "--eval_every", "6", "--val_tokens", str(VAL_TOKENS), "--val_batch_size", "4", "--eval_at_end", "true",
    "--hellaswag_every", "0", "--hellaswag_file", "off", "--sample_every", "0", "--num_samples", "0",
    "--save_every", "0", "--log_with", "none", "--progress_bar", "false",
]


def run(workdir: Path) -> dict:
    """Prepare the data, train, and return {"train": [{step, loss, lr, grad_norm}], "val": [{step, val_loss}]}."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    import train
    from data.prepare import prepare
    from training.metrics import read_metrics

    if not SOURCE.exists():
        raise FileNotFoundError(f"golden run data missing: {SOURCE} (../shared/data must sit beside the checkout)")
    data = workdir / "data"
    prepare(str(SOURCE), data, val_tokens=VAL_TOKENS, num_proc=1, progress=False)
    out = workdir / "run"
    threads = torch.get_num_threads()
    use_cpu = os.environ.get("ACCELERATE_USE_CPU")
    torch.set_num_threads(1)  # one summation order for every matmul, whatever the machine's core count
    # On the CPU where a GPU is present too: the stored numbers are fp32 CPU ones, and on CUDA the run would use
    # other kernels and TF32 matmuls (tf32 defaults to on), which move the losses far beyond the tolerances.
    os.environ["ACCELERATE_USE_CPU"] = "1"
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        code = train.main(["--data_dir", str(data), "--output_dir", str(out), *TRAIN_ARGS])
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        torch.set_num_threads(threads)
        if use_cpu is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = use_cpu
    if code != 0:
        raise RuntimeError(f"the golden run's train.py exited with {code}")
    metrics = out / "metrics.jsonl"
    return {
        "train": [{k: r[k] for k in ("step", "loss", "lr", "grad_norm")} for r in read_metrics(metrics, "train")],
        "val": [{k: r[k] for k in ("step", "val_loss")} for r in read_metrics(metrics, "val")],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help=f"write the numbers into {GOLDEN.relative_to(REPO)}")
    args = ap.parse_args(argv)
    import platform

    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        numbers = run(Path(tmp))
    record = {
        "about": "tests/golden_run.py: numbers of one fixed tiny run; regenerate with `python tests/golden_run.py "
                 "--update` only after a change meant to move them",
        "made_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "python": platform.python_version(), "machine": platform.machine()},
        "train_args": TRAIN_ARGS,
        **numbers,
    }
    text = json.dumps(record, indent=1) + "\n"
    if args.update:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
        print(f"wrote {GOLDEN}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
