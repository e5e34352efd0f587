"""The GPT: token (+ position) embeddings, a stack of pre-norm blocks, a final norm, a head.

::

    idx (B, T) ──wte──(+wpe)──dropout──► x ─┬─ Block 0 ─ ... ─ Block L-1 ─ ln_f ─ lm_head ─► logits
                                             │
    Block:  x = x + attn(norm(x))            (tokens talk to earlier tokens)
            x = x + mlp(norm(x))             (each token thinks on its own)

Module names follow GPT-2 / nanoGPT (``transformer.wte``, ``transformer.h.0.attn.c_attn``,
...), so Hugging Face GPT-2 weights map one-to-one (see ``hf.py``).

Also here: GPT-2 initialisation, parameter and FLOP counts, and the KV-cache entry
point ``new_kv_cache`` (optimizer groups live with the optimizers, in ``gptlab.training.optim``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gptlab.model.attention import CausalSelfAttention
from gptlab.model.config import GPTConfig
from gptlab.model.kv_cache import KVCache
from gptlab.model.layers import make_mlp, make_norm, rope_tables


class Block(nn.Module):
    """One transformer block, pre-norm (GPT-2): normalise, transform, add back."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = make_mlp(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = True,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, mask, is_causal, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only transformer language model built from a ``GPTConfig``."""

    # Buffers registered in ``__init__``, declared so type checkers see Tensors.
    allowed: torch.Tensor
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        V, C = config.padded_vocab_size, config.n_embd
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(V, C),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        if config.position == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, C)
        self.lm_head = nn.Linear(C, V, bias=False)
        if config.tie_embeddings:
            # One matrix both reads tokens in and scores them out (GPT-2, Press & Wolf
            # 2017): fewer parameters, and rare tokens learn from both ends.
            self.lm_head.weight = self._wte.weight

        # Masks and rotary tables are buffers computed once (see ``init_buffers``); they
        # are not saved in checkpoints because they follow from the config.
        n = config.block_size
        self.register_buffer("allowed", torch.empty(n, n, dtype=torch.bool), persistent=False)
        if config.position == "rope":
            self.register_buffer(
                "rope_cos", torch.empty(n, config.head_size // 2), persistent=False
            )
            self.register_buffer(
                "rope_sin", torch.empty(n, config.head_size // 2), persistent=False
            )
        self.init_buffers()

        self.apply(self._init_weights)
        # GPT-2: residual projections start smaller, by 1/sqrt(2 * n_layer) (two residual
        # additions per block), so the residual stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @property
    def _wte(self) -> nn.Embedding:
        """The token embedding, typed (``nn.Module.__getattr__`` returns ``Tensor | Module``)."""
        return cast(nn.Embedding, self.transformer.wte)

    @torch.no_grad()
    def init_buffers(self) -> None:
        """Fill the attention-mask and RoPE buffers (call again after ``to_empty()``).

        ``allowed[i, j]`` says whether absolute position i may attend to j (causal, and
        inside the sliding window if there is one). Any step's mask, with or without a KV
        cache, is a slice of it, so no step builds a mask from scratch.
        """
        cfg = self.config
        pos = torch.arange(cfg.block_size, device=self.allowed.device)
        allowed = pos[:, None] >= pos[None, :]
        if cfg.attention.window is not None:
            allowed &= pos[:, None] - pos[None, :] < cfg.attention.window
        self.allowed.copy_(allowed)
        if cfg.position == "rope":
            cos, sin = rope_tables(cfg.head_size, cfg.block_size, cfg.rope_theta)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 initialisation: N(0, 0.02) for matrices and embeddings, zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -------------------------------------------------------------------------- forward
    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Next-token logits ``(B, T, vocab_size)`` (``(B, 1, vocab_size)`` if ``last_only``).

        idx: token ids ``(B, T)``.
        kv_cache: from ``new_kv_cache``; this call's tokens sit at positions
            ``[cache.pos, cache.pos + T)`` and the cache advances by T.
        attention_mask: ``(B, S)`` with ``S = cache.pos + T`` (or T without a cache);
            1/True = real token, 0 = padding (left padding for batched prompts).
        position_ids: ``(B, T)``; defaults to ``cache.pos + arange(T)``. With left padding
            pass ``(attention_mask.cumsum(-1) - 1).clamp(min=0)`` for the new positions.
        last_only: compute the head for the last position only (generation).
        """
        B, T = idx.shape
        start = self._first_position(B, T, kv_cache)  # 0, or how many positions are cached
        x = self._wte(idx)  # token embeddings (B, T, n_embd)
        if self.config.position == "learned":
            x = x + self._position_embeddings(start, T, position_ids)  # + (T, n_embd)
        rope = self._rope(start, T, position_ids)  # rotary cos/sin (T, head_size/2), or None
        x = self.transformer["drop"](x)  # (B, T, n_embd)
        mask, is_causal = self._attention_mask(B, T, start, attention_mask)  # (T, S) or None
        for block in cast(nn.ModuleList, self.transformer.h):
            x = self._run_block(block, x, rope, mask, is_causal, kv_cache)  # (B, T, n_embd)
        if kv_cache is not None:
            kv_cache.advance(T)  # every layer has written this call's keys and values
        x = self.transformer["ln_f"](x)  # (B, T, n_embd)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, n_embd): generation needs the last position only
        return self._logits(x)  # (B, T or 1, vocab_size)

    # The helpers ``forward`` reads, in its order.
    def _first_position(self, B: int, T: int, kv_cache: KVCache | None) -> int:
        """Where this call's tokens start (the cache's length), after checking they fit."""
        start = 0 if kv_cache is None else kv_cache.pos
        block_size = self.config.block_size
        if start + T > block_size:
            raise ValueError(
                f"sequence of {start + T} positions is longer than model.block_size="
                f"{block_size}; crop the input to the last {block_size} tokens"
            )
        if kv_cache is not None:
            if kv_cache.batch_size != B:
                raise ValueError(
                    f"KV cache was made for batch size {kv_cache.batch_size}, got a batch of "
                    f"{B}; make a new cache with model.new_kv_cache({B})"
                )
            kv_cache.check_room(T)
        return start

    def _position_embeddings(
        self, start: int, T: int, position_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Learned absolute positions: rows ``start..start+T`` (T, C), or per row (B, T, C)."""
        wpe = cast(nn.Embedding, self.transformer.wpe)
        return wpe.weight[start : start + T] if position_ids is None else wpe(position_ids)

    def _rope(
        self, start: int, T: int, position_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rotary cos/sin for this call's positions: (T, D/2), or (B, 1, T, D/2) per row."""
        if self.config.position != "rope":
            return None
        if position_ids is None:
            return self.rope_cos[start : start + T], self.rope_sin[start : start + T]
        # per-sequence positions: the extra axis broadcasts over heads
        return self.rope_cos[position_ids][:, None], self.rope_sin[position_ids][:, None]

    def _attention_mask(
        self, B: int, T: int, start: int, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, bool]:
        """The boolean mask all layers share, and whether it is the plain causal one.

        Returns ``(mask, is_causal)``; ``mask`` is True where attending is allowed.
        """
        end = start + T
        allowed = self.allowed[start:end, :end]  # (T, S) view: causal (+ window)
        window = self.config.attention.window
        if attention_mask is None:
            if start == 0 and (window is None or window >= T):
                return allowed, True  # sdpa uses is_causal; manual uses the view
            if T == 1 and (window is None or window >= end):
                return None, False  # one new token sees every cached position
            return allowed, False
        if attention_mask.shape != (B, end):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but must be "
                f"(batch, cached + new positions) = ({B}, {end})"
            )
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        # A padding query may have no real key to its left; let every query see itself so
        # no softmax row is all -inf (which would give NaN). Real queries always see
        # themselves anyway, so their outputs are unchanged.
        q_pos = torch.arange(start, end, device=keep.device)
        diag = q_pos[:, None] == torch.arange(end, device=keep.device)[None, :]
        return allowed & (keep | diag), False

    def _run_block(
        self,
        block: nn.Module,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        """One block; in training with activation checkpointing, recomputed in backward."""
        if self.config.activation_checkpointing and self.training and torch.is_grad_enabled():
            # store only the block's input; its activations are recomputed in backward
            return cast(
                torch.Tensor,
                checkpoint(block, x, rope, mask, is_causal, None, use_reentrant=False),
            )
        return cast(torch.Tensor, block(x, rope, mask, is_causal, kv_cache))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head: scores over the real vocabulary, soft-capped if the config says so."""
        cap = self.config.logit_softcap
        # Score only the real vocabulary rows: the padding rows can never be predicted or
        # sampled, and the logits come out contiguous (no slice-copy before the loss).
        logits = F.linear(x, self.lm_head.weight[: self.config.vocab_size])
        if cap is not None:  # Gemma 2: keep logits in (-cap, cap)
            logits = cap * torch.tanh(logits / cap)
        return logits

    # ------------------------------------------------------------------------ KV cache
    def new_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` (default block_size).

        Device and dtype default to the model's.
        """
        cfg = self.config
        max_len = cfg.block_size if max_len is None else max_len
        if not 1 <= max_len <= cfg.block_size:
            raise ValueError(
                f"KV cache max_len={max_len} must be between 1 and model.block_size="
                f"{cfg.block_size}"
            )
        w = self._wte.weight
        return KVCache(
            cfg.n_layer,
            batch_size,
            cfg.n_kv_head,
            cfg.head_size,
            max_len,
            device=w.device if device is None else device,
            dtype=w.dtype if dtype is None else dtype,
        )

    # ---------------------------------------------------------------- counts and groups
    def num_parameters(self, exclude_position_embeddings: bool = False) -> int:
        """Number of trainable values, counting tied weights once and padded vocab rows not at all.

        GPT-2 small gives 124,439,808 (the number Hugging Face reports);
        ``exclude_position_embeddings=True`` gives nanoGPT's "non-embedding" count.
        """
        cfg = self.config
        n = sum(p.numel() for p in self.parameters())
        padding = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd
        n -= padding * (1 if cfg.tie_embeddings else 2)
        if exclude_position_embeddings and "wpe" in self.transformer:
            n -= cast(nn.Embedding, self.transformer.wpe).weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context ``seq_len``.

        PaLM appendix B accounting, as nanoGPT's ``estimate_mfu``: ``6 N`` for the matrix
        multiplies of the N weights each token passes through (2 forward, 4 backward),
        plus ``12 L H Q T`` for the attention scores and weighted sums (QKᵀ and ·V over T
        keys, per layer L, head H, head size Q). N excludes position embeddings, and an
        untied token embedding (a lookup, not a multiply). With a sliding window a query
        sees at most ``window`` keys, so T becomes ``min(seq_len, window)``.
        """
        cfg = self.config
        n = self.num_parameters(exclude_position_embeddings=True)
        if not cfg.tie_embeddings:
            n -= cfg.vocab_size * cfg.n_embd
        t = seq_len if cfg.attention.window is None else min(seq_len, cfg.attention.window)
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_head * cfg.head_size * t

    # ------------------------------------------------------------------ Hugging Face
    @classmethod
    def from_hf(cls, path: str | Path, **overrides: Any) -> GPT:
        """Load a Hugging Face GPT-2 checkpoint directory (see ``gptlab.model.hf``)."""
        from gptlab.model.hf import load_hf

        return load_hf(cls, path, **overrides)

    def save_hf(self, path: str | Path) -> None:
        """Write a directory ``transformers.GPT2LMHeadModel.from_pretrained`` can load."""
        from gptlab.model.hf import save_hf

        save_hf(self, path)
