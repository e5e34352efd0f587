"""Building blocks shared by the attention and the transformer blocks.

- Norms: ``LayerNorm`` (GPT-2; optional bias) and ``RMSNorm`` (Llama; no centring).
- MLPs: GELU (tanh approximation, as GPT-2 was trained), exact GELU (erf, nanoGPT's
  ``nn.GELU()``), ReLU² (Primer / modded-nanoGPT) and SwiGLU (Llama). Each is ``c_fc``
  -> nonlinearity -> ``c_proj`` so weights keep the GPT-2 names and ``c_proj`` is the
  residual projection that gets the scaled init.
- Rotary position embedding (RoPE) helpers.

Each variant is picked by name through the small registries ``NORMS`` and ``MLPS``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.model.config import GPTConfig

# --------------------------------------------------------------------------- norms


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (``nn.LayerNorm`` only recently allows it)."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Scale by the root-mean-square only: no mean subtraction, no bias (cheaper than LayerNorm)."""

    def __init__(self, dim: int, bias: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        del bias  # RMSNorm has no bias by definition; the argument keeps one signature.
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


NORMS: dict[str, type[nn.Module]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def make_norm(config: GPTConfig, dim: int | None = None) -> nn.Module:
    """The configured norm over ``dim`` features (default ``n_embd``)."""
    return NORMS[config.norm](dim or config.n_embd, bias=config.bias, eps=config.norm_eps)


# ---------------------------------------------------------------------------- MLPs


class GeluMLP(nn.Module):
    """GPT-2's MLP: expand, GELU (tanh approximation), project back, dropout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(h, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class ExactGeluMLP(GeluMLP):
    """GELU computed exactly with erf, as nanoGPT's ``nn.GELU()`` (and BERT) do.

    The two GELUs differ by at most ~1e-3, so either trains as well, but torch's erf
    kernel can be much faster on a CPU (benchmarks/RESULTS.md, "Training step,
    shakespeare_char recipe, exact GELU"). Keep ``gelu`` for GPT-2's weights, which were
    trained with the tanh form.
    """

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(h)


class ReLU2MLP(GeluMLP):
    """Squared ReLU (Primer, So et al. 2021): as cheap as ReLU, trains about like GELU or better."""

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h).square()


class SwiGLUMLP(nn.Module):
    """Gated MLP (Shazeer 2020, used by Llama): ``c_proj(silu(gate) * up)``.

    ``c_fc`` computes gate and up in one matrix multiply (twice the hidden width) and
    the result is split; one big matmul is faster than two small ones.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_size
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


MLPS: dict[str, type[nn.Module]] = {
    "gelu": GeluMLP,
    "gelu_exact": ExactGeluMLP,
    "relu2": ReLU2MLP,
    "swiglu": SwiGLUMLP,
}


def make_mlp(config: GPTConfig) -> nn.Module:
    """The configured MLP."""
    return MLPS[config.mlp](config)


# ------------------------------------------------------------------ rotary positions


def rope_tables(
    head_size: int, max_len: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape ``(max_len, head_size // 2)`` for RoPE (Su et al. 2021).

    Pair ``i`` of a head's features rotates by angle ``pos * theta^(-2i/head_size)``:
    low pairs spin fast (local order), high pairs slowly (long range). Computed in
    float32 once, at construction.
    """
    inv_freq = theta ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``(B, H, T, D)`` by the angles in ``cos``/``sin``.

    ``cos`` and ``sin`` are ``(T, D/2)`` (the same positions for the whole batch) or
    ``(B, 1, T, D/2)`` (per-sequence positions, e.g. left-padded batches). We use the
    "half split" layout (GPT-NeoX, HF Llama): feature ``i`` pairs with ``i + D/2``.
    A rotation keeps norms, and ``<rot(q, m), rot(k, n)>`` depends only on ``m - n``,
    which is why attention sees relative positions.
    """
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
