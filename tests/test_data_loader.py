"""data.loader: windows are the right slices, every window once per epoch, ranks disjoint, exact resume, a
world-size-independent validation set, and corrupted / mismatched data refused before training."""

import json
import re

import numpy as np
import pytest
import torch

from data.loader import TokenDataset, TrainBatches, val_batches, val_window_count
from data.prepare import prepare
from data.shards import FORMAT, FORMAT_VERSION, DataError, shard_name, write_json, write_shard
from data.tokenizer import EOT_ID, TOKENIZER_FINGERPRINT

T = 8


def make_folder(path, train_sizes, val_sizes=(100,)):
    """A prepared folder whose token at stream position i is i (so every window names its own start)."""
    path.mkdir(parents=True, exist_ok=True)
    shards = []
    for split, sizes in (("val", val_sizes), ("train", train_sizes)):
        start = 0
        for i, n in enumerate(sizes):
            name = shard_name(split, i)
            sha = write_shard(path / name, np.arange(start, start + n, dtype=np.uint16))
            shards.append({"file": name, "split": split, "tokens": n, "documents": 0, "sha256": sha})
            start += n
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": "uint16", "source": {"kind": "test"},
                "splits": {}, "shards": shards,
                "tokenizer": {"fingerprint": TOKENIZER_FINGERPRINT, "vocab_size": 50257, "eot_id": EOT_ID}}
    write_json(path / "manifest.json", manifest)
    return path


@pytest.fixture()
def folder(tmp_path):
    # 3 train shards whose boundaries are not multiples of T: some windows cross a shard boundary.
    return make_folder(tmp_path / "d", train_sizes=(101, 77, 123))  # N = 301 tokens -> W = 300 // 8 = 37


def starts(x):
    return x[:, 0].tolist()


def test_windows_are_stream_slices_shifted_by_one(folder):
    x, y = next(TrainBatches(folder, batch_size=5, seq_len=T, seed=3))
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (5, T)
    for row_x, row_y in zip(x, y):
        s = int(row_x[0])
        assert s % T == 0 and row_x.tolist() == list(range(s, s + T))
        assert row_y.tolist() == list(range(s + 1, s + T + 1))


def test_every_window_exactly_once_per_epoch_and_epochs_differ(folder):
    it = TrainBatches(folder, batch_size=4, seq_len=T, seed=0)
    assert it.windows_per_epoch == 37 and it.tokens_per_epoch == 37 * T
    seen = [s for _ in range(37) for s in starts(next(it)[0])]  # 148 windows = 4 epochs (batches straddle them)
    epochs = [seen[i * 37 : (i + 1) * 37] for i in range(4)]
    for e in epochs:
        assert sorted(e) == [k * T for k in range(37)]
    assert epochs[0] != epochs[1] and epochs[0] != sorted(epochs[0])  # shuffled, and differently per epoch
    assert it.epoch == 4
    same = TrainBatches(folder, batch_size=4, seq_len=T, seed=0)
    other = TrainBatches(folder, batch_size=4, seq_len=T, seed=1)
    assert starts(next(same)[0]) == seen[:4] and starts(next(other)[0]) != seen[:4]


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_are_disjoint_and_together_equal_the_single_process_stream(folder, world_size):
    single = TrainBatches(folder, batch_size=2 * world_size, seq_len=T, seed=5)
    ranks = [TrainBatches(folder, batch_size=2, seq_len=T, rank=r, world_size=world_size, seed=5)
             for r in range(world_size)]
    for _ in range(25):  # crosses epoch boundaries
        parts = [starts(next(r)[0]) for r in ranks]
        assert sum(parts, []) == starts(next(single)[0])


def test_state_dict_resumes_exactly_in_a_new_instance(folder):
    it = TrainBatches(folder, batch_size=3, seq_len=T, rank=1, world_size=2, seed=7)
    for _ in range(11):
        next(it)
    state = json.loads(json.dumps(it.state_dict()))  # plain ints / strs only
    expected = [next(it) for _ in range(20)]
    fresh = TrainBatches(folder, batch_size=3, seq_len=T, rank=1, world_size=2, seed=7)
    fresh.load_state_dict(state)
    for x, y in expected:
        fx, fy = next(fresh)
        assert torch.equal(fx, x) and torch.equal(fy, y)


def test_resume_with_other_settings_is_refused_listing_the_differences(folder, tmp_path):
    state = TrainBatches(folder, batch_size=3, seq_len=T, world_size=2, seed=7).state_dict()
    other = TrainBatches(folder, batch_size=4, seq_len=T, world_size=1, seed=8)
    with pytest.raises(ValueError, match=r"seed: checkpoint 7 vs now 8.*batch_size.*world_size.*allow_resize"):
        other.load_state_dict(state)
    changed_data = make_folder(tmp_path / "other", train_sizes=(101, 77, 124))
    with pytest.raises(ValueError, match="windows_per_epoch|train_data_hash"):
        TrainBatches(changed_data, batch_size=3, seq_len=T, world_size=2, seed=7).load_state_dict(state)


def test_allow_resize_continues_the_same_global_window_sequence(folder):
    two = [TrainBatches(folder, batch_size=3, seq_len=T, rank=r, world_size=2, seed=1) for r in range(2)]
    for _ in range(5):
        for r in two:
            next(r)
    single = TrainBatches(folder, batch_size=6, seq_len=T, seed=1)
    reference = [starts(next(single)[0]) for _ in range(10)][5:]  # global batches 5..9
    resized = [TrainBatches(folder, batch_size=2, seq_len=T, rank=r, world_size=3, seed=1) for r in range(3)]
    for r in resized:
        r.load_state_dict(two[0].state_dict(), allow_resize=True)
    got = [s for _ in range(5) for r in resized for s in starts(next(r)[0])]
    assert got == sum(reference, [])


def test_val_windows_are_the_same_set_for_any_world_size(tmp_path):
    folder = make_folder(tmp_path / "d", train_sizes=(50,), val_sizes=(40, 33, 30))  # 103 val tokens
    assert val_window_count(folder, T, None) == 12 and val_window_count(folder, T, 80) == 10
    single = [s for x, _ in val_batches(folder, 4, T, 80) for s in starts(x)]
    assert single == [k * T for k in range(10)]
    for world in (2, 3, 4):
        union = [s for r in range(world) for x, y in val_batches(folder, 3, T, 80, r, world) for s in starts(x)]
        assert sorted(union) == single  # same windows, each once
    x, y = next(val_batches(folder, 2, T, None, 1, 2))
    assert x[0].tolist() == list(range(T, 2 * T)) and y[0].tolist() == list(range(T + 1, 2 * T + 1))


# ---- checks before training, on real prepared data --------------------------------------------------------


@pytest.fixture()
def prepared(shared_data, tmp_path):
    out = tmp_path / "edu"
    prepare(str(shared_data("fineweb-edu/fineweb_edu_150docs.parquet")), out, shard_tokens=30_000,
            val_tokens=20_000, num_proc=1, progress=False)
    return out


def test_real_data_verifies_and_yields_batches(prepared):
    ds = TokenDataset(prepared)
    ds.verify(vocab_size=50304, eot_id=EOT_ID)
    assert len(ds.manifest_hash) == 64
    x, y = next(TrainBatches(prepared, 4, 64))
    assert int(x.max()) < 50257 and torch.equal(x[:, 1:], y[:, :-1])


def test_truncated_shard_is_detected_at_load(prepared):
    shard = prepared / "train_000001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train_000001.npy is \d+ bytes .* truncated .* re-run"):
        TokenDataset(prepared).verify(50304, EOT_ID, check_sha256=False)
    with pytest.raises(DataError, match="train_000001.npy"):
        TrainBatches(prepared, 4, 64)  # even without verify(), sizes are checked before reading


def test_flipped_byte_is_detected_at_load(prepared):
    shard = prepared / "val_000000.npy"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"val_000000.npy has sha256 .* altered or corrupted"):
        TokenDataset(prepared).verify(50304, EOT_ID)


@pytest.mark.parametrize("field, value, message", [
    ("fingerprint", "other-tokenizer:0000", "made with tokenizer 'other-tokenizer:0000'"),
    ("eot_id", 0, "end-of-text id is 0, the model expects 50256"),
    ("vocab_size", 60000, "vocab_size 60000, the model has only 50304"),
])
def test_manifest_that_does_not_match_the_model_is_refused(prepared, field, value, message):
    path = prepared / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tokenizer"][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"manifest.json does not match the model: .*{message}.*data.prepare"):
        TokenDataset(prepared).verify(vocab_size=50304, eot_id=EOT_ID)


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"manifest.json not found: prepare the data first"):
        TokenDataset(tmp_path)


@pytest.mark.parametrize("files,advice", [
    # a prepare that stopped (here: a source too small for the val split) leaves only its resume record
    (["prepare_state.json"], r"a data.prepare run into it did not finish .* run the same .* command again"),
    (["train_000001.npy"], r"a data.prepare run into it did not finish"),
    (["edufineweb_val_000000.npy", "edufineweb_train_000001.npy"],
     r"it holds token shards of build-nanogpt or llm.c .*`python -m data.import_shards .* --out out/data/NAME`"),
    (["edu_fineweb_val_000000.bin"], r"it holds token shards of build-nanogpt or llm.c"),  # llm.c's
    (["train.bin", "val.bin"], r"it holds nanoGPT's train.bin / val.bin, which are not read here .*prepare the text"),
    ({"prepare_state.json": '{"settings": {"source": {"kind": "import"}}}'},  # an import that stopped
     r"a data.import_shards run into it did not finish .* run the same `python -m data.import_shards ... --out`"),
    (["input.txt"], r"it holds source files, not tokens: tokenize them with `python -m data.prepare .* --out out/data/NAME`"),
    (["parts/part-0.parquet"], r"it holds source files, not tokens"),  # one level down
    (["run_config.yaml", "metrics.jsonl"], r"it is a training run's folder \(train.py's output_dir\), not prepared data"),
    (["config.json", "pytorch_model.bin"], r"it is a model folder, not prepared data"),  # not "another tool's shards"
    (["notes.md"], r"prepare the data first: `python -m data.prepare SOURCE --out "),
    # only other tools' shard names count as their shards, not any .npy / .bin (test audit by mutation)
    (["embeddings.npy", "weights.bin"], r"prepare the data first: `python -m data.prepare SOURCE --out "),
])
def test_a_folder_without_manifest_gets_advice_from_what_it_holds(tmp_path, files, advice):
    """The same advice from the loader (eval.val_loss) and from train.py's config check; before, a half-prepared
    folder was called 'not written by data.prepare' and sent to a prepare of itself that could not work."""
    from training.run_config import RunConfig, validate

    for name in files:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(files[name] if isinstance(files, dict) else "")
    with pytest.raises(DataError, match=r"manifest.json not found: " + advice):
        TokenDataset(tmp_path)
    errors = validate(RunConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "run")), 1)
    assert any(re.search(r"has no manifest.json: " + advice, e) for e in errors), errors


def test_a_file_where_a_prepared_folder_belongs_says_to_prepare_it(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("some text\n")
    with pytest.raises(DataError, match=r"is a file, not a prepared data folder: tokenize it first with "
                                        r"`python -m data.prepare .*input.txt --out out/data/NAME`"):
        TokenDataset(text)


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], "holds a JSON list, not a gpt2repro-tokens manifest"),
    (lambda m: {**m, "shards": 3}, "'shards' must be a list and 'tokenizer' an object"),
    (lambda m: {**m, "tokenizer": "gpt2"}, "'shards' must be a list and 'tokenizer' an object"),
    (lambda m: {**m, "shards": ["train_000000.npy"]}, "invalid shard entry 'train_000000.npy'"),
    (lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "tokens"} for s in m["shards"]]},
     "invalid shard entry"),
    (lambda m: {**m, "shards": [{**s, "tokens": str(s["tokens"])} for s in m["shards"]]}, "invalid shard entry"),
    (lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "sha256"} for s in m["shards"]]},
     "invalid shard entry"),
    (lambda m: {**m, "shards": m["shards"] + m["shards"][-1:]}, "lists shard train_000002.npy twice"),
    (None, "is not valid JSON"),  # bytes that are not UTF-8
])
def test_a_hand_edited_manifest_is_a_data_error(folder, edit, message):
    """A manifest.json edited by hand into another shape gave AttributeError / KeyError / TypeError (an
    eval.val_loss traceback; train.py's message was "data_dir ...: 'tokens'"), and a shard listed twice was
    read twice per pass without a word. Each is now a DataError naming the file and the fix."""
    path = folder / "manifest.json"
    if edit is None:
        path.write_bytes(b"\xff\xfe{")
    else:
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(DataError, match=r"manifest.json.*") as err:
        TokenDataset(folder).verify(vocab_size=50304, eot_id=EOT_ID)
    assert message in str(err.value) and "data.prepare" in str(err.value)


def test_a_file_of_a_prepared_folder_names_the_folder(folder):
    """--data DIR/manifest.json or a shard of it was told to tokenize that file with data.prepare (a .npy of
    tokens as a source); the folder holding it is what to pass."""
    for name in ("manifest.json", "train_000001.npy"):
        with pytest.raises(DataError, match=rf"{name} is a file of the prepared data folder {folder}: pass that "):
            TokenDataset(folder / name)
