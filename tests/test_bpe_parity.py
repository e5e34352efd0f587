"""Parity: our pure-Python encoder gives tiktoken's ids, with GPT-2's ranks and with ours.

The reference is tiktoken itself, built from the same ranks file with tiktoken's own
r50k pattern string, so nothing of ours is on the reference side. Hypothesis draws
text from the corners where tokenizers disagree: emoji (4-byte UTF-8 and ZWJ
sequences), combining marks, CJK, every kind of whitespace run, contractions in odd
cases, digits, and surrogates (which Python's ``str`` allows and UTF-8 does not).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.tokenizer.bpe import BPETokenizer
from gptlab.tokenizer.bpe_encode import _merge_long, _merge_short

tiktoken = pytest.importorskip("tiktoken")
from tiktoken.load import load_tiktoken_bpe  # noqa: E402
from tiktoken_ext.openai_public import r50k_pat_str  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RANKS = DATA / "r50k_base.tiktoken"
SHAKESPEARE = DATA / "tinyshakespeare.txt"
EOT = "<|endoftext|>"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared test data sits beside the repository)")
    return path


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.from_tiktoken_file(_need(RANKS))


@pytest.fixture(scope="module")
def reference():
    """tiktoken's r50k_base, built offline from the same file."""
    ranks = load_tiktoken_bpe(str(_need(RANKS)))
    return tiktoken.Encoding(
        "r50k_base", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={EOT: 50256}
    )


@pytest.fixture(scope="module")
def gpt2_gpt4_split(gpt2) -> BPETokenizer:
    """GPT-2's ranks with GPT-4's split pattern: exercises the other regex against tiktoken."""
    return BPETokenizer(
        gpt2.merges, pattern="gpt4", special_tokens=gpt2.special_tokens, byte_order=gpt2.byte_order
    )


def test_gpt2_shape(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.eot_id == 50256
    assert gpt2.pattern == "gpt2"


def test_shakespeare_parity(gpt2, reference):
    text = _need(SHAKESPEARE).read_text(encoding="utf-8")
    ids = gpt2.encode_python(text)
    assert ids == reference.encode(text)
    assert gpt2.encode(text, engine="tiktoken") == ids
    assert gpt2.decode(ids) == text


def test_special_token_parity(gpt2, reference):
    text = f"Hello{EOT}world {EOT}\n{EOT}{EOT}end <|endoftext|"
    assert gpt2.encode_python(text) == reference.encode(text, allowed_special="all")
    assert gpt2.encode_python(text, allowed_special="none") == reference.encode_ordinary(text)
    assert gpt2.encode_python(text).count(50256) == 4


# Characters chosen to hit every branch of both split patterns and multi-byte UTF-8.
TRICKY = list(
    " \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u3000"  # whitespace of all kinds
    "aZéß'sSdDtTmMlLvVrReE"  # letters and contraction letters
    "0179\u0660\u00bd\u2164"  # digits and other numbers
    '.,;!?-_()[]{}<|>$€@#*/\\"`~'  # symbols
    "\u0301\u0308\u20dd"  # combining marks
    "中文日本語한국어"  # CJK
    "😀👍🏽\u200d👨‍👩‍👧\ufe0f🇫🇷"  # emoji, skin tone, ZWJ sequence, flags
    "\u017f\u212a\u0130"  # characters that case-fold oddly (long s, Kelvin, dotted I)
) + ["'s", "'LL", "'Ve", "\r\n", "  ", "\n\n", "    "]

unicode_text = st.lists(
    st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), max_size=60
).map("".join)
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
text_with_surrogates = st.lists(st.one_of(st.sampled_from(TRICKY), surrogates), max_size=30).map(
    "".join
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=unicode_text)
def test_arbitrary_unicode_parity(gpt2, gpt2_gpt4_split, reference, text):
    ids = gpt2.encode_python(text)
    assert ids == reference.encode_ordinary(text)
    assert gpt2.decode(ids) == text
    tok = gpt2_gpt4_split
    assert tok.encode_python(text) == tok.encode(text, engine="tiktoken")


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=text_with_surrogates)
def test_surrogates_like_tiktoken(gpt2, reference, text):
    """Paired surrogates become the astral character, lone ones U+FFFD, as in tiktoken."""
    ids = gpt2.encode_python(text)
    assert ids == reference.encode_ordinary(text)
    assert gpt2.decode(ids) == text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def test_surrogate_examples(gpt2, reference):
    for text in ["\ud800", "a\udfffb", "\ud83d\ude00", "x\ud83d", "\ude00\ud83d"]:
        assert gpt2.encode_python(text) == reference.encode_ordinary(text)
    assert gpt2.decode(gpt2.encode("\ud83d\ude00")) == "😀"
    assert gpt2.decode(gpt2.encode("a\ud800")) == "a\ufffd"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=2, max_size=600))
def test_long_and_short_merge_agree(gpt2, data):
    """The heap merge used for long chunks applies exactly the list merge's rule."""
    ranks = gpt2._ranks
    never = 1 << 62
    assert _merge_long(data, ranks, never) == _merge_short(data, ranks, never)


def test_long_chunks_parity(gpt2, reference):
    # Long runs that pre-splitting keeps whole take the heap path (> 500 bytes).
    for text in [" " * 3000, "=-" * 1000 + "x", "\n" * 700 + "a", "é" * 900, "!?" * 400 + "  \n"]:
        assert gpt2.encode_python(text) == reference.encode_ordinary(text)


def test_no_split_pattern_parity(gpt2):
    text = _need(SHAKESPEARE).read_text(encoding="utf-8")[:30_000]
    tok = BPETokenizer(
        gpt2.merges, pattern=None, special_tokens=gpt2.special_tokens, byte_order=gpt2.byte_order
    )
    ids = tok.encode_python(text)
    assert ids == tok.encode(text, engine="tiktoken")
    assert tok.decode(ids) == text
