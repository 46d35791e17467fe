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
    from data.tokenizer import tiktoken_gpt2 as prepare_backend  # data.prepare's default (fast) tokenizer

    ours = encode_document(gpt2_tokenizer, text)
    assert ours == [EOT_ID] + tiktoken_gpt2.encode_ordinary(text)
    assert prepare_backend().encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tokenizer.decode(ours[1:]) == text


def test_literal_endoftext_in_text_is_ordinary_text(gpt2_tokenizer):
    ids = encode_document(gpt2_tokenizer, "x <|endoftext|> y")
    assert ids.count(EOT_ID) == 1 and ids[0] == EOT_ID


def test_literal_endoftext_as_a_plain_call_gives_it_id_in_both_tokenizers(gpt2_tokenizer):
    """`tokenizer(s)` (lm-eval's call, so our HellaSwag scorer's) maps a literal <|endoftext|> to its id; tiktoken with
    that special token allowed, which the scorer uses for GPT-2's tokenizer, gives the same ids on every text."""
    from data.tokenizer import tiktoken_gpt2

    texts = TEXTS + ["<|endoftext|>", "x<|endoftext|><|endoftext|>y", "<|endoftext", " <|endoftext|> x"]
    assert gpt2_tokenizer(texts)["input_ids"] == tiktoken_gpt2().encode_batch(texts, allowed_special="all")
    assert gpt2_tokenizer("a<|endoftext|>b")["input_ids"].count(EOT_ID) == 1


def test_is_gpt2_tokenizer_knows_copies_and_refuses_changed_ones(gpt2_tokenizer, tmp_path):
    import copy

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from data.tokenizer import is_gpt2_tokenizer, tokenizer_for_context

    assert is_gpt2_tokenizer(gpt2_tokenizer)
    tokenizer_for_context(128).save_pretrained(tmp_path / "export")  # what an export carries
    assert is_gpt2_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "export"))
    gpt2_tokenizer(["a " * 50], truncation=True, max_length=8)  # call-time settings are not the tokenizer
    assert is_gpt2_tokenizer(tokenizer_for_context(64))
    extended = copy.deepcopy(gpt2_tokenizer)
    extended.add_tokens(["<pad>"])
    assert not is_gpt2_tokenizer(extended)
    other = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    assert not is_gpt2_tokenizer(PreTrainedTokenizerFast(tokenizer_object=other))
    assert not is_gpt2_tokenizer(object())  # no Rust backend at all


def test_is_gpt2_tokenizer_refuses_one_that_splits_special_tokens(gpt2_tokenizer, tmp_path):
    """split_special_tokens (a tokenizer_config.json setting) lives outside the Rust backend's spec: such a tokenizer
    encodes a literal <|endoftext|> as text, while tiktoken with it allowed gives its id."""
    import json

    from transformers import AutoTokenizer

    from data.tokenizer import is_gpt2_tokenizer, tiktoken_gpt2

    gpt2_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "split_special_tokens": True}))
    splitting = AutoTokenizer.from_pretrained(tmp_path)
    assert splitting(["<|endoftext|>"])["input_ids"] != [tiktoken_gpt2().encode("<|endoftext|>", allowed_special="all")]
    assert not is_gpt2_tokenizer(splitting)


def test_a_model_folder_whose_tokenizer_does_not_load_gets_gpt2s_with_a_warning(tmp_path):
    """tokenizer_for_model, for a model with added tokens whose folder's tokenizer.json transformers cannot read
    (here a merge of three parts): the tokenizers library raised TypeError, not the OSError / ValueError caught, so
    an export stopped with a traceback, and a training from that folder stopped at start-up on its main process
    alone (it picks the checkpoint tokenizer), the other ranks left in the next collective."""
    from data.tokenizer import tokenizer_for_model

    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text(
        '{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null, '
        '"pre_tokenizer": null, "post_processor": null, "decoder": null, '
        '"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["x y z"]}}')
    tokenizer, warning = tokenizer_for_model(64, 50260, tmp_path)
    assert len(tokenizer) == 50257 and tokenizer.model_max_length == 64
    assert warning.startswith(f"the model has 50,260 token ids but {tmp_path} holds no tokenizer with as many")
