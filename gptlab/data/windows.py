"""Random (x, y) training windows drawn straight from the memory-mapped token array.

Each batch picks ``batch_size`` random offsets and gathers ``block_size + 1`` ids at
each; ``x`` is the window without its last id and ``y`` without its first, so the
model learns to predict every next token. Batch ``i`` depends only on
``(seed, rank, i)``, which makes runs reproducible, gives each DDP rank its own
windows, and lets a resumed run continue at exactly the batch it stopped at.

Nothing copies the corpus: ``tokens`` is the token cache's read-only ``np.memmap``,
and a batch reads only its ``batch_size * (block_size + 1)`` ids (one fancy-indexed
gather, then a cast of just those ids to int64). With ``W`` DataLoader workers, worker
``k`` makes batches ``start + k``, ``start + k + W``, ... and the loader takes the
workers' batches in turn, so the stream is the same as without workers. A worker started by ``fork`` shares the
mapping; one started by ``spawn`` or ``forkserver`` (macOS, Python 3.14's Linux default)
receives the dataset pickled, and a pickled ``np.memmap`` would carry every id, so the
mapping is pickled as its file name and reopened in the worker instead.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch
from torch.utils.data import IterableDataset


def window_batch(
    tokens: np.ndarray, offsets: np.ndarray, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather windows starting at ``offsets`` into (x, y) int64 tensors, shape (B, block_size)."""
    index = offsets[:, None] + np.arange(block_size + 1)
    windows = torch.from_numpy(tokens[index].astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


class RandomWindows(IterableDataset):
    """An endless (or ``num_batches``-long) stream of random batches of windows."""

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        num_batches: int | None = None,
        start_batch: int = 0,
    ) -> None:
        if len(tokens) < block_size + 1:
            raise ValueError(
                f"need at least block_size + 1 = {block_size + 1} tokens, got {len(tokens)}"
            )
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.num_batches = num_batches
        self.start_batch = start_batch

    def __getstate__(self) -> dict:
        """Pickle a token cache's mapping by file name (a worker reopens it), never its ids."""
        state = self.__dict__.copy()
        tokens = self.tokens
        # Only a whole read-only mapping (its base is the mmap itself), not a view into one.
        if (
            isinstance(tokens, np.memmap)
            and tokens.mode == "r"
            and isinstance(tokens.base, mmap.mmap)
        ):
            state["tokens"] = (
                "memmap",
                str(tokens.filename),
                tokens.dtype.str,
                tokens.shape,
                tokens.offset,
            )
        return state

    def __setstate__(self, state: dict) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens and tokens[0] == "memmap":
            _, filename, dtype, shape, offset = tokens
            state["tokens"] = np.memmap(
                filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset
            )
        self.__dict__.update(state)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``i``-th batch of this stream; the same ``i`` always gives the same batch."""
        rng = np.random.default_rng((self.seed, self.rank, i))
        high = len(self.tokens) - self.block_size  # last valid start so that y fits
        offsets = rng.integers(0, high, size=self.batch_size)
        return window_batch(self.tokens, offsets, self.block_size)

    def __iter__(self):
        i = self.start_batch
        info = torch.utils.data.get_worker_info()
        step = 1 if info is None else info.num_workers
        if info is not None:
            i += info.id
        while self.num_batches is None or i < self.num_batches:
            yield self.batch(i)
            i += step
