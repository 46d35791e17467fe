"""The output folder of the data tools (`data.prepare`, `data.import_shards`): what may be written there, who holds
it, and whether what is already there is kept, resumed, refused or replaced.

A folder holds only files these tools write (`data.shards.written_by_prepare`) plus `.lock`. Its settings (the
dict that determines the bytes of the shards) are recorded in `prepare_state.json` while a run writes and in
`manifest.json` once it is done; a run with other settings is refused unless `--overwrite`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from data.shards import (MANIFEST_NAME, SHARD_RE, STATE_NAME, DataError, check_shard_file, read_manifest,
                         write_again_advice, written_by_prepare)
from training.run_lock import LOCK_FILE, Holder, lock_run_folder

log = logging.getLogger("data.out_folder")

PREPARING = Holder("another data.prepare or data.import_shards",
                   "wait for it to finish or stop it (a re-run resumes it)",
                   "pick another --out")

_ABSENT = object()  # a setting one side does not record
# where a recorded setting comes from on the command line (the rest follow from the source's files or the version)
FLAGS = {"shard_tokens": "--shard-tokens", "val_tokens": "--val-tokens", "max_tokens": "--max-tokens",
         "max_documents": "--max-documents", "source.txt_sample_by": "--txt-sample-by",
         "source.text_column": "--text-column", "source.config": "--config", "source.split": "--split",
         "source.revision": "--revision", "source.name": "SOURCE", "source.format": "SOURCE",
         "link": "--link"}  # data.import_shards


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(path, old value, new value) for each recorded setting that differs, looking inside the source's facts
    (nested dicts, and lists of the same length), so a changed --txt-sample-by is named, not just 'source'."""
    found = []

    def walk(path: str, a, b) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(f"{path}.{key}" if path else str(key), a.get(key, _ABSENT), b.get(key, _ABSENT))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(f"{path}[{i}]", x, y)
        else:
            found.append((path, a, b))

    walk("", old, new)
    return found


def describe(diff: list[tuple[str, object, object]]) -> str:
    """`differing: ['source.txt_sample_by'] (source.txt_sample_by (--txt-sample-by): 'paragraph' -> 'line')`"""

    def show(value) -> str:
        if value is _ABSENT:
            return "(not recorded)"
        if isinstance(value, (list, dict)):
            return f"[{len(value)} entries]" if isinstance(value, list) else f"{{{len(value)} keys}}"
        text = repr(value)
        return text if len(text) <= 70 else text[:67] + "..."

    details = "; ".join(f"{path}{f' ({FLAGS[path]})' if path in FLAGS else ''}: {show(a)} -> {show(b)}"
                        for path, a, b in diff)
    return f"differing: {[path for path, _, _ in diff]} ({details})"


def clear_folder(out: Path) -> None:
    """Remove what data.prepare or data.import_shards wrote into `out` (and nothing else)."""
    for p in out.iterdir():
        if written_by_prepare(p.name):
            p.unlink()


def check_out(out: Path) -> None:
    """Refuse an --out that exists but is not a folder (a file is the user's, never replaced)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is an existing file, not a folder: a folder of shards is written there. "
                        "Pass a new or empty folder path for --out; the file was left as it is.")
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise DataError(f"--out {out} lies inside {blocking}, which is a file, not a folder: pass an --out "
                        "whose parents are folders (or do not exist yet).")


@contextlib.contextmanager
def holding(out: Path):
    """Create `out` if needed, refuse it if it holds files that are not ours, and hold it (an OS lock on
    out/.lock, released when this run ends however it ends) while the block runs. A folder this process cannot
    write to (a read-only copy of a finished dataset, which is only verified) is not locked. `out` has passed
    check_out."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent is a file, no permission, read-only file system, ...
        raise DataError(f"cannot create the output folder {out} ({err.strerror or err}): pass a folder path "
                        "that can be created for --out.") from err
    foreign = sorted(p.name for p in out.iterdir() if not (written_by_prepare(p.name) or p.name == LOCK_FILE))
    if foreign:  # refused before the lock file too: the folder is left exactly as it was
        raise DataError(f"{out} holds files that neither data.prepare nor data.import_shards wrote "
                        f"({foreign[:5]}): use an empty or new --out.")
    handle = None
    if os.access(out, os.W_OK):
        handle, busy = lock_run_folder(out, PREPARING)
        if busy:
            raise DataError(f"{busy}; nothing was changed.")
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


def claim_folder(out: Path, settings: dict, overwrite: bool) -> tuple[dict | None, list[dict], bool]:
    """Decide what to do with `out`: returns (complete manifest or None, shard records to resume from, whether
    --overwrite is to replace what is there). Removes nothing: prepare() replaces only once the source opened."""
    manifest_path, state_path = out / MANIFEST_NAME, out / STATE_NAME
    has_shards = any(SHARD_RE.match(p.name) for p in out.iterdir())
    previous = None
    if manifest_path.exists():
        try:
            previous, _ = read_manifest(out)
        except DataError:
            if not overwrite:
                raise
            log.info("--overwrite: %s has an unreadable manifest; preparing it again from the source", out)
            return None, [], True  # an unreadable manifest says nothing worth keeping: start again
        previous_settings = previous.get("settings", {})
    elif state_path.exists():
        try:
            state = json.loads(state_path.read_text())
            if not (isinstance(state, dict) and isinstance(state.get("shards", []), list)):
                raise ValueError(f"a JSON {type(state).__name__}, not prepare's record")
        except (OSError, UnicodeDecodeError, ValueError) as err:  # written atomically: an edit or a disk fault
            if not overwrite:
                raise DataError(f"{state_path}, the record of an interrupted run, is unreadable ({err}), so its "
                                "shards cannot be resumed; nothing was changed. Re-run with --overwrite to prepare "
                                "the folder again from the source.") from err
            log.info("--overwrite: %s has an unreadable %s; preparing it again from the source", out, STATE_NAME)
            return None, [], True
        if not state.get("shards") and not has_shards:  # a run that failed before its first shard binds nothing
            return None, [], False
        previous_settings = state.get("settings", {})
    elif has_shards:
        if not overwrite:
            raise DataError(f"{out} holds shards but neither {MANIFEST_NAME} nor {STATE_NAME}, so the settings "
                            "they were prepared with are unknown; nothing was changed. Use another --out, or pass "
                            "--overwrite to replace them.")
        previous_settings = {"unknown": "shards without manifest or prepare_state.json"}
    else:
        return None, [], False
    diff = differences(previous_settings, settings)
    if diff and not overwrite:
        kinds = [s["source"].get("kind") if isinstance(s.get("source"), dict) else None
                 for s in (previous_settings, settings)]
        what = (f"made from another kind of source ({kinds[0]} -> {kinds[1]})" if kinds[0] != kinds[1]
                else f"prepared with other settings ({describe(diff)})")  # the list of every setting says little then
        raise DataError(f"{out} already holds data {what}; nothing was changed. Use another --out, or pass "
                        "--overwrite to replace it.")
    if diff:
        return None, [], True
    if previous is not None:
        state_path.unlink(missing_ok=True)  # killed between writing the manifest and removing the state
        return previous, [], False
    return None, state["shards"], False


def finished(out: Path, manifest: dict | None, overwrite: bool) -> bool:
    """Whether `out` holds a finished folder (`manifest`, from claim_folder) whose shards are all intact (size and
    sha256): nothing to do. A damaged one is refused, or with `overwrite` written again (False): a finished folder
    keeps no resume points, so it is written again from the start."""
    if manifest is None:
        return False
    fix = write_again_advice(manifest)
    try:
        for r in manifest["shards"]:
            check_shard_file(out / r["file"], r["tokens"], r["sha256"], fix)
    except DataError as err:
        if not overwrite:
            raise
        log.info("--overwrite: %s has a damaged shard (%s); writing it again from the start", out, err)
        return False
    log.info("%s is already complete (%d shards, checksums verified): nothing to do", out, len(manifest["shards"]))
    return True
