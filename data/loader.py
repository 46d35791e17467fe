"""Reading prepared token shards for training and validation (the folder written by `data.prepare`).

    ds = TokenDataset("out/data/edu10B")
    ds.verify(vocab_size=model.config.vocab_size, eot_id=50256)     # before training: refuses any mismatch
    train = TrainBatches("out/data/edu10B", batch_size=B, seq_len=T, rank=r, world_size=w, seed=0)
    x, y = next(train)                    # int64 (B, T) each; y[:, :-1] == x[:, 1:]
    sd = train.state_dict()               # small dict of ints/strs, identical on every rank
    train.load_state_dict(sd)             # in a new process: the next batch is exactly the one that followed
    for x, y in val_batches("out/data/edu10B", B, T, max_tokens=10_485_760, rank=r, world_size=w): ...

Windows. A split's shards are read as ONE token stream of N tokens (memory-mapped, shards concatenated in
manifest order). Window k is stream[k*T : k*T + T + 1]: x = its first T tokens, y = its last T. Windows overlap
by one token, so every token but the first is a target exactly once per pass: W = (N - 1) // T windows,
`tokens_per_epoch` = W * T (the last < T tokens of the split are never a target).

Training order (what is shuffled, and why). The infinite sequence of windows is epoch 0's order, then epoch
1's, ...; epoch e's order is a permutation of the W window indices drawn from `np.random.default_rng([seed, e])`.
Windows, not documents or shards, are shuffled: a batch then mixes windows from the whole dataset, and no two
epochs repeat the same order (build-nanogpt reads its shards in a fixed order every epoch, which shows up as a
periodic pattern in its loss). Each global step takes the next G = batch_size * world_size windows of that
sequence; rank r gets windows [r*B, (r+1)*B) of them. So ranks are disjoint, nothing is skipped or repeated,
batches may straddle an epoch boundary, and the state is one integer (`windows_consumed`, the same on all ranks).

Resume: `load_state_dict` refuses (listing every difference) when seed, seq_len, the train data, the
permutation (numpy version) or, by default, batch_size / world_size differ. With `allow_resize=True` a new
batch_size / world_size is accepted and handled exactly: the global window sequence is unchanged and the
new layout continues from the same `windows_consumed`.

Validation: the first `val_window_count` windows of the val split (max_tokens // T of them, fewer if the
split is shorter). Rank r takes windows r, r + world_size, r + 2*world_size, ... in batches of up to
batch_size, so the union over ranks is the same window set for every world size. Ranks may get different
numbers of batches: reduce (sum of token losses, token count) across ranks once after the loop.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from data.shards import SHARD_DTYPE, DataError, check_shard_file, open_shard, read_manifest, write_again_advice
from data.tokenizer import TOKENIZER_FINGERPRINT

STATE_VERSION = 1


class TokenDataset:
    """A prepared folder: `.manifest` (dict), `.manifest_hash` (sha256 of manifest.json), checks, shard access."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.manifest, self.manifest_hash = read_manifest(self.data_dir)

    def shard_entries(self, split: str) -> list[dict]:
        return [s for s in self.manifest["shards"] if s["split"] == split]

    def split_tokens(self, split: str) -> int:
        return sum(s["tokens"] for s in self.shard_entries(split))

    @property
    def content_hash(self) -> str:
        """Identity of the tokens of both splits (each shard's split and sha256, in order): unlike `manifest_hash`,
        the same for a folder prepared again from the same source at another path or with other library versions
        (manifest.json records both)."""
        shards = [[s["split"], s["sha256"]] for s in self.manifest["shards"]]
        return hashlib.sha256(json.dumps(shards).encode()).hexdigest()

    def data_hash(self, split: str) -> str:
        """Identity of one split's token stream: sha256 over its shards' sha256, in order."""
        return hashlib.sha256("".join(s["sha256"] for s in self.shard_entries(split)).encode()).hexdigest()

    def verify(self, vocab_size: int, eot_id: int, check_sha256: bool = True,
               splits: tuple[str, ...] = ("train", "val")) -> None:
        """Refuse to train on data that does not fit the model, or on missing / truncated / altered shards.
        `splits`: whose shards are checked (an evaluation reads only "val": hashing 10B train tokens costs ~40 s)."""
        path = self.data_dir / "manifest.json"
        tok = self.manifest["tokenizer"]
        fix = ("re-prepare the data with this project's tokenizer: "
               f"`python -m data.prepare SOURCE --out {self.data_dir} --overwrite`")
        problems = []
        if tok.get("fingerprint") != TOKENIZER_FINGERPRINT:
            problems.append(f"it was made with tokenizer {tok.get('fingerprint')!r}, "
                            f"this code uses {TOKENIZER_FINGERPRINT!r}")
        if tok.get("eot_id") != eot_id:
            problems.append(f"its end-of-text id is {tok.get('eot_id')}, the model expects {eot_id}")
        if not isinstance(tok.get("vocab_size"), int) or tok["vocab_size"] > vocab_size:
            problems.append(f"its ids go up to vocab_size {tok.get('vocab_size')}, "
                            f"the model has only {vocab_size} rows")
        if self.manifest.get("dtype") != "uint16":
            problems.append(f"its dtype is {self.manifest.get('dtype')!r}, not uint16")
        if problems:
            raise DataError(f"{path} does not match the model: " + "; ".join(problems) + f". Fix: {fix}.")
        if "train" in splits and not self.shard_entries("train"):
            raise DataError(f"{path} lists no train shards: re-run data.prepare.")
        fix = write_again_advice(self.manifest)
        for s in (s for s in self.manifest["shards"] if s["split"] in splits):
            check_shard_file(self.data_dir / s["file"], s["tokens"], s["sha256"] if check_sha256 else None, fix)

    def stream(self, split: str) -> "_TokenStream":
        entries = self.shard_entries(split)
        if not entries:
            raise DataError(f"{self.data_dir / 'manifest.json'} has no {split} shards: prepare the data with "
                            f"{'--val-tokens > 0' if split == 'val' else 'a larger source'}.")
        fix = write_again_advice(self.manifest)
        return _TokenStream([open_shard(self.data_dir / s["file"], s["tokens"], fix) for s in entries])


class _TokenStream:
    """Memory-mapped shards read as one concatenated stream; gathers (n, T+1) windows with numpy indexing."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = shards
        self.bounds = np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)  # (n_shards+1,)
        self.n_tokens = int(self.bounds[-1])

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(n, length) uint16: stream[starts[i] : starts[i] + length] for each i."""
        out = np.empty((len(starts), length), dtype=SHARD_DTYPE)
        shard = np.searchsorted(self.bounds, starts, side="right") - 1  # (n,) shard holding each window's start
        local = starts - self.bounds[shard]
        inside = starts + length <= self.bounds[shard + 1]
        offsets = np.arange(length)
        for s in np.unique(shard[inside]):  # one vectorised read per shard touched, not one per window
            rows = np.flatnonzero(inside & (shard == s))
            out[rows] = self.shards[s][local[rows, None] + offsets]  # (rows, length) gather from the memmap
        for i in np.flatnonzero(~inside):  # the rare window that crosses a shard boundary
            out[i] = self._read(int(starts[i]), length)
        return out

    def _read(self, start: int, length: int) -> np.ndarray:
        parts, s = [], int(np.searchsorted(self.bounds, start, side="right")) - 1
        while length > 0:
            lo = start - int(self.bounds[s])
            piece = self.shards[s][lo : lo + length]
            parts.append(piece)
            start, length, s = start + len(piece), length - len(piece), s + 1
        return np.concatenate(parts)


def _to_xy(windows: np.ndarray, pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) uint16 windows -> x, y int64 (B, T); y is x shifted left by one token."""
    w = torch.from_numpy(windows.astype(np.int64))
    x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
    if pin_memory and torch.cuda.is_available():
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def _check_positive(**values) -> None:
    bad = [f"{k} must be a positive integer, got {v!r}" for k, v in values.items() if not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError("; ".join(bad))


class TrainBatches:
    """Infinite, seeded, epoch-shuffled, rank-strided (x, y) batches of the train split (see module docstring)."""

    def __init__(self, data_dir: str | Path, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, pin_memory: bool = False):
        _check_positive(batch_size=batch_size, seq_len=seq_len, world_size=world_size)
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.dataset = TokenDataset(data_dir)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.pin_memory = pin_memory
        self._stream = self.dataset.stream("train")
        self.windows_per_epoch = (self._stream.n_tokens - 1) // seq_len  # W: windows of T+1 tokens, stride T
        if self.windows_per_epoch < 1:
            raise DataError(f"the train split of {data_dir} has {self._stream.n_tokens} tokens, fewer than one "
                            f"window of seq_len + 1 = {seq_len + 1}: prepare more data or lower seq_len.")
        self._data_hash = self.dataset.data_hash("train")
        self._consumed = 0  # windows taken by all ranks together so far
        self._perms: dict[int, np.ndarray] = {}
        self._order_check_value = self._order_check()  # once: state_dict() is called after every batch

    @property
    def tokens_per_epoch(self) -> int:
        """Target tokens in one pass over the train split (all ranks together)."""
        return self.windows_per_epoch * self.seq_len

    @property
    def epoch(self) -> int:
        """Epoch of the next window to be read (0-based)."""
        return self._consumed // self.windows_per_epoch

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch touches at most two consecutive epochs
                self._perms.pop(min(self._perms))
            dtype = np.int32 if self.windows_per_epoch < 2**31 else np.int64  # 10B tokens: 39 MB, not 78
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.windows_per_epoch).astype(dtype)
        return self._perms[epoch]

    def _window_ids(self, first: int, count: int) -> np.ndarray:
        """Window indices at positions [first, first + count) of the infinite epoch-by-epoch sequence."""
        g = np.arange(first, first + count, dtype=np.int64)
        epochs, pos = np.divmod(g, self.windows_per_epoch)
        ids = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            ids[mask] = self._permutation(int(e))[pos[mask]]
        return ids

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.batch_size, self.seq_len
        ids = self._window_ids(self._consumed + self.rank * B, B)  # this rank's slice of the global batch
        self._consumed += B * self.world_size
        return _to_xy(self._stream.windows(ids * T, T + 1), self.pin_memory)

    def _order_check(self) -> str:
        # Detects a numpy whose Generator draws another permutation from the same seed (then resuming would
        # silently repeat / skip windows).
        return hashlib.sha256(self._permutation(0)[:64].astype(np.int64).tobytes()).hexdigest()[:16]

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "windows_consumed": self._consumed, "seed": self.seed,
                "batch_size": self.batch_size, "seq_len": self.seq_len, "world_size": self.world_size,
                "windows_per_epoch": self.windows_per_epoch, "train_data_hash": self._data_hash,
                "order_check": self._order_check_value}

    def load_state_dict(self, state: dict, allow_resize: bool = False) -> None:
        """Continue exactly where `state` stopped. Refuses any difference that would change the data order;
        `allow_resize=True` accepts another batch_size / world_size (the window sequence is unchanged)."""
        mine = self.state_dict()
        must_match = ["version", "seed", "seq_len", "windows_per_epoch", "train_data_hash", "order_check"]
        if not allow_resize:
            must_match += ["batch_size", "world_size"]
        diffs = [f"{k}: checkpoint {state.get(k)!r} vs now {mine[k]!r}" for k in must_match if state.get(k) != mine[k]]
        if diffs:
            hint = ("" if allow_resize or not {"batch_size", "world_size"} & {d.split(":")[0] for d in diffs}
                    else " A new batch_size/world_size can be accepted with load_state_dict(state, allow_resize=True).")
            raise ValueError("cannot resume the training data position, it would change the data order: "
                             + "; ".join(diffs) + ". Resume with the checkpoint's data folder and settings." + hint)
        consumed = state.get("windows_consumed")
        if not isinstance(consumed, int) or consumed < 0:
            raise ValueError(f"invalid windows_consumed {consumed!r} in the data state")
        self._consumed = consumed


def val_window_count(data_dir: str | Path, seq_len: int, max_tokens: int | None) -> int:
    """Number of validation windows (all ranks together): min(max_tokens // T, (val tokens - 1) // T)."""
    _check_positive(seq_len=seq_len)
    n = (TokenDataset(data_dir).split_tokens("val") - 1) // seq_len
    if max_tokens is not None:
        _check_positive(max_tokens=max_tokens)
        n = min(n, max_tokens // seq_len)
    return max(n, 0)


def val_split_ran_short(tokens_read: int, seq_len: int, max_tokens: int) -> bool:
    """Whether the val split ended before `max_tokens` were read: another whole window of `seq_len` was asked for
    (`tokens_read` = windows x seq_len, as val_window_count gives)."""
    return tokens_read + seq_len <= max_tokens


def val_batches(data_dir: str | Path, batch_size: int, seq_len: int, max_tokens: int | None, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False):
    """Yield (x, y) int64 (b, T), b <= batch_size, for this rank's share of the fixed validation windows."""
    _check_positive(batch_size=batch_size, world_size=world_size)
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
    n = val_window_count(data_dir, seq_len, max_tokens)
    if n == 0:
        raise DataError(f"the val split of {data_dir} is shorter than one window of {seq_len + 1} tokens "
                        f"(or max_tokens < seq_len): prepare with a larger --val-tokens or lower seq_len.")
    stream = TokenDataset(data_dir).stream("val")
    mine = np.arange(rank, n, world_size, dtype=np.int64)  # window indices of this rank
    for i in range(0, len(mine), batch_size):
        yield _to_xy(stream.windows(mine[i : i + batch_size] * seq_len, seq_len + 1), pin_memory)
