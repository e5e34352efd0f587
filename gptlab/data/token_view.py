"""One split of a token store seen as a single long sequence of ids, without copying it.

A split is a list of shards (memory-mapped id arrays). ``TokenView`` numbers their ids
0 .. len - 1 as if they were concatenated, gathers any positions (a window may cross
from one shard into the next) and knows where documents start. With one shard a
gather is a plain fancy index into it, which is what the random windows did before
stores existed, so the ids they draw are the same.

Pickling (a DataLoader worker started by ``spawn`` receives the dataset pickled) sends
a mapped shard as its file name and offset, never its ids.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


class TokenView:
    """The ids of ``shards`` back to back; ``doc_starts[k]`` are shard ``k``'s document starts."""

    def __init__(
        self,
        shards: Sequence[np.ndarray],
        doc_starts: Sequence[ArrayLike] | None = None,
    ) -> None:
        self.shards = list(shards)
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._doc_starts = None if doc_starts is None else list(doc_starts)
        self._all_doc_starts: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].dtype if self.shards else np.dtype(np.uint16)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """The ids at global positions ``index`` (any shape), as int64."""
        index = np.asarray(index)
        if len(self.shards) == 1:
            return self.shards[0][index].astype(np.int64)
        out = np.empty(index.shape, dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, index, side="right") - 1
        for k in np.unique(shard_of):
            where = shard_of == k
            out[where] = self.shards[k][index[where] - self.offsets[k]]
        return out

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows of ``length`` consecutive ids starting at each of ``starts``: shape (len(starts), length)."""
        return self.gather(np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length))

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Ids ``start .. stop - 1`` as int64 (a copy of only those ids)."""
        return self.gather(np.arange(start, stop, dtype=np.int64))

    @property
    def has_documents(self) -> bool:
        return self._doc_starts is not None

    @property
    def doc_starts(self) -> np.ndarray:
        """Global positions where documents start (sorted int64; position 0 when none are known)."""
        if self._all_doc_starts is None:
            if self._doc_starts is None:
                self._all_doc_starts = np.zeros(1, dtype=np.int64)
            else:
                parts = [
                    np.asarray(d, dtype=np.int64) + self.offsets[k]
                    for k, d in enumerate(self._doc_starts)
                ]
                self._all_doc_starts = (
                    np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
                )
        return self._all_doc_starts

    def document_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of every document: a document runs to the next one's start."""
        starts = self.doc_starts
        ends = np.append(starts[1:], len(self))
        return starts, ends - starts

    def document_ids(self, index: np.ndarray) -> np.ndarray:
        """For each global position, the number of the document it belongs to."""
        return np.searchsorted(self.doc_starts, np.asarray(index), side="right") - 1

    # -- pickling: mapped shards travel by file name --------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["shards"] = [_pickle_shard(s) for s in self.shards]
        if self._doc_starts is not None:
            state["_doc_starts"] = [_pickle_shard(d) for d in self._doc_starts]
        state["_all_doc_starts"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        state["shards"] = [_unpickle_shard(s) for s in state["shards"]]
        if state["_doc_starts"] is not None:
            state["_doc_starts"] = [_unpickle_shard(d) for d in state["_doc_starts"]]
        self.__dict__.update(state)


def _pickle_shard(tokens: object) -> object:
    # Only a whole read-only mapping (its base is the mmap itself), not a view into one.
    if isinstance(tokens, np.memmap) and tokens.mode == "r" and isinstance(tokens.base, mmap.mmap):
        return ("memmap", str(tokens.filename), tokens.dtype.str, tokens.shape, tokens.offset)
    return tokens


def _unpickle_shard(tokens: object) -> object:
    if isinstance(tokens, tuple) and tokens and tokens[0] == "memmap":
        _, filename, dtype, shape, offset = tokens
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset)
    return tokens
