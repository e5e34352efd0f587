"""Which positions each layer's queries may attend to, built once per forward.

Every mask starts from the causal triangle (position i sees 0..i). On top of it:

- a sliding window: a query sees only the last ``w`` positions, itself included; layers
  may have different windows (``model.attention.window_pattern``), so there is one mask
  per distinct window, shared by the layers that have it;
- a padding mask (``attention_mask``, left-padded batches): padding keys are hidden;
- document ids (packed training rows): a query sees only its own document.

Each layer gets ``(mask, is_causal)``: ``is_causal`` says the mask is the plain lower
triangle, which sdpa applies without reading a mask at all; ``mask=None`` with
``is_causal=False`` means "see everything" (one new token over a KV cache).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

LayerMask = tuple[Any, bool]  # (dense bool mask, BlockMask or None; is_causal)


def layer_masks(
    causal: torch.Tensor,
    windows: list[int | None],
    B: int,
    T: int,
    start: int,
    attention_mask: torch.Tensor | None = None,
    document_ids: torch.Tensor | None = None,
    block_mask: Callable[[int | None, torch.Tensor | None], Any] | None = None,
) -> list[LayerMask]:
    """One ``(mask, is_causal)`` per layer for queries ``[start, start+T)`` over keys ``[0, start+T)``.

    causal: the model's ``(block_size, block_size)`` lower-triangular boolean buffer.
    block_mask: builds a FlexAttention ``BlockMask`` for ``(window, document_ids)``; given
        (the fast path), it replaces the dense masks that are not plain causal, which is
        possible for whole sequences (no cache, no padding).
    """
    end = start + T
    extra = _padding_and_documents(B, T, start, attention_mask, document_ids, causal.device)
    use_flex = block_mask is not None and start == 0 and attention_mask is None
    built: dict[int | None, LayerMask] = {}
    for w in windows:
        if w not in built:
            windowed = w is not None and end > w  # some query could otherwise see further
            if use_flex and block_mask is not None and (windowed or document_ids is not None):
                built[w] = (block_mask(w if windowed else None, document_ids), False)
            else:
                built[w] = _dense(causal[start:end, :end], w if windowed else None, start, extra)
    return [built[w] for w in windows]


def _padding_and_documents(
    B: int,
    T: int,
    start: int,
    attention_mask: torch.Tensor | None,
    document_ids: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor | None:
    """The per-row part of the mask, ``(B, 1, T, S)``, or None when there is none."""
    end = start + T
    extra = None
    if attention_mask is not None:
        if attention_mask.shape != (B, end):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but must be "
                f"(batch, cached + new positions) = ({B}, {end})"
            )
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        # A padding query may have no real key to its left; let every query see itself so
        # no softmax row is all -inf (which would give NaN). Real queries always see
        # themselves anyway, so their outputs are unchanged.
        q_pos = torch.arange(start, end, device=device)
        diag = q_pos[:, None] == torch.arange(end, device=device)[None, :]
        extra = keep | diag
    if document_ids is not None:
        if start != 0 or document_ids.shape != (B, T):
            raise ValueError(
                f"document_ids has shape {tuple(document_ids.shape)} but must be (batch, "
                f"positions) = ({B}, {T}) for a whole sequence (no KV cache)"
            )
        same = (document_ids[:, :, None] == document_ids[:, None, :])[:, None]  # (B, 1, T, T)
        extra = same if extra is None else extra & same
    return extra


def _dense(
    causal: torch.Tensor, window: int | None, start: int, extra: torch.Tensor | None
) -> LayerMask:
    T, end = causal.shape
    mask = causal
    if window is not None:
        q_pos = torch.arange(start, end, device=causal.device)
        k_pos = torch.arange(end, device=causal.device)
        mask = causal & (q_pos[:, None] - k_pos[None, :] < window)
    if extra is not None:
        return mask & extra, False
    if window is None and start == 0:
        return causal, True  # sdpa uses is_causal; manual uses the view
    if window is None and T == 1:
        return None, False  # one new token sees every cached position
    return mask, False
