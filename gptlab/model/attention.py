r"""Causal self-attention: one textbook head, then the multi-head layer GPT uses.

Attention lets every position read from the positions before it. Each token emits a
query ("what am I looking for"), a key ("what do I contain") and a value ("what I hand
over"); a query's dot products with all keys, scaled by 1/sqrt(head_size) and softmaxed,
weigh the values it sums. "Causal" means position t may only look at positions <= t, so
the model can be trained to predict token t+1 at every position at once.

Heads and how they share keys/values (n_head query heads, n_kv_head key/value heads)::

    MHA  n_kv_head = n_head        GQA  1 < n_kv_head < n_head     MQA  n_kv_head = 1

    q:  q0  q1  q2  q3             q:  q0  q1  q2  q3              q:  q0  q1  q2  q3
        |   |   |   |                  |   |   |   |                   |   |   |   |
    kv: kv0 kv1 kv2 kv3            kv:  \ /     \ /                kv:  \___\_/___/
                                        kv0     kv1                         kv0

Fewer key/value heads shrink the KV cache (and memory traffic when generating) by
``n_head / n_kv_head``, at a small cost in quality; each group of ``n_head / n_kv_head``
query heads reads the same keys and values.

Backends (``model.attention.backend``), picked through ``BACKENDS``:

- ``manual``: scores = QKᵀ/√d, (soft-cap), mask, softmax, dropout, ·V, each line visible.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, which dispatches to a
  fused kernel (flash / memory-efficient / CPU flash) and never stores the T×T scores.
- ``flex``: sdpa, except that windowed and per-document masks go to FlexAttention's
  block-sparse kernel (``flex.py``); ``GPT`` decides per forward which masks it builds.

All compute the same function (tests check 1e-5 in float32, forward and backward).

Value embeddings (``model.value_embeds``, ResFormer / modded-nanogpt) add a second
embedding of the input tokens to a layer's values, optionally gated per head: later
layers get a direct path to token identity that the residual stream has mixed away.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.model.config import GPTConfig
from gptlab.model.flex import flex_attend, is_block_mask
from gptlab.model.kv_cache import KVCache
from gptlab.model.layers import apply_rope, make_norm
from gptlab.model.parametrization import attention_scale


class SelfAttention(nn.Module):
    """One causal attention head, written as plainly as possible (for reading and notebooks).

    Not used by ``GPT``; ``CausalSelfAttention`` is the same computation for many heads
    at once, plus the options. Input ``(B, T, n_embd)``, output ``(B, T, head_size)``.
    """

    tril: torch.Tensor  # buffer registered in ``__init__``

    def __init__(self, n_embd: int, head_size: int, block_size: int, dropout: float = 0.0):
        super().__init__()
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        # Lower-triangular ones: row t has ones in columns 0..t, the positions t may see.
        self.register_buffer("tril", torch.ones(block_size, block_size).tril(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, head_size)
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, T, T): query x key
        scores = scores.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # no peeking ahead
        weights = self.dropout(F.softmax(scores, dim=-1))  # each row sums to 1
        return weights @ v  # (B, T, head_size): a weighted average of earlier values


# ------------------------------------------------------------------------ backends
# Shapes: q (B, H, T, D); k, v (B, H_kv, S, D) with S >= T (S > T when a KV cache holds
# earlier positions). ``mask`` is boolean, True = "may attend", broadcastable to
# (B, H, T, S); ``is_causal`` says the mask is the plain lower triangle with S == T, which
# fused kernels can apply without reading a mask at all.


def manual_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    dropout_p: float = 0.0,
    softcap: float | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention with every step written out (the reference the fused kernel must match).

    ``scale`` multiplies the scores; ``None`` is 1/√d (µP passes its 1/d scale).
    """
    n_rep = q.size(1) // k.size(1)
    if n_rep > 1:  # GQA/MQA: each key/value head serves n_rep consecutive query heads
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1))
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if softcap is not None:  # squash into (-cap, cap) so no score can run away
        scores = softcap * torch.tanh(scores / softcap)
    if (
        mask is None and is_causal
    ):  # called without a mask: query i sees keys 0..i (aligned at the end)
        T, S = scores.shape[-2:]
        mask = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(diagonal=S - T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (B, H, T, D)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    dropout_p: float = 0.0,
    softcap: float | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """PyTorch's fused attention; ``is_causal`` lets it skip the mask entirely."""
    assert softcap is None, "sdpa cannot soft-cap scores (GPTConfig refuses this combination)"
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=None if is_causal else mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        enable_gqa=q.size(1) != k.size(1),
        scale=scale,
    )


BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "manual": manual_attention,
    "sdpa": sdpa_attention,
    "flex": sdpa_attention,  # for plain causal masks; BlockMasks go to flex_attend
}

VALUE_GATE_CHANNELS = 12  # nanochat: the gate reads the first 12 channels of the input


# ------------------------------------------------------------------ multi-head layer


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GQA/MQA, QK-norm, RoPE, soft-cap and a KV cache.

    One fused linear ``c_attn`` makes queries, keys and values (GPT-2's layout, so
    Hugging Face weights load directly); ``c_proj`` mixes the heads back into the
    residual stream. Masks are built once per forward by ``GPT`` and shared by all layers.
    """

    def __init__(self, config: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_size = config.head_size
        self.dropout = config.dropout
        self.softcap = config.attention.logit_softcap
        self.attend = BACKENDS[config.attention.backend]
        self.scale = attention_scale(config)  # None: 1/√d (sp); µP's √d_base/d
        qkv_width = (self.n_head + 2 * self.n_kv_head) * self.head_size
        self.c_attn = nn.Linear(config.n_embd, qkv_width, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.attention.qk_norm:
            self.q_norm: nn.Module | None = make_norm(config, self.head_size)
            self.k_norm: nn.Module | None = make_norm(config, self.head_size)
        else:
            self.q_norm = self.k_norm = None
        gated = config.value_embed_gate and layer_idx in config.value_embed_layers
        channels = min(VALUE_GATE_CHANNELS, config.n_embd)
        self.ve_gate = nn.Linear(channels, self.n_kv_head, bias=False) if gated else None

    def heads(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        value_embed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, H, T, D), keys and values (B, H_kv, T, D) of ``x``, normed and rotated."""
        B, T, _ = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_size
        q, k, v = self.c_attn(x).split([H * D, H_kv * D, H_kv * D], dim=-1)
        if value_embed is not None:
            if self.ve_gate is not None:  # (B, T, H_kv) in (0, 2); exactly 1 at zero init
                gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate.in_features]))
                value_embed = (value_embed.view(B, T, H_kv, D) * gate[..., None]).flatten(2)
            v = v + value_embed
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H_kv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, H_kv, D).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:  # both or neither
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def scores(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The scaled attention scores ``scale · q kᵀ`` (B, H, T, T), before mask and soft-cap.

        The backends never return them (sdpa never even stores them); the coordinate
        check (``gptlab.coordcheck``) reads their size, which µP's 1/d scale keeps
        width-independent.
        """
        q, k, _ = self.heads(x, rope)
        n_rep = q.size(1) // k.size(1)
        k = k.repeat_interleave(n_rep, dim=1) if n_rep > 1 else k
        scale = 1.0 / math.sqrt(q.size(-1)) if self.scale is None else self.scale
        return (q @ k.transpose(-2, -1)) * scale

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = True,
        kv_cache: KVCache | None = None,
        value_embed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` (B, T, C) -> (B, T, C). ``rope`` is (cos, sin) for these T positions.

        value_embed: ``(B, T, n_kv_head * head_size)``, added to the values (gated if
        the layer has a gate).
        """
        B, T, C = x.shape
        q, k, v = self.heads(x, rope, value_embed)
        if kv_cache is not None:  # append this step's keys/values, attend over all so far
            k, v = kv_cache.update(self.layer_idx, k, v)
        dropout_p = self.dropout if self.training else 0.0
        if is_block_mask(mask):
            y = flex_attend(q, k, v, mask, self.scale)
        else:
            y = self.attend(q, k, v, mask, is_causal, dropout_p, self.softcap, self.scale)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))
