"""Validation loss of a model on token windows: the in-loop function and a command for checkpoints/exports.

    python -m eval.val_loss --model PATH --data DIR [--seq-len 1024] [--batch-size 8] [--max-tokens 10485760]

`DIR` is a folder written by `python -m data.prepare` or `python -m data.import_shards` (manifest.json + uint16
shards); its val split is read with
`data.loader.val_batches` (the same fixed windows for any world size). For a checkpoint or run folder the
defaults are the settings it was trained with (data_dir, seq_len, val_tokens), so the number equals the
training log's validation loss at that step (for fp32 runs; this runs fp32, a bf16 run logged it under autocast). Prints the mean per-token loss and saves
JSON beside the model (`<model dir>/eval_results/val_loss.json`; for a run's checkpoint
`<run>/eval_results/step_N/val_loss.json`; or `--output`, which may not overwrite the model, a checkpoint or
the data: see eval.load.output_path). A default file that holds the loss on other data is kept: the new result
goes beside it as `val_loss_<first 12 hex digits of the data's manifest hash>.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from data.shards import atomic_write
from eval.errors import EvalInputError, hyphenated, positive_int, run_cli

DEFAULT_VAL_TOKENS = 10_485_760  # the speedrun's validation set (train.py's val_tokens default)
_CE_CHUNK_ROWS = 4  # rows upcast to fp32 at a time: bounds the extra memory to 4 x T x V floats


@torch.no_grad()
def evaluate_val_loss(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, int]:
    """Mean next-token cross-entropy over `(x, y)` int64 (B, T) batches (y = targets, pre-shifted).

    Returns `(sum of per-token CE / token count, token count)`, summed over ranks with `reduce_fn` (which must
    return the sum of a 1-D float64 tensor across ranks) when given. Device taken from the model; eval mode
    during the call (restored after); the caller may wrap it in autocast. Works on a torch.compile'd model.
    """
    base = getattr(model, "_orig_mod", model)
    device = next(base.parameters()).device
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens)
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(input_ids=x).logits  # (B, T, V)
            for i in range(0, x.shape[0], _CE_CHUNK_ROWS):
                chunk = logits[i:i + _CE_CHUNK_ROWS].float()  # (b, T, V)
                total[0] += F.cross_entropy(chunk.flatten(0, 1), y[i:i + _CE_CHUNK_ROWS].flatten(), reduction="sum").double()
            total[1] += (y != -100).sum()  # -100: ignored positions (the loop's FSDP filler batches)
    finally:
        model.train(was_training)
    if reduce_fn is not None:
        total = reduce_fn(total)
    n_tokens = int(total[1].item())
    return (total[0].item() / n_tokens if n_tokens else math.nan), n_tokens


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.val_loss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="export folder, checkpoint folder or run folder")
    parser.add_argument("--data", help="folder written by `python -m data.prepare` or `python -m data.import_shards` "
                        "(default for a checkpoint or run folder: the data_dir it trained on)")
    parser.add_argument("--seq-len", type=positive_int, help="window length (default: the checkpoint's training "
                        "seq_len, else the model's context, at most 1024)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward (default: %(default)s)")
    parser.add_argument("--max-tokens", type=positive_int, help="val tokens to read (default: the checkpoint's "
                        f"val_tokens, else {DEFAULT_VAL_TOKENS:,}, the speedrun's)")
    parser.add_argument("--output", help="JSON path (default <model dir>/eval_results/val_loss.json; for a checkpoint "
                        "<run>/eval_results/step_N/; in the model's or run's folder only under those, or directly "
                        "in <run>/eval_results/)")
    args = parser.parse_args(hyphenated(argv))  # underscore spellings too (--batch_size)

    from data.loader import TokenDataset, val_batches, val_split_ran_short
    from data.shards import DataError
    from data.tokenizer import EOT_ID
    from eval.load import environment, load_model, model_dir_of, output_path, trained_with
    from publish.model_source import resolve_source

    model_dir = model_dir_of(args.model)  # once: a run folder's newest checkpoint may change while this runs
    trained = trained_with(model_dir)  # {} unless a checkpoint of a run
    data = args.data or trained.get("data_dir")
    if not data:
        raise EvalInputError(f"{args.model} is not a checkpoint of a training run, so its data is not known: "
                             "pass --data DIR (a folder written by `python -m data.prepare` or `data.import_shards`)")
    out = output_path(model_dir, args.output, "val_loss.json", keep=(data,))  # before the work, not after
    model, _ = load_model(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    context = int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings)
    # `is None`, not `or`: a given value is used as given (0 is refused by positive_int, never "the default")
    seq_len = args.seq_len if args.seq_len is not None else trained.get("seq_len") or min(1024, context)
    max_tokens = args.max_tokens if args.max_tokens is not None else trained.get("val_tokens") or DEFAULT_VAL_TOKENS
    if seq_len > context:
        raise EvalInputError(f"--seq-len {seq_len} exceeds the model's context of {context} tokens")
    try:
        dataset = TokenDataset(data)
        # the val split the training log measured: data with the manifest training read (its hash), in whatever
        # folder and spelling (data/, an absolute path); the same folder if the checkpoint records no hash
        trained_dir = trained.get("data_dir")
        trained_hash = resolve_source(model_dir).meta().get("data_manifest_hash") if trained else None
        same_folder = bool(trained_dir) and Path(data).resolve() == Path(trained_dir).resolve()
        as_logged = bool(trained) and (dataset.manifest_hash == trained_hash if trained_hash else same_folder)
        # the val shards only: the train shards are not read (hashing them would cost ~40 s per 10B tokens)
        dataset.verify(vocab_size=model.config.vocab_size, eot_id=EOT_ID, splits=("val",))
        t0 = time.perf_counter()
        loss, n_tokens = evaluate_val_loss(model, val_batches(data, args.batch_size, seq_len, max_tokens))
    except (DataError, FileNotFoundError) as err:
        raise EvalInputError(f"{err}" + ("" if args.data else " (the data_dir this checkpoint trained on; pass "
                                         "--data DIR if it has moved)")) from None
    seconds = time.perf_counter() - t0
    settings = [] if not trained else [name for name, given in (("data", args.data), ("seq_len", args.seq_len),
                                                                 ("val_tokens", args.max_tokens)) if not given]
    if trained and not as_logged and same_folder:
        settings = []
        print(f"note: {data} is not the folder this checkpoint trained on any more (its manifest.json differs "
              "from the one training read: prepared again?): this loss may not repeat the training log's")
    print(f"val loss {loss:.4f} over {n_tokens:,} tokens (seq_len {seq_len}) in {seconds:.1f} s"
          + (f" ({', '.join(settings)} as in training)" if settings else ""))
    if val_split_ran_short(n_tokens, seq_len, max_tokens):
        print(f"note: the val split of {data} holds fewer than the {max_tokens:,} tokens asked (max_tokens): "
              "compare this loss only with losses over the same tokens")
    record = {"model": str(model_dir), "data": str(data), "seq_len": seq_len,
              "max_tokens": max_tokens, "val_loss": loss, "val_tokens": n_tokens, "seconds": round(seconds, 3),
              "data_as_in_training": as_logged, "data_manifest_hash": dataset.manifest_hash,
              "batch_size": args.batch_size, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
              "environment": environment(device)}
    if args.output is None:
        out = _beside_a_result_on_other_data(out, dataset.manifest_hash)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(record, indent=2) + "\n").encode()
    atomic_write(out, lambda f: f.write(text))  # the previous result stays whole if this write fails
    print(f"saved {out}")
    return record


def _beside_a_result_on_other_data(out: Path, manifest_hash: str) -> Path:
    """The default path, unless the file there holds the loss on other data (a user comparing validation sets):
    that result is kept and this one is named after its data. The same data again (e.g. other settings) replaces
    it, as does a file that is not one of our results."""
    try:
        held = json.loads(out.read_text())
        held_hash = held.get("data_manifest_hash")
    except (OSError, ValueError, AttributeError):  # absent, unreadable, not JSON, not a JSON object
        return out
    if not held_hash or held_hash == manifest_hash:
        return out
    print(f"note: {out} holds the loss on other data ({held.get('data')}): kept")
    return out.with_name(f"{out.stem}_{manifest_hash[:12]}{out.suffix}")



if __name__ == "__main__":
    run_cli(main)
