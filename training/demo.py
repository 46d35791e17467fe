"""The quick start, end to end and offline: prepare -> train -> evaluate -> export -> samples.

    python -m training.demo                         # a few minutes on 2 CPU cores (README), no network needed
    HELLASWAG_FILE=path/to/hellaswag_val.jsonl python -m training.demo     # also score HellaSwag

1. prepare  `builtin:pydocs` (Python's own documentation, shipped with the interpreter) -> out/data/pydocs
2. train    configs/demo.yaml (a 4-layer GPT-2, fp32 on CPU) -> runs/demo; resumes if interrupted
3. evaluate the saved checkpoint, loaded back from disk: validation loss (and HellaSwag when its data exists)
4. export   runs/demo/export: a Hub-ready model folder (weights, config, code, tokenizer, model card)
5. samples  from the exported folder, loaded like a user would: "Hello, I'm a language model," (top-k 50)

Re-running is cheap: every stage reuses what is already there (prepared data, a finished run).
Any extra flags go to train.py, e.g. `python -m training.demo --max_steps 20` for a faster smoke run.
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.split("\n\n")[0],
                                 epilog="Any other flags go to train.py, e.g. `python -m training.demo --max_steps 20` "
                                        "for a faster smoke run (`python train.py --help` lists them).")
    ap.add_argument("--data", default="out/data/pydocs", help="prepared data folder (made if missing)")
    ap.add_argument("--out", default="runs/demo", help="run folder")
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="run-config preset")
    args, train_flags = ap.parse_known_args(argv)
    t_start = time.time()
    run_dir, export_dir = Path(args.out), Path(args.out) / "export"

    _banner(f"1/5 prepare builtin:pydocs -> {args.data}")
    from data.prepare import prepare

    from data.shards import DataError

    try:
        manifest = prepare("builtin:pydocs", args.data, val_tokens=32768, num_proc=1, progress=False)
    except DataError as err:
        print(f"error: {err}\n(the demo prepares {args.data} with its own settings: remove that folder, or pass "
              "--data ANOTHER_FOLDER)", file=sys.stderr)
        return 2
    counts = {s: sum(x["tokens"] for x in manifest["shards"] if x["split"] == s) for s in ("train", "val")}
    print(f"train {counts['train']:,} tokens, val {counts['val']:,} tokens")

    _banner(f"2/5 train {Path(args.config).name} -> {run_dir}")
    import train

    metrics_file = run_dir / "metrics.jsonl"
    size_before = metrics_file.stat().st_size if metrics_file.is_file() else 0
    code = train.main(["--config", args.config, "--data_dir", args.data, "--output_dir", str(run_dir)] + train_flags)
    trained_now = (metrics_file.stat().st_size if metrics_file.is_file() else 0) != size_before
    if code != 0:
        print(f"training stopped with exit code {code}", file=sys.stderr)
        return code
    from training.checkpoint import find_resumable
    from training.run_config import load_run_config

    cfg = load_run_config(["--config", str(run_dir / "run_config.yaml"), "--resume", "auto"])
    last = find_resumable(run_dir)
    done = json.loads((last / "meta.json").read_text())["step"] if last else 0
    if done < cfg.max_steps:  # stopped by SIGTERM / Ctrl-C: a checkpoint was committed
        print(f"training was interrupted at step {done}/{cfg.max_steps}; run the same command again to continue "
              "from the checkpoint", file=sys.stderr)
        return 1

    _banner("3/5 evaluate the last checkpoint, loaded from disk")
    from data.loader import val_batches
    from eval.load import load_model
    from eval.val_loss import evaluate_val_loss
    from training.metrics import read_metrics

    model, tokenizer = load_model(last)
    loss, n_tokens = evaluate_val_loss(model, val_batches(cfg.data_dir, cfg.val_batch_size or cfg.micro_batch_size,
                                                          cfg.seq_len, cfg.val_tokens))
    curve = [(r["step"], r["val_loss"]) for r in read_metrics(run_dir / "metrics.jsonl", "val")]
    curve = sorted(dict(curve).items())
    print("val loss by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in curve))
    print(f"{last.name} reloaded from disk: val loss {loss:.4f} over {n_tokens:,} tokens")
    falling = len(curve) >= 2 and curve[-1][1] < curve[0][1]
    print(f"validation loss {'fell' if falling else 'DID NOT FALL'}: {curve[0][1]:.3f} -> {curve[-1][1]:.3f}")
    hs = [r for r in read_metrics(run_dir / "metrics.jsonl", "hellaswag") if r["step"] == done]
    if hs:
        r = hs[-1]
    else:  # trained without HellaSwag data (or an earlier run did): score the reloaded checkpoint now if we can
        from eval.hellaswag import HellaSwagScorer
        from training.evaluator import resolve_hellaswag

        r = None
        if cfg.hellaswag_file == "off":
            print("HellaSwag: off in the run config (hellaswag_file: off)")
        # the training just logged why it skipped HellaSwag; a re-run says it here
        elif path := resolve_hellaswag(cfg.hellaswag_file, log=(lambda msg: None) if trained_now else print):
            scorer = HellaSwagScorer.from_file(path, tokenizer, limit=cfg.hellaswag_limit,
                                               max_length=model.config.n_positions)
            r = scorer.evaluate(model, batch_size=cfg.val_batch_size or cfg.micro_batch_size)
            from eval.hellaswag import save_results
            from eval.load import environment

            save_results(last, r, data=path, limit=cfg.hellaswag_limit,  # the export's model card reports it
                         environment=environment(next(model.parameters()).device, path))
    if r:
        print(f"HellaSwag (first {r['n']} examples, lm-eval scoring): acc {r['acc']:.4f}, acc_norm {r['acc_norm']:.4f} "
              "(chance: 0.25)")

    _banner(f"4/5 export -> {export_dir}")
    from publish.export_model import export_model

    export_model(run_dir, export_dir, model_name="gpt2repro-demo", overwrite=True)
    print("files: " + ", ".join(sorted(p.name for p in export_dir.iterdir())))

    _banner("5/5 samples from the exported model")
    from eval.sample import generate_samples

    exported, tokenizer = load_model(export_dir)
    texts = generate_samples(exported, tokenizer, cfg.sample_prompt, num_samples=3, max_new_tokens=32,
                             top_k=cfg.sample_top_k, seed=cfg.seed)
    for i, text in enumerate(texts):
        print(f"[{i}] {text!r}")

    elapsed = time.time() - t_start
    summary = {"val_loss_first": curve[0][1], "val_loss_last": curve[-1][1], "val_loss_fell": falling,
               "reloaded_val_loss": loss, "export": str(export_dir), "seconds": round(elapsed, 1)}
    print(f"\ndemo finished in {elapsed / 60:.1f} min: {json.dumps(summary)}")
    return 0 if falling else 1


if __name__ == "__main__":
    sys.exit(main())
