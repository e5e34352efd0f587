"""The fast BPE trainer learns exactly the merges of the slow, obvious algorithm.

The reference is ``gptlab.tokenizer.bpe_reference``: it recounts every pair of every
chunk before each merge (minbpe's loop) and breaks ties the same way (most frequent,
then smallest ids). Any bookkeeping slip in the incremental counts, the lazy heap or
the overlapping-run handling (``aaaa``, ``abab``) shows up as a different merge.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.tokenizer import bpe_reference
from gptlab.tokenizer.bpe_patterns import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    NO_SPLIT_PATTERN,
    compile_pattern,
)
from gptlab.tokenizer.bpe_train import _blocks, count_chunks, learn_merges


def fast_merges(text: str, n_merges: int, pattern: str) -> list[tuple[int, int]]:
    merges = learn_merges(count_chunks(text, pattern), n_merges)
    return merges


def reference_merges(text: str, n_merges: int, pattern: str) -> list[tuple[int, int]]:
    return bpe_reference.train(text, 256 + n_merges, pattern)


# Few distinct characters make ties, runs (aaaa) and alternations (abab) common.
small_text = st.text(alphabet=st.sampled_from("aab b\n.é😀"), max_size=200)


@settings(max_examples=150, deadline=None)
@given(text=small_text, n_merges=st.integers(0, 40), split=st.booleans())
def test_matches_reference_on_random_text(text, n_merges, split):
    pattern = GPT4_PATTERN if split else NO_SPLIT_PATTERN
    assert fast_merges(text, n_merges, pattern) == reference_merges(text, n_merges, pattern)


def test_overlapping_runs():
    # Newlines are chunks of their own, so this is the words "aaaaa" x3 and "abab" x2.
    # "aaaaa": pairs (a,a) x4 -> "Z Z a"; the runs and alternations must be counted right.
    text = "\n".join(["aaaaa"] * 3 + ["abab"] * 2)
    merges = fast_merges(text, 10, GPT4_PATTERN)
    assert merges == reference_merges(text, 10, GPT4_PATTERN)
    assert merges[0] == (97, 97)


def test_duplicate_bytes_are_not_new_tokens():
    # "t h e": merging (h,e) then (t,he) and, in another word, (t,h) then (th,e) would build
    # b"the" twice; the second time it must reuse the existing token and spend no id.
    text = "\n".join(["the"] + ["he"] * 5 + ["th"] * 4 + ["xthe"] * 3)
    assert count_chunks(text, GPT4_PATTERN) == Counter(
        {"the": 1, "he": 5, "th": 4, "xthe": 3, "\n": 12}
    )
    merges = fast_merges(text, 20, GPT4_PATTERN)
    built = [bytes([i]) for i in range(256)]
    for a, b in merges:
        built.append(built[a] + built[b])
    assert len(set(built)) == len(built)
    assert merges == reference_merges(text, 20, GPT4_PATTERN)


def test_runs_out_of_pairs():
    merges = learn_merges(Counter({"ab": 2, "c": 5}), 100)
    assert merges == [(97, 98)]


def test_special_tokens_are_cut_out():
    counts = count_chunks("hello<|endoftext|>world<|endoftext|>", GPT4_PATTERN, ["<|endoftext|>"])
    assert counts == Counter({"hello": 1, "world": 1})


def test_blocks_split_like_the_whole_text():
    text = (
        "First Citizen:\nBefore we proceed any further,  hear me speak\n\n  \nAll\n" * 200
    ) + "end"
    for pattern in (GPT2_PATTERN, GPT4_PATTERN):
        findall = compile_pattern(pattern).findall
        pieces = list(_blocks(text, block_chars=500))
        assert len(pieces) > 10
        assert "".join(pieces) == text
        assert [c for p in pieces for c in findall(p)] == findall(text)
