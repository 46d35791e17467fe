"""The on-disk format of a prepared dataset: token shards, `manifest.json`, atomic writes and checks.

`data.prepare` writes this format and `data.loader` reads it; nothing else should touch the files by hand.

    DIR/
      val_000000.npy     uint16 token arrays, `np.load(path, mmap_mode="r")`; raw `np.memmap(path, np.uint16,
      train_000000.npy   offset=NPY_HEADER_BYTES)` works too. Every document is `[50256] + ids(text)`.
      ...
      manifest.json      written LAST: a folder without it is an unfinished prepare run, never read for training

Every file is written to a hidden temporary name in the same folder, fsynced and then `os.replace`d into place,
so a killed run leaves either the complete file or nothing under the real name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np

from data.tokenizer import EOT_ID, TOKENIZER_FINGERPRINT, TOKENIZER_VOCAB_SIZE

FORMAT = "gpt2repro-tokens"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
STATE_NAME = "prepare_state.json"  # data.prepare's resume record in an unfinished folder
SHARD_DTYPE = np.dtype("<u2")  # uint16: every GPT-2 id (< 50257) fits, half the bytes of int32
SHARD_RE = re.compile(r"^(train|val)_(\d{6})\.npy$")
# token shards of other GPT-2 trainers: build-nanogpt's edufineweb_{val,train}_NNNNNN.npy and llm.c's
# {edu_fineweb,fineweb}_{val,train}_NNNNNN.bin (read by data.import_shards), nanoGPT's {train,val}.bin (not read)
IMPORTABLE_SHARD_RE = re.compile(r"^(?P<prefix>.+)_(?P<split>train|val)_(?P<index>\d{6})\.(?P<ext>npy|bin)$")
NANOGPT_SHARDS = ("train.bin", "val.bin")
TMP_MARK = ".tmp-"  # temporary files are ".<final name>.tmp-<pid>"
SPLITS = ("train", "val")


def written_by_prepare(name: str) -> bool:
    """Whether a file name is one data.prepare writes into its output folder (shard, manifest, state, temporary)."""
    return name in (MANIFEST_NAME, STATE_NAME) or bool(SHARD_RE.match(name)) or TMP_MARK in name


class DataError(ValueError):
    """A problem with input data, a prepared folder or a shard. The message names the file and the fix."""


def npy_header(n_tokens: int) -> bytes:
    """The .npy header np.save writes before `n_tokens` uint16 tokens (format 1.0: magic, dict, padding)."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(SHARD_DTYPE), "fortran_order": False, "shape": (n_tokens,)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


# 128 bytes whatever the length (the header is padded to a multiple of 64); computed rather than hard-coded so a
# numpy change cannot silently shift every offset
NPY_HEADER_BYTES = len(npy_header(10**12))


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.npy"


def shard_bytes(n_tokens: int) -> int:
    """Exact size of a shard file holding `n_tokens` tokens."""
    return NPY_HEADER_BYTES + SHARD_DTYPE.itemsize * n_tokens


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call `write(f)` on a hidden temporary file beside `path`, fsync it and rename it over `path`: readers see the
    old file or the new one, never a part (a crash or a full disk mid-write leaves the old one)."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is not None and err.filename in (None, str(tmp)):  # name the file asked for, not its staging copy
            raise OSError(err.errno, err.strerror, str(path)) from err  # (OSError() picks the subclass by errno)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_shard(path: Path, tokens: np.ndarray) -> str:
    """Atomically write a 1-D uint16 token array as .npy; returns the file's sha256."""
    assert tokens.dtype == SHARD_DTYPE and tokens.ndim == 1, (tokens.dtype, tokens.shape)
    atomic_write(path, lambda f: np.save(f, tokens, allow_pickle=False))
    return sha256_file(path)


def write_json(path: Path, obj: dict) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (same object -> same bytes -> same hash)."""
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def make_manifest(source: dict, settings: dict, records: list[dict], val_rule: str, created_with: dict) -> dict:
    """The manifest of a finished folder. `records`: one per shard in stream order (val first), each with file,
    split, tokens, documents (documents that start in it) and sha256; `source`: what the tokens came from;
    `settings`: what determines their bytes (a re-run with other settings is refused)."""
    splits = {}
    for name in ("val", "train"):
        rs = [r for r in records if r["split"] == name]
        splits[name] = {"shards": len(rs), "tokens": sum(r["tokens"] for r in rs),
                        "documents": sum(r["documents"] for r in rs)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": source,
        "settings": settings,
        "tokenizer": {"name": "gpt2", "fingerprint": TOKENIZER_FINGERPRINT, "vocab_size": TOKENIZER_VOCAB_SIZE,
                      "eot_id": EOT_ID, "eot_placement": "before every document",
                      "special_tokens_in_text": "encoded as ordinary text"},
        "dtype": "uint16",
        "shard_format": "npy",
        "npy_header_bytes": NPY_HEADER_BYTES,
        "val_rule": val_rule,
        "splits": splits,
        "tokens": splits["val"]["tokens"] + splits["train"]["tokens"],
        "documents": splits["val"]["documents"] + splits["train"]["documents"],
        "shards": [{k: r[k] for k in ("file", "split", "tokens", "documents", "sha256")} for r in records],
        "created_with": created_with,
    }


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files left by a killed writer (only names this module creates)."""
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and TMP_MARK in p.name]
    for p in stale:
        p.unlink()
    return stale


PREPARE_AGAIN = ("re-run the same `python -m data.prepare` command with --overwrite: it prepares the folder again from "
                 "the source (an unfinished folder is resumed, keeping its intact shards)")
IMPORT_AGAIN = ("re-run the same `python -m data.import_shards` command with --overwrite: it imports the shards again "
                "(a folder imported with --link shares its files with the source folder: check those first)")


def write_again_advice(manifest: dict) -> str:
    """How to write a damaged folder again: with the tool that wrote it (its manifest's source kind says which)."""
    source = manifest.get("source")
    return IMPORT_AGAIN if isinstance(source, dict) and source.get("kind") == "import" else PREPARE_AGAIN


def check_shard_file(path: Path, tokens: int, sha256: str | None, fix: str = PREPARE_AGAIN) -> None:
    """Raise DataError unless `path` exists with exactly `tokens` tokens and (if given) this sha256; the message
    ends with `fix`, what to do."""
    if not path.is_file():
        raise DataError(f"shard {path} listed in {MANIFEST_NAME} is missing: {fix}.")
    size, expected = path.stat().st_size, shard_bytes(tokens)
    if size != expected:
        raise DataError(
            f"shard {path} is {size} bytes but {MANIFEST_NAME} says {tokens} tokens ({expected} bytes): the file is "
            f"truncated or was replaced; {fix}."
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise DataError(
                f"shard {path} has sha256 {actual}, {MANIFEST_NAME} records {sha256}: the file was altered or "
                f"corrupted (bit flip, partial copy); {fix}."
            )


def open_shard(path: Path, tokens: int, fix: str = PREPARE_AGAIN) -> np.ndarray:
    """Memory-map a shard after checking its size and npy header; shape (tokens,), dtype uint16, read-only."""
    check_shard_file(path, tokens, sha256=None, fix=fix)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataError(f"shard {path} is not a readable .npy file ({err}): {fix}.") from err
    if arr.dtype != SHARD_DTYPE or arr.shape != (tokens,):
        raise DataError(f"shard {path} holds {arr.dtype} {arr.shape}, expected uint16 ({tokens},): {fix}.")
    return arr


def other_tools_shards_advice(folder, names) -> str | None:
    """What to do with a folder (file `names`) of another trainer's token shards; None if it holds none."""
    if any(IMPORTABLE_SHARD_RE.match(n) for n in names):
        return ("it holds token shards of build-nanogpt or llm.c (their fineweb.py), not a prepared folder: import "
                f"them, without tokenizing again, with `python -m data.import_shards {folder} --out "
                "out/data/NAME`, then pass out/data/NAME")
    if any(n in NANOGPT_SHARDS for n in names):
        return ("it holds nanoGPT's train.bin / val.bin, which are not read here (no header, and the end-of-text "
                "token after each document instead of before it): prepare the text itself, e.g. `python -m "
                "data.prepare HuggingFaceFW/fineweb-edu --config sample-10BT --out out/data/fineweb_edu_10B`")
    return None


def state_kind(path: Path) -> str | None:
    """The source kind in an unfinished folder's prepare_state.json ("import" for data.import_shards), if readable."""
    try:
        return json.loads(path.read_text())["settings"]["source"]["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def missing_manifest_advice(folder) -> str:
    """What to do with a folder that was passed as prepared data but has no manifest, from what it holds: an
    unfinished data.prepare run, a run or model folder, token shards of another tool, source files, or nothing."""
    folder = Path(folder)
    try:
        names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    except OSError as err:  # e.g. a folder this user may not list: said, not raised (every rank reports it)
        return f"it cannot be read ({err.strerror or err}): check its permissions"
    if STATE_NAME in names and state_kind(folder / STATE_NAME) == "import":
        return ("a data.import_shards run into it did not finish (it holds prepare_state.json, not its manifest): "
                "run the same `python -m data.import_shards ... --out` command again (it imports again from the "
                "start), after fixing what stopped it")
    if STATE_NAME in names or any(SHARD_RE.match(n) for n in names):
        return ("a data.prepare run into it did not finish (it holds its shards or prepare_state.json, not its "
                "manifest): run the same `python -m data.prepare ... --out` command again to complete it (it resumes), "
                "after fixing what stopped it")
    if "checkpoints" in names or "run_config.yaml" in names or "metrics.jsonl" in names:
        return ("it is a training run's folder (train.py's output_dir), not prepared data: pass the folder "
                "data.prepare wrote (the run's run_config.yaml names it as data_dir)")
    if "config.json" in names:
        return "it is a model folder, not prepared data: pass the folder data.prepare wrote"
    advice = other_tools_shards_advice(folder, names)
    if advice:
        return advice
    from data.sources import LOCAL_FORMATS

    def is_source(p: Path) -> bool:
        return p.name.endswith(tuple(LOCAL_FORMATS)) and p.is_file()

    try:  # sources may sit in subfolders (data.prepare reads a folder recursively); one level down is looked at,
        # not the whole tree (a mistyped --data_dir of a large folder would be walked whole)
        has_sources = any(is_source(p) or p.is_dir() and any(is_source(q) for q in p.iterdir())
                          for p in folder.iterdir())
    except OSError:
        has_sources = False
    if has_sources:
        return (f"it holds source files, not tokens: tokenize them with `python -m data.prepare {folder} --out "
                f"out/data/NAME`, then pass out/data/NAME")
    return f"prepare the data first: `python -m data.prepare SOURCE --out {folder}`"


def read_manifest(folder: Path) -> tuple[dict, str]:
    """Load and structurally check `folder/manifest.json`; returns (manifest, sha256 of its bytes)."""
    path = Path(folder) / MANIFEST_NAME
    if Path(folder).is_file() and (Path(folder).name == MANIFEST_NAME or SHARD_RE.match(Path(folder).name)):
        raise DataError(f"{folder} is a file of the prepared data folder {Path(folder).parent}: pass that folder")
    if Path(folder).is_file():
        raise DataError(f"{folder} is a file, not a prepared data folder: tokenize it first with "
                        f"`python -m data.prepare {folder} --out out/data/NAME`, then pass that folder.")
    if not path.is_file():
        raise DataError(f"{path} not found: {missing_manifest_advice(folder)}")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError as err:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8 text
        raise DataError(f"{path} is not valid JSON ({err}): re-run data.prepare with --overwrite.") from err
    if not isinstance(manifest, dict):
        raise DataError(f"{path} holds a JSON {type(manifest).__name__}, not a {FORMAT} manifest: the manifest was "
                        "edited or replaced; re-run data.prepare with --overwrite.")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path} is not a {FORMAT} v{FORMAT_VERSION} manifest (format={manifest.get('format')!r}, "
            f"version={manifest.get('format_version')!r}): re-run data.prepare with this code version."
        )
    missing = [k for k in ("tokenizer", "dtype", "shards", "splits", "source") if k not in manifest]
    if missing:
        raise DataError(f"{path} lacks {missing}: the manifest was edited or truncated; re-run data.prepare.")
    edited = "the manifest was edited or truncated; re-run data.prepare with --overwrite"
    if not isinstance(manifest["shards"], list) or not isinstance(manifest["tokenizer"], dict):
        raise DataError(f"{path}: 'shards' must be a list and 'tokenizer' an object: {edited}.")
    seen = set()
    for entry in manifest["shards"]:  # the fields the loader reads, with their types: a KeyError/TypeError otherwise
        name = entry.get("file", "") if isinstance(entry, dict) else ""
        if (not isinstance(name, str) or not SHARD_RE.match(name) or entry.get("split") not in SPLITS
                or Path(name).name != name or type(entry.get("tokens")) is not int or entry["tokens"] < 0
                or not isinstance(entry.get("sha256"), str)):
            raise DataError(f"{path} lists an invalid shard entry {entry!r:.200} (each needs file, split, tokens "
                            f"and sha256): {edited}.")
        if name in seen:  # the loader would read its tokens twice per pass
            raise DataError(f"{path} lists shard {name} twice: {edited}.")
        seen.add(name)
    return manifest, hashlib.sha256(raw).hexdigest()
