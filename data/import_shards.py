"""Import the token shards of build-nanogpt or llm.c (FineWeb-Edu or FineWeb, tokenized) without tokenizing again.

    python -m data.import_shards edu_fineweb10B --out out/data/fineweb_edu_10B          # copies the tokens
    python -m data.import_shards edu_fineweb10B --out out/data/fineweb_edu_10B --link   # .npy: hard links, no copy

build-nanogpt's `fineweb.py` and llm.c's `dev/data/fineweb.py` write the token stream data.prepare writes: each
document as [50256] + its GPT-2 ids (tiktoken's encode_ordinary), in source order, cut into shards of exactly
`shard_size` tokens (a document continues in the next shard; the last shard is shorter). Their shard 0 is the
validation split, `<name>_val_000000`, the others train, `<name>_train_000001`, ...:

    build-nanogpt  <name>_{val,train}_NNNNNN.npy   uint16 arrays written by np.save
    llm.c          <name>_{val,train}_NNNNNN.bin   a header of 256 int32 (magic 20240520, version 1, token count),
                                                   then the uint16 tokens

The import keeps their split: val = their shard 0, whole (train.py evaluates its first `val_tokens`; the default
10,485,760 are, for T=1024, the windows build-nanogpt's validation reads on 8 GPUs), train = the other shards
in order. Refused with a message, each found before anything is written (the shards are read once to check them,
then again to copy): a gap in the numbering (a shard missing from a copy), a file of another dtype or header, a
truncated file, ids >= 50257, a stream that does not start with a document, and ids of another tokenizer (the
first whole documents of every shard must re-encode to the same ids: decoding and encoding again gives the ids
back only for ids that GPT-2's encoder wrote). Missing last shards leave no gap to find: a last shard as full as
the others, their one sign, is warned about (a stream can also end at a shard boundary).

The result is an ordinary prepared folder: `val_000000.npy`, `train_000000.npy`, ... and `manifest.json` with a
sha256 per shard, written last. The folder rules are data.prepare's (data.out_folder): a finished import is verified
and left alone, an interrupted one is done again, other settings are refused unless --overwrite, one writer at a
time. With --link the shards are hard links to build-nanogpt's files (same bytes, no second copy; deleting either
name leaves the other). They are then the same files: running build-nanogpt's fineweb.py again rewrites them in
place, and train.py's start-up check (sha256 of every shard) refuses the changed folder; import it again then,
with --overwrite.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.out_folder import check_out, claim_folder, clear_folder, finished, holding
from data.shards import (
    FORMAT_VERSION,
    IMPORTABLE_SHARD_RE,
    MANIFEST_NAME,
    NANOGPT_SHARDS,
    NPY_HEADER_BYTES,
    SHARD_DTYPE,
    STATE_NAME,
    TMP_MARK,
    DataError,
    atomic_write,
    make_manifest,
    npy_header,
    other_tools_shards_advice,
    remove_stale_temporaries,
    sha256_file,
    shard_name,
    state_kind,
    write_json,
)
from data.tokenizer import EOT_ID, TOKENIZER_VOCAB_SIZE, tiktoken_gpt2
from eval.errors import hyphenated, permission_message
from training.run_lock import LOCK_FILE

log = logging.getLogger("data.import_shards")

TOOLS = {"npy": "build-nanogpt", "bin": "llm.c"}
LLMC_HEADER_INTS = 256  # int32 values before the tokens
LLMC_MAGIC, LLMC_VERSION = 20240520, 1  # GPT-2 tokens as uint16
LLMC_OTHER_MAGICS = {20240801: "Llama 3 tokens (uint32)"}  # what llm.c's fineweb.py writes for `-m llama-3`
CHUNK_TOKENS = 1 << 24  # 32 MB of uint16 read, checked and written at a time
SAMPLE_TOKENS = 4_000_000  # the head of each shard in which whole documents are re-encoded
SAMPLE_DOCUMENTS = 100  # whole documents re-encoded per shard


@dataclass
class ShardFile:
    path: Path
    split: str
    index: int  # their numbering: 0 is val, 1.. train

    @property
    def ext(self) -> str:
        return self.path.suffix[1:]


def find_shards(folder: Path) -> tuple[str, str, list[ShardFile]]:
    """(tool, name prefix, shards in stream order) of the one numbered shard set in `folder`; refuses anything else."""
    expected = ("build-nanogpt's fineweb.py writes edufineweb_val_000000.npy, edufineweb_train_000001.npy, ...; "
                "llm.c's dev/data/fineweb.py writes edu_fineweb_val_000000.bin or fineweb_val_000000.bin, ...")
    if not folder.exists():
        raise DataError(f"{folder} does not exist: pass the folder of token shards ({expected}).")
    if folder.is_file():
        shard = IMPORTABLE_SHARD_RE.match(folder.name)
        where = "pass the folder that holds it" if shard else f"pass a folder ({expected})"
        raise DataError(f"{folder} is a file: {where}.")
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))  # not macOS's ._ files
    found = [(m, n) for n in names if (m := IMPORTABLE_SHARD_RE.match(n))]
    not_files = [n for _, n in found if not (folder / n).is_file()]
    if not_files:
        raise DataError(f"{folder / not_files[0]} is not a file (a folder, or a link to nothing): remove it, or copy "
                        "the shard there again.")
    if not found:
        if MANIFEST_NAME in names:
            raise DataError(f"{folder} is already a prepared folder (it has {MANIFEST_NAME}): pass it to train.py as "
                            "--data_dir as it is.")
        if any(n in NANOGPT_SHARDS for n in names):
            raise DataError(f"{folder}: {other_tools_shards_advice(folder, names)}.")
        raise DataError(f"{folder} holds no token shards to import ({expected}).")
    sets = sorted({(m["prefix"], m["ext"]) for m, _ in found})
    if len(sets) > 1:
        listed = ", ".join(f"{prefix}_*.{ext}" for prefix, ext in sets)
        raise DataError(f"{folder} holds more than one set of shards ({listed}): move each set into a folder of "
                        "its own and import one.")
    prefix, ext = sets[0]
    shards = sorted((ShardFile(folder / n, m["split"], int(m["index"])) for m, n in found), key=lambda s: s.index)
    indices = [s.index for s in shards]
    twins = [s.path.name for s in shards if indices.count(s.index) > 1]
    if twins:
        raise DataError(f"{folder} numbers two shards alike ({', '.join(twins[:2])}): remove the one that does not "
                        "belong.")
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    if missing:
        raise DataError(f"{folder} lacks shard number{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(f'{i:06d}' for i in missing[:5])}{' ...' if len(missing) > 5 else ''} of "
                        f"0..{indices[-1]:06d} ({prefix}_*.{ext}): a partial copy or download? Copy the missing "
                        "files, or write the set again with the tool that made it.")
    misplaced = [s.path.name for s in shards if (s.split == "val") != (s.index == 0)]
    if misplaced:
        raise DataError(f"{folder}: {misplaced[:3]} break the tools' layout (shard 0 is val, every later one "
                        "train): these are not shards written by build-nanogpt or llm.c.")
    if len(shards) < 2:
        raise DataError(f"{folder} holds only the validation shard {shards[0].path.name}, no train shard: import "
                        "the whole set.")
    return TOOLS[ext], prefix, shards


def read_tokens(shard: ShardFile) -> np.ndarray:
    """The shard's tokens, memory-mapped read-only: shape (n,), uint16. Refuses another format or a damaged file."""
    path = shard.path
    if shard.ext == "npy":
        try:
            tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        except PermissionError:
            raise  # said as such by main()
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path} is not a .npy token array that can be read ({err}): a damaged or truncated "
                            "file, or not build-nanogpt's; write it again with its fineweb.py (or copy it again)."
                            ) from err
        if tokens.dtype != SHARD_DTYPE or tokens.ndim != 1:
            raise DataError(f"{path} holds {tokens.dtype} of shape {tokens.shape}, not a 1-D uint16 array of GPT-2 "
                            "token ids as build-nanogpt writes: not importable.")
        extra = path.stat().st_size - tokens.offset - tokens.nbytes
        if extra:  # np.load maps only the array the header describes
            raise DataError(f"{path} has {extra:,} bytes after its array of {len(tokens):,} tokens: a damaged file "
                            "(or two writes into one); write it again with build-nanogpt's fineweb.py (or copy it "
                            "again).")
    else:
        size = path.stat().st_size
        header_bytes = 4 * LLMC_HEADER_INTS
        header = np.fromfile(path, dtype="<i4", count=LLMC_HEADER_INTS) if size >= header_bytes else None
        if header is None:
            raise DataError(f"{path} is {size} bytes, shorter than llm.c's {header_bytes}-byte header: the file is "
                            "truncated; write it again with llm.c's dev/data/fineweb.py (or copy it again).")
        magic, version, count = (int(v) for v in header[:3])
        if magic in LLMC_OTHER_MAGICS:
            raise DataError(f"{path} holds {LLMC_OTHER_MAGICS[magic]}, not GPT-2 tokens: write GPT-2 shards with "
                            "llm.c's `dev/data/fineweb.py -m gpt-2`, or prepare the text with data.prepare.")
        if magic != LLMC_MAGIC or version != LLMC_VERSION:
            raise DataError(f"{path} does not start with llm.c's GPT-2 token header (magic {LLMC_MAGIC}, version "
                            f"{LLMC_VERSION}; found {magic}, {version}): not a shard of llm.c's fineweb.py.")
        if size != header_bytes + 2 * count:
            raise DataError(f"{path} is {size:,} bytes but its header says {count:,} tokens "
                            f"({header_bytes + 2 * count:,} bytes): the file is truncated or damaged; write it "
                            "again with llm.c's dev/data/fineweb.py (or copy it again).")
        tokens = np.memmap(path, dtype=SHARD_DTYPE, mode="r", offset=header_bytes, shape=(count,))
    if len(tokens) == 0:
        raise DataError(f"{path} holds no tokens: write it again with the tool that made it.")
    return tokens


def check_gpt2_ids(tokens: np.ndarray, path: Path) -> int:
    """Re-encode the first whole documents of a shard (between two end-of-text ids, within its head) with GPT-2's
    tokenizer and refuse ids that do not come back; returns how many documents were checked."""
    head = np.asarray(tokens[:SAMPLE_TOKENS])
    _check_ids(head, path, 0)  # decoding would fail on an id out of range: named here, with its position
    starts = np.flatnonzero(head == EOT_ID)[:SAMPLE_DOCUMENTS + 1]
    enc = tiktoken_gpt2()
    for a, b in zip(starts[:-1], starts[1:]):
        ids = head[a + 1:b].tolist()
        try:
            again = enc.encode_ordinary(enc.decode_bytes(ids).decode("utf-8"))
        except UnicodeDecodeError:
            again = None
        if again != ids:
            raise DataError(f"the document at token {a + 1:,} of {path} does not re-encode to the same ids with "
                            "GPT-2's tokenizer: these tokens were made by another tokenizer (or the file is damaged), "
                            "and a GPT-2 trained on them would learn the wrong text. Prepare the text itself with "
                            "`python -m data.prepare SOURCE --out out/data/NAME`.")
    return max(len(starts) - 1, 0)


def _check_ids(chunk: np.ndarray, path: Path, offset: int) -> None:
    if chunk.size and chunk.max() >= TOKENIZER_VOCAB_SIZE:
        at = offset + int(np.argmax(chunk >= TOKENIZER_VOCAB_SIZE))
        raise DataError(f"{path} holds id {int(chunk[at - offset])} at token {at:,}, beyond GPT-2's "
                        f"{TOKENIZER_VOCAB_SIZE} ids: not GPT-2 tokens, or a damaged file; not importable.")


def _chunks(tokens: np.ndarray):
    """The shard's tokens in chunks: views of the memory map, nothing copied."""
    for start in range(0, len(tokens), CHUNK_TOKENS):
        yield start, tokens[start:start + CHUNK_TOKENS]


def _check_shard(shard: ShardFile, link: bool) -> tuple[int, int, int]:
    """Check one shard whole, before anything is written: its format, the tokenizer on its first whole documents,
    every id. Returns (tokens, documents that start in it, documents re-encoded). The file is open only here, so an
    import holds one file open at a time (llm.c's 100B set has over 1,000 shards)."""
    tokens = read_tokens(shard)
    if link and tokens.offset != NPY_HEADER_BYTES:
        raise DataError(f"{shard.path} has a {tokens.offset}-byte .npy header, not the {NPY_HEADER_BYTES} bytes "
                        "np.save writes for a token array, so it cannot be linked as it is: leave out --link to "
                        "copy it.")
    checked = check_gpt2_ids(tokens, shard.path)
    documents = 0
    for start, chunk in _chunks(tokens):
        _check_ids(chunk, shard.path, start)
        documents += int(np.count_nonzero(chunk == EOT_ID))
    return len(tokens), documents, checked


def _copy(shard: ShardFile, dst: Path) -> str:
    """Write the shard's tokens as our .npy shard (atomically); returns the new file's sha256. Not
    data.shards.write_shard: that hashes the file by reading it back, a third read of every token here."""
    tokens = read_tokens(shard)
    digest = hashlib.sha256()

    def write(f) -> None:
        header = npy_header(len(tokens))
        f.write(header)
        digest.update(header)
        for _, chunk in _chunks(tokens):
            f.write(chunk)  # written and hashed through the buffer protocol: no copy of the bytes
            digest.update(chunk)

    atomic_write(dst, write)
    return digest.hexdigest()


def _hard_link(src: Path, dst: Path) -> None:
    """os.link, with the two refusals users meet said as what to do."""
    try:
        os.link(src, dst)
    except OSError as err:
        if err.errno == errno.EXDEV:
            raise DataError(f"--link: {dst.parent} is on another file system than {src.parent}, and hard links "
                            "cannot cross file systems: leave out --link to copy the shards, or put --out beside "
                            "them.") from err
        if err.errno == errno.EPERM:
            raise DataError(f"--link: the system refuses a hard link to {src} (on Linux, "
                            "fs.protected_hardlinks forbids links to files of another user): leave out --link to "
                            "copy the shards.") from err
        raise


def _link(shard: ShardFile, dst: Path) -> str:
    """Hard-link build-nanogpt's .npy (byte for byte our shard format); returns its sha256."""
    _hard_link(shard.path, dst)
    return sha256_file(dst)


def _probe_link(shard: ShardFile, out: Path) -> None:
    """Make and remove one hard link into `out` first, so a file system that refuses them is said at once, not
    after the check pass has read every shard."""
    probe = out / f".link-probe{TMP_MARK}{os.getpid()}"  # a temporary name: a killed run's is cleaned up
    probe.unlink(missing_ok=True)
    _hard_link(shard.path, probe)
    probe.unlink()


def _sample_sha256(path: Path, size: int = 1 << 16) -> str:
    """sha256 of a file's first and last `size` bytes: tells one shard set from another of the same names and
    sizes (another text, another run) without reading 20 GB on every re-run."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(size))
        f.seek(max(path.stat().st_size - size, 0))
        digest.update(f.read(size))
    return digest.hexdigest()


def _settings(tool: str, prefix: str, shards: list[ShardFile], link: bool) -> dict:
    """What determines the imported shards (a re-run with other settings is refused); folder paths are left out,
    as in data.prepare, so moving the source folder is harmless."""
    files = [{"name": s.path.name, "bytes": s.path.stat().st_size, "sample_sha256": _sample_sha256(s.path)}
             for s in shards]
    return {"source": {"kind": "import", "tool": tool, "prefix": prefix, "files": files}, "link": link,
            "format_version": FORMAT_VERSION}


def _warn_if_the_last_shard_may_be_missing(shards: list[ShardFile], tokens: list[int], tool: str) -> None:
    """Their fineweb.py fills every shard to `shard_size` tokens and writes what remains as a last, shorter one.
    A gap in the numbering is refused (find_shards), but a set missing its last shards looks whole; a last shard
    as full as the others is the one sign of it (or a stream that ended exactly at a shard boundary)."""
    if len(set(tokens)) == 1:
        log.warning("%s, the last shard, holds as many tokens as every other (%s): the stream ended exactly at a "
                    "shard boundary, or the set lacks its last shards (a partial copy or download?). If %s wrote "
                    "more, copy them beside the others and import again with --overwrite.", shards[-1].path.name,
                    f"{tokens[-1]:,}", tool)


def _interrupted_import(out: Path) -> bool:
    """Whether `out` holds an import that did not finish (its record, no manifest). An import is always done again
    from the start, so nothing there is worth keeping, whatever settings it had."""
    return not (out / MANIFEST_NAME).exists() and state_kind(out / STATE_NAME) == "import"


def import_shards(folder: str | os.PathLike, out_dir: str | os.PathLike, *, link: bool = False,
                  overwrite: bool = False) -> dict:
    """Import the shard set in `folder` into `out_dir` (see the module docstring); returns the manifest."""
    folder, out = Path(folder), Path(out_dir)
    tool, prefix, shards = find_shards(folder)
    if link and tool != "build-nanogpt":
        raise DataError(f"--link: {tool}'s .bin shards carry their own header, so they are copied into .npy shards; "
                        "leave out --link.")
    check_out(out)
    if out.resolve() == folder.resolve():
        raise DataError(f"--out {out} is the folder being imported: pass a new folder for --out.")
    settings = _settings(tool, prefix, shards, link)
    created = not out.exists()
    try:
        with holding(out):
            return _import(folder, out, tool, prefix, shards, settings, link, overwrite)
    except BaseException:
        if created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:  # refused before writing: leave no folder
            shutil.rmtree(out, ignore_errors=True)
        raise


def _import(folder: Path, out: Path, tool: str, prefix: str, shards: list[ShardFile], settings: dict, link: bool,
            overwrite: bool) -> dict:
    manifest, _, replace = claim_folder(out, settings, overwrite or _interrupted_import(out))
    if finished(out, manifest, overwrite):
        return manifest
    replace = replace or manifest is not None  # a damaged finished folder, with --overwrite
    if link:
        _probe_link(shards[0], out)
    # Every shard is checked whole before anything in `out` is removed or written: with --overwrite, a bad set
    # leaves the previous folder as it was.
    first = read_tokens(shards[0])[0]
    if first != EOT_ID:
        raise DataError(f"{shards[0].path} does not start with the end-of-text id {EOT_ID}, as every document "
                        f"of build-nanogpt's and llm.c's streams does: not a stream of their fineweb.py; prepare "
                        "the text itself with data.prepare.")
    counts = []  # (tokens, documents, documents re-encoded) per shard
    for s in shards:
        counts.append(_check_shard(s, link))
        log.info("checked %s (%d/%d)", s.path.name, len(counts), len(shards))
    checked = sum(c[2] for c in counts)
    if checked == 0:
        raise DataError(f"no shard of {folder} holds a whole document in its first {SAMPLE_TOKENS:,} tokens, so "
                        "its tokenizer cannot be checked: not a stream of documents from their fineweb.py.")
    log.info("%s: %d %s shards (%s_*): every id checked, GPT-2's tokenizer checked on %d whole documents", folder,
             len(shards), tool, prefix, checked)
    _warn_if_the_last_shard_may_be_missing(shards, [c[0] for c in counts], tool)
    records = []
    try:
        clear_folder(out)  # what an interrupted import, or with --overwrite another run, left
        if replace:
            log.info("--overwrite: removed the previous contents of %s", out)
        remove_stale_temporaries(out)
        write_json(out / STATE_NAME, {"settings": settings, "shards": []})
        for s, (tokens, docs, _) in zip(shards, counts):
            name = shard_name(s.split, 0 if s.split == "val" else s.index - 1)
            sha256 = _link(s, out / name) if link else _copy(s, out / name)
            records.append({"file": name, "split": s.split, "tokens": tokens, "documents": docs, "sha256": sha256})
            log.info("%s %s -> %s (%d/%d)", "linked" if link else "copied", s.path.name, name, len(records),
                     len(shards))
        source = dict(settings["source"], folder=str(folder.resolve()))
        val_rule = (f"val = {shards[0].path.name} of {tool}, whole ({records[0]['tokens']:,} tokens: the start of "
                    "the stream, cut at a shard boundary, so its last document continues in train); train = "
                    "every later shard, in order")
        created_with = {"importer": "data.import_shards", "numpy": np.__version__, "python": sys.version.split()[0]}
        manifest = make_manifest(source, settings, records, val_rule, created_with)
        write_json(out / MANIFEST_NAME, manifest)  # last: its presence means every shard above is complete
        (out / STATE_NAME).unlink(missing_ok=True)
    except OSError as err:
        raise DataError(f"could not write to {out} ({err.strerror or err}) after {len(records)} of {len(shards)} "
                        "shards: free some space (or make the folder writable), then run the same command "
                        "again: it imports again from the start.") from err
    splits = manifest["splits"]
    log.info("wrote %s: %d val tokens, %d train tokens (%d documents) in %d shards", out / MANIFEST_NAME,
             splits["val"]["tokens"], splits["train"]["tokens"], manifest["documents"], len(records))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.import_shards", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="the folder of build-nanogpt's .npy or llm.c's .bin token shards "
                                   "(e.g. edu_fineweb10B)")
    ap.add_argument("--out", required=True, help="output folder: a prepared folder for train.py's --data_dir")
    ap.add_argument("--link", action="store_true",
                    help="hard-link build-nanogpt's .npy files instead of copying them (same file system)")
    ap.add_argument("--overwrite", action="store_true", help="replace a folder prepared or imported otherwise")
    args = ap.parse_args(hyphenated(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        import_shards(args.folder, args.out, link=args.link, overwrite=args.overwrite)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:  # a shard this user may not read
        print(f"error: {permission_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # reading the source: a file gone mid-run, too many open files, an I/O error
        print(f"error: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
