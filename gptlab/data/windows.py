"""Random (x, y) training windows drawn straight from the memory-mapped token array.

Each batch picks ``batch_size`` random offsets and gathers ``block_size + 1`` ids at
each; ``x`` is the window without its last id and ``y`` without its first, so the
model learns to predict every next token. Batch ``i`` depends only on
``(seed, rank, i)``, which makes runs reproducible, gives each DDP rank its own
windows, and lets a resumed run continue at exactly the batch it stopped at.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset


def window_batch(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
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
            raise ValueError(f"need at least block_size + 1 = {block_size + 1} tokens, got {len(tokens)}")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.num_batches = num_batches
        self.start_batch = start_batch

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
