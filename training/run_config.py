"""The run config: one typed dataclass for everything a training run needs besides the launch topology.

Precedence is defaults < YAML preset (`--config configs/NAME.yaml`) < command-line flags. Unknown keys (in
the YAML or on the command line) are errors, and every problem found is reported at once, before anything is
written:

    cfg = load_run_config(["--config", "configs/demo.yaml", "--max_steps", "50"])   # raises ConfigError
    errors = validate(cfg, world_size=2)                                             # [] when all is well

The architecture is a separate object (`GPT2ReproConfig`, saved with every checkpoint); the fields here that
describe it are only the knobs needed to build one from scratch.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import yaml

from data.shards import atomic_write
from training.trackers import BY_NAME, is_installed

TOKENIZER_VOCAB = 50257  # GPT-2 BPE ids; the embedding may have more rows (50304 = padded), never fewer


class ConfigError(ValueError):
    """All the problems with a run config, one per line."""

    def __init__(self, errors: list[str], heading: str = "invalid run config"):
        self.errors = list(errors)
        super().__init__(f"{heading}:\n" + "\n".join(f"  - {e}" for e in self.errors))


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunConfig:
    # --- what to run -----------------------------------------------------------------------------------------
    config: Optional[str] = _f(None, "YAML preset read first (defaults < YAML < command line)")
    data_dir: str = _f("", "folder written by data.prepare (token shards + manifest)")
    output_dir: str = _f("runs/default", "run folder: run_config.yaml, metrics.jsonl, checkpoints/")
    init_from: str = _f("scratch", "'scratch', 'gpt2' (OpenAI GPT-2 124M from the Hub), or a GPT-2 model, checkpoint or run folder (its newest checkpoint); it fixes the architecture")
    resume: str = _f("auto", "'auto' (newest complete checkpoint in output_dir, if any), 'off', or a checkpoint or run folder")
    seed: int = _f(1337, "seed for init and sampling; data order has its own seed (data_seed)")
    data_seed: int = _f(1337, "seed of the training data order (data.loader.TrainBatches)")
    # --- architecture (init_from=scratch only; saved as GPT2ReproConfig with every checkpoint) ---------------
    n_layer: int = _f(12, "transformer blocks")
    n_head: int = _f(12, "attention heads")
    n_embd: int = _f(768, "model width")
    n_positions: int = _f(1024, "context length of the position embedding")
    vocab_size: int = _f(50304, "embedding rows: 50257 GPT-2 ids padded to a multiple of 64 for fast matmuls")
    attn_implementation: str = _f("sdpa", "attention backend (transformers name): sdpa, eager, flex_attention, ...")
    # --- batch -----------------------------------------------------------------------------------------------
    total_batch_size: int = _f(524288, "tokens per optimizer step = micro_batch_size * seq_len * grad_accum * world")
    micro_batch_size: int = _f(64, "sequences per forward pass per process (lower this on out-of-memory)")
    seq_len: int = _f(1024, "tokens per training sequence")
    # --- optimization ----------------------------------------------------------------------------------------
    max_steps: int = _f(19073, "optimizer steps to train (19,073 x 524,288 = 10B tokens)")
    max_lr: float = _f(6e-4, "peak learning rate, reached after warmup_steps")
    min_lr: float = _f(6e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = _f(715, "linear warmup steps")
    lr_decay_steps: Optional[int] = _f(None, "the cosine reaches min_lr after this many steps (default: max_steps; "
                                           "counted as in build-nanogpt, so a run that decays to its last step ends "
                                           "just above min_lr)")
    weight_decay: float = _f(0.1, "AdamW decay, applied to tensors with dim >= 2 only")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW eps")
    fused_adamw: Literal["auto", "on", "off"] = _f("auto", "fused AdamW kernel ('auto' = on CUDA)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping)")
    # --- precision and speed ---------------------------------------------------------------------------------
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = _f(
        "auto", "autocast dtype; 'auto' = the launcher's setting, else bf16 on a bf16 GPU, else no (fp32)"
    )
    tf32: bool = _f(True, "TF32 matmuls on CUDA")
    compile: bool = _f(False, "torch.compile the model (through Accelerate's dynamo plugin)")
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = _f(
        "default", "torch.compile mode for training; 'max-autotune-no-cudagraphs' benchmarks Triton matmul kernels "
        "against cuBLAS while compiling (minutes longer)"
    )
    loss_chunk_tokens: int = _f(
        0, "0 = loss on the full (B*T, V) logits (transformers' loss); N = fused chunked loss: logits, loss and "
        "their gradients N tokens at a time, the logits never held whole (less memory; same loss)"
    )
    data_prefetch: Literal["auto", "on", "off"] = _f(
        "auto", "make the next batches in a background thread (data.prefetch; 'auto' = on CUDA)"
    )
    ddp_timeout: int = _f(
        1800, "seconds a process waits for the others in a collective (gradient all-reduce, start-up checks, "
        "checkpoint agreement) before the run fails with a timeout; with several processes only (as Trainer's "
        "ddp_timeout). Lower it to notice a dead rank sooner, raise it if a slow file system stalls saves"
    )
    # --- evaluation ------------------------------------------------------------------------------------------
    eval_every: int = _f(250, "validation loss every N steps (0 = only at the end); also at the end")
    val_tokens: int = _f(10485760, "validation tokens (fixed: the same windows for any world size)")
    val_batch_size: Optional[int] = _f(None, "sequences per validation forward (default: micro_batch_size)")
    hellaswag_every: int = _f(250, "HellaSwag every N steps (0 = only at the end)")
    hellaswag_file: str = _f(
        "auto",
        "HellaSwag val jsonl; 'auto' = $HELLASWAG_FILE, an earlier download, or the Hub when online; 'off' = never",
    )
    hellaswag_limit: Optional[int] = _f(None, "score only the first N HellaSwag examples (default: all 10,042)")
    sample_every: int = _f(250, "text samples every N steps (0 = only at the end)")
    sample_prompt: str = _f("Hello, I'm a language model,", "prompt for the samples ('' = unconditional, from <|endoftext|>)")
    num_samples: int = _f(4, "samples per evaluation (0 = no samples)")
    sample_max_new_tokens: int = _f(32, "tokens generated per sample")
    sample_top_k: int = _f(50, "top-k for sampling")
    eval_at_end: bool = _f(True, "run validation / HellaSwag / samples after the last step")
    # --- checkpoints -----------------------------------------------------------------------------------------
    save_every: int = _f(1000, "checkpoint every N steps (0 = only at the end and on SIGTERM)")
    keep_last: int = _f(3, "complete checkpoints kept (>= 2; older ones deleted only after a new one commits)")
    push_checkpoints_to: Optional[str] = _f(
        None, "Hub repo id ('namespace/name'): upload each committed checkpoint and the metrics so far to branch "
        "step-NNNNNNN of it, in a background thread (token: HF_TOKEN or `hf auth login`); default off"
    )
    push_private: bool = _f(True, "create the push_checkpoints_to repo as private (if it does not exist yet; an "
                                  "existing public one is then refused at start)")
    # --- logging ---------------------------------------------------------------------------------------------
    log_with: Literal["auto", "none", "tensorboard", "trackio", "wandb"] = _f(
        "auto", "Accelerate tracker; 'auto' = tensorboard, else trackio, if installed; wandb by name (run in "
        "OUTPUT_DIR/wandb, continued on resume when online; WANDB_MODE=offline without an account)"
    )
    peak_flops: Optional[float] = _f(
        None, "peak FLOP/s per device for MFU (default: bf16 798e12 on an H100, 790e12 on an H200; else no MFU)"
    )
    progress_bar: bool = _f(True, "tqdm progress bar with ETA (main process; on a terminal or in a notebook, not in redirected logs)")
    # --- debugging -------------------------------------------------------------------------------------------
    overfit_single_batch: bool = _f(False, "train on the first batch over and over (a loss that cannot reach ~0 is a bug)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PATH_FIELDS = ("config", "data_dir", "output_dir", "init_from", "resume", "hellaswag_file")  # files or folders
FIELD_TYPES = typing.get_type_hints(RunConfig)  # read once: HfArgumentParser rewrites dataclass Field.type in place
FIELD_NAMES = [f.name for f in dataclasses.fields(RunConfig)]


# ---------------------------------------------------------------------------------------------------------------
# reading: YAML + command line


def _coerce(name: str, value):
    """Return (value converted to the field's type, error or None). YAML 1.1 reads `6e-4` as a string, so
    strings are accepted for numbers; ints are accepted for floats; nothing else is guessed."""
    tp = FIELD_TYPES[name]
    optional = typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)
    if optional:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if value is None:
            return None, None
    if isinstance(value, bool):  # YAML 1.1 reads unquoted on/off/no as booleans
        if "off" in typing.get_args(tp) or name in ("hellaswag_file", "resume"):
            value = "on" if value else "off"
        elif "no" in typing.get_args(tp) and value is False:
            value = "no"  # mixed_precision: no
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        return (value, None) if value in choices else (value, f"{name}: {value!r} is not one of {list(choices)}")
    if tp is bool:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1"), None
        return value, f"{name}: expected true/false, got {value!r}"
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value), None
            except ValueError:
                pass
        return value, f"{name}: expected an integer, got {value!r}"
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        if isinstance(value, str):
            try:
                return float(value), None
            except ValueError:
                pass
        return value, f"{name}: expected a number, got {value!r}"
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value), None
        return value, f"{name}: expected a string, got {value!r}"
    raise TypeError(f"unsupported field type for {name}: {tp}")  # a bug in RunConfig, not in the user's config


def _build_parser():
    from transformers import HfArgumentParser

    # exit_on_error=False: a bad value raises instead of exiting, so it joins the other errors.
    parser = HfArgumentParser(
        RunConfig, prog="train.py", allow_abbrev=False, exit_on_error=False,
        description="GPT-2 pretraining on Accelerate. Flags override the YAML preset given with --config.",
    )
    # argparse appends "(default: ...)" unless the help mentions %(default) itself; an empty "%(default).0s" stops
    # it where that would mislead: on the generated --no_X flags ("(default: False)"), and where the help already
    # says what the default means ("(default: max_steps) (default: None)"), or where there is none ("(default: )").
    for action in parser._actions:
        if any(opt.startswith("--no_") for opt in action.option_strings):
            action.help = f"same as --{action.dest} false%(default).0s"
        elif action.help and ("default" in action.help and action.default is None or action.default == ""):
            action.help += "%(default).0s"
    return parser


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping: PyYAML keeps the last one without a word, so a
    preset edited by appending `max_lr: ...` at the end silently overrode the line above."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged by SafeLoader, later keys override
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):  # an unhashable key: safe_load's own error follows
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice (keep one)",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: str, errors: list[str]) -> dict:
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a YAML file" if p.is_dir() else "does not exist"
        errors.append(f"config: preset file {path!r} {what} (presets live in configs/)")
        return {}
    try:
        with p.open(encoding="utf-8") as text:  # a stream, so that YAML's error marks name the file
            raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        errors.append(f"config: {path} is not valid YAML text: {err}")
        return {}
    if not isinstance(raw, dict):
        errors.append(f"config: {path} must be a mapping of run-config fields, got {type(raw).__name__}")
        return {}
    if not raw:  # an empty file (or a copy cut short): the run would silently be the full 124M recipe
        errors.append(f"config: {path} holds no settings (empty, or comments only): every value would be the "
                      "124M recipe's default; fill it in (configs/demo.yaml is a small example), or leave out --config")
        return {}
    values = {}
    for key, value in raw.items():
        if key == "config":  # a saved run_config.yaml names its own preset: informational, not followed
            continue
        if key not in FIELD_TYPES:
            errors.append(f"unknown key {key!r} in {path}{_did_you_mean(key)} (see `python train.py --help` for "
                          "the fields)")
            continue
        value, err = _coerce(key, value)
        if err:
            errors.append(f"{err} (in {path})")
        else:
            values[key] = value
    return values


def _drop_flag(argv: list[str], names: list[str]) -> Optional[list[str]]:
    """argv without the first occurrence of any of `names` (and its value); None if it is not there."""
    for i, arg in enumerate(argv):
        if arg in names:
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            return argv[:i] + argv[i + 1 + has_value:]
        if "=" in arg and arg.split("=", 1)[0] in names:
            return argv[:i] + argv[i + 1:]
    return None


def _preset_path(argv: list[str], errors: list[str]) -> Optional[str]:
    """The --config preset to read first, or None. Presets do not stack: with two, argparse kept the last and
    every value of the first was silently dropped, so a second --config is an error."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--config", action="append", default=[])
    try:
        presets = pre.parse_known_args(argv)[0].config
    except argparse.ArgumentError:  # `--config` without a path: the full parser reports it with the other errors
        return None
    if len(presets) > 1:
        errors.append(f"config: one preset per run, got --config {' and --config '.join(presets)} (presets do not "
                      "stack: pass the other's values as flags, which override the preset, or merge the files)")
    return os.path.expanduser(presets[0]) if presets else None


def load_run_config(argv: Optional[list[str]] = None) -> RunConfig:
    """Parse `--config PRESET.yaml` and flags into a RunConfig; raise ConfigError listing every problem that
    can be seen without knowing the world size (call `validate(cfg, world_size)` for the rest)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    errors: list[str] = []
    preset = _preset_path(argv, errors)
    parser = _build_parser()
    if preset:
        parser.set_defaults(**_read_yaml(preset, errors))
    while True:  # a bad value stops argparse: note it, drop that flag, parse the rest for more errors
        try:
            namespace, remaining = parser.parse_known_args(argv)
            break
        except argparse.ArgumentError as err:
            errors.append(f"command line: {err}")
            dropped = _drop_flag(argv, (err.argument_name or "").split("/"))
            if dropped is None:
                raise ConfigError(errors) from None
            argv = dropped
    if remaining:
        hints = "".join(_did_you_mean(arg[2:], prefix="--") for arg in remaining if arg.startswith("--"))
        errors.append(f"unknown command-line arguments {remaining}{hints} (see `python train.py --help`)")
    values = {k: v for k, v in vars(namespace).items() if k in FIELD_TYPES}
    for name in PATH_FIELDS:  # a YAML value (or --flag=~/x) gets no shell: "~/runs/x" made a folder named "~" here
        if isinstance(values.get(name), str) and values[name].startswith("~"):
            values[name] = os.path.expanduser(values[name])
    cfg = RunConfig(**values)
    # Launched on several processes, the paths are checked once the process group exists (check_run_config in
    # training/startup.py), on every rank, and the main process says which rank found what: a rank of another
    # machine that refused here, alone, said so on that machine's console only, while the main process waited
    # for it in the process group's start-up (WORLD_SIZE: set by the launchers)
    errors += validate(cfg, world_size=None, paths=int(os.environ.get("WORLD_SIZE", "1")) <= 1)
    if errors:
        raise ConfigError(errors)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# checking


def grad_accum_steps(cfg: RunConfig, world_size: int) -> int:
    return cfg.total_batch_size // (cfg.micro_batch_size * cfg.seq_len * world_size)


def _did_you_mean(name: str, prefix: str = "") -> str:
    """`; did you mean 'n_layer'?` for a near-miss of a field name (typos like n_layers, max_step), else ''."""
    import difflib

    word = str(name).split("=")[0].replace("-", "_")
    close = []
    if len(word) >= 2:  # a shortened name: --warmup, --micro, --lr, --beta
        close = [f for f in FIELD_TYPES if f.startswith(word) or word in f.split("_")]
    close = close or difflib.get_close_matches(word, FIELD_TYPES, n=1, cutoff=0.75)  # a typo: --n_layers
    if not close or len(close) > 3:
        return ""
    return "; did you mean " + " or ".join(prefix + c for c in close) + "?"


def _inside_a_checkpoint(out: Path) -> Optional[str]:
    """Why `out` cannot be a run folder because it is (inside) a checkpoint or a run's checkpoints/ folder, or
    None. A run there overwrote nothing the checksums cover, so it went unnoticed, but the other run's retention
    deletes that checkpoint with this run's checkpoints in it. The names are training.checkpoint's (CHECKPOINTS,
    COMPLETE, MANIFEST), written out: importing it would load torch before a config error could be printed."""
    real = out.resolve()  # `..` and symlinks as the filesystem follows them: ck/new with ck -> run/checkpoints
    for p in (real, *real.parents):
        if (p / "COMPLETE").is_file() and (p / "MANIFEST.json").is_file():
            return (f"output_dir {str(out)!r} is inside the checkpoint {p}: a run folder of its own would be deleted "
                    f"with it; pick a new output_dir (to start from that checkpoint: --resume {p} or --init_from {p})")
        if p.name == "checkpoints" and (p.parent / "run_config.yaml").is_file():
            return (f"output_dir {str(out)!r} is inside the checkpoints folder of the run {p.parent}: pick a new "
                    f"output_dir (to continue that run: --output_dir {p.parent})")
    return None


def _our_metrics(path: Path) -> bool:
    """Whether a metrics.jsonl is one a run wrote: empty, or its first line a JSON record with a "type"."""
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        return not first or isinstance(record := json.loads(first), dict) and "type" in record
    except OSError:  # unreadable: said as such where the run opens it
        return True
    except (UnicodeDecodeError, ValueError):
        return False


def _output_dir_problems(out: Path) -> list[str]:
    """A run folder must be a folder we can create and write, and not a model folder (tools that take both
    would read the folder's model instead of its checkpoints)."""
    if out.exists() and not out.is_dir():
        return [f"output_dir {str(out)!r} is a file: pick a folder for the run (it is created if missing)"]
    if (out / "config.json").is_file():
        return [f"output_dir {str(out)!r} holds a model (config.json): a run folder holds checkpoints/, and export "
                "and evaluation would take the model at its top; pick a new output_dir"]
    if problem := _inside_a_checkpoint(out):  # before the data check: a checkpoint's MANIFEST.json is manifest.json
        return [problem]  # on a case-insensitive file system (macOS)
    found = next((name for name in ("manifest.json", "prepare_state.json") if (out / name).is_file()), None)
    if found:
        return [f"output_dir {str(out)!r} holds prepared data (data.prepare's {found}): a run writes checkpoints/ "
                "and run_config.yaml there, which data.prepare then refuses; pick a new output_dir"]
    ours = (out / "run_config.yaml").is_file() or (out / "checkpoints").is_dir()  # a run was here (its metrics
    # may end, or even start, with a line a crash cut short: the log repairs that itself)
    if (out / "metrics.jsonl").is_file() and not ours and not _our_metrics(out / "metrics.jsonl"):
        return [f"output_dir {str(out)!r} holds a metrics.jsonl that train.py did not write: the run would append "
                "to it; pick a new output_dir (or move that file)"]
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        return [f"output_dir {str(out)!r} cannot be created: {existing} is a file"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"output_dir {str(out)!r} cannot be written: no write permission in {existing}"]
    return []


def validate(cfg: RunConfig, world_size: Optional[int], paths: bool = True) -> list[str]:
    """Every problem with `cfg`, as actionable messages. With world_size=None the batch divisibility that
    depends on it is left out (checked again once the launcher is known); with paths=False what this machine's
    files and packages hold (`_path_problems`)."""
    e: list[str] = []

    def positive(name, allow_zero=False):
        v = getattr(cfg, name)
        if v is not None and (v < 0 or (v == 0 and not allow_zero)):
            e.append(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")

    for name in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "total_batch_size",
                 "micro_batch_size", "seq_len", "max_steps", "max_lr", "val_tokens", "sample_max_new_tokens",
                 "sample_top_k", "val_batch_size", "hellaswag_limit", "lr_decay_steps", "adam_eps", "peak_flops",
                 "ddp_timeout"):
        positive(name)
    for name in ("min_lr", "warmup_steps", "weight_decay", "grad_clip", "eval_every", "hellaswag_every",
                 "sample_every", "save_every", "num_samples", "loss_chunk_tokens"):
        positive(name, allow_zero=True)
    float32_max = float(np.finfo(np.float32).max)  # the optimizer's hyperparameters become fp32 tensors
    for name in ("max_lr", "min_lr", "weight_decay", "grad_clip", "adam_eps", "beta1", "beta2", "peak_flops"):
        v = getattr(cfg, name)
        if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= float32_max):
            e.append(f"{name} must be a finite number, got {v}")

    # seeds: found out of range only once the model was built (a traceback): torch.manual_seed takes 64 bits
    # (seed, and seed + step for the samples), the data order's numpy SeedSequence no negative numbers
    if not -2**63 <= cfg.seed < 2**63:
        e.append(f"seed must be in [-2**63, 2**63) (torch.manual_seed's range), got {cfg.seed}")
    if cfg.data_seed < 0:
        e.append(f"data_seed must be >= 0 (a numpy SeedSequence seed), got {cfg.data_seed}")

    # data / paths: what this machine sees
    if paths:
        e += _path_problems(cfg)

    # architecture
    if cfg.n_head > 0 and cfg.n_embd % cfg.n_head:
        e.append(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
    if 0 < cfg.vocab_size < TOKENIZER_VOCAB:
        e.append(f"vocab_size ({cfg.vocab_size}) must be >= {TOKENIZER_VOCAB}, the GPT-2 tokenizer's id count")
    if cfg.init_from == "scratch" and cfg.seq_len > cfg.n_positions > 0:
        e.append(f"seq_len ({cfg.seq_len}) exceeds n_positions ({cfg.n_positions})")

    # schedule / optimizer
    if cfg.min_lr > cfg.max_lr > 0:
        e.append(f"min_lr ({cfg.min_lr}) must not exceed max_lr ({cfg.max_lr})")
    decay_end = cfg.lr_decay_steps or cfg.max_steps
    if cfg.warmup_steps > decay_end > 0:
        e.append(f"warmup_steps ({cfg.warmup_steps}) must not exceed the decay end "
                 f"(lr_decay_steps or max_steps = {decay_end}): lower --warmup_steps (e.g. "
                 f"{max(0, decay_end // 10)}) for a short run"
                 # the preset hint only without one: with configs/demo.yaml itself in use it misled
                 + ("" if cfg.config else "; the defaults are the 124M recipe's, and configs/demo.yaml is a small "
                    "preset to start from"))
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            e.append(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if (cfg.eval_every > 0 or cfg.eval_at_end) and 0 < cfg.val_tokens < cfg.seq_len:
        e.append(f"val_tokens ({cfg.val_tokens}) is less than one window of seq_len ({cfg.seq_len}): raise it, or "
                 "train without validation (--eval_every 0 --eval_at_end false)")
    if cfg.compile_mode != "default" and not cfg.compile:
        e.append(f"compile_mode {cfg.compile_mode!r} has no effect without compiling: add --compile true")
    if cfg.loss_chunk_tokens and cfg.mixed_precision == "fp16":
        e.append("loss_chunk_tokens needs bf16 or fp32: the chunked loss makes its gradients in forward, out of the "
                 "fp16 loss scaler's reach (use --mixed_precision bf16, or --loss_chunk_tokens 0)")
    if cfg.push_checkpoints_to:
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(cfg.push_checkpoints_to)
        except ValueError:
            e.append(f"push_checkpoints_to {cfg.push_checkpoints_to!r} is not a Hub repo id ('namespace/name')")
    if cfg.ddp_timeout > 10**9:  # a timedelta stops at ~2.7 million years; no wait needs more than ~30 years
        e.append(f"ddp_timeout is in seconds and must be <= 1e9, got {cfg.ddp_timeout}")
    if cfg.keep_last < 2:
        e.append(f"keep_last must be >= 2 (got {cfg.keep_last}): with one kept, a bad save can leave no good checkpoint")

    # batch arithmetic: tokens/step = micro_batch_size * seq_len * grad_accum * world_size
    if cfg.micro_batch_size > 0 and cfg.seq_len > 0 and cfg.total_batch_size > 0:
        per_micro = cfg.micro_batch_size * cfg.seq_len * (world_size or 1)
        if cfg.total_batch_size % per_micro:
            where = f" x world_size {world_size}" if world_size else ""
            e.append(
                f"total_batch_size ({cfg.total_batch_size}) must be divisible by micro_batch_size "
                f"({cfg.micro_batch_size}) x seq_len ({cfg.seq_len}){where} = {per_micro}"
                + _batch_split_hint(cfg, world_size or 1)
            )
    return e


def _path_problems(cfg: RunConfig) -> list[str]:
    """What `validate` finds in the files and packages of this machine: data_dir, output_dir, init_from, resume,
    log_with's package, the HellaSwag file."""
    from publish.local_paths import LOCAL

    # an exported logs/run_config.yaml reused as a preset: its absolute paths were cut to `<local>/NAME` (an
    # output_dir such as that would have made a folder named "<local>" here); `config` is only a record in it
    cut = [name for name in PATH_FIELDS if name != "config" and str(getattr(cfg, name) or "").startswith(f"{LOCAL}/")]
    if cut:
        return [f"{name} {getattr(cfg, name)!r} is a path an export cut to its last name (exported run configs keep no "
                f"local folders): pass --{name} with its path on this machine" for name in cut]
    e: list[str] = []
    if not cfg.data_dir:
        e.append("data_dir is required: a folder made by `python -m data.prepare` (e.g. --data_dir out/data/pydocs)")
    elif Path(cfg.data_dir).is_file():
        e.append(f"data_dir {cfg.data_dir!r} is a file, not a prepared data folder: pass the folder that "
                 f"`python -m data.prepare SOURCE --out FOLDER` wrote (a text/jsonl/parquet file is a SOURCE)")
    elif not Path(cfg.data_dir).is_dir():
        e.append(f"data_dir {cfg.data_dir!r} does not exist: run `python -m data.prepare` first")
    elif not (Path(cfg.data_dir) / "manifest.json").is_file():
        from data.shards import missing_manifest_advice

        e.append(f"data_dir {cfg.data_dir!r} has no manifest.json: {missing_manifest_advice(cfg.data_dir)}")
    # else Accelerate warns and logs nothing; only the main process (global rank 0; RANK is set by the launchers)
    # starts trackers and logs, so the other machines need no copy
    if cfg.log_with in BY_NAME and os.environ.get("RANK", "0") == "0" and not is_installed(cfg.log_with):
        e.append(f"log_with {cfg.log_with!r}: the package is not installed (pip install {cfg.log_with}), "
                 "or use --log_with auto / none")
    if not cfg.output_dir:
        e.append("output_dir must be set")
    else:
        if cfg.data_dir and Path(cfg.output_dir).resolve() == Path(cfg.data_dir).resolve():
            e.append(f"output_dir is the data_dir ({cfg.data_dir!r}): the run folder needs a folder of its own")
        else:
            e += _output_dir_problems(Path(cfg.output_dir))
    if cfg.init_from not in ("scratch", "gpt2") and not Path(cfg.init_from).is_dir():
        e.append(f"init_from {cfg.init_from!r} is neither 'scratch', 'gpt2' nor an existing model, checkpoint or "
                 "run folder" + ("; a build-nanogpt checkpoint becomes a model folder with `python convert_gpt2.py "
                                 "--from-build-nanogpt FILE --out DIR`" if Path(cfg.init_from).is_file() else ""))
    if cfg.resume not in ("auto", "off"):
        p = Path(cfg.resume)
        if not p.is_dir():
            e.append(f"resume {cfg.resume!r} is not 'auto', 'off' or an existing checkpoint or run folder")
        elif not (p / "COMPLETE").is_file() and not (p / "checkpoints").is_dir():
            hint = ""
            if p.name == "model" and (p.parent / "COMPLETE").is_file():
                hint = f" (a checkpoint's model folder: pass the checkpoint, --resume {p.parent})"
            elif (p / "config.json").is_file():
                hint = " (a model folder: to start a new run from its weights use --init_from)"
            elif p.name == "checkpoints" and (committed := sorted(c.parent for c in p.glob("step_*/COMPLETE"))):
                hint = (f" (a run's checkpoints/ folder: pass the run folder, --resume {p.parent}, for its newest "
                        f"checkpoint, or one checkpoint, e.g. --resume {committed[-1]})")
            e.append(f"resume {cfg.resume!r} is neither a complete checkpoint (no COMPLETE marker in it) nor a run "
                     f"folder (checkpoints/){hint}")
    elif cfg.resume == "off" and cfg.output_dir and any((Path(cfg.output_dir) / "checkpoints").glob("step_*")):
        e.append(f"output_dir {cfg.output_dir!r} already holds checkpoints and resume is 'off': "
                 "use --resume auto to continue it, or pick a new output_dir")
    # only the main process (global rank 0; RANK is set by the launchers) reads it and sends its rows to the others
    if (cfg.hellaswag_file not in ("auto", "off") and os.environ.get("RANK", "0") == "0"
            and not Path(cfg.hellaswag_file).is_file()):
        what = "is a folder" if Path(cfg.hellaswag_file).is_dir() else "does not exist"
        e.append(f"hellaswag_file {cfg.hellaswag_file!r} {what} ('auto', 'off' or a jsonl file's path)")
    return e


def _batch_split_hint(cfg: RunConfig, world_size: int) -> str:
    """How to make the batch split whole: the largest micro_batch_size below the current one that divides it
    (more processes than grad_accum allows, e.g. the preset on 2 x 8 GPUs: 64 -> 32), else why none can."""
    per_rank, rest = divmod(cfg.total_batch_size, cfg.seq_len * world_size)  # sequences per rank per step
    if rest == 0:
        fits = next(m for m in range(min(cfg.micro_batch_size, per_rank), 0, -1) if per_rank % m == 0)
        return (f": use --micro_batch_size {fits} (grad_accum {per_rank // fits}; total_batch_size stays "
                f"{cfg.total_batch_size:,})")
    if cfg.total_batch_size % cfg.seq_len:
        return ": no micro_batch_size fits; make total_batch_size a multiple of seq_len x world_size"
    return (f": no micro_batch_size fits, as its {cfg.total_batch_size // cfg.seq_len:,} sequences per step cannot be "
            f"split evenly over {world_size} processes; use a world size that divides that count (a power of two "
            "for the 524,288-token recipe), or change total_batch_size")


def save_run_config(cfg: RunConfig, path: Path) -> None:
    """Written whole or not at all: each session rewrites the run folder's copy, which resumes and exports read."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()
    atomic_write(path, lambda f: f.write(text))


def format_run_config(cfg: RunConfig) -> str:
    width = max(map(len, FIELD_NAMES))
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in cfg.to_dict().items())
