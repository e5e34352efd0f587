"""The training batch order as a pure function: which rows of ids every step trains on.

An order numbers ROWS 0, 1, 2, ... over one ``TokenView``; a row is ``block_size + 1``
ids (``x = row[:-1]``, ``y = row[1:]``). Rows are grouped into CHUNKS of ``batch_size``
rows (the per-device micro-batch), and chunk ``c`` depends only on the order's seed and
``c``. Under DDP, rank ``r`` of ``W`` takes chunk ``m * W + r`` as its ``m``-th
micro-batch, so one optimizer step with ``A`` accumulation steps covers chunks
``[s*A*W, (s+1)*A*W)``: the same global batch at 1, 2 or 4 processes whenever ``A * W``
is the same, and a run resumes exactly (at any world size) from one number, the chunks
consumed globally::

    chunk:   0   1   2   3 | 4   5   6   7 | ...      step 0 | step 1   (A * W = 4)
    W = 1:   r0  r0  r0  r0| r0  r0  r0  r0|          A = 4
    W = 2:   r0  r1  r0  r1| r0  r1  r0  r1|          A = 2
    W = 4:   r0  r1  r2  r3| r0  r1  r2  r3|          A = 1

The orders:

* ``RandomOrder``: windows at random offsets, drawn per chunk (what gptlab's random
  windows drew at rank 0 before orders existed, bit for bit).
* ``SequentialOrder``: every non-overlapping window once per epoch, shuffled per epoch.
* ``PackedOrder``: rows that start at a document start, filled best-fit from a buffer of
  documents (nanochat's BOS best-fit), cropping what does not fit.
* ``FirstTokensOrder``: consecutive windows over the first N tokens (a fixed validation slice).
* ``MixtureOrder``: rows taken from several orders in a fixed weighted interleave.

``RankBatches`` is the ``IterableDataset`` the DataLoader iterates: one rank's share.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset

from gptlab.data.sources import DataError
from gptlab.data.token_view import TokenView


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Epoch ``epoch``'s shuffle of ``0 .. n - 1`` (int32 while it fits: 4 bytes an item)."""
    dtype = np.int32 if n < 2**31 else np.int64
    return np.random.default_rng((seed, epoch)).permutation(np.arange(n, dtype=dtype))


class _EpochCache:
    """The last two epochs' permutations: a chunk may span one epoch boundary, never two."""

    def __init__(self, seed: int, n: int) -> None:
        self.seed, self.n = seed, n
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms[epoch] = _permutation(self.seed, epoch, self.n)
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
        return self._perms[epoch]

    def clear(self) -> None:
        self._perms.clear()


class Order(ABC):
    """Rows of ``block_size + 1`` ids, numbered globally, served in chunks of ``batch_size``."""

    block_size: int
    batch_size: int
    seed: int
    num_chunks: int | None = None  # None: endless

    @abstractmethod
    def rows(self, start: int, count: int) -> np.ndarray:
        """Rows ``start .. start + count - 1``: shape (count, block_size + 1), int64."""

    @abstractmethod
    def row_documents(self, start: int, count: int) -> np.ndarray:
        """For the same rows, the number of the document each id belongs to within its row (0, 1, ...)."""

    @abstractmethod
    def epoch_of_row(self, row: int) -> int:
        """The epoch row ``row`` belongs to (for logging)."""

    def chunk(self, c: int) -> np.ndarray:
        """Chunk ``c``: its ``batch_size`` rows, (B, T + 1) int64; a pure function of (seed, c)."""
        return self.rows(c * self.batch_size, self.batch_size)

    def chunk_documents(self, c: int) -> np.ndarray:
        """Chunk ``c``'s per-row document numbers, (B, T + 1)."""
        return self.row_documents(c * self.batch_size, self.batch_size)

    def epoch_of_chunk(self, c: int) -> int:
        return self.epoch_of_row(c * self.batch_size)

    def __getstate__(self) -> dict:
        """Caches stay behind when a DataLoader worker receives the order (it rebuilds them)."""
        state = self.__dict__.copy()
        for key, value in state.items():
            if isinstance(value, _EpochCache):
                state[key] = _EpochCache(value.seed, value.n)
        return state


def _check_shape(block_size: int, batch_size: int) -> None:
    for name, value in (("block_size", block_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name}={value!r} must be a positive whole number (at least 1)")


def _check_length(view: TokenView, block_size: int, what: str) -> None:
    if len(view) < block_size + 1:
        raise DataError(
            f"{what} needs at least block_size + 1 = {block_size + 1} tokens but the split has "
            f"{len(view)}; use more data or a smaller model.block_size"
        )


class _WindowOrder(Order):
    """An order whose rows are windows of the view: only the window starts differ."""

    view: TokenView

    @abstractmethod
    def starts(self, start: int, count: int) -> np.ndarray:
        """Where rows ``start .. start + count - 1`` begin in the view (int64)."""

    def rows(self, start: int, count: int) -> np.ndarray:
        return self.view.windows(self.starts(start, count), self.block_size + 1)

    def row_documents(self, start: int, count: int) -> np.ndarray:
        positions = self.starts(start, count)[:, None] + np.arange(self.block_size + 1)
        docs = self.view.document_ids(positions)
        return docs - docs[:, :1]


class RandomOrder(_WindowOrder):
    """Chunk ``c``: ``batch_size`` windows at offsets drawn by ``default_rng((seed, 0, c))``.

    The ``0`` is the rank gptlab's per-rank random windows used before orders existed:
    rank 0's stream there is this order's, so single-device runs keep their batches. Windows may overlap and
    repeat (sampling with replacement); there are no epochs.
    """

    def __init__(self, view: TokenView, block_size: int, batch_size: int, seed: int = 0) -> None:
        _check_shape(block_size, batch_size)
        _check_length(view, block_size, "the random order")
        self.view, self.block_size, self.batch_size, self.seed = view, block_size, batch_size, seed

    def chunk_starts(self, c: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 0, c))
        return rng.integers(0, len(self.view) - self.block_size, size=self.batch_size)

    def starts(self, start: int, count: int) -> np.ndarray:
        B = self.batch_size
        first, last = start // B, (start + count - 1) // B
        if first == last and start % B == 0 and count == B:
            return self.chunk_starts(first)
        every = np.concatenate([self.chunk_starts(c) for c in range(first, last + 1)])
        return every[start - first * B : start - first * B + count]

    def epoch_of_row(self, row: int) -> int:
        return 0


class SequentialOrder(_WindowOrder):
    """Every non-overlapping window once per epoch, in an order shuffled anew each epoch.

    Window ``k`` starts at ``k * block_size`` (rows share their edge id: ``y`` of one is
    ``x`` of the next), ``n_windows = (len - 1) // block_size``. Global row ``j`` is row
    ``j % n_windows`` of epoch ``j // n_windows``, whose permutation comes from
    ``default_rng((seed, epoch))``. A chunk may span an epoch boundary.

    Cost: an epoch's permutation is made on first use (10M windows, i.e. 10B tokens at
    T=1024: 40 MB of int32, 1.6 s on a busy 2-core CPU) and only the last two are kept; each
    DataLoader worker holds its own.
    """

    def __init__(self, view: TokenView, block_size: int, batch_size: int, seed: int = 0) -> None:
        _check_shape(block_size, batch_size)
        _check_length(view, block_size, "the sequential order")
        self.view, self.block_size, self.batch_size, self.seed = view, block_size, batch_size, seed
        self.n_windows = (len(view) - 1) // block_size
        self._perm = _EpochCache(seed, self.n_windows)

    def window_index(self, start: int, count: int) -> np.ndarray:
        """Which window rows ``start .. start + count - 1`` are."""
        j = np.arange(start, start + count, dtype=np.int64)
        epochs, within = np.divmod(j, self.n_windows)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            where = epochs == e
            out[where] = self._perm(int(e))[within[where]]
        return out

    def starts(self, start: int, count: int) -> np.ndarray:
        return self.window_index(start, count) * self.block_size

    def epoch_of_row(self, row: int) -> int:
        return row // self.n_windows


class FirstTokensOrder(_WindowOrder):
    """Consecutive non-overlapping windows over the first ``num_tokens`` ids: a fixed validation slice.

    modded-nanogpt validates on the same first N tokens every time; here row ``j`` is the
    window at ``j * block_size`` and only whole chunks are served (``num_chunks``), so a
    run's validation loss is over exactly the same ids at any world size.
    """

    def __init__(
        self, view: TokenView, block_size: int, batch_size: int, num_tokens: int | None = None
    ) -> None:
        _check_shape(block_size, batch_size)
        n = len(view) if num_tokens is None else min(int(num_tokens), len(view))
        self.view, self.block_size, self.batch_size, self.seed = view, block_size, batch_size, 0
        self.num_tokens = n
        self.num_chunks = max(0, (n - 1) // block_size) // batch_size
        if self.num_chunks == 0:
            raise DataError(
                f"the first {n} tokens of the split hold no batch of {batch_size} windows of "
                f"{block_size} + 1 tokens; validate on more tokens or use a smaller data.batch_size"
            )

    def starts(self, start: int, count: int) -> np.ndarray:
        return np.arange(start, start + count, dtype=np.int64) * self.block_size

    def epoch_of_row(self, row: int) -> int:
        return 0


# -- packing documents into rows ---------------------------------------------------------


def pack_best_fit(
    lengths: Sequence[int] | np.ndarray, row_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pack documents into rows of ``row_len`` ids, best fit, each row starting at a document start.

    Per row: take the longest document that still fits whole, again and again; when none
    fits, take the shortest one's first ids to fill the row exactly and drop its rest
    (nanochat's ``bos_bestfit``). A document longer than a row is cropped to the row.
    Documents left when no full row can be made any more are dropped.

    Returns ``(piece_doc, piece_len, row_ptr, dropped)``: row ``i`` is the first
    ``piece_len[p]`` ids of documents ``piece_doc[p]`` for ``p`` in
    ``row_ptr[i] .. row_ptr[i+1] - 1``; ``dropped`` is the number of ids left out.
    """
    sizes_array = np.asarray(lengths, dtype=np.int64)
    by_length = np.argsort(sizes_array, kind="stable")
    sizes, docs = sizes_array[by_length].tolist(), by_length.tolist()  # sorted, shrinking as used
    piece_doc: list[int] = []
    piece_len: list[int] = []
    row_ptr = [0]
    dropped = 0
    while sizes:
        room = row_len
        while room and sizes:
            i = bisect.bisect_right(sizes, room) - 1
            if i >= 0:  # the longest document that fits whole
                size, doc = sizes.pop(i), docs.pop(i)
                take = size
            else:  # nothing fits: crop the shortest to fill the row
                size, doc = sizes.pop(0), docs.pop(0)
                take = room
                dropped += size - room
            if take:
                piece_doc.append(doc)
                piece_len.append(take)
            room -= take
        if room:  # out of documents before the row was full: the unfinished row is dropped
            dropped += sum(piece_len[row_ptr[-1] :])
            del piece_doc[row_ptr[-1] :], piece_len[row_ptr[-1] :]
        else:
            row_ptr.append(len(piece_doc))
    return (
        np.array(piece_doc, dtype=np.int64),
        np.array(piece_len, dtype=np.int64),
        np.array(row_ptr, dtype=np.int64),
        dropped,
    )


def greedy_cropped_fraction(doc_lengths: Sequence[int] | np.ndarray, block_size: int) -> float:
    """The ids a greedy sequential packer drops, as a fraction: the reference best-fit must beat.

    Each row of ``block_size + 1`` ids takes the next documents in order; the part of a
    document that does not fit is cropped, and an unfinished last row is dropped.
    """
    row_len = block_size + 1
    total = int(np.sum(doc_lengths))
    if total == 0:
        return 0.0
    room, dropped = row_len, 0
    for n in np.asarray(doc_lengths, dtype=np.int64).tolist():
        if n < room:
            room -= n
        else:
            dropped += n - room
            room = row_len
    dropped += row_len - room if room < row_len else 0
    return dropped / total


class _PackedGroup:
    """One packed group: piece starts in the view and lengths, and where each row's pieces begin."""

    def __init__(self, starts: np.ndarray, lengths: np.ndarray, row_ptr: np.ndarray) -> None:
        self.starts, self.lengths, self.row_ptr = starts, lengths, row_ptr

    @property
    def n_rows(self) -> int:
        return len(self.row_ptr) - 1

    def pieces(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, lengths, row of each piece counted from r0) for rows r0 .. r1 - 1."""
        p0, p1 = self.row_ptr[r0], self.row_ptr[r1]
        row_of = np.repeat(np.arange(r1 - r0), np.diff(self.row_ptr[r0 : r1 + 1]))
        return self.starts[p0:p1], self.lengths[p0:p1], row_of


class PackedOrder(Order):
    """Rows that start at a document start, packed best-fit from groups of ``buffer_docs`` documents.

    Epoch ``e`` shuffles the documents with ``default_rng((seed, e))`` and cuts the
    shuffled list into groups of ``buffer_docs``; each group is packed on its own with
    ``pack_best_fit`` (documents start with end-of-text, so every row starts with it).
    Global row ``j`` is found from the groups' row counts, so the order is a pure
    function of ``(seed, j)`` like the others.

    Cost: a group's row count is known only once it is packed (pure Python, about half a
    millisecond per thousand documents on a 2-core CPU), so the counts are computed lazily
    and kept (one int a group) and only the last four groups' layouts are kept. Resuming
    far ahead packs every group before the position once: ~0.5 s per million documents
    passed (a 10B-token epoch of ~20M documents: ~10 s). Memory: the view's document
    starts (8 bytes a document) and up to two epochs' shuffles (4 bytes a document each).
    """

    def __init__(
        self,
        view: TokenView,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        buffer_docs: int = 1000,
    ) -> None:
        _check_shape(block_size, batch_size)
        if not view.has_documents:
            raise DataError(
                "packed rows need document boundaries but this split has none; prepare the data "
                "as a token store (python -m gptlab.prepare) or use data.sampling=random"
            )
        starts = view.doc_starts
        total = len(view) - int(starts[0]) if len(starts) else 0
        if total < block_size + 1:
            raise DataError(
                f"the split's documents hold {total} tokens, fewer than one row of "
                f"block_size + 1 = {block_size + 1}; use more data or a smaller model.block_size"
            )
        self.view, self.block_size, self.batch_size, self.seed = view, block_size, batch_size, seed
        self.buffer_docs = max(1, int(buffer_docs))
        self.n_docs = len(starts)
        self.groups_per_epoch = -(-self.n_docs // self.buffer_docs)
        self._perm = _EpochCache(seed, self.n_docs)
        self._cum_rows = [0]  # rows before global group g (groups counted over epochs)
        self._seen: list[int] = []  # ids in each packed group
        self._dropped: list[int] = []  # ids each packed group dropped
        self._layouts: OrderedDict[int, _PackedGroup] = OrderedDict()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_layouts"] = OrderedDict()
        return state

    def _bounds(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of documents ``docs``, read off the view's document starts (no copy of them)."""
        all_starts = self.view.doc_starts
        starts = all_starts[docs]
        nxt = np.asarray(docs, dtype=np.int64) + 1
        ends = np.where(
            nxt < self.n_docs, all_starts[np.minimum(nxt, self.n_docs - 1)], len(self.view)
        )
        return starts, ends - starts

    def _pack(self, g: int) -> _PackedGroup:
        """Global group ``g`` (epoch ``g // groups_per_epoch``), packed; the last few are cached."""
        if g in self._layouts:
            self._layouts.move_to_end(g)
            return self._layouts[g]
        epoch, k = divmod(g, self.groups_per_epoch)
        docs = self._perm(epoch)[k * self.buffer_docs : (k + 1) * self.buffer_docs]
        starts, lengths = self._bounds(docs)
        piece_doc, piece_len, row_ptr, dropped = pack_best_fit(lengths, self.block_size + 1)
        layout = _PackedGroup(starts[piece_doc], piece_len, row_ptr)
        if g == len(self._seen):  # first time: record its counts
            self._cum_rows.append(self._cum_rows[-1] + layout.n_rows)
            self._seen.append(int(lengths.sum()))
            self._dropped.append(dropped)
        self._layouts[g] = layout
        while len(self._layouts) > 4:
            self._layouts.popitem(last=False)
        return layout

    def _group_of_row(self, j: int) -> int:
        while self._cum_rows[-1] <= j:
            if len(self._seen) >= self.groups_per_epoch and self._cum_rows[-1] == 0:
                raise DataError("no group of documents fills a row; use a larger buffer_docs")
            self._pack(len(self._seen))
        return bisect.bisect_right(self._cum_rows, j) - 1

    def _pieces(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Piece starts, lengths and row (from ``start``) of rows ``start .. start + count - 1``."""
        parts = []
        j, end = start, start + count
        while j < end:
            g = self._group_of_row(j)
            r0 = j - self._cum_rows[g]
            r1 = min(self._cum_rows[g + 1], end) - self._cum_rows[g]
            s, n, row = self._pack(g).pieces(r0, r1)
            parts.append((s, n, row + (j - start)))
            j += r1 - r0
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    def row_pieces(self, row: int) -> list[tuple[int, int]]:
        """Row ``row`` as (start in the view, length) of each document prefix in it."""
        s, n, _ = self._pieces(row, 1)
        return list(zip(s.tolist(), n.tolist()))

    def rows(self, start: int, count: int) -> np.ndarray:
        s, n, _ = self._pieces(start, count)
        offset_in_piece = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        positions = np.repeat(s, n) + offset_in_piece
        return self.view.gather(positions).reshape(count, self.block_size + 1)

    def row_documents(self, start: int, count: int) -> np.ndarray:
        _, n, row = self._pieces(start, count)
        first_piece = np.searchsorted(row, np.arange(count))
        piece_in_row = np.arange(len(n)) - first_piece[row]
        return np.repeat(piece_in_row, n).reshape(count, self.block_size + 1)

    def epoch_of_row(self, row: int) -> int:
        return self._group_of_row(row) // self.groups_per_epoch

    @property
    def cropped_fraction(self) -> float:
        """Ids dropped / ids seen, over the groups packed so far (0 before any)."""
        seen = sum(self._seen)
        return sum(self._dropped) / seen if seen else 0.0

    def epoch_cropped_fraction(self, epoch: int = 0) -> float:
        """The same over one whole epoch (packs every group of it that is not packed yet)."""
        first, last = epoch * self.groups_per_epoch, (epoch + 1) * self.groups_per_epoch
        while len(self._seen) < last:
            self._pack(len(self._seen))
        return sum(self._dropped[first:last]) / sum(self._seen[first:last])


# -- mixtures ----------------------------------------------------------------------------


def interleave_pattern(weights: Sequence[float], period: int) -> np.ndarray:
    """A fixed pattern of ``period`` source numbers with counts proportional to ``weights``.

    Counts are rounded by largest remainder (so they sum to ``period``), and the sources
    are spread evenly: each of source ``s``'s ``n_s`` slots sits at ``(i + 0.5) / n_s``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise DataError(f"mixture weights {list(weights)} must be non-negative with a positive sum")
    exact = w / w.sum() * period
    counts = np.floor(exact).astype(np.int64)
    for s in np.argsort(-(exact - counts), kind="stable")[: period - int(counts.sum())]:
        counts[s] += 1
    keys = np.concatenate([(np.arange(n) + 0.5) / n for n in counts if n])
    sources = np.concatenate([np.full(n, s) for s, n in enumerate(counts) if n])
    return sources[np.argsort(keys, kind="stable")]


class MixtureOrder(Order):
    """Rows from several orders (sources) mixed by weight in a fixed interleave.

    Row ``j`` comes from source ``pattern[j % period]``, as that source's row
    ``(j // period) * n_s + (its slots before j % period)``: every source runs through its
    own rows in order, and the whole is a pure function of ``j``. ``epoch_of_row`` is the
    first source's epoch (list the main corpus first).
    """

    def __init__(
        self,
        sources: Sequence[Order],
        weights: Sequence[float],
        batch_size: int,
        period: int = 1000,
        seed: int = 0,
    ) -> None:
        if len(sources) != len(weights) or not sources:
            raise DataError("a mixture needs one weight per source and at least one source")
        if len({s.block_size for s in sources}) != 1:
            raise DataError("every source of a mixture must have the same block_size")
        _check_shape(sources[0].block_size, batch_size)
        self.sources = list(sources)
        self.block_size, self.batch_size, self.seed = sources[0].block_size, batch_size, seed
        self.pattern = interleave_pattern(weights, period)
        self.period = period
        self.counts = np.bincount(self.pattern, minlength=len(sources))
        # slot_rank[p]: how many earlier slots of the pattern belong to the same source
        self.slot_rank = np.zeros(period, dtype=np.int64)
        for s in range(len(sources)):
            where = self.pattern == s
            self.slot_rank[where] = np.arange(int(where.sum()))

    def source_rows(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, row within the source) of rows ``start .. start + count - 1``."""
        j = np.arange(start, start + count, dtype=np.int64)
        cycle, slot = np.divmod(j, self.period)
        source = self.pattern[slot]
        return source, cycle * self.counts[source] + self.slot_rank[slot]

    def _gather(self, start: int, count: int, documents: bool) -> np.ndarray:
        source, k = self.source_rows(start, count)
        out = np.empty((count, self.block_size + 1), dtype=np.int64)
        for s in np.unique(source):
            where = source == s
            first, n = int(k[where][0]), int(where.sum())  # a source's rows here are consecutive
            order = self.sources[s]
            out[where] = order.row_documents(first, n) if documents else order.rows(first, n)
        return out

    def rows(self, start: int, count: int) -> np.ndarray:
        return self._gather(start, count, documents=False)

    def row_documents(self, start: int, count: int) -> np.ndarray:
        return self._gather(start, count, documents=True)

    def epoch_of_row(self, row: int) -> int:
        source, k = self.source_rows(row, self.period)
        first = k[source == 0]
        return self.sources[0].epoch_of_row(int(first[0])) if len(first) else 0


# -- one rank's share --------------------------------------------------------------------


def start_micro(position: int, world_size: int) -> int:
    """The first micro-batch of a rank resuming at ``position`` chunks consumed globally."""
    if position % world_size:
        raise DataError(
            f"a run stopped after {position} chunks cannot resume on {world_size} processes "
            f"(not a multiple); resume with a world size that divides {position}"
        )
    return position // world_size


class RankBatches(IterableDataset):
    """What one rank's DataLoader iterates: micro-batch ``m`` is chunk ``m * stride + rank``.

    ``stride`` defaults to ``world_size``. It yields ``(x, y)`` int64 tensors of shape
    (B, T), plus the per-row document numbers of ``x`` when ``doc_ids`` (for masking
    attention per document). ``num_batches`` bounds the global chunk number (rank ``r``
    takes chunks ``r, r + W, ... < num_batches``: the same validation set at any W).
    With DataLoader workers, worker ``k`` makes micro-batches ``start + k``,
    ``start + k + num_workers``, ... and the loader takes them in turn, so the stream is
    the same with and without workers.
    """

    def __init__(
        self,
        order: Order,
        rank: int,
        world_size: int,
        start_micro: int = 0,
        num_batches: int | None = None,
        doc_ids: bool = False,
        stride: int | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not one of world_size={world_size} ranks")
        self.order, self.rank, self.world_size = order, rank, world_size
        self.start_micro, self.doc_ids = start_micro, doc_ids
        self.stride = world_size if stride is None else stride
        limits = [n for n in (num_batches, order.num_chunks) if n is not None]
        self.num_chunks = min(limits) if limits else None
        self.seed = order.seed  # the DataModule seeds the loader's generator from it

    def chunk_index(self, m: int) -> int:
        return m * self.stride + self.rank

    def __len__(self) -> int:
        """Micro-batches this rank yields; an endless stream has no length (TypeError)."""
        if self.num_chunks is None:
            raise TypeError("an endless RankBatches has no length")
        if self.num_chunks <= self.rank:
            return 0
        return max(0, -(-(self.num_chunks - self.rank) // self.stride) - self.start_micro)

    def micro_batch(self, m: int) -> tuple[torch.Tensor, ...]:
        c = self.chunk_index(m)
        rows = torch.from_numpy(self.order.chunk(c))
        if not self.doc_ids:
            return rows[:, :-1], rows[:, 1:]
        docs = torch.from_numpy(self.order.chunk_documents(c)[:, :-1].astype(np.int64))
        return rows[:, :-1], rows[:, 1:], docs

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        m = self.start_micro
        info = torch.utils.data.get_worker_info()
        step = 1 if info is None else info.num_workers
        if info is not None:
            m += info.id
        while self.num_chunks is None or self.chunk_index(m) < self.num_chunks:
            yield self.micro_batch(m)
            m += step


def shares(order: Order, world_size: int, micro_batches: int) -> list[list[np.ndarray]]:
    """What each rank gets: ``shares(...)[r][m]`` is rank ``r``'s ``m``-th chunk (for tests)."""
    return [
        [order.chunk(m * world_size + r) for m in range(micro_batches)] for r in range(world_size)
    ]
