"""Checkpoints that are either complete and verified, or ignored.

Layout (see docs/CONTRACTS.md):

    output_dir/checkpoints/step_00000100/
        model/                 save_pretrained(): config.json, generation_config.json, model.safetensors, code
                               files; and the tokenizer (GPT-2's, or the model's own when it has added tokens)
        optimizer.pt           optimizer state (torch.save; read back with weights_only=True)
        grad_scaler.pt         fp16 only: the loss scale (training/checkpoint_state.py)
        rank_00000.pt ...      one per rank: RNG states (torch, CUDA, python, numpy) + data-loader position
        meta.json              step, tokens, world size, run config, model config, data manifest and content hashes,
                               versions
        MANIFEST.json          size + sha256 of every file above
        COMPLETE               written last, holds the sha256 of MANIFEST.json

Commit protocol: every rank writes into `checkpoints/.tmp-step_00000100/`; the main process then writes the
manifest and COMPLETE, fsyncs, and renames the folder into place (atomic on one filesystem). Only then are
checkpoints beyond the newest `keep_last` deleted, so a crash at any moment leaves the last good one intact.
On resume, candidates are checked newest first (marker, manifest, sizes, sha256); a bad one is skipped with a
warning naming the problem. Nothing here unpickles: weights are safetensors, the rest uses weights_only=True.
"""

import functools
import hashlib
import json
import os
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
MANIFEST = "MANIFEST.json"
COMPLETE = "COMPLETE"
STAGING_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"

# Model-config keys that do not change the architecture (bookkeeping, or runtime choices like the kernel).
NON_ARCH_KEYS = {
    "transformers_version", "architectures", "auto_map", "_name_or_path", "dtype", "torch_dtype",
    "_attn_implementation", "attn_implementation", "_attn_implementation_autoset", "use_cache", "output_attentions",
    "output_hidden_states", "return_dict", "_commit_hash", "id2label", "label2id",
}
# Run-config fields that fix which tokens each optimizer step reads: changing them breaks the resume. Not among
# them: micro_batch_size and the world size. Every step reads the next total_batch_size / seq_len windows of one
# seeded sequence, however they are split into ranks and micro-batches (data.loader.TrainBatches), so a run can
# resume on another number of GPUs or with a smaller micro-batch (more accumulation) and see the same data.
DATA_ORDER_KEYS = ("total_batch_size", "seq_len", "data_seed", "overfit_single_batch")


class CheckpointError(RuntimeError):
    pass


class SaveError(CheckpointError):
    """A checkpoint could not be written (disk full, permissions, quota); the message says what and what is kept."""


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / CHECKPOINTS


def staging_dir(output_dir, step: int) -> Path:
    return checkpoint_root(output_dir) / (STAGING_PREFIX + step_dir_name(step))


def step_of(path: Path) -> int:
    """The step of a `step_XXXXXXXX` checkpoint folder."""
    return int(path.name.split("_", 1)[1])


def list_checkpoints(output_dir) -> list[Path]:
    """All `step_*` folders, oldest first (complete or not)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step_[0-9]+", p.name)]
    return sorted(found, key=step_of)


def committed_checkpoints(output_dir) -> list[Path]:
    """The `step_*` folders with a COMPLETE marker (intact or not: not verified here), oldest first."""
    return [c for c in list_checkpoints(output_dir) if (c / COMPLETE).is_file()]


# ---------------------------------------------------------------------------------------------------------------
# integrity


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, COMPLETE))


def _umask() -> int:
    """The process umask, read without setting it where the OS allows (os.umask would change it for a moment for
    every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def default_file_modes(folder: Path) -> None:
    """Give every file under `folder` the mode a new file gets under the process umask (0644 with the usual
    022). transformers writes model.safetensors as 0600, so a checkpoint or export on a shared disk was unreadable
    to the rest of the team."""
    umask = _umask()
    for path in _files(Path(folder)):
        path.chmod(0o666 & ~umask)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(ckpt: Path) -> Optional[str]:
    """None if `ckpt` is a complete, intact checkpoint; else what is wrong with it. sha256 of a 124M checkpoint is
    ~1.5 GB of reading: done once per process and state of its files (resume, export and evaluation each look
    a checkpoint up more than once)."""
    ckpt = Path(ckpt)
    state = tuple(sorted((str(f.relative_to(ckpt)), f.stat().st_size, f.stat().st_mtime_ns)
                         for f in ckpt.rglob("*") if f.is_file()))  # a changed file means a new verification
    return _verify_state(str(ckpt.resolve()), state)


@functools.lru_cache(maxsize=32)
def _verify_state(path: str, state: tuple) -> Optional[str]:
    ckpt = Path(path)
    if not (ckpt / COMPLETE).is_file():
        return "no COMPLETE marker (the save did not finish)"
    if not (ckpt / MANIFEST).is_file():
        return f"{MANIFEST} is missing"
    manifest_bytes = (ckpt / MANIFEST).read_bytes()
    if (ckpt / COMPLETE).read_text(errors="replace").strip() != hashlib.sha256(manifest_bytes).hexdigest():
        return f"{MANIFEST} does not match the hash recorded in COMPLETE"
    try:
        files = json.loads(manifest_bytes)["files"]
        entries = [(rel, int(entry["size"]), str(entry["sha256"])) for rel, entry in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError):  # hand-edited, then sealed again
        return f"{MANIFEST} is not a manifest of files (size, sha256)"
    for rel, size, sha256 in entries:
        path = ckpt / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} has {path.stat().st_size} bytes, the manifest says {size} (truncated?)"
        if _sha256(path) != sha256:
            return f"{rel} does not match its sha256 (corrupted)"
    return None


def find_resumable(output_dir, log=None) -> Optional[Path]:
    """Newest checkpoint that verifies; every newer one that does not is reported: through `log` (a line
    "WARNING: ..."; train.py's log) when given, else as a UserWarning (once, not both)."""
    for i, ckpt in reversed(list(enumerate(list_checkpoints(output_dir)))):  # newest first; i == 0: the oldest
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        then = "falling back to the previous one" if i > 0 else "it was the oldest: no intact checkpoint is left"
        message = f"checkpoint {ckpt} is unusable: {problem}; {then}"
        if log is None:
            warnings.warn(message, stacklevel=2)
        else:
            log(f"WARNING: {message}")
    return None


# ---------------------------------------------------------------------------------------------------------------
# commit + retention (main process only; the caller puts barriers around them)


def prepare_staging(output_dir, step: int) -> Path:
    """Fresh, empty staging folder for `step`. Leftovers of killed saves (a staging folder of any step, e.g. one
    a preemption's SIGKILL cut short at the signal's off-schedule step, or a half-deleted old checkpoint) are
    removed first: left until the commit's retention, they held a checkpoint's worth of space while this one
    was written, and on a disk with room for one more checkpoint every save failed as "disk full"."""
    stage = staging_dir(output_dir, step)
    root = stage.parent
    if root.is_dir():
        for leftover in root.iterdir():
            if leftover.is_dir() and leftover.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(leftover)
    stage.mkdir(parents=True)
    return stage


def seal(folder: Path) -> None:
    """Write MANIFEST.json (size + sha256 of every file, each fsynced) and then COMPLETE (the manifest's sha256)."""
    files = {}
    for path in _files(folder):
        _fsync(path)
        files[str(path.relative_to(folder))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest_bytes = json.dumps({"files": files}, indent=1, sort_keys=True).encode()
    (folder / MANIFEST).write_bytes(manifest_bytes)
    _fsync(folder / MANIFEST)
    (folder / COMPLETE).write_text(hashlib.sha256(manifest_bytes).hexdigest() + "\n")
    _fsync(folder / COMPLETE)


def commit(stage: Path, keep_last: int, log=print) -> Path:
    """Seal `stage` (manifest + COMPLETE), rename it into place, then apply retention. Returns the final path."""
    if keep_last < 2:
        raise CheckpointError("keep_last must be >= 2")
    stage = Path(stage)
    default_file_modes(stage)
    seal(stage)
    final = stage.parent / stage.name[len(STAGING_PREFIX):]
    trash = None
    if final.exists() and not (final / COMPLETE).is_file():
        # Not a save (saves are staged and renamed in whole): a copy someone made, partial or still being made.
        # Retention never deletes one, and neither does a save of its step.
        kept = set_aside(final, "incomplete")
        log(f"{final} had no {COMPLETE} marker (not a checkpoint of this run: a copy?) and stood where this save "
            f"goes: kept as {kept}; delete it when you no longer need it")
    if final.exists():  # e.g. re-saving a step after falling back past a corrupted copy of it
        trash = stage.parent / (TRASH_PREFIX + final.name)
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    stage.rename(final)
    _fsync(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    apply_retention(final.parent.parent, keep_last, log=log)
    return final


def set_aside(folder: Path, label: str) -> Path:
    """Rename `folder` (a step_N folder the tools must not read, count or delete) to `<label>-step_N-<time>` beside
    it, and return the new path. list_checkpoints and retention match `step_N` names only, so it stays untouched."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = folder.with_name(f"{label}-{folder.name}-{stamp}")
    n = 1
    while kept.exists():  # two in the same second
        n += 1
        kept = folder.with_name(f"{label}-{folder.name}-{stamp}-{n}")
    folder.rename(kept)
    return kept


def apply_retention(output_dir, keep_last: int, log=print) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints, plus leftovers of killed saves.
    Incomplete `step_*` folders are never counted as kept and never deleted (someone may be copying one)."""
    complete = committed_checkpoints(output_dir)
    doomed = complete[:-keep_last] if len(complete) > keep_last else []
    root = checkpoint_root(output_dir)
    doomed += [p for p in root.iterdir() if p.is_dir() and p.name.startswith((STAGING_PREFIX, TRASH_PREFIX))]
    for path in doomed:
        gone = path
        if path.name.startswith("step_"):
            # renamed first (atomic): a process killed mid-delete leaves a trash folder that the next save
            # removes, not a step_ folder with half its files
            gone = path.with_name(TRASH_PREFIX + path.name)
            shutil.rmtree(gone, ignore_errors=True)
            path.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
        log(f"deleted old checkpoint {path}")
    return doomed


STORAGE_ERROR_HINTS = ("unexpected pos", "PytorchStreamWriter", "file write failed", "No space left", "StorageFull",
                       "quota", "Read-only file system", "Permission denied")


def looks_like_storage(err: BaseException) -> bool:
    """Whether `err` is the file system's doing (an OSError, or a library's wrapping of one: torch.save's
    "unexpected pos" / "PytorchStreamWriter failed", safetensors' "IoError(Os { ... StorageFull ... })"), not a bug."""
    return isinstance(err, OSError) or any(hint.lower() in str(err).lower() for hint in STORAGE_ERROR_HINTS)


def save_failure(stage: Path, step: int, err: BaseException) -> str:
    """What to tell the user when writing checkpoint `step` into `stage` failed with `err` (disk full shows up as
    OSError, or as torch.save's own RuntimeError "unexpected pos ..."): the error, the free space, what is kept.
    Never raises: every rank waits for this message (a rank that raised here would leave the others hanging)."""
    root = Path(stage).parent
    try:
        free = shutil.disk_usage(root).free
        free = f"{free / 2**30:.2f} GiB" if free >= 2**30 else f"{free / 2**20:.1f} MiB"
        free = f"{free} free on {root}"
    except OSError:
        free = f"free space on {root} unknown"
    try:
        kept = [c for c in committed_checkpoints(root.parent) if c.name != step_dir_name(step)]
        newest = kept[-1].name if kept else "none"
    except OSError:  # the checkpoints folder cannot even be listed (permissions)
        newest = "unknown: the checkpoints folder cannot be listed"
    what = f"could not write checkpoint step {step} ({type(err).__name__}: {str(err).strip()[:300]}; {free})"
    kept_line = (f"Its partial files are removed; the committed checkpoints are intact (newest: {newest})")
    if not looks_like_storage(err):
        return (f"{what}: not a disk error as far as can be told, rather a bug (its traceback is printed above). "
                f"{kept_line}. Freeing space will not help: resuming with --resume auto repeats it at the next save")
    return (f"{what}: disk full, quota or permissions? {kept_line}. Free space (each checkpoint needs room for one "
            "more next to the kept ones) and continue with --resume auto")


# ---------------------------------------------------------------------------------------------------------------
# state files


def rank_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rank_{rank:05d}.pt"


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # numpy arrays are not allowed by weights_only loading: keep the MT19937 keys as a tensor
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


def save_rank_state(folder: Path, rank: int, data_state: dict) -> None:
    torch.save({"rng": rng_state(), "data": data_state}, rank_file(folder, rank))


def load_rank_state(folder: Path, rank: int) -> dict:
    path = rank_file(folder, rank)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(model: torch.nn.Module, model_dir: Path) -> None:
    """Load save_pretrained() safetensors (single file or sharded) into `model`; only tied copies may be absent."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for name in names:
            state.update(load_file(model_dir / name))
    else:
        state = load_file(model_dir / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    bad_missing = [k for k in missing if k not in tied]
    if bad_missing or unexpected:
        raise CheckpointError(f"weights in {model_dir} do not fit the model: missing {bad_missing}, "
                              f"unexpected {list(unexpected)}")


# ---------------------------------------------------------------------------------------------------------------
# compatibility


# what resume reads from meta.json (checkpoint_state.save_checkpoint writes more)
META_FIELDS = {"step": int, "tokens": int, "world_size": int, "run_config": dict, "model_config": dict,
               "data_manifest_hash": str}


def read_meta(folder: Path) -> dict:
    """A checkpoint's meta.json, checked to hold what resume reads (CheckpointError naming what is missing: a
    checkpoint another tool or version wrote, or one edited and sealed again)."""
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    wrong = [key for key, kind in META_FIELDS.items()
             if not isinstance(meta, dict) or not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)]
    if wrong:
        raise CheckpointError(f"{path} lacks {wrong} (or has another type): not a checkpoint train.py wrote")
    return meta


def arch_dict(model_config) -> dict:
    d = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    return {k: v for k, v in d.items() if k not in NON_ARCH_KEYS}


def batch_split_changed(meta: dict, run_config: dict, world_size: int) -> bool:
    """True when the run resumes with another world size or micro_batch_size than the checkpoint's."""
    return (meta["world_size"] != world_size
            or meta["run_config"].get("micro_batch_size") != run_config.get("micro_batch_size"))


def compat_errors(meta: dict, *, model_config, run_config: dict, world_size: int,
                  data_manifest_hash: str, tokenizer_fingerprint: Optional[str],
                  data_content_hash: Optional[str] = None) -> list[str]:
    """What differs between a checkpoint's meta.json and the run about to resume from it (empty = compatible)."""
    errors = []
    if model_config is not None:
        saved, now = arch_dict(meta["model_config"]), arch_dict(model_config)
        for key in sorted(set(saved) | set(now)):
            if saved.get(key) != now.get(key):
                errors.append(f"architecture: {key} is {now.get(key)!r} now, {saved.get(key)!r} in the checkpoint")
    # the same tokens prepared again (another source path or library version in manifest.json) resume; checkpoints
    # saved before meta.json recorded the content hash go by the manifest's alone
    same_tokens = data_content_hash is not None and meta.get("data_content_hash") == data_content_hash
    if meta["data_manifest_hash"] != data_manifest_hash and not same_tokens:
        then = (meta.get("run_config") or {}).get("data_dir")
        errors.append(f"data: other tokens than the checkpoint trained on (now {run_config.get('data_dir')!r}, "
                      f"manifest hash {data_manifest_hash}; the checkpoint's {then!r}, {meta['data_manifest_hash']}): "
                      "a different data_dir, or one prepared again with other tokens")
    if tokenizer_fingerprint and meta.get("tokenizer_fingerprint") not in (None, tokenizer_fingerprint):
        errors.append(f"tokenizer: {tokenizer_fingerprint} now, {meta['tokenizer_fingerprint']} in the checkpoint")
    if run_config.get("overfit_single_batch") and batch_split_changed(meta, run_config, world_size):
        errors.append(f"overfit_single_batch: the single batch is each rank's first micro-batch, so it resumes only "
                      f"with the checkpoint's world size ({meta['world_size']}) and micro_batch_size "
                      f"({meta['run_config'].get('micro_batch_size')})")
    for key in DATA_ORDER_KEYS:
        if meta["run_config"].get(key) != run_config.get(key):
            errors.append(f"run config: {key} is {run_config.get(key)!r} now, "
                          f"{meta['run_config'].get(key)!r} in the checkpoint (it fixes the data order)")
    if meta["run_config"].get("init_from") != run_config.get("init_from"):
        errors.append(f"run config: init_from is {run_config.get('init_from')!r} now, "
                      f"{meta['run_config'].get('init_from')!r} in the checkpoint")
    return errors
