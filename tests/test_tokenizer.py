"""The offline GPT-2 tokenizer gives tiktoken's `gpt2` ids on varied text (tiktoken's own encoding definition:
conftest.tiktoken_gpt2)."""

import pytest

from data.tokenizer import EOT_ID, encode_document

pytestmark = pytest.mark.model

TEXTS = [
    "Hello, I'm a language model,",
    "naïve café — déjà vu, Ελληνικά, русский, 中文字符, 日本語のテキスト",
    "emoji 🎉🚀👩‍👩‍👧‍👦 and flags 🇫🇷",
    "tabs\tand   multiple    spaces   \n\n\n  trailing   ",
    "windows\r\nline\r\nendings\r\n",
    "digits 1234567890 3.14159 -42 1e-5 0x1F",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code\n",
    "   leading spaces and 'quotes' \"double\" it's we'll they've",
    "a literal <|endoftext|> inside a document",
    "",
]


def test_vocabulary(gpt2_tokenizer):
    assert len(gpt2_tokenizer) == 50257
    assert gpt2_tokenizer.eos_token_id == EOT_ID


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_tiktoken(gpt2_tokenizer, tiktoken_gpt2, text):
    from data.encode import tiktoken_gpt2 as prepare_backend  # data.prepare's default (fast) tokenizer

    ours = encode_document(gpt2_tokenizer, text)
    assert ours == [EOT_ID] + tiktoken_gpt2.encode_ordinary(text)
    assert prepare_backend().encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tokenizer.decode(ours[1:]) == text


def test_literal_endoftext_in_text_is_ordinary_text(gpt2_tokenizer):
    ids = encode_document(gpt2_tokenizer, "x <|endoftext|> y")
    assert ids.count(EOT_ID) == 1 and ids[0] == EOT_ID
