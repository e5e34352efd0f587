"""The textbook BPE (bpe_reference.py) and the fast one give the same merges and the same ids.

The reference is what a learner reads; these tests are what makes it true that the fast
trainer (``bpe_train.py``) and the tokenizer built on it (``bpe.py``, both its Python and
tiktoken engines) are that algorithm, only faster.
"""

from __future__ import annotations

import pytest

from gptlab.data.sources import embedded_text
from gptlab.tokenizer import bpe_reference
from gptlab.tokenizer.bpe import BPETokenizer
from gptlab.tokenizer.bpe_patterns import GPT2_PATTERN, GPT4_PATTERN, NO_SPLIT_PATTERN
from tests.conftest import SHAKESPEARE, needs_shakespeare

UNICODE = (
    "naïve café 😀😀😀 🎉🎉 ok — Zürich, Ελληνικά, русский, 日本語のテキスト, 한국어!\n"
    "emoji: 👩‍👩‍👧 🏳️‍🌈 🇫🇷🇫🇷 and combining e\u0301e\u0301 marks. 😀😀 café café\n"
) * 4
# Long runs of one or two characters: every pair count ties with another, and runs
# overlap ("aaa" merged on "aa" is "Z a"), which is where the tie-break and the
# left-to-right rule decide everything.
REPEATS = "aaaaaaaaaaaaaaaa bbbbbbbb abababababab aabbaabb   \n\n\n\t\t" * 3 + "a" * 33


def _fast(text: str, n_merges: int, regex: str) -> BPETokenizer:
    # the tokenizer takes the regex itself as its pattern, and recognises the built-in ones
    return BPETokenizer.train(
        text, 256 + n_merges, pattern=regex, special_tokens=(), progress=False
    )


def _check_same(text: str, n_merges: int, regex: str) -> None:
    fast = _fast(text, n_merges, regex)
    merges = bpe_reference.train(text, 256 + n_merges, regex)
    assert fast.merges == merges
    ids = bpe_reference.encode(text, merges, regex)
    assert fast.encode(text, engine="python") == ids
    assert fast.encode(text) == ids  # tiktoken's engine over our ranks
    assert bpe_reference.decode(ids, merges) == text


SPLITS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, None: NO_SPLIT_PATTERN}


@needs_shakespeare
@pytest.mark.parametrize("name", ["gpt2", "gpt4"])
def test_same_on_shakespeare(name):
    text = SHAKESPEARE.read_text(encoding="utf-8")[:20_000]
    _check_same(text, 200, SPLITS[name])


def test_same_on_pydoc_text():
    text = embedded_text()[:20_000]
    _check_same(text, 200, GPT4_PATTERN)


@pytest.mark.parametrize("name", ["gpt2", "gpt4", None])
def test_same_on_unicode_and_emoji(name):
    _check_same(UNICODE, 120, SPLITS[name])


# The text runs out of pairs before 40 merges: both must stop at the same point.
@pytest.mark.filterwarnings("ignore:the training text only supports")
@pytest.mark.parametrize("name", ["gpt4", None])
def test_same_on_repeated_characters(name):
    _check_same(REPEATS, 40, SPLITS[name])


def test_runs_out_of_pairs():
    # "ab" then "abab"... a text of single-byte chunks has no pair at all.
    assert bpe_reference.train("ab ab ab", 1000, GPT4_PATTERN) == [(97, 98), (32, 256)]
    assert bpe_reference.train("a b c", 1000, GPT4_PATTERN) == [(32, 98), (32, 99)]
    assert bpe_reference.train("", 1000) == []


def test_encode_reuses_a_token_built_two_ways():
    # "he" (id 256), "th" (257), then "the" from ("th", "e"). Encoding "the" first merges
    # "he" (lowest rank) and is left with ("t", "he"): not a merge, but its bytes are the
    # token "the", so the joined-bytes rule (tiktoken's) still ends at one id.
    merges = [(104, 101), (116, 104), (257, 101)]
    assert bpe_reference.encode("the", merges) == [258]
    assert bpe_reference.decode([258], merges) == "the"


def test_decode_joins_bytes_before_decoding():
    emoji = "😀".encode()
    merges = [(emoji[0], emoji[1]), (emoji[2], emoji[3])]  # two tokens, half an emoji each
    ids = bpe_reference.encode("😀", merges)
    assert ids == [256, 257]
    assert bpe_reference.decode(ids, merges) == "😀"
    assert bpe_reference.decode([256], merges) == "\ufffd"
