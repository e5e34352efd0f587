"""The pure-Python BPE encoder: apply merges by rank, exactly as tiktoken does.

Given ``ranks`` (token bytes -> id, where a lower id means an earlier merge), a chunk
of text is encoded by starting from its single bytes and repeatedly merging the
adjacent pair whose concatenation has the lowest rank, the leftmost one on a tie,
until no adjacent pair is a token. That is tiktoken's rule (it looks up the
*concatenated bytes*, not the pair of ids), and following it to the letter is what
makes our ids equal tiktoken's on every text, for GPT-2's ranks and for ours.

Two implementations of the same rule, picked by chunk length:

* ``_merge_short``: a list of parts and a parallel list of pair ranks; each step is
  one C-level ``min`` + ``index``. Quadratic, but chunks after pre-splitting are a few
  bytes long, where it is the fastest thing Python can do.
* ``_merge_long``: a heap of (rank, position) over a linked list of parts, for chunks
  of thousands of bytes (no pre-split pattern, long runs of spaces or symbols), where
  the quadratic version would take minutes and the heap takes O(n log n).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import regex

# Chunks at least this long go through the heap; below it the list version is faster.
LONG_CHUNK = 500
_NEVER = 1 << 62  # "not a token": larger than any rank


def bpe_parts(chunk: bytes, ranks: dict[bytes, int], limit: int = _NEVER) -> list[bytes]:
    """Split ``chunk`` into the tokens BPE produces, using only ranks below ``limit``.

    ``limit`` exists to recover the merge that built a token: encoding a token's own
    bytes with the ranks *before* it leaves exactly the two parts it was merged from.
    """
    if len(chunk) < 2:
        return [chunk]
    if len(chunk) < LONG_CHUNK:
        return _merge_short(chunk, ranks, limit)
    return _merge_long(chunk, ranks, limit)


def _merge_short(chunk: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    get = ranks.get
    parts = [chunk[i : i + 1] for i in range(len(chunk))]
    pair_ranks = [get(a + b, limit) for a, b in zip(parts, parts[1:])]
    if limit != _NEVER:  # ranks at or above the limit count as "not a token"
        pair_ranks = [min(r, limit) for r in pair_ranks]
    while True:
        best = min(pair_ranks)
        if best >= limit:
            return parts
        i = pair_ranks.index(best)  # the leftmost pair with the lowest rank
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if len(parts) == 1:
            return parts
        # Only the two pairs that touch the new part changed.
        if i > 0:
            pair_ranks[i - 1] = min(get(parts[i - 1] + parts[i], limit), limit)
        if i < len(parts) - 1:
            pair_ranks[i] = min(get(parts[i] + parts[i + 1], limit), limit)


def _merge_long(chunk: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """Same rule as ``_merge_short`` with a heap and lazy deletion.

    A part is named by its start offset; ``nxt[s]`` is where the next part starts. A
    heap entry ``(rank, s)`` is acted on only if the pair starting at ``s`` still has
    that rank: parts only grow, so a pair whose bytes changed has another rank (ranks
    are unique per byte string) and the entry is simply dropped.
    """
    n = len(chunk)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    alive = [True] * n
    get = ranks.get
    heap = [(r, i) for i in range(n - 1) if (r := get(chunk[i : i + 2], limit)) < limit]
    heapq.heapify(heap)
    while heap:
        r, i = heapq.heappop(heap)
        if not alive[i]:
            continue
        j = nxt[i]
        if j >= n:
            continue
        k = nxt[j]
        if get(chunk[i:k]) != r:
            continue  # stale: one of the two parts has grown since this entry was pushed
        alive[j] = False  # part i absorbs part j
        nxt[i] = k
        if k < n:
            prv[k] = i
            if (rk := get(chunk[i : nxt[k]], limit)) < limit:
                heapq.heappush(heap, (rk, i))
        p = prv[i]
        if p >= 0 and (rp := get(chunk[p:k], limit)) < limit:
            heapq.heappush(heap, (rp, p))
    parts = []
    s = 0
    while s < n:
        parts.append(chunk[s : nxt[s]])
        s = nxt[s]
    return parts


def split_special(
    text: str, special_re: regex.Pattern | None, allowed: frozenset[str]
) -> Iterator[tuple[str, bool]]:
    """Yield ``(segment, is_special)``: allowed special tokens cut the text first.

    Matching special tokens *before* the split pattern is what keeps
    ``"<|endoftext|>"`` one id instead of the chunks ``<|``, ``endoftext``, ``|>``. A
    special token that is not allowed stays ordinary text and the search moves on
    one character, as tiktoken does.
    """
    if special_re is None or not allowed:
        if text:
            yield text, False
        return
    start = 0
    pos = 0
    while True:
        m = special_re.search(text, pos)
        while m is not None and m.group() not in allowed:
            m = special_re.search(text, m.start() + 1)
        if m is None:
            break
        if m.start() > start:
            yield text[start : m.start()], False
        yield m.group(), True
        start = pos = m.end()
    if start < len(text):
        yield text[start:], False
