"""The fast BPE trainer learns exactly the merges of the slow, obvious algorithm.

The reference below recounts every pair of every word before each merge (minbpe's
loop, weighted by chunk frequency) and breaks ties the same way (most frequent,
then smallest ids). Any bookkeeping slip in the incremental counts, the lazy heap
or the overlapping-run handling (``aaaa``, ``abab``) shows up as a different merge.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.tokenizer.bpe_patterns import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    NO_SPLIT_PATTERN,
    compile_pattern,
)
from gptlab.tokenizer.bpe_train import _blocks, count_chunks, learn_merges

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def reference_merges(chunks: Counter[str], n_merges: int) -> list[tuple[int, int]]:
    """Recount-per-merge BPE with the same tie-break and duplicate rule as learn_merges."""
    words: Counter[tuple[int, ...]] = Counter()
    for chunk, freq in chunks.items():
        words[tuple(chunk.encode("utf-8"))] += freq
    token_bytes = [bytes([i]) for i in range(256)]
    token_id = {t: i for i, t in enumerate(token_bytes)}
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges:
        counts: Counter[tuple[int, int]] = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        new = token_bytes[best[0]] + token_bytes[best[1]]
        z = token_id.get(new)
        if z is None:
            z = len(token_bytes)
            token_bytes.append(new)
            token_id[new] = z
            merges.append(best)
        merged: Counter[tuple[int, ...]] = Counter()
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(z)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        words = merged
    return merges


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN])
def test_matches_reference_on_shakespeare(pattern):
    path = DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared test data sits beside the repository)")
    chunks = count_chunks(path.read_text(encoding="utf-8")[:20_000], pattern)
    merges, _ = learn_merges(chunks, 200)
    assert merges == reference_merges(chunks, 200)


# Few distinct characters make ties, runs (aaaa) and alternations (abab) common.
small_text = st.text(alphabet=st.sampled_from("aab b\n.é😀"), max_size=200)


@settings(max_examples=150, deadline=None)
@given(text=small_text, n_merges=st.integers(0, 40), split=st.booleans())
def test_matches_reference_on_random_text(text, n_merges, split):
    pattern = GPT4_PATTERN if split else NO_SPLIT_PATTERN
    chunks = count_chunks(text, pattern)
    merges, _ = learn_merges(chunks, n_merges)
    assert merges == reference_merges(chunks, n_merges)


def test_overlapping_runs():
    # "aaaaa": pairs (a,a) x4 -> "Z Z a"; then (Z,Z) is the only pair seen twice... weighted by 3.
    chunks = Counter({"aaaaa": 3, "abab": 2})
    merges, _ = learn_merges(chunks, 10)
    assert merges == reference_merges(chunks, 10)
    assert merges[0] == (97, 97)


def test_duplicate_bytes_are_not_new_tokens():
    # "t h e": merging (h,e) then (t,he) and, in another word, (t,h) then (th,e) would build
    # b"the" twice; the second time it must reuse the existing token and spend no id.
    chunks = Counter({"the": 1, "he": 5, "th": 4, "xthe": 3})
    merges, n_dup = learn_merges(chunks, 20)
    built = [bytes([i]) for i in range(256)]
    for a, b in merges:
        built.append(built[a] + built[b])
    assert len(set(built)) == len(built)
    assert merges == reference_merges(chunks, 20)


def test_runs_out_of_pairs():
    merges, _ = learn_merges(Counter({"ab": 2, "c": 5}), 100)
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
