"""The GPT: token (+ position) embeddings, a stack of pre-norm blocks, a final norm, a head.

::

    idx (B, T) ──wte──(+wpe)──dropout──► x ─┬─ Block 0 ─ ... ─ Block L-1 ─ ln_f ─ lm_head ─► logits
                                             │
    Block:  x = x + attn(norm(x))            (tokens talk to earlier tokens)
            x = x + mlp(norm(x))             (each token thinks on its own)

The speed-record switches (all off by default, see ``GPTConfig``) change the forward
like this, for block i of L::

    x = x + skip_weight[j] * skips.pop()          unet_skips, last L//2 blocks
    x = resid_lambda[i] * x + x0_lambda[i] * x0   x0_shortcut (x0: the embeddings)
    x = Block_i(x, value_embed_i(idx))            value_embeds: added to the values
    skips.append(x)                               unet_skips, first L//2 blocks

and ``zero_init_proj`` starts every block's output projections at zero.

Module names follow GPT-2 / nanoGPT (``transformer.wte``, ``transformer.h.0.attn.c_attn``,
...), so Hugging Face GPT-2 weights map one-to-one (see ``hf.py``).

Also here: GPT-2 initialisation, parameter and FLOP counts, and the KV-cache entry
point ``new_kv_cache`` (optimizer groups live with the optimizers, in ``gptlab.training.optim``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gptlab.model.attention import CausalSelfAttention
from gptlab.model.config import GPTConfig, ModelConfigError
from gptlab.model.flex import block_mask, flex_available
from gptlab.model.kv_cache import KVCache
from gptlab.model.layers import make_mlp, make_norm, rope_tables
from gptlab.model.masks import LayerMask, layer_masks
from gptlab.model.parametrization import apply_mup_init, input_multiplier, logit_multiplier


def _fast_path_available() -> bool:
    """FlexAttention for windowed and per-document masks on CUDA; without it, one warning."""
    if flex_available():
        return True
    global _WARNED_NO_FLEX
    if not _WARNED_NO_FLEX:
        warnings.warn(
            "FlexAttention is not available in this torch (needs >= 2.5): windowed and "
            "per-document attention use dense masks, which is slower on a GPU",
            stacklevel=3,
        )
        _WARNED_NO_FLEX = True
    return False


_WARNED_NO_FLEX = False


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
        value_embed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, mask, is_causal, kv_cache, value_embed)
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
        self._add_switch_parameters(config)
        if config.attention.backend == "flex" and not flex_available():
            raise ModelConfigError(
                "model.attention.backend=flex needs torch>=2.5 (FlexAttention); upgrade "
                "torch or use model.attention.backend=sdpa"
            )
        self.window_cap: int | None = None  # set_window_cap: a schedule's limit on windows
        self._block_masks: dict[tuple, Any] = {}  # FlexAttention masks without document ids

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
                if config.zero_init_proj:  # every block starts as the identity
                    nn.init.zeros_(p)
            elif name.endswith("ve_gate.weight"):
                nn.init.zeros_(p)  # the gate starts at exactly 1
        # µP (parametrization.py): rescale the init and multiply embeddings and logits;
        # under sp both multipliers are 1 and skipped, so sp is untouched bit for bit.
        self.input_mult = input_multiplier(config)
        self.logit_mult = logit_multiplier(config)
        if config.parametrization == "mup":
            apply_mup_init(self)

    def _add_switch_parameters(self, config: GPTConfig) -> None:
        """The extra tables and scalars the speed-record switches learn."""
        L = config.n_layer
        if config.value_embed_layers:
            width = config.n_kv_head * config.head_size
            V = config.padded_vocab_size
            self.value_embeds = nn.ModuleDict(
                {str(i): nn.Embedding(V, width) for i in config.value_embed_layers}
            )
        if config.x0_shortcut:
            # nanochat's start: a little more residual early, more embedding early.
            depth = torch.arange(L, dtype=torch.float32) / max(L - 1, 1)
            self.resid_lambdas = nn.Parameter(1.15 - 0.10 * depth)
            self.x0_lambdas = nn.Parameter(0.20 - 0.15 * depth)
        if config.unet_skips:
            self.skip_weights = nn.Parameter(torch.ones(L // 2))

    @property
    def _wte(self) -> nn.Embedding:
        """The token embedding, typed (``nn.Module.__getattr__`` returns ``Tensor | Module``)."""
        return cast(nn.Embedding, self.transformer.wte)

    @torch.no_grad()
    def init_buffers(self) -> None:
        """Fill the attention-mask and RoPE buffers (call again after ``to_empty()``).

        ``allowed[i, j]`` says whether absolute position i may attend to j (causal).
        Any step's mask, with or without a KV cache, starts from a slice of it
        (``masks.py`` adds windows, padding and documents).
        """
        cfg = self.config
        pos = torch.arange(cfg.block_size, device=self.allowed.device)
        self.allowed.copy_(pos[:, None] >= pos[None, :])
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
        document_ids: torch.Tensor | None = None,
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
        document_ids: ``(B, T)``, whole sequences only (no cache): a query sees only the
            earlier tokens of its own document (``model.attention.document_mask``).
        """
        B, T = idx.shape
        start = self._first_position(B, T, kv_cache)  # 0, or how many positions are cached
        x = self._wte(idx)  # token embeddings (B, T, n_embd)
        if self.config.position == "learned":
            x = x + self._position_embeddings(start, T, position_ids)  # + (T, n_embd)
        if self.input_mult != 1.0:  # µP's embedding multiplier
            x = x * self.input_mult
        rope = self._rope(start, T, position_ids)  # rotary cos/sin (T, head_size/2), or None
        x = self.transformer["drop"](x)  # (B, T, n_embd)
        masks = self._layer_masks(B, T, start, attention_mask, document_ids)  # one per layer
        x = self._blocks(idx, x, rope, masks, kv_cache)  # (B, T, n_embd)
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

    def effective_windows(self) -> list[int | None]:
        """Each layer's window now: the configured one, limited by ``window_cap``."""
        cap, n = self.window_cap, self.config.block_size
        windows = []
        for w in self.config.layer_windows:
            w = w if cap is None else min(w or n, cap)
            windows.append(None if w is None or w >= n else w)
        return windows

    def set_window_cap(self, cap: int | None) -> None:
        """Limit every layer's attention window to ``cap`` positions (None: no limit).

        A window schedule (``curriculum.window``) grows it during training.
        """
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise ValueError(f"window cap {cap!r} must be a positive integer or None")
        self.window_cap = cap

    def _layer_masks(
        self,
        B: int,
        T: int,
        start: int,
        attention_mask: torch.Tensor | None,
        document_ids: torch.Tensor | None,
    ) -> list[LayerMask]:
        """Each layer's ``(mask, is_causal)``: causal, windowed, padded, per document."""
        device = self.allowed.device
        a = self.config.attention
        flex = a.backend == "flex" or (
            a.backend == "sdpa" and device.type == "cuda" and _fast_path_available()
        )
        if self.training and self.config.dropout > 0:
            flex = False  # FlexAttention has no attention dropout

        def make(window: int | None, docs: torch.Tensor | None) -> Any:
            if docs is not None:
                return block_mask(T, window, docs, device)
            key = (T, window, device)
            if key not in self._block_masks:
                self._block_masks[key] = block_mask(T, window, None, device)
            return self._block_masks[key]

        return layer_masks(
            self.allowed,
            self.effective_windows(),
            B,
            T,
            start,
            attention_mask,
            document_ids,
            make if flex else None,
        )

    def _blocks(
        self,
        idx: torch.Tensor,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        masks: list[LayerMask],
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        """The stack of blocks, with the shortcuts, skips and value embeddings switched on."""
        cfg = self.config
        blocks = cast(nn.ModuleList, self.transformer.h)
        L = len(blocks)
        n_skip = L // 2 if cfg.unet_skips else 0
        value_embeds = cast(nn.ModuleDict, getattr(self, "value_embeds", {}))
        x0, skips = x, list[torch.Tensor]()
        for i, block in enumerate(blocks):
            if i >= L - n_skip:  # decoder half: the mirrored encoder block's output
                x = x + self.skip_weights[i - (L - n_skip)] * skips.pop()
            if cfg.x0_shortcut:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = value_embeds[str(i)](idx) if str(i) in value_embeds else None
            mask, is_causal = masks[i]
            x = self._run_block(block, x, rope, mask, is_causal, kv_cache, ve)
            if i < n_skip:
                skips.append(x)
        return x

    def _run_block(
        self,
        block: nn.Module,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        kv_cache: KVCache | None,
        value_embed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One block; in training with activation checkpointing, recomputed in backward."""
        if self.config.activation_checkpointing and self.training and torch.is_grad_enabled():
            # store only the block's input; its activations are recomputed in backward
            return cast(
                torch.Tensor,
                checkpoint(block, x, rope, mask, is_causal, None, value_embed, use_reentrant=False),
            )
        return cast(torch.Tensor, block(x, rope, mask, is_causal, kv_cache, value_embed))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head: scores over the real vocabulary, soft-capped if the config says so."""
        cap = self.config.logit_softcap
        # Score only the real vocabulary rows: the padding rows can never be predicted or
        # sampled, and the logits come out contiguous (no slice-copy before the loss).
        logits = F.linear(x, self.lm_head.weight[: self.config.vocab_size])
        if self.logit_mult != 1.0:  # µP: output_mult / width multiplier
            logits = logits * self.logit_mult
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
        padding = cfg.padded_vocab_size - cfg.vocab_size
        n -= padding * cfg.n_embd * (1 if cfg.tie_embeddings else 2)
        n -= padding * cfg.n_kv_head * cfg.head_size * len(cfg.value_embed_layers)
        if exclude_position_embeddings and "wpe" in self.transformer:
            n -= cast(nn.Embedding, self.transformer.wpe).weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context ``seq_len``.

        PaLM appendix B accounting, as nanoGPT's ``estimate_mfu``: ``6 N`` for the matrix
        multiplies of the N weights each token passes through (2 forward, 4 backward),
        plus ``12 L H Q T`` for the attention scores and weighted sums (QKᵀ and ·V over T
        keys, per layer L, head H, head size Q). N excludes position embeddings, an
        untied token embedding and value embeddings (lookups, not multiplies). With a
        sliding window a layer's query sees at most ``window`` keys, so that layer's T
        becomes ``min(seq_len, window)``.
        """
        cfg = self.config
        n = self.num_parameters(exclude_position_embeddings=True)
        if not cfg.tie_embeddings:
            n -= cfg.vocab_size * cfg.n_embd
        n -= cfg.vocab_size * cfg.n_kv_head * cfg.head_size * len(cfg.value_embed_layers)
        keys = sum(seq_len if w is None else min(seq_len, w) for w in cfg.layer_windows)
        return 6.0 * n + 12.0 * cfg.n_head * cfg.head_size * keys

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
