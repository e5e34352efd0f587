"""The same merges as ``bpe_reference.py``, found faster; here is how.

Read ``bpe_reference.py`` first: it is the textbook loop (minbpe's): count every
adjacent pair in the corpus, merge the most frequent one everywhere, repeat. This
module learns exactly those merges (``tests/test_bpe_reference.py`` checks it), fast
enough to train a 16k vocabulary on 20 MB in Python. Recounting the whole corpus for
each of thousands of merges is what makes the textbook loop slow. Three observations
remove almost all of that work:

1. **Count unique chunks, not text.** After pre-splitting, a 1 MB corpus has ~260k
   chunks but only ~15k distinct ones. Each distinct chunk ("word") is stored once
   with its frequency, and every count is weighted by it.
2. **Update counts locally.** Merging ``(a, b) -> z`` only changes the pairs right
   next to each occurrence: ``(x, a)`` becomes ``(x, z)`` and ``(b, y)`` becomes
   ``(z, y)``. An index ``where[pair] -> words`` says which words to visit, so a
   merge costs time proportional to its occurrences, not to the corpus.
3. **A max-heap with lazy deletion.** The best pair is the top of a heap of
   ``(-count, pair)``. Counts of old pairs only *decrease* (only pairs containing the
   new token ``z`` can grow, and they are pushed once, with their final count, at
   the end of the merge that created ``z``), so a heap entry is never too small,
   only too large. When the top entry's count is out of date it is re-pushed with
   the current count; no entry is pushed for a decrease. That keeps the heap small:
   pushing on every change is what makes a naive heap trainer slow.

A word is stored as a ``str`` whose code points are token ids (``chr(id)``), so that
finding a pair is ``str.find`` and merging it everywhere in the word is
``str.replace``; both run in C, and ``replace`` is non-overlapping left to right,
which is exactly BPE's rule (``"aaa"`` merged on ``aa`` gives ``"Z a"``). A pair is the
2-character string ``chr(a) + chr(b)``, so ties in the heap are broken by comparing
``(a, b)``: the pair of smallest ids wins, which makes training deterministic.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from gptlab.tokenizer.bpe_patterns import (
    NO_SPLIT_PATTERN,
    PATTERNS,
    compile_pattern,
    fix_surrogates,
)

# Texts longer than this are pre-split block by block, so that the list of chunks of a
# 1 GB corpus never has to exist in memory at once.
_BLOCK_CHARS = 1 << 20
# For the built-in patterns, a letter followed by a newline is always a chunk boundary
# (a letter run ends there, and no chunk starts before a newline and runs into it), so
# cutting blocks there gives exactly the chunks of the whole text. A block must not end
# in whitespace: ``\s++$`` would then take the whole run where the full text splits it.
_SAFE_CUT = regex.compile(r"(?<=\p{L})\n")


def count_chunks(
    text: str, pattern: str, special_tokens: Iterable[str] = (), progress: bool = False
) -> Counter[str]:
    """Pre-split ``text`` with the regex ``pattern`` and count each distinct chunk.

    Special tokens are cut out first and never counted, so no merge can ever build
    one out of ordinary bytes. The bar (``progress``) counts characters: on a large
    corpus the regex pass takes as long as the merges.
    """
    text = fix_surrogates(text)
    specials = sorted(set(special_tokens), key=len, reverse=True)
    if specials:
        documents = regex.split("|".join(regex.escape(s) for s in specials), text)
    else:
        documents = [text]
    counts: Counter[str] = Counter()
    if pattern == NO_SPLIT_PATTERN:  # no pre-split: each document is one chunk
        counts.update(d for d in documents if d)
        return counts
    findall = compile_pattern(pattern).findall
    can_cut = pattern in PATTERNS.values()
    bar = _progress_bar(len(text), progress and len(text) > _BLOCK_CHARS, "pre-splitting", "char")
    for doc in documents:
        for block in _blocks(doc) if can_cut else [doc]:
            counts.update(findall(block))
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    return counts


def _blocks(text: str, block_chars: int = _BLOCK_CHARS) -> Iterable[str]:
    """Cut ``text`` into ~1 MB pieces at safe chunk boundaries (see ``_SAFE_CUT``)."""
    start = 0
    while len(text) - start > block_chars:
        m = _SAFE_CUT.search(text, start + block_chars)
        if m is None:
            break
        yield text[start : m.start()]
        start = m.start()
    yield text[start:]


def learn_merges(
    chunk_counts: dict[str, int], n_merges: int, progress: bool = False
) -> list[tuple[int, int]]:
    """Learn up to ``n_merges`` merges over byte ids 0..255 from weighted chunks.

    Merge ``i`` creates id ``256 + i`` from the pair ``merges[i]``. Fewer merges come
    back when the corpus runs out of pairs. A pair whose bytes already formed a token
    (``"t"+"he"`` after ``"th"+"e"``) is merged into the existing token in the corpus
    but spends no new id, because a vocabulary with two ids for the same bytes cannot
    be loaded into tiktoken, and the rank-based encoder would never produce the second.
    """
    # Each distinct chunk becomes a word: a str with one character per token id.
    # UTF-8 bytes decoded as Latin-1 give exactly chr(byte) for each byte, in C.
    words: list[str] = []
    freqs: list[int] = []
    for chunk, freq in chunk_counts.items():
        word = chunk.encode("utf-8").decode("latin-1")
        if len(word) > 1:  # a one-byte chunk has no pair to merge
            words.append(word)
            freqs.append(freq)

    pair_counts: defaultdict[str, int] = defaultdict(int)
    where: defaultdict[str, list[int]] = defaultdict(list)  # pair -> words that may hold it
    for w, (word, freq) in enumerate(zip(words, freqs)):
        for i in range(len(word) - 1):
            pair = word[i : i + 2]
            pair_counts[pair] += freq
            where[pair].append(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([i]) for i in range(256)]
    token_id = {t: i for i, t in enumerate(token_bytes)}
    merges: list[tuple[int, int]] = []
    bar = _progress_bar(n_merges, progress, "BPE merges", "merge")
    while len(merges) < n_merges:
        pair = _pop_best(heap, pair_counts)
        if pair is None:
            break  # no adjacent pairs left anywhere: the corpus cannot give more tokens
        a, b = ord(pair[0]), ord(pair[1])
        new_bytes = token_bytes[a] + token_bytes[b]
        z = token_id.get(new_bytes)
        if z is None:
            z = len(token_bytes)
            token_bytes.append(new_bytes)
            token_id[new_bytes] = z
            merges.append((a, b))
            if bar is not None and len(merges) % 32 == 0:
                bar.update(32)
        _merge_everywhere(pair, chr(z), words, freqs, pair_counts, where, heap)
    if bar is not None:
        bar.update(len(merges) - bar.n)
        bar.close()
    return merges


def _pop_best(heap: list[tuple[int, str]], pair_counts: dict[str, int]) -> str | None:
    """The most frequent pair (smallest ids on a tie), discarding out-of-date entries."""
    while heap:
        neg_count, pair = heap[0]
        count = pair_counts.get(pair, 0)
        if count == -neg_count:
            if count > 0:
                return pair
            heapq.heappop(heap)
        elif 0 < count < -neg_count:
            heapq.heapreplace(heap, (-count, pair))  # it shrank: put it back where it belongs
        else:
            heapq.heappop(heap)  # gone, or a fresher entry for it exists
    return None


def _merge_everywhere(
    pair: str,
    z: str,
    words: list[str],
    freqs: list[int],
    pair_counts: defaultdict[str, int],
    where: defaultdict[str, list[int]],
    heap: list[tuple[int, str]],
) -> None:
    """Replace ``pair`` by the token ``z`` in every word and update the pair counts.

    For each occurrence ``... x a b y ...`` -> ``... x z y ...``, the pair ``(x, a)``
    loses the word's frequency and ``(x, z)`` gains it; likewise ``(b, y)`` and
    ``(z, y)``. Occurrences are visited left to right with ``x`` taken from the
    already-merged text, which gets runs like ``a b a b`` -> ``z z`` right.
    """
    a, b = pair
    grown: set[str] = set()
    # set(): a word is listed once per occurrence of the pair it gained, and a word
    # that is visited twice would be scanned twice for nothing.
    for w in set(where.pop(pair, ())):
        word = words[w]
        i = word.find(pair)
        if i < 0:
            continue  # the index is lazy: this word lost the pair to an earlier merge
        freq = freqs[w]
        n = len(word)
        end_of_last = -1
        while i >= 0:
            if i > 0:
                left = z if i == end_of_last else word[i - 1]
                pair_counts[left + a] -= freq
                new = left + z
                pair_counts[new] += freq
                where[new].append(w)
                grown.add(new)
            if i + 2 < n:
                right = word[i + 2]
                pair_counts[b + right] -= freq
                new = z + right
                pair_counts[new] += freq
                where[new].append(w)
                grown.add(new)
            end_of_last = i + 2
            i = word.find(pair, end_of_last)
        words[w] = word.replace(pair, z)
    del pair_counts[pair]
    for new in grown:
        count = pair_counts[new]
        if count > 0:
            heapq.heappush(heap, (-count, new))


def _progress_bar(total: int, enabled: bool, desc: str, unit: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, mininterval=0.5)
