"""data.import_shards: build-nanogpt's .npy and llm.c's .bin token shards become a prepared folder, the same tokens
data.prepare writes from the same documents, without tokenizing again; bad sets are refused with nothing written."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data.import_shards import import_shards, main
from data.loader import TokenDataset, TrainBatches, val_batches
from data.prepare import prepare
from data.shards import DataError
from other_tool_shards import EOT, token_stream, write_llmc_bin, write_shards

EDU_150 = "fineweb-edu/fineweb_edu_150docs.parquet"


@pytest.fixture(scope="module")
def edu_texts(shared_data):
    return pq.read_table(shared_data(EDU_150), columns=["text"]).column("text").to_pylist()


@pytest.fixture(scope="module")
def edu_stream(edu_texts, tiktoken_gpt2):
    """The stream build-nanogpt's and llm.c's fineweb.py make of these documents (tiktoken's own gpt2)."""
    return token_stream(tiktoken_gpt2, edu_texts)


def _split_tokens(folder, split) -> np.ndarray:
    ds = TokenDataset(folder)
    return np.concatenate([np.load(folder / s["file"]) for s in ds.shard_entries(split)])


def test_build_nanogpt_shards_are_the_stream_data_prepare_writes(tmp_path, edu_stream, shared_data):
    """Same documents, same tokens: the imported val + train equal data.prepare's val + train; val is their shard 0."""
    paths = write_shards(edu_stream, tmp_path / "edu_fineweb10B", ext="npy", shard_size=20_000)
    manifest = import_shards(tmp_path / "edu_fineweb10B", tmp_path / "imported")
    out = tmp_path / "imported"
    TokenDataset(out).verify(vocab_size=50304, eot_id=EOT)  # sha256s, tokenizer, dtype: what train.py checks
    val, train = _split_tokens(out, "val"), _split_tokens(out, "train")
    assert np.array_equal(val, np.load(paths[0]))
    assert np.array_equal(np.concatenate([val, train]), edu_stream)
    assert [s["file"] for s in manifest["shards"]] == ["val_000000.npy"] + [f"train_{i:06d}.npy" for i in
                                                                            range(len(paths) - 1)]
    assert manifest["documents"] == 150 and manifest["source"]["tool"] == "build-nanogpt"
    assert manifest["source"]["prefix"] == "edufineweb"

    prepare(str(shared_data(EDU_150)), tmp_path / "prepared", val_tokens=5_000, shard_tokens=30_000, num_proc=1,
            progress=False)
    prepared = np.concatenate([_split_tokens(tmp_path / "prepared", split) for split in ("val", "train")])
    assert np.array_equal(prepared, edu_stream)  # data.prepare's own stream of the same documents
    x, y = next(TrainBatches(out, batch_size=2, seq_len=64))
    assert x.shape == (2, 64) and np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())


def test_validation_windows_are_build_nanogpts(tmp_path, edu_stream):
    """build-nanogpt's validation on W processes reads, for 20 steps, batch k of rank r at token (k*W + r)*B*T of
    its val shard (x = B rows of T, y = the same shifted by one). The imported folder's validation windows with
    max_tokens = 20*W*B*T are exactly those rows: the same val loss."""
    write_shards(edu_stream, tmp_path / "src", shard_size=20_000)
    import_shards(tmp_path / "src", tmp_path / "out")
    val_shard = np.load(tmp_path / "src" / "edufineweb_val_000000.npy").astype(np.int64)
    B, T, W, steps = 2, 32, 4, 20
    theirs = []
    for k in range(steps):
        for r in range(W):
            pos = (k * W + r) * B * T
            buf = val_shard[pos:pos + B * T + 1]
            theirs += list(zip(buf[:-1].reshape(B, T).tolist(), buf[1:].reshape(B, T).tolist()))
    ours = [(x.tolist(), y.tolist()) for xb, yb in val_batches(tmp_path / "out", B, T, max_tokens=steps * W * B * T)
            for x, y in zip(xb, yb)]
    assert sorted(ours) == sorted(theirs) and len(ours) == steps * W * B


def test_llmc_bin_shards_import_to_the_same_files(tmp_path, edu_stream):
    write_shards(edu_stream, tmp_path / "npy", ext="npy", shard_size=25_000)
    write_shards(edu_stream, tmp_path / "bin", ext="bin", shard_size=25_000)
    a = import_shards(tmp_path / "npy", tmp_path / "from_npy")
    b = import_shards(tmp_path / "bin", tmp_path / "from_bin")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert b["source"]["tool"] == "llm.c" and b["splits"] == a["splits"]


def test_link_makes_hard_links_with_the_copy_checksums(tmp_path, edu_stream):
    paths = write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    copied = import_shards(tmp_path / "src", tmp_path / "copied")
    linked = import_shards(tmp_path / "src", tmp_path / "linked", link=True)
    assert [s["sha256"] for s in linked["shards"]] == [s["sha256"] for s in copied["shards"]]
    for src, entry in zip(paths, linked["shards"]):
        assert os.stat(src).st_ino == os.stat(tmp_path / "linked" / entry["file"]).st_ino
    TokenDataset(tmp_path / "linked").verify(vocab_size=50304, eot_id=EOT)
    write_shards(edu_stream, tmp_path / "bin", ext="bin", shard_size=25_000)
    with pytest.raises(DataError, match=r"--link: llm.c's .bin shards carry their own header.*leave out --link"):
        import_shards(tmp_path / "bin", tmp_path / "bin_out", link=True)
    assert not (tmp_path / "bin_out").exists()


def test_a_second_run_verifies_and_other_settings_are_refused(tmp_path, edu_stream, caplog):
    write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    import_shards(tmp_path / "src", tmp_path / "out")
    def written():  # every file but the lock, which each run takes
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir() if p.name != ".lock"}

    before = written()
    with caplog.at_level("INFO"):
        import_shards(tmp_path / "src", tmp_path / "out")
    assert "already complete" in caplog.text
    assert written() == before
    with pytest.raises(DataError, match=r"already holds data prepared with other settings .*'link'.*--overwrite"):
        import_shards(tmp_path / "src", tmp_path / "out", link=True)
    assert import_shards(tmp_path / "src", tmp_path / "out", link=True, overwrite=True)["settings"]["link"] is True


def test_a_set_whose_last_shard_is_as_full_as_the_others_is_warned_about(tmp_path, edu_stream, caplog):
    """A gap in the numbering is refused; a set missing its last (shorter) shard looks whole, and a last shard as
    full as the others is the one sign of it: said, not refused (a stream can end at a shard boundary)."""
    paths = write_shards(edu_stream, tmp_path / "whole", shard_size=25_000)
    assert len(np.load(paths[-1])) < 25_000  # the tools' last shard: what remained
    with caplog.at_level("WARNING"):
        import_shards(tmp_path / "whole", tmp_path / "out_whole")
    assert "lacks its last shards" not in caplog.text
    paths[-1].unlink()  # a copy that stopped one file short
    with caplog.at_level("WARNING"):
        import_shards(tmp_path / "whole", tmp_path / "out_short")
    last = paths[-2].name
    assert re.search(rf"{last}, the last shard, holds as many tokens as every other \(25,000\).*lacks its last "
                     r"shards.*import again with --overwrite", caplog.text)


def test_an_interrupted_import_is_done_again_by_the_same_command(tmp_path, edu_stream, monkeypatch):
    import data.import_shards as importer

    write_shards(edu_stream, tmp_path / "src", shard_size=20_000)
    reference = import_shards(tmp_path / "src", tmp_path / "reference")
    real_copy, calls = importer._copy, []

    def full_disk_on_third(shard, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real_copy(shard, dst)

    monkeypatch.setattr(importer, "_copy", full_disk_on_third)
    with pytest.raises(DataError, match=r"could not write to .* \(No space left on device\) after 2 of \d+ shards: "
                                        r"free some space .* run the same command again"):
        import_shards(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.setattr(importer, "_copy", real_copy)
    assert import_shards(tmp_path / "src", tmp_path / "out")["shards"] == reference["shards"]
    assert not (tmp_path / "out" / "prepare_state.json").exists()


def test_an_id_past_the_sampled_head_is_found_while_copying(tmp_path, edu_stream, monkeypatch):
    import data.import_shards as importer

    monkeypatch.setattr(importer, "SAMPLE_TOKENS", 5_000)  # real shards are 100M tokens: most are read only here
    paths = write_shards(edu_stream, tmp_path / "src", shard_size=20_000)
    np.save(paths[2], np.append(np.load(paths[2]), np.uint16(60000)))
    with pytest.raises(DataError, match=r"edufineweb_train_000002.npy holds id 60000 at token 20,000, beyond GPT-2's"):
        import_shards(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def _shift_ids(path):  # another tokenizer's ids, in range: GPT-2's decode then encode does not give them back
    tokens = np.load(path)
    body = tokens != EOT
    tokens[body] = (tokens[body].astype(np.int64) + 1) % 50000
    np.save(path, tokens)


@pytest.mark.parametrize("damage,message", [
    (lambda d, p: p[2].unlink(), r"lacks shard number 000002 of 0\.\.0000\d\d \(edufineweb_\*\.npy\): a partial copy"),
    (lambda d, p: np.save(d / "fineweb_val_000000.npy", np.load(p[0])), r"more than one set of shards \(edufineweb_\*"
                                                                         r"\.npy, fineweb_\*\.npy\)"),
    (lambda d, p: [q.unlink() for q in p[1:]], r"holds only the validation shard .*no train shard"),
    (lambda d, p: np.save(p[1], np.load(p[1]).astype(np.int32)), r"holds int32 of shape .*not a 1-D uint16 array"),
    (lambda d, p: p[1].write_bytes(p[1].read_bytes()[:200]), r"edufineweb_train_000001.npy is not a \.npy token "
                                                             r"array that can be read .*damaged or truncated"),
    (lambda d, p: np.save(p[-1], np.append(np.load(p[-1]), np.uint16(50257))), r"holds id 50257 at token [\d,]+, "
                                                                                r"beyond GPT-2's 50257 ids"),
    (lambda d, p: _shift_ids(p[1]), r"does not re-encode to the same ids with GPT-2's tokenizer: these tokens were "
                                    r"made by another tokenizer"),
    (lambda d, p: np.save(p[0], np.load(p[0])[1:]), r"does not start with the end-of-text id 50256"),
])
def test_a_bad_shard_set_is_refused_and_nothing_is_written(tmp_path, edu_stream, damage, message):
    paths = write_shards(edu_stream, tmp_path / "src", shard_size=20_000)
    damage(tmp_path / "src", paths)
    with pytest.raises(DataError, match=message):
        import_shards(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written: not even the folder is left


@pytest.mark.parametrize("damage,message", [
    (lambda p: write_llmc_bin(p, np.arange(10, dtype=np.uint16), magic=20240801),
     r"holds Llama 3 tokens \(uint32\), not GPT-2 tokens"),
    (lambda p: write_llmc_bin(p, np.arange(10, dtype=np.uint16), version=2), r"does not start with llm.c's GPT-2 token "
                                                                            r"header .*found 20240520, 2"),
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), r"bytes but its header says [\d,]+ tokens .*truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), r"shorter than llm.c's 1024-byte header"),
])
def test_a_bad_llmc_shard_is_refused(tmp_path, edu_stream, damage, message):
    paths = write_shards(edu_stream, tmp_path / "src", ext="bin", shard_size=20_000)
    damage(paths[1])
    with pytest.raises(DataError, match=message):
        import_shards(tmp_path / "src", tmp_path / "out")


@pytest.mark.parametrize("files,message", [
    ([], r"holds no token shards to import \(build-nanogpt's fineweb.py writes edufineweb_val_000000.npy"),
    (["train.bin", "val.bin"], r"nanoGPT's train.bin / val.bin, which are not read here"),
    (["manifest.json", "val_000000.npy"], r"is already a prepared folder .*pass it to train.py as --data_dir"),
])
def test_a_folder_without_importable_shards_says_what_it_holds(tmp_path, files, message):
    for name in files:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=message):
        import_shards(tmp_path, tmp_path / "out")


def test_the_command_line_says_one_line_and_exits_2(tmp_path, edu_stream, capsys):
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert re.fullmatch(r"error: .*nowhere does not exist: pass the folder of token shards .*\n",
                        capsys.readouterr().err)
    write_shards(edu_stream, tmp_path / "src", shard_size=50_000)
    assert main([str(tmp_path / "src"), "--out", str(tmp_path / "src")]) == 2
    assert "is the folder being imported: pass a new folder for --out" in capsys.readouterr().err
    assert main([str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["source"]["kind"] == "import" and "folder" not in manifest["settings"]["source"]


def test_prepare_and_train_given_their_shards_point_at_the_import(tmp_path):
    from training.run_config import RunConfig, validate

    for name in ("edufineweb_val_000000.npy", "edufineweb_train_000001.npy"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"holds no .* files: it holds token shards of build-nanogpt or llm.c .*"
                                        r"python -m data.import_shards"):
        prepare(str(tmp_path), tmp_path / "out", num_proc=1, progress=False)
    errors = validate(RunConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "run")), 1)
    assert any("python -m data.import_shards" in e for e in errors), errors


def test_a_damaged_imported_shard_says_to_import_again(tmp_path, edu_stream):
    write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    good = import_shards(tmp_path / "src", tmp_path / "out")
    shard = tmp_path / "out" / "train_000000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # a bit flip
    shard.write_bytes(bytes(data))
    again = r"altered or corrupted .*re-run the same `python -m data.import_shards` command with --overwrite"
    with pytest.raises(DataError, match=again):
        TokenDataset(tmp_path / "out").verify(vocab_size=50304, eot_id=EOT)
    with pytest.raises(DataError, match=again):
        import_shards(tmp_path / "src", tmp_path / "out")
    assert import_shards(tmp_path / "src", tmp_path / "out", overwrite=True)["shards"] == good["shards"]


def test_overwrite_with_a_bad_set_keeps_the_folder_that_was_there(tmp_path, edu_stream, monkeypatch):
    """Every id is checked before anything is removed: an id past the sampled head of a shard (most of a real
    100M-token shard) used to be found while copying, after --overwrite had emptied the folder."""
    import data.import_shards as importer

    write_shards(edu_stream, tmp_path / "good", shard_size=25_000)
    good = import_shards(tmp_path / "good", tmp_path / "out")
    monkeypatch.setattr(importer, "SAMPLE_TOKENS", 5_000)
    paths = write_shards(edu_stream, tmp_path / "bad", shard_size=20_000)
    tokens = np.load(paths[2])
    tokens[15_000] = 60000
    np.save(paths[2], tokens)
    for link in (False, True):
        with pytest.raises(DataError, match=r"edufineweb_train_000002.npy holds id 60000 at token 15,000"):
            import_shards(tmp_path / "bad", tmp_path / "out", overwrite=True, link=link)
        assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == good
        TokenDataset(tmp_path / "out").verify(vocab_size=50304, eot_id=EOT)


def test_another_set_with_the_same_names_and_sizes_is_not_taken_for_the_imported_one(tmp_path, edu_stream,
                                                                                     edu_texts, tiktoken_gpt2):
    write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    first = import_shards(tmp_path / "src", tmp_path / "out")
    other = token_stream(tiktoken_gpt2, edu_texts[::-1])  # the same documents in another order: the same sizes
    assert len(other) == len(edu_stream)
    write_shards(other, tmp_path / "src", shard_size=25_000)  # rewritten in place, as a re-run of fineweb.py does
    with pytest.raises(DataError, match=r"already holds data prepared with other settings .*sample_sha256"):
        import_shards(tmp_path / "src", tmp_path / "out")
    again = import_shards(tmp_path / "src", tmp_path / "out", overwrite=True)
    assert again["shards"][0]["sha256"] != first["shards"][0]["sha256"]


def test_a_file_with_bytes_after_its_array_is_refused(tmp_path, edu_stream):
    paths = write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    with open(paths[1], "ab") as f:
        np.save(f, np.arange(5, dtype=np.uint16))  # a second save into the same file
    with pytest.raises(DataError, match=r"edufineweb_train_000001.npy has 1[\d,]+ bytes after its array of 25,000 "
                                        r"tokens: a damaged file"):
        import_shards(tmp_path / "src", tmp_path / "out", link=True)


def test_an_interrupted_import_does_not_bind_the_next_one_to_its_settings(tmp_path, edu_stream, monkeypatch):
    """An import always starts again, so what a failed --link import left is replaced by a copy without
    --overwrite (the failure's own advice was to leave out --link, and that was then refused)."""
    import data.import_shards as importer

    write_shards(edu_stream, tmp_path / "src", shard_size=25_000)

    real_link = os.link

    def refused_after_the_first(src, dst):  # the probe and the val shard are linked, the next shard refused
        if Path(dst).name.startswith("train_"):
            raise OSError(1, "Operation not permitted", str(dst))
        real_link(src, dst)

    monkeypatch.setattr(importer.os, "link", refused_after_the_first)
    with pytest.raises(DataError, match=r"--link: the system refuses a hard link to .*edufineweb_train_000001.npy .*"
                                        r"leave out --link to copy"):
        import_shards(tmp_path / "src", tmp_path / "out", link=True)
    assert (tmp_path / "out" / "prepare_state.json").exists() and (tmp_path / "out" / "val_000000.npy").exists()
    assert import_shards(tmp_path / "src", tmp_path / "out")["settings"]["link"] is False


def test_a_folder_or_dangling_link_named_like_a_shard_is_named_and_hidden_files_are_ignored(tmp_path, edu_stream):
    paths = write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    (tmp_path / "src" / "._edufineweb_train_000001.npy").write_bytes(b"\0" * 4096)  # macOS's AppleDouble file
    assert import_shards(tmp_path / "src", tmp_path / "out")["documents"] == 150
    paths[-1].unlink()
    paths[-1].symlink_to(tmp_path / "nowhere.npy")
    with pytest.raises(DataError, match=r"edufineweb_train_00000\d.npy is not a file \(a folder, or a link to "
                                        r"nothing\)"):
        import_shards(tmp_path / "src", tmp_path / "out2")


def test_an_npy_header_of_another_size_is_copied_not_linked(tmp_path, edu_stream):
    """numpy before 1.14 aligned .npy headers to 16 bytes (80 here), not 64 (128): such a file is not byte for byte
    our shard format, so --link refuses it and the copy rewrites it."""
    paths = write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    tokens = np.load(paths[1])
    header = f"{{'descr': '<u2', 'fortran_order': False, 'shape': ({len(tokens)},), }}".ljust(69) + "\n"
    paths[1].write_bytes(b"\x93NUMPY\x01\x00" + (70).to_bytes(2, "little") + header.encode() + tokens.tobytes())
    assert np.array_equal(np.load(paths[1]), tokens)  # a valid .npy with an 80-byte header
    with pytest.raises(DataError, match=r"edufineweb_train_000001.npy has a 80-byte .npy header, not the 128 bytes "
                                        r".*leave out --link to copy it"):
        import_shards(tmp_path / "src", tmp_path / "linked", link=True)
    copied = import_shards(tmp_path / "src", tmp_path / "copied")
    assert np.array_equal(np.load(tmp_path / "copied" / "train_000000.npy"), tokens) and copied["documents"] == 150


def test_a_file_system_without_hard_links_is_said_before_the_check_pass(tmp_path, edu_stream, monkeypatch):
    import data.import_shards as importer

    write_shards(edu_stream, tmp_path / "src", shard_size=25_000)
    checked = []
    monkeypatch.setattr(importer, "_check_shard", lambda *args: checked.append(args))

    def other_file_system(src, dst):
        raise OSError(18, "Invalid cross-device link", str(dst))

    monkeypatch.setattr(importer.os, "link", other_file_system)
    with pytest.raises(DataError, match=r"--link: .* is on another file system than .*leave out --link to copy"):
        import_shards(tmp_path / "src", tmp_path / "out", link=True)
    assert checked == [] and not (tmp_path / "out").exists()  # said at once; nothing left behind
