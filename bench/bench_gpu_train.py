"""GPU training throughput (issue 7): train.py's step against a build-nanogpt-style plain PyTorch GPT-2, one run,
one GPU, plus the cost of the in-loop evaluations.

    # once, on any machine with the project installed (writes ~35 MB of tokens + a copy of HellaSwag val):
    python bench/bench_gpu_train.py --prepare-data out/bench_gpu
    # on the GPU (the 124M recipe: B=64, T=1024, 524,288 tokens/step, bf16 autocast, TF32, compile, fused AdamW):
    python bench/bench_gpu_train.py --data out/bench_gpu/data --hellaswag out/bench_gpu/hellaswag_val.jsonl \
        --json out/bench_gpu/result.json
    # CPU smoke run of the same code paths (tiny model, fp32, no compile):
    python bench/bench_gpu_train.py --tiny --data DIR --hellaswag FILE

What it measures, in this order, in one process:
1. peak: a bf16 8192^3 matmul on this GPU (fp32 1024^3 on CPU), TFLOP/s, median of 5 timings of 10 matmuls.
   MFU below is against this measured figure (FLOPs/token: training.metrics.FLOPS_FORMULA).
2. ours: `training.loop.train()` itself, in process, with configs/gpt2_124m_fineweb_edu.yaml and the data
   loader reading --data; evaluation off; checkpoint only after the last step. Throughput comes from the
   wall-clock `time` of each metrics.jsonl `train` row: tokens / (time of a window's last row - time of the
   row before it), so everything the loop does per step counts (loader, step, logging).
3. reference: bench/nanogpt_reference.py, same batch and flags, compile on, its sequential loader reading the
   same train shards, timed the same way from its own per-step stamps.
   For both: the first --warmup steps are excluded (compile, allocator), then --windows windows of --window
   steps; tok/s = median over windows. Peak GPU memory per run from torch.cuda.max_memory_allocated.
4. in-loop evaluations (training.evaluator.Evaluator, as train.py runs them; fresh 124M weights, since cost does not
   depend on them): validation loss on --val-tokens (10,485,760) tokens with the compiled module, HellaSwag on
   all 10,042 examples with the eager module, samples. Each is run twice: the first call includes compilation
   and warm-up, the second is the steady cost a training run pays at every evaluation.
5. variants (last: experiments, after the issue's own figures): --variant KEY=VALUE[,KEY=VALUE...] (repeatable)
   adds one more "ours" run per variant with those run-config overrides, e.g. `--variant loss_chunk_tokens=16384
   --variant compile_mode=max-autotune-no-cudagraphs`; a key `inductor.NAME` sets torch._inductor.config.NAME for
   that run only (e.g. `--variant inductor.coordinate_descent_tuning=True`); each is reported as
   "ours[KEY=VALUE]" with its own ratio to the reference run of step 3.

Results print as JSON and go to --json after every stage (a run cut short keeps what it measured). The numbers
in BENCHMARKS.md come from this script.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

PRESET = REPO / "configs" / "gpt2_124m_fineweb_edu.yaml"
SHARED = REPO.parent / "shared" / "data"
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "seq_len": 64, "n_positions": 64, "micro_batch_size": 4,
        "total_batch_size": 512, "compile": False, "mixed_precision": "no"}
VAL_TOKENS = 10_485_760  # the speedrun's fixed validation set (REFERENCE.md)


# ---------------------------------------------------------------------------------------------------------------
# data for the benchmark (made on the CPU machine: the GPU machine has no `datasets`)


def prepare_data(out: Path, source: Path, copies: int, hellaswag: Path) -> None:
    """FineWeb text repeated `copies` times (the benchmark needs >= 10.5M val tokens; what the tokens say does not
    change the timing) -> out/data via data.prepare; HellaSwag val copied to out/ so it can travel with --carry."""
    import pyarrow.parquet as pq

    from data.prepare import prepare

    texts = pq.read_table(source, columns=["text"]).column("text").to_pylist()
    out.mkdir(parents=True, exist_ok=True)
    src = out / "source.jsonl"
    with open(src, "w") as f:
        for _ in range(copies):
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
    shutil.rmtree(out / "data", ignore_errors=True)
    manifest = prepare(str(src), out / "data", val_tokens=VAL_TOKENS + 2048, shard_tokens=100_000_000, num_proc=2,
                       progress=True)
    src.unlink()
    shutil.copyfile(hellaswag, out / "hellaswag_val.jsonl")
    counts = {split: sum(s["tokens"] for s in manifest["shards"] if s["split"] == split) for split in ("train", "val")}
    print(f"wrote {out / 'data'}: {counts} tokens; {out / 'hellaswag_val.jsonl'}")


# ---------------------------------------------------------------------------------------------------------------
# measurements


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device) -> dict:
    """Dense matmul FLOP/s actually reached on this device: bf16 8192^3 on CUDA, fp32 1024^3 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    warm_until = time.perf_counter() + (1.0 if device.type == "cuda" else 0.0)  # clocks up before timing
    while True:
        for _ in range(3):
            a @ b
        sync(device)
        if time.perf_counter() >= warm_until:
            break
    per_window = 50 if device.type == "cuda" else 10  # ~70 ms of work per window on an H100
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_window):
            a @ b
        sync(device)
        rates.append(per_window * 2 * n ** 3 / (time.perf_counter() - t0))
    return {"what": f"{n}^3 {str(dtype).removeprefix('torch.')} matmul", "flops": statistics.median(rates)}


def windows(stamps: list[tuple[int, float]], tokens_per_step: int, warmup: int, window: int) -> list[float]:
    """tok/s of consecutive `window`-step windows after `warmup` steps; stamps = [(step, time after it)]."""
    times = dict(stamps)
    rates, start = [], warmup
    while start + window in times:
        if start not in times:
            break
        rates.append(window * tokens_per_step / (times[start + window] - times[start]))
        start += window
    if not rates:
        raise ValueError(f"{len(stamps)} logged steps: too few for one {window}-step window after {warmup} warm-up "
                         "steps (the run stopped early?)")
    return rates


def free_memory() -> None:
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def ours_config(args, overrides: dict, steps: int, out_dir: Path):
    """The run config train() gets for one 'ours' run (raises ConfigError for a bad override)."""
    from training.run_config import load_run_config

    argv = ["--config", str(PRESET), "--data_dir", str(args.data), "--output_dir", str(out_dir),
            "--max_steps", str(steps), "--lr_decay_steps", "19073", "--resume", "off",
            "--eval_every", "0", "--hellaswag_file", "off", "--num_samples", "0", "--eval_at_end", "false",
            "--save_every", "0", "--log_with", "none", "--progress_bar", "false"]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    return load_run_config(argv)


def run_ours(args, overrides: dict, steps: int, out_dir: Path) -> dict:
    from accelerate.state import AcceleratorState, GradientState

    from training.loop import train
    from training.metrics import read_metrics

    import training.loop

    cfg = ours_config(args, overrides, steps, out_dir)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    # no checkpoint after the last step (one only if a signal stops the run): at 124M it is a 1.5 GB write with
    # sha256 and fsync, 5-10 s of device time per run that no measurement here uses
    with mock.patch.object(training.loop, "_checkpoint_due", lambda cfg, step, stop_now, done: stop_now):
        code = train(cfg)
    if code != 0:
        raise SystemExit(f"train() exited with {code}")
    rows = read_metrics(out_dir / "metrics.jsonl", "train")
    stamps = [(r["step"], r["time"]) for r in rows]
    summary = read_metrics(out_dir / "metrics.jsonl", "summary")[-1]
    return {"cfg": cfg, "stamps": stamps, "final_loss": rows[-1]["loss"], "precision": summary["precision"]}


INDUCTOR_PREFIX = "inductor."


def parse_variant(text: str) -> dict:
    """'loss_chunk_tokens=8192,compile_mode=default' -> {'loss_chunk_tokens': '8192', 'compile_mode': 'default'}
    (values stay strings: load_run_config parses them as it does command-line flags). Keys starting with
    `inductor.` are torch._inductor.config settings for that run (see inductor_settings)."""
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if not pairs or any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise SystemExit(f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE...] with run-config keys "
                         f"or {INDUCTOR_PREFIX}NAME keys")
    return dict(pairs)


def split_variant(text: str) -> tuple[dict, dict]:
    """(run-config overrides, torch._inductor.config settings) of one --variant."""
    items = parse_variant(text)
    inductor = {k[len(INDUCTOR_PREFIX):]: v for k, v in items.items() if k.startswith(INDUCTOR_PREFIX)}
    return {k: v for k, v in items.items() if not k.startswith(INDUCTOR_PREFIX)}, inductor_settings(inductor)


def inductor_settings(raw: dict) -> dict:
    """{'coordinate_descent_tuning': 'True'} -> {'coordinate_descent_tuning': True}, typed like the current value;
    an unknown name or a value of the wrong kind is refused before any GPU time is spent."""
    import torch._inductor.config as inductor_config

    settings = {}
    for name, text in raw.items():
        current = inductor_config
        try:
            for part in name.split("."):  # dotted names reach sub-configs: triton.cudagraphs
                current = getattr(current, part)
        except AttributeError:
            raise SystemExit(f"--variant: torch._inductor.config has no setting {name!r}") from None
        try:
            if isinstance(current, bool):
                if text not in ("True", "False", "1", "0"):
                    raise ValueError("True or False")
                settings[name] = text in ("True", "1")
            elif isinstance(current, (int, float)):
                settings[name] = type(current)(text)
            elif isinstance(current, str):
                settings[name] = text
            else:  # None, containers: a Python literal (None, 3, 0.5, 'x', [..])
                settings[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError) as err:
            raise SystemExit(f"--variant: {INDUCTOR_PREFIX}{name} takes a value like {current!r}, got {text!r}"
                             f" ({err})") from None
    return settings


def inductor_patched(settings: dict):
    """torch._inductor.config settings for one run, restored afterwards (compiled code is cached per process,
    so the caller also resets dynamo between runs)."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(settings)


def run_reference(args, cfg, grad_accum: int, steps: int, device: torch.device, bf16: bool) -> dict:
    from bench.nanogpt_reference import RefConfig, SequentialLoader, run_reference as run
    from data.loader import TokenDataset
    from data.shards import open_shard

    ds = TokenDataset(args.data)
    arrays = [open_shard(Path(args.data) / s["file"], s["tokens"]) for s in ds.shard_entries("train")]
    loader = SequentialLoader(arrays, cfg.micro_batch_size, cfg.seq_len)
    ref_cfg = RefConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.n_positions,
                        vocab_size=cfg.vocab_size)
    stamps = run(ref_cfg, loader, steps=steps, grad_accum=grad_accum, device=device, bf16=bf16, compile=cfg.compile)
    return {"stamps": stamps}


def run_evals(args, cfg, device: torch.device) -> dict:
    """Each in-loop evaluation twice, as train.py's Evaluator runs it, on fresh weights."""
    from accelerate.state import AcceleratorState, GradientState

    from data.loader import val_window_count
    from data.tokenizer import gpt2_tokenizer
    from training.accelerator import make_accelerator
    from training.evaluator import Evaluator
    from training.model_init import build_model

    cfg.hellaswag_file, cfg.val_tokens = str(args.hellaswag), args.val_tokens
    cfg.hellaswag_limit = args.hellaswag_limit
    cfg.num_samples = 4
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = make_accelerator(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, None).to(accelerator.device)
    t0 = time.perf_counter()
    evaluator = Evaluator(cfg, accelerator, gpt2_tokenizer(), print, context=model.config.n_positions)
    setup_s = time.perf_counter() - t0
    eval_model = torch.compile(model) if cfg.compile else model  # as in train(): compiled for val loss only
    result = {"hellaswag_setup_s": round(setup_s, 2),
              "val_tokens": val_window_count(cfg.data_dir, cfg.seq_len, cfg.val_tokens) * cfg.seq_len,
              "hellaswag_examples": evaluator.hellaswag.n if evaluator.hellaswag else 0}
    for name, fn in (("val_loss", lambda: evaluator.val_loss(eval_model, 0, None)),
                     ("hellaswag", lambda: evaluator.hellaswag_eval(model, 0, None)),
                     ("samples", lambda: evaluator.samples(model, 0, None))):
        seconds = []
        for _ in range(2):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            seconds.append(round(time.perf_counter() - t0, 2))
        result[f"{name}_s"] = {"first": seconds[0], "steady": seconds[1]}
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare-data", type=Path, default=None, metavar="OUT", help="write the benchmark data and exit")
    ap.add_argument("--source", type=Path, default=SHARED / "fineweb" / "fineweb_legal_2800docs.parquet")
    ap.add_argument("--copies", type=int, default=4, help="--prepare-data: repeat the source text this many times")
    ap.add_argument("--data", type=Path, help="folder written by --prepare-data (or any data.prepare folder)")
    ap.add_argument("--hellaswag", type=Path, default=None, help="HellaSwag val jsonl (default: skip those timings)")
    ap.add_argument("--hellaswag-limit", type=int, default=None)
    ap.add_argument("--val-tokens", type=int, default=VAL_TOKENS)
    ap.add_argument("--tiny", action="store_true", help="tiny fp32 model without compile (CPU smoke run)")
    ap.add_argument("--micro-batch", type=int, default=None, help="override micro_batch_size (default: preset's 64)")
    ap.add_argument("--warmup", type=int, default=5, help="steps excluded from timing (compile, allocator)")
    ap.add_argument("--window", type=int, default=5, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=4, help="timed windows per run")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="one more 'ours' run with these run-config overrides (repeatable)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["reference", "evals"], help="parts to leave out (ours always runs)")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="start no further variant after this many seconds (a device's time limit; a variant "
                         "already running finishes)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.prepare_data:
        prepare_data(args.prepare_data, args.source, args.copies, SHARED / "hellaswag" / "hellaswag_val.jsonl")
        return {}
    if args.data is None:
        ap.error("--data is required (make it with --prepare-data OUT)")

    from training.metrics import FLOPS_FORMULA, flops_per_token
    from training.run_config import grad_accum_steps

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = dict(TINY) if args.tiny else {}
    if args.micro_batch:
        overrides["micro_batch_size"] = args.micro_batch
    steps = args.warmup + args.window * args.windows
    # Every variant's config is checked before any GPU time is spent on the others.
    from training.run_config import ConfigError

    if len(set(args.variant)) != len(args.variant):
        raise SystemExit(f"--variant: each variant once, got {args.variant}")
    variants = {variant: split_variant(variant) for variant in args.variant}  # (run overrides, inductor settings)
    for variant, (run_overrides, _) in variants.items():
        try:
            ours_config(args, {**overrides, **run_overrides}, steps, Path(tempfile.gettempdir()) / "unused")
        except ConfigError as err:
            raise SystemExit(f"--variant {variant!r}: {err}") from None
    peak = matmul_peak(device)
    print(f"peak: {peak['flops'] / 1e12:.1f} TFLOP/s ({peak['what']})", flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name() if device.type == "cuda"
              else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)", "peak": peak}

    import accelerate
    import transformers

    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                          "accelerate": accelerate.__version__, "python": platform.python_version()}

    started = time.perf_counter()

    def save(stage: str) -> None:
        """Written after every stage, so a run cut short (a device time limit) still leaves what it measured;
        `elapsed_s` says when each stage ended (seconds after the matmul peak: compiles included), to plan the
        next run within a device's time limit."""
        result.setdefault("elapsed_s", {})[stage] = round(time.perf_counter() - started, 1)
        if args.json:  # whole or not at all: a kill mid-write keeps the previous stage's file
            args.json.parent.mkdir(parents=True, exist_ok=True)
            partial = args.json.with_name(args.json.name + ".tmp")
            partial.write_text(json.dumps(result, indent=1) + "\n")
            os.replace(partial, args.json)

    save("peak")  # the device, versions and peak, even if the first run fails
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    try:
        free_memory()
        ours = run_ours(args, overrides, steps, tmp / "ours")
        cfg = ours["cfg"]
        grad_accum = grad_accum_steps(cfg, 1)
        from configuration_gpt2repro import GPT2ReproConfig
        from modeling_gpt2repro import GPT2ReproForCausalLM

        with torch.device("meta"):
            fpt = flops_per_token(GPT2ReproForCausalLM(GPT2ReproConfig(
                n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_positions=cfg.n_positions,
                vocab_size=cfg.vocab_size)), cfg.seq_len)
        result["setup"] = {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "micro_batch": cfg.micro_batch_size,
                           "seq_len": cfg.seq_len, "grad_accum": grad_accum, "tokens_per_step": cfg.total_batch_size,
                           "precision": ours["precision"], "tf32": cfg.tf32 and device.type == "cuda",
                           "compile": cfg.compile, "attention": cfg.attn_implementation,
                           "warmup_steps_excluded": args.warmup, "windows": f"{args.windows} x {args.window} steps",
                           "flops_per_token": fpt, "flops_formula": FLOPS_FORMULA}
        runs = result["runs"] = {}

        def record(name: str, stamps, **extra) -> None:
            rates = windows(stamps, cfg.total_batch_size, args.warmup, args.window)
            tok_s = statistics.median(rates)
            runs[name] = {**extra, "peak_mem_gb": _peak_mem(device), "tok_per_s": round(tok_s),
                          "tok_per_s_windows": [round(r) for r in rates], "mfu": round(fpt * tok_s / peak["flops"], 4),
                          "ms_per_step": round(1000 * cfg.total_batch_size / tok_s, 1)}
            if "tok_per_s" in runs.get("reference", {}):
                for run_name, run in runs.items():
                    if run_name.startswith("ours") and "tok_per_s" in run:
                        run["over_reference"] = round(run["tok_per_s"] / runs["reference"]["tok_per_s"], 4)
                result["ours_over_reference"] = runs["ours"]["over_reference"]
            print(f"{name}: {runs[name]}", flush=True)
            save(name)

        record("ours", ours["stamps"], final_loss=ours["final_loss"])
        def failed(name: str, err: BaseException) -> None:  # one failing stage must not cost the others
            runs[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
            print(f"{name} failed: {runs[name]['error']}", flush=True)
            save(name)

        if "reference" not in args.skip:  # right after ours: the comparison that matters comes first
            free_memory()
            try:
                ref = run_reference(args, cfg, grad_accum, steps, device, ours["precision"] == "bf16")
                record("reference", ref["stamps"])
            except Exception as err:  # noqa: BLE001
                failed("reference", err)
        if "evals" not in args.skip and args.hellaswag:
            free_memory()
            try:
                result["evals"] = run_evals(args, cfg, device)
                save("evals")
            except Exception as err:  # noqa: BLE001
                failed("evals", err)
        for variant, (run_overrides, inductor) in variants.items():
            name = f"ours[{variant}]"
            if args.deadline_s is not None and time.perf_counter() - started > args.deadline_s:
                runs[name] = {"skipped": f"not started: past --deadline-s {args.deadline_s:g}"}
                save(name)
                continue
            free_memory()
            print(f"--- {name}", flush=True)
            try:
                with inductor_patched(inductor):
                    run = run_ours(args, {**overrides, **run_overrides}, steps, tmp / f"ours_{len(runs)}")
                record(name, run["stamps"], final_loss=run["final_loss"])
            except (Exception, SystemExit) as err:  # noqa: BLE001
                failed(name, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return result


def _peak_mem(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


if __name__ == "__main__":
    main()
