"""A key/value cache so generation computes each position's keys and values once.

Without a cache, generating token t+1 re-runs the model over all t previous tokens.
With one, each step feeds only the new token(s): every attention layer writes their
keys/values into preallocated tensors at ``[pos, pos + T)`` and attends over
``[0, pos + T)``. ``GPT.forward`` advances ``pos`` once all layers have written.

Make one with ``model.new_kv_cache(batch_size)``. The tensors are allocated once
(``max_len`` positions), so a step never reallocates or concatenates.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys and values, shape ``(n_layer, B, n_kv_head, max_len, head_size)``.

    ``pos`` is the number of positions already filled (the next write starts there).
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        head_size: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (n_layer, batch_size, n_kv_head, max_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.batch_size = batch_size
        self.pos = 0

    def check_room(self, n: int) -> None:
        """Refuse, with a clear message, a step that would write past ``max_len``."""
        if self.pos + n > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.pos} positions filled + {n} new > max_len="
                f"{self.max_len}; make the cache with a larger max_len (at most the model's "
                "block_size) or crop the context"
            )

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` (B, H_kv, T, D) at ``[pos, pos+T)``; return keys/values ``[0, pos+T)``."""
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as filled (called by ``GPT.forward`` after all layers)."""
        self.pos += n

    def crop(self, pos: int) -> None:
        """Forget everything from position ``pos`` on (e.g. to retry a step)."""
        if not 0 <= pos <= self.pos:
            raise ValueError(f"cannot crop KV cache to {pos}: it holds {self.pos} positions")
        self.pos = pos

    def reset(self) -> None:
        """Empty the cache (the memory is kept and overwritten by the next use)."""
        self.pos = 0

    def select(self, rows: torch.Tensor) -> KVCache:
        """A new cache holding batch rows ``rows`` of this one (a row may repeat).

        Scoring uses it to run a shared context once and continue it with each of its
        choices: one copy of the context's keys and values per choice.
        """
        out = KVCache.__new__(KVCache)
        out.k, out.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
        out.max_len, out.batch_size, out.pos = self.max_len, len(rows), self.pos
        return out
