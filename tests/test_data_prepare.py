"""data.prepare: the token stream equals tiktoken's GPT-2 encoding, the manifest is complete and true, the val
split follows its rule, and the output does not depend on chunking, process count, streaming or backend."""

import hashlib
import json
import platform

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.prepare import prepare
from data.shards import NPY_HEADER_BYTES
from data.tokenizer import EOT_ID, TOKENIZER_FINGERPRINT

EDU_150 = "fineweb-edu/fineweb_edu_150docs.parquet"


def stream(out, split=None):
    manifest = json.loads((out / "manifest.json").read_text())
    parts = [np.load(out / s["file"]) for s in manifest["shards"] if split in (None, s["split"])]
    return np.concatenate(parts), manifest


def reference(enc, texts):
    return np.array([t for doc in texts for t in [EOT_ID] + enc.encode_ordinary(doc)], dtype=np.int64)


@pytest.fixture(scope="module")
def edu150(shared_data, tmp_path_factory):
    """The 150-document FineWeb-Edu file prepared with small shards and 2 tokenizer workers (tiktoken: threads)."""
    out = tmp_path_factory.mktemp("edu150")
    prepare(str(shared_data(EDU_150)), out, shard_tokens=30_000, val_tokens=20_000, num_proc=2, progress=False)
    texts = pq.read_table(shared_data(EDU_150)).column("text").to_pylist()
    return out, texts


def test_stream_equals_tiktoken_gpt2_for_every_document_in_order(edu150, tiktoken_gpt2):
    out, texts = edu150
    tokens, manifest = stream(out)
    assert len(manifest["shards"]) >= 4  # several shards, so boundaries are crossed
    np.testing.assert_array_equal(tokens.astype(np.int64), reference(tiktoken_gpt2, texts))


def test_manifest_records_true_facts(edu150, shared_data):
    out, texts = edu150
    tokens, m = stream(out)
    assert m["tokenizer"] == {**m["tokenizer"], "fingerprint": TOKENIZER_FINGERPRINT, "vocab_size": 50257,
                              "eot_id": EOT_ID}
    assert m["dtype"] == "uint16" and m["documents"] == len(texts) and m["tokens"] == len(tokens)
    assert m["source"]["files"][0]["sha256"] == hashlib.sha256(shared_data(EDU_150).read_bytes()).hexdigest()
    for s in m["shards"]:
        path = out / s["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == s["sha256"]
        raw = np.memmap(path, dtype=np.uint16, mode="r", offset=NPY_HEADER_BYTES)  # the raw reading promised
        np.testing.assert_array_equal(raw, np.load(path))
        assert len(raw) == s["tokens"] and int((raw == EOT_ID).sum()) == s["documents"]
    train = [s for s in m["shards"] if s["split"] == "train"]
    assert all(s["tokens"] == 30_000 for s in train[:-1])  # only the last shard of a split is short
    assert not (out / "prepare_state.json").exists()


def test_val_split_is_the_first_whole_documents_reaching_val_tokens(edu150):
    out, texts = edu150
    val, m = stream(out, "val")
    train, _ = stream(out, "train")
    n_val = m["splits"]["val"]["documents"]
    doc_lengths = np.diff(np.flatnonzero(np.append(np.concatenate([val, train]) == EOT_ID, True)))
    assert val[0] == EOT_ID and train[0] == EOT_ID  # no document is split between val and train
    assert doc_lengths[:n_val].sum() == len(val) >= 20_000 > doc_lengths[: n_val - 1].sum()
    assert m["splits"]["train"]["documents"] == len(texts) - n_val


def test_output_independent_of_chunking_processes_streaming_and_backend(edu150, shared_data, tmp_path):
    out, _ = edu150
    ref = [s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]]
    other = tmp_path / "other"
    prepare(str(shared_data(EDU_150)), other, shard_tokens=30_000, val_tokens=20_000, num_proc=1, chunk_docs=7,
            streaming=False, cache_dir=str(tmp_path / "cache"), tokenizer="hf", progress=False)
    assert [s["sha256"] for s in json.loads((other / "manifest.json").read_text())["shards"]] == ref


def test_literal_endoftext_inside_a_document_is_ordinary_text(tmp_path, tiktoken_gpt2):
    texts = ["Before <|endoftext|> after.", "<|endoftext|>", "plain text", "a<|endoftext|>b " * 50]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    prepare(str(src), out, shard_tokens=64, val_tokens=1, num_proc=2, progress=False)
    tokens, m = stream(out)
    np.testing.assert_array_equal(tokens.astype(np.int64), reference(tiktoken_gpt2, texts))
    assert int((tokens == EOT_ID).sum()) == len(texts) == m["documents"]


def test_max_documents_and_max_tokens(edu150, shared_data, tmp_path):
    out, _ = edu150
    full, _ = stream(out)
    prepare(str(shared_data(EDU_150)), tmp_path / "a", shard_tokens=30_000, val_tokens=20_000, max_documents=60,
            progress=False)
    a, ma = stream(tmp_path / "a")
    assert ma["documents"] == 60 and np.array_equal(a, full[: len(a)]) and full[len(a)] == EOT_ID
    prepare(str(shared_data(EDU_150)), tmp_path / "b", shard_tokens=30_000, val_tokens=20_000, max_tokens=12_345,
            progress=False)
    b, mb = stream(tmp_path / "b")
    assert mb["splits"]["train"]["tokens"] == 12_345 and np.array_equal(b, full[: len(b)])


def test_builtin_corpus_is_offline_deterministic_and_sized_for_the_quick_start(tmp_path):
    from data.builtin_corpus import corpus_facts, pydocs_documents

    docs = pydocs_documents()
    assert len(docs) > 150 and 1_000_000 < sum(map(len, docs)) < 2_500_000  # ~1.4M characters on CPython 3.11
    m = prepare("builtin:pydocs", tmp_path, shard_tokens=131_072, val_tokens=32_768, progress=False)
    assert 250_000 < m["tokens"] < 600_000 and m["documents"] == len(docs)
    assert m["source"]["sha256"] == corpus_facts(docs)["sha256"] and m["source"]["python"] == platform.python_version()


def test_txt_file_is_one_document_by_default(shared_data, tmp_path, tiktoken_gpt2):
    src = shared_data("tinyshakespeare/input.txt")
    prepare(str(src), tmp_path, shard_tokens=100_000, val_tokens=0, max_tokens=5_000, progress=False)
    tokens, m = stream(tmp_path)
    assert m["documents"] == 1 and tokens[0] == EOT_ID and int((tokens == EOT_ID).sum()) == 1
    expected = reference(tiktoken_gpt2, [src.read_text()])[: len(tokens)]
    np.testing.assert_array_equal(tokens.astype(np.int64), expected)


def test_parquet_folder_and_glob_sources_read_files_in_sorted_order(tmp_path, tiktoken_gpt2):
    folder = tmp_path / "src"
    folder.mkdir()
    texts = [f"document number {i} " * (i + 1) for i in range(12)]
    for part, lo in (("b", 6), ("a", 0)):  # written out of order on purpose
        pq.write_table(pa.table({"text": texts[lo : lo + 6], "other": list(range(6))}), folder / f"part-{part}.parquet")
    for source, out in ((folder, tmp_path / "o1"), (str(folder / "part-*.parquet"), tmp_path / "o2")):
        prepare(str(source), out, shard_tokens=50, val_tokens=20, progress=False)
        tokens, m = stream(out)
        np.testing.assert_array_equal(tokens.astype(np.int64), reference(tiktoken_gpt2, texts))
        assert [f["name"] for f in m["source"]["files"]] == ["part-a.parquet", "part-b.parquet"]


def test_num_proc_is_threads_for_tiktoken_and_processes_for_hf_as_log_and_help_say(tmp_path, monkeypatch, caplog,
                                                                                   capsys):
    """The log said 'tiktoken x 2 processes' and --help 'tokenizer processes (default: all cores) (default: None)'
    while tiktoken runs threads in one process (map() gets no num_proc); now all three say what happens."""
    import logging

    import datasets

    from data.prepare import main

    seen = []
    real_map = datasets.Dataset.map

    def spy(self, function, *args, **kwargs):
        seen.append((kwargs.get("num_proc"), kwargs.get("fn_kwargs")))
        return real_map(self, function, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "map", spy)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(6)))
    with caplog.at_level(logging.INFO, logger="data.prepare"):
        prepare(str(src), tmp_path / "t", val_tokens=1, num_proc=2, progress=False)
        assert seen == [(None, {"backend": "tiktoken", "threads": 2})]  # no process pool: 2 threads
        assert "tokenizer tiktoken on 2 threads in this process (no process pool)" in caplog.text
        seen.clear()
        prepare(str(src), tmp_path / "h", val_tokens=1, num_proc=2, tokenizer="hf", progress=False)
        assert seen == [(2, {"backend": "hf"})]  # map()'s 2 worker processes
        assert "tokenizer hf in 2 map() worker processes" in caplog.text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    num_proc = text[text.index("--num-proc NUM_PROC tokenizer"):text.index("--chunk-docs CHUNK_DOCS documents")]
    assert "threads in this one process for --tokenizer tiktoken" in num_proc and "processes" in num_proc
    assert num_proc.count("(default:") == 1 and "None" not in num_proc


def test_parquet_files_with_different_other_columns_are_read_together(tmp_path, tiktoken_gpt2):
    """datasets refused the folder ("Couldn't cast ... because column names don't match"): only text is read now."""
    folder = tmp_path / "src"
    folder.mkdir()
    texts = [f"document {i} " * (i + 3) for i in range(6)]
    pq.write_table(pa.table({"text": texts[:3], "id": [1, 2, 3]}), folder / "a.parquet")
    pq.write_table(pa.table({"url": ["u", "v", "w"], "text": texts[3:]}), folder / "b.parquet")
    prepare(str(folder), tmp_path / "out", shard_tokens=50, val_tokens=10, progress=False)
    tokens, _ = stream(tmp_path / "out")
    np.testing.assert_array_equal(tokens.astype(np.int64), reference(tiktoken_gpt2, texts))
