"""Character and GPT-2 tokenizers: round trips, checkpoint data, clear errors."""

from __future__ import annotations

import pytest

from gptlab.tokenizer import (
    CharTokenizer,
    GPT2Tokenizer,
    TokenizerError,
    load_tokenizer,
    tokenizer_from_dict,
)
from tests.conftest import needs_r50k


def test_char_round_trip_and_rebuild():
    tok = CharTokenizer.from_corpus("First Citizen:\nBefore we proceed")
    text = "Before we"
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_dict(tok.to_dict())
    assert again.encode(text) == tok.encode(text) and again.fingerprint() == tok.fingerprint()


def test_char_unknown_characters_are_named():
    tok = CharTokenizer.from_corpus("abc")
    with pytest.raises(TokenizerError, match="'z'"):
        tok.encode("abz")


def test_save_and_load(tmp_path):
    tok = CharTokenizer.from_corpus("hello")
    path = tok.save(tmp_path / "tok.json")
    assert load_tokenizer(path).encode("hole") == tok.encode("hole")
    path.write_text('{"kind": "char", "chars": "he')  # truncated by hand
    with pytest.raises(TokenizerError, match="truncated or corrupt"):
        load_tokenizer(path)
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "nope"})


@needs_r50k
def test_gpt2_tokenizer_gives_gpt2_ids_offline():
    tok = GPT2Tokenizer()
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("a<|endoftext|>b")[1] == 50256
    assert tok.encode_batch(["Hello world", "x"]) == [[15496, 995], [87]]
    assert tokenizer_from_dict(tok.to_dict()).decode([15496, 995]) == "Hello world"
