"""Turning a SOURCE string into a `datasets` dataset of documents, plus the facts that identify it.

SOURCE is one of:
- `builtin:pydocs`: the offline corpus of `data.builtin_corpus` (in-memory `Dataset`);
- a local file, glob or folder of `.parquet`, `.jsonl`/`.json` (optionally `.gz`) or `.txt` files, read with
  `load_dataset("parquet" | "json" | "text", data_files=...)`. A folder means every supported file under it,
  recursively, sorted by path (the files data.prepare wrote into a prepared folder inside it, such as an --out
  there, are not documents and are left out); all files must share one format. A `.txt` file is ONE document by default
  (`txt_sample_by="document"`; "paragraph" and "line" are the other `datasets` text modes, whose blank
  paragraphs / lines are skipped, not made empty documents);
- a Hub dataset name, e.g. `HuggingFaceFW/fineweb-edu` (config `sample-10BT` unless another is given),
  read with `load_dataset(name, config, split=..., revision=..., streaming=...)`.

Local files are checked one by one before reading (readable, has the text column, not empty) so errors name
the file; their sha256 goes into the facts, so resuming on changed input is refused.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from data.shards import FORMAT, MANIFEST_NAME, STATE_NAME, DataError, sha256_file, written_by_prepare

log = logging.getLogger(__name__)

FINEWEB_EDU = "HuggingFaceFW/fineweb-edu"
FINEWEB_EDU_DEFAULT_CONFIG = "sample-10BT"
BUILTIN_NAMES = ("builtin:pydocs",)
# file suffix -> datasets packaged builder
LOCAL_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json",
                 ".txt": "text"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Source:
    """A resolved SOURCE. `facts` goes into the manifest; `identity()` decides whether a resume is allowed."""

    kind: str  # "builtin" | "local" | "hub"
    facts: dict
    text_column: str = "text"
    _docs: tuple[str, ...] | None = field(default=None, repr=False)  # builtin only

    def identity(self) -> dict:
        """The facts that determine the token stream (local paths dropped: moving the files is harmless)."""
        facts = json.loads(json.dumps(self.facts))
        for f in facts.get("files", []):
            f.pop("path", None)
        return facts

    @property
    def where(self):
        """How messages name the source: its name (Hub, built-in), else its list of file paths."""
        return self.facts.get("name") or [f["path"] for f in self.facts.get("files", [])]

    def known_length(self) -> int | None:
        return self.facts.get("documents") or self.facts.get("rows")

    def open(self, streaming: bool, cache_dir: str | None = None):
        """A `datasets.Dataset` / `IterableDataset` whose only column is this source's text column."""
        from datasets import Dataset, load_dataset

        if self.kind == "builtin":
            return Dataset.from_dict({"text": list(self._docs)})
        if self.kind == "local":
            # datasets reads data_files as glob patterns: escaped, "part[1].jsonl" is that file, not "part1.jsonl"
            paths = [f["path"] for f in self.facts["files"]]
            kwargs = {"text": {"sample_by": self.facts.get("txt_sample_by")},
                      # only the text column is read: files whose other columns differ (a folder mixing exports
                      # with other metadata) are read together, where datasets refused them ("column names don't
                      # match"), and the other columns' bytes are never decoded
                      "parquet": {"columns": [self.text_column]}}.get(self.facts["format"], {})
            try:
                ds = load_dataset(self.facts["format"], data_files=[glob.escape(p) for p in paths], split="train",
                                  streaming=streaming, cache_dir=cache_dir, **kwargs)
            except Exception as err:
                raise DataError(f"datasets could not read {paths}: {err}") from err
            if self.facts.get("blank_documents") == "skipped":
                # datasets' "line" mode makes every blank line a row, "paragraph" mode every run of extra blank
                # lines: as documents they would be a lone EOT each
                ds = ds.filter(lambda texts: [bool(t.strip()) for t in texts], input_columns="text", batched=True)
        else:
            f = self.facts
            try:
                ds = load_dataset(f["name"], f["config"], split=f["split"], revision=f["revision"],
                                  streaming=streaming, cache_dir=cache_dir)
            except Exception as err:
                raise DataError(
                    f"could not load Hub dataset {f['name']!r} (config {f['config']!r}, split {f['split']!r}, "
                    f"revision {f['revision']!r}): {type(err).__name__}: {err}. Check the name, --config and network "
                    f"access (HF_HUB_OFFLINE must be unset), or download the files and pass their local path "
                    f"(no local file or folder named {f['name']!r} exists)."
                ) from err
        columns = ds.column_names
        if columns is None:  # a streaming dataset without declared features: look at the first row
            try:
                first = next(iter(ds), None)
            except Exception as err:  # reading the first block already failed: say which file and line
                raise self.explain_read_error(err) from err
            columns = list(first) if first is not None else [self.text_column]
        if self.text_column not in columns:
            raise DataError(
                f"{self.facts.get('name') or self.facts.get('files')} has no column {self.text_column!r} "
                f"(columns: {columns}): pass --text-column NAME."
            )
        return ds.select_columns([self.text_column])

    def explain_read_error(self, err: Exception) -> DataError:
        """Turn an exception raised while iterating the data into a DataError that names the bad file."""
        if self.kind == "local":
            for f in self.facts["files"]:
                path = Path(f["path"])
                if self.facts["format"] == "json":
                    _check_json(path, self.text_column, full=True)  # raises, naming file and line
                elif self.facts["format"] == "text":
                    try:
                        path.read_bytes().decode("utf-8")
                    except UnicodeDecodeError as bad:
                        return DataError(f"{path} is not UTF-8 text ({bad}): convert it with iconv first.")
            files = [f["path"] for f in self.facts["files"]]
            hint = "check those files."
            if self.facts["format"] == "json" and "column names don't match" in str(err):
                # datasets' JSON reader wants one set of fields in every file (it has no column selection)
                hint = (f"their records have different fields, and datasets reads a set of JSON files only when "
                        f"every record has the same ones: keep only {self.text_column!r} in each (e.g. `jq -c "
                        f"'{{{self.text_column}}}' IN > OUT`), or convert them to parquet, which is read by that "
                        "column alone.")
            return DataError(f"reading {files} failed ({type(err).__name__}: {err}): {hint}")
        name = self.facts.get("name")
        return DataError(f"reading {name} failed ({type(err).__name__}: {err}): check the source and network.")


def resolve_source(source: str, *, config: str | None = None, split: str = "train", text_column: str = "text",
                   revision: str | None = None, txt_sample_by: str = "document") -> Source:
    """Classify SOURCE and collect its facts; raises DataError with the fix for anything unusable."""
    if source.startswith("builtin:"):
        if source not in BUILTIN_NAMES:
            raise DataError(f"unknown built-in corpus {source!r}: the built-in corpora are {list(BUILTIN_NAMES)}.")
        from data.builtin_corpus import corpus_facts, pydocs_documents

        docs = pydocs_documents()
        return Source("builtin", corpus_facts(docs), "text", docs)
    if _looks_local(source):
        return _local_source(source, text_column, txt_sample_by)
    if HUB_ID.match(source):
        return _hub_source(source, config, split, text_column, revision)
    raise DataError(f"{source!r} is neither an existing path, a glob with matches, a Hub dataset name nor builtin:*.")


def _looks_local(source: str) -> bool:
    if Path(source).expanduser().exists() or any(c in source for c in "*?["):
        return True
    # A missing path that is clearly a path (not `owner/name`): report it as missing instead of asking the Hub.
    return (source.startswith((".", "/", "~")) or source.count("/") > 1
            or any(source.endswith(s) for s in LOCAL_FORMATS))


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(LOCAL_FORMATS, key=len, reverse=True) if name.endswith(s)), None)


def _local_source(source: str, text_column: str, txt_sample_by: str) -> Source:
    path = Path(source).expanduser()
    # An existing file or folder is taken as it is, even when its name holds glob characters ("part[1].jsonl").
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):  # rglob would find nothing, and "holds no files" would mislead
            raise PermissionError(13, "Permission denied", str(path))
        files = _without_prepared_folders(sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p)))
        if not files:
            from data.shards import other_tools_shards_advice

            tokens = other_tools_shards_advice(path, {p.name for p in path.iterdir()})
            raise DataError(f"folder {path} holds no {sorted(LOCAL_FORMATS)} files: "
                            f"{tokens or 'point SOURCE at the data files'}.")
    elif path.is_file():
        files = [path]
    elif any(c in source for c in "*?["):
        files = _without_prepared_folders(sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                                                 if Path(p).is_file()))
        if not files:
            raise DataError(f"the glob {source!r} matches no files: check the pattern (quote it in the shell).")
    else:
        raise DataError(f"{path} does not exist: check the path (relative paths start from {Path.cwd()}).")
    unknown = [str(f) for f in files if not _suffix(f)]
    if unknown:
        raise DataError(f"unsupported file type: {unknown[:3]}; supported: {sorted(LOCAL_FORMATS)}.")
    formats = {LOCAL_FORMATS[_suffix(f)] for f in files}
    if len(formats) > 1:
        raise DataError(f"{source!r} mixes formats {sorted(formats)}: prepare one format per run.")
    fmt = formats.pop()
    if fmt == "text" and txt_sample_by not in ("document", "paragraph", "line"):
        raise DataError(f"txt_sample_by must be document, paragraph or line, not {txt_sample_by!r}.")
    entries, rows = [], 0
    for f in files:
        n = _check_local_file(f, fmt, text_column)
        if n == 0:
            log.warning("skipping %s: it holds no documents", f)
            continue
        rows = rows + n if (n is not None and rows is not None) else None
        entries.append({"path": str(f.resolve()), "name": f.name, "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    if not entries:
        raise DataError(f"{source!r} holds no documents (every file is empty): check that you exported the data.")
    facts = {"kind": "local", "format": fmt, "files": entries, "text_column": text_column}
    if fmt == "text":
        facts["txt_sample_by"] = txt_sample_by
        if txt_sample_by != "document":  # in the facts: an older prepare that kept them is not resumed by this one
            facts["blank_documents"] = "skipped"
        text_column = "text"
    if rows is not None:
        facts["rows"] = rows
    return Source("local", facts, text_column)


def _without_prepared_folders(files: list[Path]) -> list[Path]:
    """`files` less those data.prepare wrote into a prepared folder found inside a source folder or glob (e.g. an
    --out inside the source folder). Read as documents, its manifest.json / prepare_state.json made every re-run
    of that --out (resume, verify) fail with "malformed JSON" or "mixes formats"."""
    prepared = {folder for folder in {f.parent for f in files} if _is_prepared_folder(folder)}
    kept = [f for f in files if not (f.parent in prepared and written_by_prepare(f.name))]
    for folder in sorted(prepared):
        log.info("ignoring the files data.prepare wrote in %s (a prepared folder, not source data)", folder)
    return kept


def _is_prepared_folder(folder: Path) -> bool:
    """Whether `folder` is a data.prepare output, finished (a manifest.json of our format) or not (a state file)."""
    if (folder / STATE_NAME).is_file():
        return True
    try:
        return json.loads((folder / MANIFEST_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):  # none, unreadable, not JSON, not an object: not ours
        return False


def _check_local_file(path: Path, fmt: str, text_column: str) -> int | None:
    """Open the cheap part of one file; returns its row count when known (0 = empty), raises DataError naming it."""
    if path.stat().st_size == 0:
        return 0
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path)
        except Exception as err:
            raise DataError(f"{path} is not a readable parquet file ({err}): re-export or re-download it.") from err
        names = meta.schema_arrow.names
        if text_column not in names:
            raise DataError(f"{path} has no column {text_column!r} (columns: {names}): pass --text-column NAME.")
        return meta.metadata.num_rows
    if fmt == "json":
        return _check_json(path, text_column)
    return None  # text: any UTF-8 file is valid; decoding errors surface when read


def _check_json(path: Path, text_column: str, full: bool = False) -> int | None:
    """Check a JSON-lines file (or JSON array file) in Python, naming the bad line.

    Cheap by default (only the first record of a JSON-lines file: its row count stays unknown); `full=True`
    scans every line, which `Source.explain_read_error` does only after datasets failed to read the data.
    """
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            head = f.read(1 << 16).lstrip()
            f.seek(0)
            if head.startswith("["):  # one JSON array of records: datasets loads it whole anyway
                records = json.load(f)
                if records and isinstance(records[0], dict) and text_column not in records[0]:
                    raise DataError(f"{path} records have no key {text_column!r} (keys: {list(records[0])}): "
                                    "pass --text-column NAME.")
                return len(records)
            n = 0
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path} line {lineno} is malformed JSON ({err.msg}, column {err.colno}): "
                                    "fix or remove that line.") from err
                if not isinstance(record, dict) or text_column not in record:
                    keys = list(record) if isinstance(record, dict) else type(record).__name__
                    raise DataError(f"{path} line {lineno} has no key {text_column!r} ({keys}): "
                                    "pass --text-column NAME or fix the file.")
                n += 1
                if not full:
                    return None
            return n
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is malformed JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
                        "fix the file.") from err
    except PermissionError:
        raise  # not the file's content: said as a permission problem by the command line
    except (UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read as UTF-8 JSON ({err}): re-export it.") from err


def _hub_source(name: str, config: str | None, split: str, text_column: str, revision: str | None) -> Source:
    if config is None and name == FINEWEB_EDU:
        config = FINEWEB_EDU_DEFAULT_CONFIG
    resolved = revision
    try:  # pin the commit so that a resume or a re-run reads exactly the same data
        from huggingface_hub import HfApi

        resolved = HfApi().dataset_info(name, revision=revision).sha
    except Exception as err:  # offline, private, or a typo; load_dataset will say which
        log.warning("could not resolve the revision of %s (%s); recording %r", name, type(err).__name__, revision)
    facts = {"kind": "hub", "name": name, "config": config, "split": split,
             "revision": resolved, "requested_revision": revision, "text_column": text_column}
    return Source("hub", facts, text_column)
