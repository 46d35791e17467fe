"""Prepare training tokens: SOURCE -> `datasets` -> GPT-2 ids -> uint16 shards + manifest.json. Resumable.

    python -m data.prepare builtin:pydocs --out out/data/pydocs --val-tokens 32768   # as the demo prepares it
    python -m data.prepare ../shared/data/fineweb/fineweb_legal_2800docs.parquet --out out/data/legal
    python -m data.prepare HuggingFaceFW/fineweb-edu --config sample-10BT --out out/data/fineweb_edu_10B   # streams
    python -m data.prepare --help                                                                # all options

From Python: `prepare(source, out_dir, shard_tokens=..., val_tokens=..., num_proc=...) -> manifest dict`.
SOURCE kinds are described in `data.sources`; the folder format in `data.shards`.

Token stream: documents in source order, each `[50256] + ids(text)` (a literal "<|endoftext|>" in the text is
ordinary text). The stream is tokenized in chunks of `chunk_docs` documents, each with
`Dataset.map(tokenize_batch, batched=True, ...)`, and cut into shards of exactly `shard_tokens` tokens (a
document may continue in the next shard; only each split's last shard is shorter). `num_proc` workers (default
`os.cpu_count()`) are threads inside map() in this one process for the tiktoken backend (its Rust encoder releases
the GIL; map() itself gets no num_proc, so no process pool) and map()'s worker processes for the HF tokenizer
backend.

Validation split (fixed): the FIRST documents of the source, whole, up to and including the document during
which the running total reaches `val_tokens` (so val holds >= val_tokens tokens and no document is split
between val and train). The default, 10,485,760 = 20 x 524,288 tokens, is build-nanogpt's validation budget
(20 steps of its 0.5M-token batch), which like ours takes the start of the stream (its shard 0).
`max_tokens` caps the TRAIN split (the last document is cut); `max_documents` reads only the first N documents.

Resume: after every shard, `prepare_state.json` records the shards done (size, sha256) and the stream position
(next document, tokens of it already written). A re-run with the same settings re-checks those shards, keeps
them, skips the documents they hold and continues, producing byte-identical shards. Shards and state are
written atomically; `manifest.json` is written last, so a folder without it is never mistaken for complete.
A re-run with other settings is refused (listing what differs) unless `overwrite=True`. While a run writes,
it holds `out/.lock` (an OS lock, released however the run ends): a second data.prepare into the same folder is
refused with the first one's pid.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.encode import BACKENDS, TOKEN_FEATURES, tokenize_batch
from data.out_folder import check_out, claim_folder, clear_folder, finished, holding
from data.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARD_DTYPE,
    STATE_NAME,
    DataError,
    check_shard_file,
    make_manifest,
    remove_stale_temporaries,
    shard_name,
    write_json,
    write_shard,
)
from data.sources import Source, resolve_source
from data.tokenizer import EOT_ID, TOKENIZER_FINGERPRINT, tiktoken_gpt2
from eval.errors import hyphenated, permission_message

log = logging.getLogger("data.prepare")

DEFAULT_SHARD_TOKENS = 100_000_000  # build-nanogpt's shard size: 200 MB of uint16 per file
DEFAULT_VAL_TOKENS = 10_485_760  # 20 x 524,288: build-nanogpt evaluates 20 steps of its 0.5M-token batch
DEFAULT_CHUNK_DOCS = 50_000  # documents per map() call: ~50M FineWeb-Edu tokens, keeps pool start-up < 5%
VAL_RULE = ("val = the first documents of the source, whole, until the val token count reaches val_tokens "
            "(the document crossing it included); train = every later document, in source order")


@dataclass
class _Progress:
    """Where the stream stands at a shard boundary (rebuilt from the state's shard records on resume)."""

    next_doc: int = 0  # index (in the source) of the first document not completely written
    skip_tokens: int = 0  # tokens of that document already written (it was cut by a shard boundary)
    val_done: bool = False
    tokens: dict = field(default_factory=lambda: {"val": 0, "train": 0})


class _ShardWriter:
    """Fills a (shard_tokens,) uint16 buffer from tokenized chunks and writes a shard each time it is full."""

    def __init__(self, out: Path, settings: dict, records: list[dict], progress: _Progress):
        self.out, self.settings, self.records, self.p = out, settings, records, progress
        self.shard_tokens = settings["shard_tokens"]
        self.buffer = np.empty(self.shard_tokens, dtype=SHARD_DTYPE)  # (shard_tokens,)
        self.fill = 0
        self.done = False  # max_tokens reached
        self.stop_at: tuple[int, int] | None = None  # stream position where max_tokens cut it

    def save_state(self) -> None:
        write_json(self.out / STATE_NAME, {"settings": self.settings, "shards": self.records})

    def _flush(self, split: str, next_doc: int, skip_tokens: int) -> None:
        index = sum(r["split"] == split for r in self.records)
        data = self.buffer[: self.fill]
        name = shard_name(split, index)
        sha = write_shard(self.out / name, data)
        self.records.append({
            "file": name, "split": split, "tokens": int(self.fill), "sha256": sha,
            "documents": int(np.count_nonzero(data == EOT_ID)),  # documents that START in this shard
            "next_doc": int(next_doc), "skip_tokens": int(skip_tokens), "val_done": self.p.val_done,
        })
        self.p.next_doc, self.p.skip_tokens = next_doc, skip_tokens
        self.fill = 0
        self.save_state()  # after the shard is in place: the state never lists a shard that is not there

    def feed(self, flat: np.ndarray, lens: np.ndarray, first_doc: int, first_skip: int = 0) -> None:
        """flat: (sum(lens),) tokens of documents first_doc, first_doc+1, ...; lens: (n_docs,) their lengths.
        The first document misses its first `first_skip` tokens (written before a resume)."""
        s = self.settings
        ends = np.cumsum(lens)  # (n_docs,) flat index just past each document
        starts = ends - lens

        def position(pos: int) -> tuple[int, int]:  # flat index -> (document index, tokens of it before pos)
            k = int(np.searchsorted(starts, pos, side="right")) - 1
            if k >= len(lens) or pos == ends[-1]:
                return first_doc + len(lens), 0
            return first_doc + k, pos - int(starts[k]) + (first_skip if k == 0 else 0)

        val_boundary = None  # flat index where val ends, if it ends in this chunk
        if not self.p.val_done:
            j = int(np.searchsorted(ends, s["val_tokens"] - self.p.tokens["val"]))  # first doc reaching the quota
            val_boundary = int(ends[j]) if j < len(ends) else None
        pos = 0
        while pos < len(flat) and not self.done:
            split = "train" if self.p.val_done else "val"
            limit = len(flat) if (split == "train" or val_boundary is None) else val_boundary
            if split == "train" and s["max_tokens"] is not None:
                limit = min(limit, pos + s["max_tokens"] - self.p.tokens["train"])
            take = min(limit - pos, self.shard_tokens - self.fill)
            self.buffer[self.fill : self.fill + take] = flat[pos : pos + take]
            self.fill += take
            pos += take
            self.p.tokens[split] += take
            val_ends = split == "val" and pos == val_boundary
            if val_ends:
                self.p.val_done = True
            if self.fill == self.shard_tokens or (val_ends and self.fill > 0):
                self._flush(split, *position(pos))
            if split == "train" and s["max_tokens"] is not None and self.p.tokens["train"] >= s["max_tokens"]:
                self.done, self.stop_at = True, position(pos)

    def finish(self, next_doc: int) -> None:
        """Write the last, partial shard; `next_doc` is one past the last document read."""
        if self.fill:
            self._flush("val" if not self.p.val_done else "train", *(self.stop_at or (next_doc, 0)))


def _tokenize_chunk(texts: list, num_proc: int, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize one chunk with datasets.map; returns (flat uint16 tokens, int64 length per document)."""
    from datasets import Dataset

    ds = Dataset.from_dict({"text": texts}).with_format("arrow")  # tokenize_batch works on Arrow tables
    procs = min(num_proc, len(texts))
    if backend == "tiktoken":
        # tiktoken encodes in Rust without the GIL: `procs` threads inside one map() process do the work of
        # `procs` processes without a process pool's start-up and without pickling texts and ids across it
        # (measured on 2 cores, 2,800 FineWeb docs: 0.94 s with threads vs 1.41 s with map(num_proc=2)).
        tiktoken_gpt2()  # build the BPE tables once, before any worker uses them
        map_procs, fn_kwargs = None, {"backend": backend, "threads": procs}
    else:
        map_procs, fn_kwargs = (procs if procs > 1 else None), {"backend": backend}
    out = ds.map(tokenize_batch, batched=True, batch_size=1000, num_proc=map_procs, remove_columns=["text"],
                 features=TOKEN_FEATURES, keep_in_memory=True, fn_kwargs=fn_kwargs)
    column = out.with_format(None).data.column("ids")  # ChunkedArray of list<uint16>, one per document, in order
    lens = np.concatenate([np.diff(c.offsets.to_numpy()) for c in column.chunks]).astype(np.int64)
    flat = np.concatenate([c.flatten().to_numpy() for c in column.chunks])
    return flat.astype(SHARD_DTYPE, copy=False), lens


def _workers(backend: str, num_proc: int) -> str:
    """What `num_proc` means for `backend`, as _tokenize_chunk uses it (for the log)."""
    if backend == "tiktoken":
        return f"tiktoken on {num_proc} thread{'s' if num_proc > 1 else ''} in this process (no process pool)"
    return f"{backend} in {num_proc} map() worker processes" if num_proc > 1 else f"{backend} in this process"


def _settings(source: Source, shard_tokens, val_tokens, max_tokens, max_documents) -> dict:
    """Everything that determines the bytes of the shards; a resume requires it to be identical."""
    return {"source": source.identity(), "shard_tokens": shard_tokens, "val_tokens": val_tokens,
            "max_tokens": max_tokens, "max_documents": max_documents,
            "tokenizer_fingerprint": TOKENIZER_FINGERPRINT, "format_version": FORMAT_VERSION}


def _verified_prefix(out: Path, records: list[dict]) -> list[dict]:
    """The longest prefix of finished shards that are still intact (size + sha256); later ones are redone."""
    for i, r in enumerate(records):
        try:
            check_shard_file(out / r["file"], r["tokens"], r["sha256"])
        except DataError as err:
            log.warning("rewriting from %s on: %s", r["file"], err)
            return records[:i]
    return records


def _progress_from(records: list[dict]) -> _Progress:
    p = _Progress()
    for r in records:
        p.tokens[r["split"]] += r["tokens"]
    if records:
        last = records[-1]
        p.next_doc, p.skip_tokens, p.val_done = last["next_doc"], last["skip_tokens"], last["val_done"]
    return p


def prepare(source: str, out_dir: str | os.PathLike, *, config: str | None = None, split: str = "train",
            text_column: str = "text", revision: str | None = None, streaming: bool = True,
            txt_sample_by: str = "document", shard_tokens: int = DEFAULT_SHARD_TOKENS,
            val_tokens: int = DEFAULT_VAL_TOKENS, max_tokens: int | None = None, max_documents: int | None = None,
            num_proc: int | None = None, chunk_docs: int = DEFAULT_CHUNK_DOCS, tokenizer: str = "tiktoken",
            cache_dir: str | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Prepare `source` into `out_dir` (see the module docstring); returns the manifest. Idempotent: a finished
    folder with the same settings is verified and returned as is; an unfinished one is resumed."""
    # None means "not set" for the optional ones; 0 is not "not set": it would mean no train tokens, no
    # documents or no tokenizer worker, so it is refused like any other non-positive value.
    errors = [f"{name} must be a positive integer{unset}, got {value!r}" for name, value, unset in
              (("shard_tokens", shard_tokens, ""), ("chunk_docs", chunk_docs, ""),
               ("num_proc", num_proc, " (leave it out to use all cores)"),
               ("max_tokens", max_tokens, " (leave it out for no cap)"),
               ("max_documents", max_documents, " (leave it out to read every document)"))
              if not (value is None and unset) and (not isinstance(value, int) or value < 1)]
    if not isinstance(val_tokens, int) or val_tokens < 0:
        errors.append(f"val_tokens must be an integer >= 0, got {val_tokens!r}")
    if tokenizer not in BACKENDS:
        errors.append(f"tokenizer must be one of {BACKENDS}, got {tokenizer!r}")
    if errors:
        raise DataError("; ".join(errors))
    num_proc = num_proc or os.cpu_count() or 1
    out = Path(out_dir)
    check_out(out)  # before resolving the source, which hashes every file of it

    src = resolve_source(source, config=config, split=split, text_column=text_column, revision=revision,
                         txt_sample_by=txt_sample_by)
    ignored = [flag for flag, value, default in (("--config", config, None), ("--split", split, "train"),
                                                   ("--revision", revision, None)) if value != default]
    if src.kind != "hub" and ignored:  # they choose among a Hub dataset's files; a local source is read whole
        log.warning("%s: %s appl%s to Hub datasets only and %s ignored for %s", source, " and ".join(ignored),
                    "ies" if len(ignored) == 1 else "y", "is" if len(ignored) == 1 else "are",
                    "local files" if src.kind == "local" else "a built-in corpus")
    settings = _settings(src, shard_tokens, val_tokens, max_tokens, max_documents)
    with holding(out):  # a second data.prepare into the same folder is refused until this one ends
        manifest, records, replace = claim_folder(out, settings, overwrite)
        if finished(out, manifest, overwrite):
            return manifest
        replace = replace or manifest is not None  # a damaged finished folder, with --overwrite
        # Opened before anything in `out` is removed: with --overwrite, a source that cannot be read (a mistyped Hub
        # name, no network) leaves the previous dataset as it was.
        ds = src.open(streaming=streaming, cache_dir=cache_dir)
        if replace:
            clear_folder(out)  # only what prepare writes
            log.info("--overwrite: removed the previous contents of %s", out)
        for stale in remove_stale_temporaries(out):
            log.info("removed %s, a partial file from an interrupted run", stale.name)
        records = _verified_prefix(out, records)
        p = _progress_from(records)
        if records:
            log.info("resuming: %d finished shards verified and kept; continuing at document %d (+%d tokens)",
                     len(records), p.next_doc, p.skip_tokens)
        writer = _ShardWriter(out, settings, records, p)
        try:  # a full disk or a folder turned read-only: every file is written atomically, so the run resumes
            writer.save_state()  # exists before any new shard, so shards never lie around without a state file
            if val_tokens == 0:
                p.val_done = True
            log.info("source %s; %s shards of %d tokens; val >= %d tokens; tokenizer %s", source,
                     "resuming" if records else "writing", shard_tokens, val_tokens, _workers(tokenizer, num_proc))

            next_doc = p.next_doc
            if not (max_tokens is not None and p.tokens["train"] >= max_tokens):
                next_doc = _run(src, ds, writer, p, max_documents, chunk_docs, num_proc, tokenizer, progress)
            if not p.val_done and val_tokens > 0:
                have = p.tokens["val"]
                # the next problem such a source meets, said now rather than on the next run: a .txt read whole
                # is one document, which the (whole-document) validation split would take all of
                one_doc = (" Also split it into documents with --txt-sample-by paragraph: a .txt file is one "
                           "document by default, and the validation split takes whole documents, so it would take "
                           "all of it." if src.facts.get("txt_sample_by") == "document" and next_doc <= 1 else "")
                raise DataError(
                    f"{source} has only {have} tokens, and the validation split alone needs "
                    f"{val_tokens}: lower --val-tokens (e.g. --val-tokens {max(1, have // 10)}, a tenth of it) and "
                    f"re-run with --overwrite.{one_doc}"
                )
            writer.finish(next_doc)
            return _write_manifest(out, src, settings, writer.records, tokenizer)
        except OSError as err:  # reading the source raises DataError (explain_read_error): this is the writing
            raise DataError(
                f"could not write to {out} ({err.strerror or err}) after {len(writer.records)} finished shards: "
                "free some space (or make the folder writable), then re-run the same command: it keeps the "
                "finished shards and resumes where this run stopped.") from err


def _run(src: Source, ds, writer: _ShardWriter, p: _Progress, max_documents, chunk_docs, num_proc, backend,
         show_progress) -> int:
    """Stream the documents of `ds` (src opened) not yet written through map() into the writer; returns the next
    document index."""
    import datasets
    from tqdm.auto import tqdm

    first = p.next_doc
    if first:
        ds = ds.skip(first)
    total = src.known_length()
    if total is None and ds.info.splits and src.facts.get("split") in ds.info.splits:  # Hub cards often know it
        total = ds.info.splits[src.facts["split"]].num_examples or None
    if max_documents is not None:
        ds = ds.take(max(0, max_documents - first))
        total = min(total, max_documents) if total else max_documents
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # map()'s per-chunk bars would drown ours
    bar = tqdm(total=total, initial=first, unit="doc", unit_scale=True, disable=not show_progress, desc="prepare",
               dynamic_ncols=True)
    t0, tokens_done, doc = time.perf_counter(), 0, first
    no_text, first_no_text = 0, None  # documents whose text is null / missing (written as empty documents)
    try:
        batches = iter(ds.iter(batch_size=chunk_docs))
        while not writer.done:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except DataError:
                raise
            except Exception as err:  # a malformed row or file surfaces here, mid-stream
                raise src.explain_read_error(err) from err
            texts = batch[src.text_column]
            missing = _check_texts(texts, doc, src)
            if missing and first_no_text is None:
                first_no_text = missing[0]
            no_text += len(missing)
            flat, lens = _tokenize_chunk(texts, num_proc, backend)
            skip = p.skip_tokens if doc == first else 0
            if skip:  # resuming inside a document: its first `skip` tokens are in the last kept shard
                flat, lens = flat[skip:], lens.copy()
                lens[0] -= skip
            writer.feed(flat, lens, doc, skip)
            doc += len(texts)
            tokens_done += len(flat)
            rate = tokens_done / max(time.perf_counter() - t0, 1e-9)
            bar.update(len(texts))
            bar.set_postfix_str(f"{tokens_done / 1e6:.1f}M tok, {rate / 1e6:.2f}M tok/s", refresh=True)
    finally:
        bar.close()
        if not bars_were_off:
            datasets.utils.enable_progress_bars()
    if no_text:
        log.warning("%d of the %d documents read have no text (a null value, or a record without the key %r), the "
                    "first at index %d: each was written as an empty document (only the EOT token). If that is "
                    "not right, check --text-column and the source.", no_text, doc - first, src.text_column,
                    first_no_text)
    if doc == 0:
        raise DataError(f"{src.where} contains no "
                        "documents: check the source (and --split / --config for a Hub dataset).")
    return doc


def _check_texts(texts: list, first_doc: int, src: Source) -> list[int]:
    """Refuse a text column that does not hold strings (numbers, bytes, lists: a wrong --text-column, a binary
    parquet column, a JSON field that is a number in some rows); the tokenizer would fail with a traceback.
    None (a null value, a JSON record without the key) is an empty document, as encode_batch says: returns the
    indices of those, for a warning (datasets gives a JSON-lines record that lacks the key a null)."""
    bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)), None)
    if bad is not None:
        value = repr(texts[bad])
        value = value if len(value) <= 60 else value[:57] + "..."
        raise DataError(f"document {first_doc + bad} of {src.where} holds a value of type {type(texts[bad]).__name__} "
                        f"in column {src.text_column!r} ({value}), not text: pass --text-column NAME of the column "
                        "that holds the document text as strings, or fix that row.")
    return [first_doc + i for i, t in enumerate(texts) if t is None]


def _write_manifest(out: Path, src: Source, settings: dict, records: list[dict], backend: str) -> dict:
    import datasets

    created_with = {"tokenizer_backend": backend, "datasets": datasets.__version__, "numpy": np.__version__,
                    "python": sys.version.split()[0]}
    manifest = make_manifest(src.facts, settings, records, VAL_RULE, created_with)
    splits = manifest["splits"]
    if splits["train"]["tokens"] == 0:
        if src.facts.get("txt_sample_by") == "document" and splits["val"]["documents"] <= 1:
            raise DataError(f"the train split of {out} is empty: each .txt file is one document by default "
                            "(--txt-sample-by document), and the validation split takes whole documents, so it took "
                            "all of it. Split the text with --txt-sample-by paragraph (or line), and re-run with "
                            "--overwrite.")
        # Here val reached val_tokens (a source smaller than that is refused in prepare()), so the cause is the
        # whole-document rule: the document that crossed val_tokens was the last one there was.
        val, val_tokens = splits["val"], settings["val_tokens"]
        source = "what --max-documents lets in" if settings["max_documents"] else "the source"
        if val["documents"] == 1:
            fix = {"paragraph": "--txt-sample-by paragraph found no blank line to split it at, so use "
                                "--txt-sample-by line, or a source with more, smaller documents",
                   "line": "split the text into more lines or files"}.get(
                src.facts.get("txt_sample_by"), "use a source with more, smaller documents")
            raise DataError(
                f"the train split of {out} is empty: {source} is one document of {val['tokens']:,} tokens, more "
                f"than --val-tokens {val_tokens:,}, and the validation split takes whole documents, so it took all "
                f"of it. To fix: {fix}; then re-run with --overwrite.")
        raise DataError(
            f"the train split of {out} is empty: {source} is {val['documents']:,} documents of "
            f"{val['tokens']:,} tokens in all, and the validation split takes whole documents until it holds "
            f"--val-tokens {val_tokens:,}, which only the last one reached, so it took them all. Lower "
            f"--val-tokens well below {val['tokens']:,}, or use more documents; then re-run with --overwrite.")
    write_json(out / MANIFEST_NAME, manifest)  # last: its presence means every shard above is complete
    (out / STATE_NAME).unlink(missing_ok=True)
    log.info("wrote %s: %d val tokens (%d docs), %d train tokens (%d docs) in %d shards", out / MANIFEST_NAME,
             splits["val"]["tokens"], splits["val"]["documents"], splits["train"]["tokens"],
             splits["train"]["documents"], len(records))
    return manifest


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to each option's help, unless the option is required or its help already says
    what its default is (--num-proc's None means all cores)."""

    def _get_help_string(self, action):
        if action.required or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n\n")[0],
                                 formatter_class=_HelpFormatter)
    ap.add_argument("source", help="Hub dataset name, local file/glob/folder (.parquet, .jsonl, .json, .txt), "
                                   "or builtin:pydocs")
    ap.add_argument("--out", required=True, help="output folder (created; resumed if a run was interrupted)")
    ap.add_argument("--config", default=None, help="Hub dataset config (HuggingFaceFW/fineweb-edu: sample-10BT)")
    ap.add_argument("--split", default="train", help="Hub dataset split to read")
    ap.add_argument("--revision", default=None, help="Hub dataset revision (branch, tag or commit)")
    ap.add_argument("--text-column", default="text", help="column (field) holding the document text (jsonl, parquet, Hub)")
    ap.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=True,
                    help="stream rows (Hub: no full download first); --no-streaming downloads/converts first")
    ap.add_argument("--txt-sample-by", default="document", choices=("document", "paragraph", "line"),
                    help="what one document is in a .txt file: the whole file, each paragraph (split at blank "
                         "lines) or each line; blank ones are skipped (default: %(default)s)")
    ap.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file (uint16: 2 bytes each)")
    ap.add_argument("--val-tokens", type=int, default=DEFAULT_VAL_TOKENS,
                    help="validation split: the first whole documents until this many tokens (0: none)")
    ap.add_argument("--max-tokens", type=int, default=None, help="cap on train tokens")
    ap.add_argument("--max-documents", type=int, default=None, help="read only the first N documents")
    ap.add_argument("--num-proc", type=int, default=None,
                    help="tokenizer workers: threads in this one process for --tokenizer tiktoken (no process pool), "
                         f"map() worker processes for --tokenizer hf (default: all cores, {os.cpu_count()} here)")
    ap.add_argument("--chunk-docs", type=int, default=DEFAULT_CHUNK_DOCS, help="documents per map() call")
    ap.add_argument("--tokenizer", default="tiktoken", choices=BACKENDS, help="encoding backend (same ids)")
    ap.add_argument("--cache-dir", default=None, help="datasets cache folder (only used with --no-streaming)")
    ap.add_argument("--overwrite", action="store_true", help="replace a folder prepared with other settings")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(hyphenated(argv))  # train.py's underscore spelling works too (--val_tokens)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        prepare(args.source, args.out, config=args.config, split=args.split, text_column=args.text_column,
                revision=args.revision, streaming=args.streaming, txt_sample_by=args.txt_sample_by,
                shard_tokens=args.shard_tokens, val_tokens=args.val_tokens, max_tokens=args.max_tokens,
                max_documents=args.max_documents, num_proc=args.num_proc, chunk_docs=args.chunk_docs,
                tokenizer=args.tokenizer, cache_dir=args.cache_dir, overwrite=args.overwrite,
                progress=not args.no_progress)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:  # a source file or folder this user may not read (the output's are DataError)
        print(f"error: {permission_message(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
