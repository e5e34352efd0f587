"""FlexAttention: the fast path for sliding-window and per-document attention masks.

The dense path builds a boolean ``(T, S)`` mask and hands it to sdpa, which must then
read the mask and compute every score, allowed or not. FlexAttention (PyTorch >= 2.5,
``torch.nn.attention.flex_attention``) describes the mask as a function of (batch, head,
query, key), turns it into a block-sparse ``BlockMask`` and skips the blocks that are
masked out entirely: a window of w positions over a block of T computes about w/T of
the scores.

Where it runs: training (forward and backward) on CUDA; on a CPU, forward only (PyTorch
has no CPU backward for it), so CPU training keeps the dense path. The kernel is
compiled on CUDA, run eagerly elsewhere (slow, for checking results).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


@functools.cache
def flex_available() -> bool:
    """Whether this PyTorch has FlexAttention."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def is_block_mask(mask: Any) -> bool:
    """Whether ``mask`` is a FlexAttention ``BlockMask`` (rather than a dense boolean mask)."""
    if not flex_available():
        return False
    from torch.nn.attention.flex_attention import BlockMask

    return isinstance(mask, BlockMask)


def block_mask(
    T: int, window: int | None, document_ids: torch.Tensor | None, device: torch.device
) -> Any:
    """The causal ``BlockMask`` over T positions, inside ``window`` and each document if given."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        keep = q >= k
        if window is not None:
            keep = keep & (q - k < window)
        if document_ids is not None:
            keep = keep & (document_ids[b, q] == document_ids[b, k])
        return keep

    B = None if document_ids is None else document_ids.size(0)
    return create_block_mask(mask_mod, B, None, T, T, device=device)


@functools.cache
def _kernel(device_type: str) -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=False)
    return flex_attention


def flex_attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, scale: float | None = None
) -> torch.Tensor:
    """Attention of q (B, H, T, D) over k, v (B, H_kv, T, D) under the ``BlockMask``.

    ``scale`` multiplies the scores (``None``: 1/√d; µP passes its own).
    """
    if q.device.type != "cuda" and torch.is_grad_enabled() and q.requires_grad:
        from gptlab.model.config import ModelConfigError

        raise ModelConfigError(
            "model.attention.backend=flex cannot train on a CPU: PyTorch's FlexAttention has "
            "no CPU backward; use model.attention.backend=sdpa (the same masks, dense)"
        )
    kernel = _kernel(q.device.type)
    return kernel(q, k, v, block_mask=mask, enable_gqa=q.size(1) != k.size(1), scale=scale)
