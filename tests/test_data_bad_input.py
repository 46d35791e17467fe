"""Bad input to data.prepare: each case gets a DataError naming the file and the fix, from the CLI too."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.prepare import main, prepare
from data.shards import DataError


def run(source, out, **kw):
    return prepare(str(source), out, **{"shard_tokens": 1000, "val_tokens": 10, "progress": False, **kw})


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nothing/here.parquet does not exist: check the path"):
        run(tmp_path / "nothing/here.parquet", tmp_path / "out")
    with pytest.raises(DataError, match=r"matches no files"):
        run(tmp_path / "*.jsonl", tmp_path / "out")


def test_empty_dataset(tmp_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "empty.jsonl").write_text("")
    for name in ("empty.parquet", "empty.jsonl"):
        with pytest.raises(DataError, match=rf"{name}.*holds no documents"):
            run(tmp_path / name, tmp_path / "out")


def test_no_text_column(tmp_path):
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text('{"body": "a"}\n')
    for name, found in (("t.parquet", r"has no column 'text' \(columns: \['body'\]\)"),
                        ("t.jsonl", r"line 1 has no key 'text' \(\['body'\]\)")):
        with pytest.raises(DataError, match=rf"{name} {found}: pass --text-column"):
            run(tmp_path / name, tmp_path / "out")
    assert run(tmp_path / "t.parquet", tmp_path / "ok", text_column="body", val_tokens=1)["documents"] == 2


def test_malformed_files(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"bad.parquet is not a readable parquet file"):
        run(tmp_path / "bad.parquet", tmp_path / "out")
    # the broken line is past the cheap first-record check: it is found while streaming, then located
    lines = [json.dumps({"text": f"document {i}"}) for i in range(50)] + ['{"text": "unterminated']
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl line 51 is malformed JSON .*fix or remove that line"):
        run(tmp_path / "bad.jsonl", tmp_path / "out2")


def test_source_smaller_than_the_val_split(tmp_path):
    (tmp_path / "small.jsonl").write_text('{"text": "only a few words"}\n')
    with pytest.raises(DataError, match=r"has only 5 tokens.*needs 1000: lower --val-tokens"):
        run(tmp_path / "small.jsonl", tmp_path / "out", val_tokens=1000)


def test_unknown_builtin_and_bad_options(tmp_path):
    with pytest.raises(DataError, match=r"builtin:nope.*builtin:pydocs"):
        run("builtin:nope", tmp_path)
    with pytest.raises(DataError, match=r"shard_tokens must be a positive integer.*tokenizer must be one of"):
        run("builtin:pydocs", tmp_path, shard_tokens=0, tokenizer="sentencepiece")


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main([str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]) == 2
    assert "error: " in capsys.readouterr().err



def test_hub_name_is_read_from_the_hub_with_the_default_config(tmp_path):
    from data.sources import resolve_source

    src = resolve_source("HuggingFaceFW/fineweb-edu")
    assert src.kind == "hub" and src.facts["config"] == "sample-10BT" and src.facts["split"] == "train"
    assert resolve_source("HuggingFaceFW/fineweb-edu", config="CC-MAIN-2024-10").facts["config"] == "CC-MAIN-2024-10"
    # Offline (tests/conftest.py): the real Hub code path runs and fails with a message that names the way out.
    with pytest.raises(DataError, match=r"could not load Hub dataset 'HuggingFaceFW/fineweb-edu' \(config "
                                        r"'sample-10BT'.*local path"):
        run("HuggingFaceFW/fineweb-edu", tmp_path / "out")
    # a run that failed before writing any shard does not bind the folder to its settings
    assert run("builtin:pydocs", tmp_path / "out", shard_tokens=200_000, max_documents=30)["documents"] == 30


def test_a_txt_file_smaller_than_the_val_split_hears_of_both_fixes_at_once(tmp_path):
    """Tiny Shakespeare with the defaults: too small for the 10M-token val split, and one document, which the val
    split would then take whole. Both were found one run apart (three runs to a prepared folder)."""
    src = tmp_path / "book.txt"
    src.write_text("\n\n".join(f"Paragraph {i} of a small book, with a few words in it." for i in range(60)))
    with pytest.raises(DataError, match=r"has only \d+ tokens.*lower --val-tokens \(e.g. --val-tokens \d+, a tenth "
                                        r"of it\).*Also split it into documents with --txt-sample-by paragraph") as err:
        prepare(str(src), tmp_path / "out", val_tokens=100_000, progress=False)
    have, suggested = map(int, re.search(r"has only (\d+) tokens.*--val-tokens (\d+), a tenth", str(err.value)).groups())
    assert suggested == have // 10 and have > 0
    with pytest.raises(DataError) as err:  # split into documents already: only the first fix applies
        prepare(str(src), tmp_path / "out2", val_tokens=100_000, txt_sample_by="paragraph", progress=False)
    assert "lower --val-tokens" in str(err.value) and "--txt-sample-by" not in str(err.value)


def test_a_txt_file_taken_whole_by_the_val_split_suggests_splitting_it(tmp_path):
    """One .txt = one document by default; the val split takes whole documents: the message says how to split."""
    src = tmp_path / "book.txt"
    src.write_text("\n\n".join(f"Paragraph {i} of a small book, with a few words in it." for i in range(60)))
    with pytest.raises(DataError, match="--txt-sample-by paragraph"):
        prepare(str(src), tmp_path / "one", val_tokens=50, progress=False)
    manifest = prepare(str(src), tmp_path / "many", val_tokens=50, txt_sample_by="paragraph", progress=False)
    assert manifest["splits"]["train"]["tokens"] > 0 and manifest["splits"]["val"]["documents"] > 1


def test_cli_takes_train_py_underscore_spelling_of_its_flags(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"text": "one two three four"}\n{"text": "five six seven eight"}\n')
    out = tmp_path / "o"
    assert main([str(tmp_path / "docs.jsonl"), "--out", str(out), "--val_tokens", "3", "--shard_tokens=1000",
                 "--no_progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["val_tokens"] == 3 and manifest["settings"]["shard_tokens"] == 1000


def test_out_that_is_an_existing_file_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "docs.jsonl").write_text('{"text": "one two three four"}\n{"text": "five six seven eight"}\n')
    mine = tmp_path / "notes.txt"
    mine.write_text("the user's own file")
    with pytest.raises(DataError, match=r"notes.txt is an existing file, not a folder.*new or empty folder"):
        run(tmp_path / "docs.jsonl", mine)
    with pytest.raises(DataError, match=r"lies inside .*notes.txt, which is a file"):
        run(tmp_path / "docs.jsonl", mine / "sub")
    assert main([str(tmp_path / "docs.jsonl"), "--out", str(mine), "--no-progress"]) == 2  # no traceback
    assert "is an existing file" in capsys.readouterr().err
    assert mine.read_text() == "the user's own file"


@pytest.mark.parametrize("flag", ["--max-tokens", "--max-documents", "--num-proc"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_or_negative_counts_are_refused_before_anything_runs(tmp_path, capsys, flag, value):
    """0 used to pass the checks (`x or 1`) and then failed later with a false reason or meant all cores."""
    (tmp_path / "docs.jsonl").write_text('{"text": "one two three four"}\n{"text": "five six seven eight"}\n')
    out = tmp_path / "o"
    assert main([str(tmp_path / "docs.jsonl"), "--out", str(out), flag, value, "--val-tokens", "3",
                 "--no-progress"]) == 2
    name = flag[2:].replace("-", "_")
    assert f"{name} must be a positive integer (leave it out" in capsys.readouterr().err
    assert not out.exists()


def test_val_taking_one_large_document_says_so_not_that_the_source_is_small(tmp_path):
    """A .txt without blank lines is ONE paragraph-document; it crossed --val-tokens, so val took it whole. The
    message used to say "the source is smaller than --val-tokens" (fineweb_sample.txt: 217,889 tokens vs 10,000)."""
    src = tmp_path / "no_blank_lines.txt"
    src.write_text("\n".join(f"Line {i} of a text that has no blank line anywhere in it." for i in range(200)))
    with pytest.raises(DataError, match=r"the source is one document of [\d,]+ tokens, more than --val-tokens 50,"
                                        r".*no blank line.*--txt-sample-by line") as err:
        run(src, tmp_path / "para", val_tokens=50, txt_sample_by="paragraph")
    assert "smaller than --val-tokens" not in str(err.value)
    manifest = run(src, tmp_path / "line", val_tokens=50, txt_sample_by="line")  # the suggested fix works
    assert manifest["splits"]["train"]["documents"] > 0
    # several documents, the last one crossing --val-tokens: val took them all, and the message says that
    (tmp_path / "docs.jsonl").write_text("".join(f'{{"text": "{t}"}}\n' for t in ("a b", "c d", "e " * 100)))
    with pytest.raises(DataError, match=r"the source is 3 documents of \d+ tokens in all.*only the last one "
                                        r"reached.*Lower --val-tokens"):
        run(tmp_path / "docs.jsonl", tmp_path / "jsonl", val_tokens=10)


def test_rerun_with_another_txt_sample_by_names_that_setting(tmp_path):
    """The refusal used to say only `differing: ['source']`; it now names the setting inside it and both values."""
    src = tmp_path / "book.txt"
    src.write_text("\n\n".join(f"Paragraph {i}, a line.\nAnd a second line." for i in range(40)))
    out = tmp_path / "out"
    run(src, out, txt_sample_by="paragraph")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match=r"differing: \['source.txt_sample_by'\] \(source.txt_sample_by "
                                        r"\(--txt-sample-by\): 'paragraph' -> 'line'\)\); nothing was changed"):
        run(src, out, txt_sample_by="line")
    with pytest.raises(DataError, match=r"\['shard_tokens', 'source.txt_sample_by'\] \(shard_tokens "
                                        r"\(--shard-tokens\): 1000 -> 2000; source.txt_sample_by"):
        run(src, out, txt_sample_by="line", shard_tokens=2000)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "manifest.json").unlink()  # shards alone: what made them is unknown, said as such
    with pytest.raises(DataError, match=r"holds shards but neither manifest.json nor prepare_state.json"):
        run(src, out, txt_sample_by="paragraph")


def test_a_text_column_that_is_not_strings_is_refused_with_the_row(tmp_path, capsys):
    """Numbers, bytes or lists in the text column used to reach the tokenizer: a TypeError traceback mid-run."""
    pq.write_table(pa.table({"text": pa.array([b"abc", b"def"], pa.binary())}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"text": ["one", "two"], "n": [1, 2]}), tmp_path / "n.parquet")
    # a JSON field that is a string in the first rows and a number further down (past the cheap first-line check)
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(40))
                                          + '{"text": 7}\n')
    for source, column, found in (("bytes.parquet", "text", r"document 0 .* type bytes in column 'text' \(b'abc'\)"),
                                  ("n.parquet", "n", r"document 0 .* type int in column 'n' \(1\)"),
                                  ("mixed.jsonl", "text", r"document 40 .* type int in column 'text' \(7\)")):
        with pytest.raises(DataError, match=found + r", not text: pass --text-column NAME"):
            run(tmp_path / source, tmp_path / "out", text_column=column, val_tokens=1)
    assert main([str(tmp_path / "bytes.parquet"), "--out", str(tmp_path / "cli"), "--no-progress"]) == 2
    assert "holds a value of type bytes in column 'text'" in capsys.readouterr().err


def test_an_existing_file_whose_name_looks_like_a_glob_is_read(tmp_path):
    """"part[1].jsonl" exists, but was taken as a glob (matching "part1.jsonl"): "matches no files"."""
    (tmp_path / "part[1].jsonl").write_text('{"text": "one two three"}\n{"text": "four five six"}\n')
    assert run(tmp_path / "part[1].jsonl", tmp_path / "out", val_tokens=1)["documents"] == 2


def test_documents_without_text_are_counted_in_a_warning(tmp_path, caplog):
    """Records that lack the text key (here every other line uses "content") were silently written as empty
    documents: half the corpus lost without a word."""
    (tmp_path / "keys.jsonl").write_text("".join(json.dumps({"text" if i % 2 == 0 else "content": f"doc {i}"}) + "\n"
                                                 for i in range(10)))
    caplog.set_level("WARNING", logger="data.prepare")
    assert run(tmp_path / "keys.jsonl", tmp_path / "out", val_tokens=1)["documents"] == 10
    assert "5 of the 10 documents read have no text (a null value, or a record without the key 'text'), the " \
           "first at index 1" in caplog.text


def test_json_files_with_different_fields_say_how_to_read_them(tmp_path):
    # datasets' JSON reader takes the first file's fields for all; other fields in a later file fail to cast
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text("".join(f'{{"text": "doc {i}", "id": {i}}}\n' for i in range(20)))
    (tmp_path / "src" / "b.jsonl").write_text("".join(f'{{"text": "doc {i}", "url": "u{i}"}}\n' for i in range(20)))
    with pytest.raises(DataError, match=r"different fields.*keep only 'text'.*parquet"):
        run(tmp_path / "src", tmp_path / "out", val_tokens=10)


def test_hub_only_flags_on_a_local_source_are_said_to_be_ignored(tmp_path, caplog):
    """`--config sample-10BT --split validation` with a local file read the whole file without a word."""
    (tmp_path / "t.jsonl").write_text('{"text": "one two three"}\n{"text": "four five six"}\n')
    with caplog.at_level("WARNING", logger="data.prepare"):
        run(tmp_path / "t.jsonl", tmp_path / "out", val_tokens=1, config="sample-10BT", split="validation")
    assert "--config and --split apply to Hub datasets only and are ignored for local files" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="data.prepare"):
        run(tmp_path / "t.jsonl", tmp_path / "out2", val_tokens=1)
    assert "ignored" not in caplog.text


@pytest.mark.parametrize("sample_by, documents", [
    ("line", ["First line.", "Second line.", "  indented line", "Last line."]),
    ("paragraph", ["First line.\nSecond line.", "  indented line\nLast line."]),
])
def test_blank_lines_and_paragraphs_of_a_txt_are_skipped_not_made_empty_documents(tmp_path, tiktoken_gpt2,
                                                                                   sample_by, documents):
    """datasets' text modes make every blank line (line mode) or extra blank-line run (paragraph mode) a row;
    each used to become a document of one EOT token."""
    import numpy as np

    from data.tokenizer import EOT_ID

    src = tmp_path / "book.txt"
    src.write_text("First line.\nSecond line.\n\n\n\n  \n\n  indented line\nLast line.\n\n")
    manifest = run(src, tmp_path / "out", val_tokens=0, txt_sample_by=sample_by)
    tokens = np.concatenate([np.load(tmp_path / "out" / s["file"]) for s in manifest["shards"]])
    expected = [t for doc in documents for t in [EOT_ID] + tiktoken_gpt2.encode_ordinary(doc)]
    assert tokens.tolist() == expected and manifest["documents"] == len(documents)
    assert manifest["source"]["blank_documents"] == "skipped"
