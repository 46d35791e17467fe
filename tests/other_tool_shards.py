"""Token shards as other GPT-2 trainers write them, for the import tests: build-nanogpt's `fineweb.py` (.npy) and
llm.c's `dev/data/fineweb.py` (.bin). Both take one stream of documents, each `[50256] + encode_ordinary(text)`,
and cut it into shards of exactly `shard_size` tokens (a document continues in the next one; the last is shorter).
Shard 0 is named val, the rest train.
"""

from pathlib import Path

import numpy as np

EOT = 50256
LLMC_MAGIC, LLMC_VERSION = 20240520, 1


def token_stream(encoding, texts) -> np.ndarray:
    """The tools' stream of `texts` (uint16), from a tiktoken encoding."""
    return np.concatenate([np.array([EOT] + encoding.encode_ordinary(t), dtype=np.uint16) for t in texts])


def write_llmc_bin(path: Path, tokens: np.ndarray, magic: int = LLMC_MAGIC, version: int = LLMC_VERSION) -> None:
    header = np.zeros(256, dtype=np.int32)  # llm.c's header: 256 int32, of which the first three are used
    header[:3] = magic, version, len(tokens)
    path.write_bytes(header.tobytes() + tokens.astype(np.uint16).tobytes())


def write_shards(stream: np.ndarray, folder: Path, *, ext: str = "npy", shard_size: int = 20_000,
                 prefix: str | None = None) -> list[Path]:
    """Cut `stream` into the tool's shard files in `folder` (created); returns their paths in order."""
    prefix = prefix or ("edufineweb" if ext == "npy" else "edu_fineweb")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, len(stream), shard_size)):
        piece = stream[start:start + shard_size]
        path = folder / f"{prefix}_{'val' if i == 0 else 'train'}_{i:06d}.{ext}"
        if ext == "npy":
            np.save(path, piece)
        else:
            write_llmc_bin(path, piece)
        paths.append(path)
    return paths
