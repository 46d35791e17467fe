"""Shared test setup: offline Hub, small thread count, and access to the real data in ../shared/data.

Tests that need ../shared/data use the `shared_data` fixture: it skips with a reason on a developer machine
without that folder, and FAILS under CI (`CI=true`), so a missing data folder can never pass silently.
"""

import os

# Set before anything imports transformers / datasets / huggingface_hub: a Hub call then fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data():
    """Return a function `path("hellaswag/hellaswag_val.jsonl") -> Path` into ../shared/data."""

    def resolve(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.exists():
            message = f"real test data missing: {path} (../shared/data must sit beside the checkout)"
            if _in_ci():
                pytest.fail(message)
            pytest.skip(message)
        return path

    return resolve


@pytest.fixture(autouse=True)
def no_users_hellaswag(monkeypatch, tmp_path_factory):
    """The user's $HELLASWAG_FILE and an earlier HellaSwag download in their HF_HOME are not seen by tests: a
    test that wants one sets it (the "no data" paths would otherwise pass or fail by machine)."""
    from eval import hellaswag_data

    monkeypatch.delenv("HELLASWAG_FILE", raising=False)
    absent = tmp_path_factory.getbasetemp() / "no_hellaswag_download" / "hellaswag_val.jsonl"
    monkeypatch.setattr(hellaswag_data, "downloaded_file", lambda: absent)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from data.tokenizer import gpt2_tokenizer as build

    return build()


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped where there is none, CI included)")
    config.addinivalue_line("markers", "model: model tests, also run under transformers 5.17 by .ci/run")
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass


TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


@pytest.fixture(scope="session")
def tiktoken_gpt2(tmp_path_factory):
    """tiktoken's own `gpt2` encoding (its URLs, hashes and regex), fed from a local cache instead of the web."""
    import hashlib
    import shutil

    import tiktoken
    import tiktoken_ext.openai_public as openai_public

    cache = tmp_path_factory.mktemp("tiktoken-cache")
    from data.tokenizer import gpt2_bpe_files

    encoder_json, vocab_bpe = gpt2_bpe_files()
    for name, path in (("encoder.json", encoder_json), ("vocab.bpe", vocab_bpe)):
        shutil.copy(path, cache / hashlib.sha1((TIKTOKEN_URL + name).encode()).hexdigest())
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        return tiktoken.Encoding(**openai_public.gpt2())
    finally:
        if old is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


@pytest.fixture
def build_nanogpt_main(monkeypatch):
    """build_nanogpt_checkpoint.GPTConfig pickles as `__main__.GPTConfig`, as it does in a checkpoint of
    build-nanogpt's train_gpt2.py run as a script."""
    import sys

    from build_nanogpt_checkpoint import GPTConfig

    monkeypatch.setattr(GPTConfig, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "GPTConfig", GPTConfig, raising=False)


@pytest.fixture
def random_gpt2():
    """transformers' own GPT-2, tiny, every parameter random: the reference a converted checkpoint must match."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from model_helpers import randomize_all_parameters

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=50257))
    randomize_all_parameters(model, seed=3)
    model.tie_weights()
    return model.eval()
