"""Byte-level BPE the textbook way: train by recounting, encode by lowest rank, decode.

This is the algorithm to read first (minbpe's, in about 100 lines). It is slow on
purpose: every merge recounts every pair of the whole corpus. ``bpe_train.py`` learns
exactly the same merges much faster, and ``bpe.py`` wraps them in a full tokenizer
(special tokens, saving, tiktoken's engine); the tests hold all three to each other.

Vocabulary: ids 0..255 are the 256 byte values, so any text can be encoded. Merge
``i`` is a pair of ids ``(a, b)`` and creates id ``256 + i``, whose bytes are
``vocab[a] + vocab[b]``. A lower id is an earlier merge: the id is also its rank.
"""

from __future__ import annotations

from collections import Counter

import regex

from gptlab.tokenizer.bpe_patterns import GPT4_PATTERN


def split(text: str, pattern: str = GPT4_PATTERN) -> list[list[int]]:
    """Pre-split ``text`` into chunks (words, numbers, spaces...) as lists of byte ids.

    Merges never cross a chunk boundary, so "dog." cannot become one token: the
    vocabulary is spent on reusable pieces. See ``bpe_patterns.py`` for the regexes.
    """
    return [list(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]


def count_pairs(chunks: list[list[int]]) -> Counter[tuple[int, int]]:
    """How often each adjacent pair of ids occurs, over all chunks."""
    counts: Counter[tuple[int, int]] = Counter()
    for ids in chunks:
        counts.update(zip(ids, ids[1:]))  # (ids[0], ids[1]), (ids[1], ids[2]), ...
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    Left to right and without overlap: ``a a a`` merged on ``(a, a)`` gives ``Z a``.
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2  # both ids of the pair are consumed
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text: str, vocab_size: int, pattern: str = GPT4_PATTERN) -> list[tuple[int, int]]:
    """Learn the merges of a vocabulary of up to ``vocab_size`` ids (256 bytes + merges).

    Fewer come back when the text runs out of pairs (every chunk is a single token).
    """
    chunks = split(text, pattern)
    vocab = [bytes([b]) for b in range(256)]  # id -> its bytes
    id_of = {token: i for i, token in enumerate(vocab)}  # bytes -> id
    merges: list[tuple[int, int]] = []
    while len(vocab) < vocab_size:
        # 1. Count every adjacent pair, from scratch (this is what bpe_train.py avoids).
        counts = count_pairs(chunks)
        if not counts:
            break  # nothing left to merge
        # 2. The most frequent pair wins; on a tie the pair of smallest ids, (a, b) compared
        #    as a tuple, so training is deterministic and matches bpe_train.py.
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        # 3. Its bytes become a new token, unless they already are one: "t"+"he" after
        #    "th"+"e" builds b"the" a second time. Then the existing id is reused and no
        #    merge is recorded (one id per byte string, as tiktoken's ranks require).
        new_bytes = vocab[best[0]] + vocab[best[1]]
        new_id = id_of.get(new_bytes)
        if new_id is None:
            new_id = len(vocab)
            vocab.append(new_bytes)
            id_of[new_bytes] = new_id
            merges.append(best)
        # 4. Merge it everywhere in the corpus, and repeat.
        chunks = [merge(ids, best, new_id) for ids in chunks]
    return merges


def build_vocab(merges: list[tuple[int, int]]) -> list[bytes]:
    """``vocab[id]``: the bytes of each token, the 256 bytes and then one per merge."""
    vocab = [bytes([b]) for b in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


def encode(text: str, merges: list[tuple[int, int]], pattern: str = GPT4_PATTERN) -> list[int]:
    """Text -> ids: in each chunk, merge the adjacent pair of lowest rank until none is left.

    A pair's rank is the id of its joined bytes, if those bytes are a token. minbpe looks
    up the pair of ids instead; the two differ only when a token's bytes can be built
    two ways ("t"+"he", "th"+"e"), and the joined-bytes rule is tiktoken's and GPT-2's.
    """
    vocab = build_vocab(merges)
    id_of = {token: i for i, token in enumerate(vocab)}  # bytes -> id, which is its rank
    never = len(vocab)  # larger than any rank: "this pair is not a token"
    out: list[int] = []
    for ids in split(text, pattern):
        while len(ids) >= 2:
            ranks = [id_of.get(vocab[a] + vocab[b], never) for a, b in zip(ids, ids[1:])]
            best = min(ranks)
            if best == never:
                break  # no pair of this chunk is a token: it is fully encoded
            i = ranks.index(best)  # the leftmost pair of lowest rank
            ids = ids[:i] + [best] + ids[i + 2 :]
        out.extend(ids)
    return out


def decode(ids: list[int], merges: list[tuple[int, int]]) -> str:
    """Ids -> text: join the tokens' bytes, then decode UTF-8 once.

    Decoding token by token would fail on a token that holds half a character (an
    emoji is 4 bytes); only the joined bytes are text. Invalid bytes become U+FFFD.
    """
    vocab = build_vocab(merges)
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
