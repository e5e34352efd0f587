"""How a GPT's init, learning rates and multipliers scale with its width: sp or µP.

``model.parametrization=sp`` (the default) is GPT-2's standard parametrization: N(0, 0.02)
init everywhere, one learning rate for every matrix. Widen such a model and its best
learning rate moves (the wider the model, the larger each Adam step moves its
activations), so settings tuned on a small proxy do not hold.

``model.parametrization=mup`` is µP (Yang et al., Tensor Programs V, 2022), in the
"multiplier" form of ``microsoft/mup``. With ``m = n_embd / model.mup.base_width`` the
*width multiplier* (1 at the proxy's width, where µP is exactly sp):

====================  ========================  =========================================
tensor                init                      forward
====================  ========================  =========================================
embeddings            N(0, 0.02), as sp         (token + position) * ``input_mult``
hidden matrices       variance / fan-in mult    as sp
(c_attn, c_proj,      (``/m``: std 0.02/√m,
c_fc)                 the residual projections
                      keep their 1/√(2L))
attention scores      —                         q·k · √d_base / d (∝ 1/d instead of
                                                1/√d; = 1/√d where the head size is
                                                the proxy's, d = d_base)
readout (lm_head)     N(0, 0.02), as sp         logits * ``output_mult`` / m
====================  ========================  =========================================

A model can be widened two ways, and µP needs to know which: with the head count fixed
(the head size grows; the default) or by adding heads of a fixed size (GPT-2's sizes all
use head size 64). ``model.mup.base_n_head`` is the proxy's head count (default: the
model's ``n_head``) and ``model.mup.base_n_kv_head`` its key/value heads (default: the
model's ratio of query to key/value heads; see ``base_n_kv_head``). The proxy's head size
``d_base = base_width / base_n_head`` is what the attention rule scales from, so with
``base_width=128 base_n_head=4`` a 1024-wide model with 32 heads of 32 keeps sp's
1/√32 (deriving ``d_base`` as ``base_width / n_head`` = 4 would scale its scores by
√4/32, a third of that, although no head changed size).

Which tensors are which is decided as ``microsoft/mup``'s ``set_base_shapes`` does: the
base model (the same config with ``n_embd = base_width``, ``n_head = base_n_head`` and
``base_n_kv_head`` key/value heads: the proxy) is built on the meta device and each
parameter's shape compared with its base shape. A dimension
that differs grows with width ("infinite"); the *fan-in multiplier* is
``in / base_in`` (dim 1 of a 2-D weight), the fan-out multiplier ``out / base_out``
(dim 0). Tensors with two infinite dimensions are *matrix-like* (the hidden matrices),
with one *vector-like* (embeddings, the readout, biases, norm gains), with none finite
(the value-gate, scalars) and left as sp. Taking multipliers per tensor, not one ``m``,
keeps SwiGLU's rounded hidden width exact.

Per-group learning rates (``lr_multipliers``; the optimizers in
``gptlab.training.optim`` split their groups by them and set each group's ``lr``, so a
``LambdaLR`` schedule scales every group by the same factor):

- **AdamW** (and Muon's AdamW part): matrix-like ``lr / fan-in mult`` (``/m``); all else
  unchanged (µP's Adam rule, ``mup.MuAdam``). Weight decay is left as configured, so
  decoupled decay ``lr * wd`` shrinks with the hidden lr (``MuAdam``'s default).
- **SGD**: matrix-like ``lr * fan-out mult / fan-in mult`` (1 for every hidden matrix
  here: hidden lr unchanged); vector-like ``lr * m`` (embeddings, readout, biases, norm
  gains); finite unchanged. This is Tensor Programs V's table 3 for SGD (input weights
  and biases ``η·fan_out``; output weights ``η/fan_in``, which with the ``1/m``
  readout multiplier becomes ``η·m`` on the stored weight), i.e. ``mup.MuSGD``.
- **Muon** (its Newton–Schulz part, the hidden matrices): ``lr * sqrt(base_max /
  max)`` with ``max = max(rows, cols)`` (``1/√m``), *not* ``lr / m``. Muon's update is
  orthogonalised (all singular values ≈ 1), and gptlab's Muon (as
  ``torch.optim.Muon(adjust_lr_fn="match_rms_adamw")``) multiplies it by
  ``0.2 · sqrt(max(rows, cols))`` to give it AdamW's RMS, so its spectral norm grows as
  √width. µP's condition for hidden matrices is a spectral norm of order
  ``sqrt(fan_out / fan_in)``, here constant (Yang, Simon & Bernstein 2023): the factor
  ``sqrt(base_max / max)`` undoes the growth exactly, so every width takes the base
  model's step in spectral norm. (Keller Jordan's original scaling
  ``max(1, rows/cols)^0.5`` is already width-independent and would need no factor;
  ``lr / m`` would shrink the hidden updates as 1/√width, too little feature learning.)

What µP does not cover yet is refused by name (``validate_mup``), never run as sp:
``value_embeds``, ``x0_shortcut``, ``unet_skips``. Everything else is covered: tied
and untied embeddings, GQA/MQA (with growing head size or growing head count), RoPE,
RMSNorm, LayerNorm, every MLP, QK-norm, soft-caps (applied after the multipliers),
windows, zero-initialised projections.

Hugging Face export (``sp_state_dict``) folds the multipliers into the weights, which
computes the same function with GPT-2's plain forward: ``input_mult`` into ``wte`` and
``wpe``, ``output_mult / m`` into an untied ``lm_head``, the attention factor
``√d_base / √d`` into the query rows of ``c_attn``. A tied model can only be folded
when its two multipliers are equal (one matrix cannot carry two scales); otherwise it
is refused.

This file imports torch only inside the functions that need it: ``config.py`` calls
``validate_mup`` and stays torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gptlab.model.config import GPTConfig, ModelConfigError, MupConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

# Options µP does not handle yet: (field, is it on?, why). Refused by name under mup.
UNCOVERED = (
    ("value_embeds", lambda c: c.value_embeds is not None),
    ("x0_shortcut", lambda c: c.x0_shortcut),
    ("unet_skips", lambda c: c.unet_skips),
)
OPTIMIZER_RULES = ("adam", "sgd", "muon")


# ------------------------------------------------------------------------ validation
def validate_mup(cfg: GPTConfig) -> None:
    """Refuse a µP config that cannot work, one sentence each (sp ignores ``model.mup``).

    The ``mup`` options are ignored under sp, so one sweep over
    ``model.parametrization=sp,mup`` can set them once.
    """
    if cfg.parametrization != "mup":
        return
    m: MupConfig = cfg.mup
    for name, on in UNCOVERED:
        if on(cfg):
            raise ModelConfigError(
                f"model.parametrization=mup does not cover model.{name} yet; turn "
                f"model.{name} off or use model.parametrization=sp"
            )
    base = m.base_width
    if base is not None:
        if not isinstance(base, int) or isinstance(base, bool) or base < 1:
            raise ModelConfigError(
                f"model.mup.base_width={base!r} must be a positive integer (the proxy's "
                "n_embd), or null for the model's own width"
            )
        if base > cfg.n_embd:
            raise ModelConfigError(
                f"model.mup.base_width={base} is larger than model.n_embd={cfg.n_embd}; µP "
                "scales up from the tuned proxy, so set base_width to the proxy's (smaller) "
                f"width, at most {cfg.n_embd}"
            )
    _validate_base_heads(cfg)
    for name in ("input_mult", "output_mult"):
        value = getattr(m, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ModelConfigError(
                f"model.mup.{name}={value!r} must be a positive number (1 leaves it out)"
            )
    if m.zero_readout and cfg.tie_embeddings:
        raise ModelConfigError(
            "model.mup.zero_readout=true would zero the token embedding too, because "
            "model.tie_embeddings=true makes the head the embedding; set "
            "model.tie_embeddings=false or model.mup.zero_readout=false"
        )


def _positive_int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def _validate_base_heads(cfg: GPTConfig) -> None:
    """Refuse base heads the base model cannot have (``model.mup.base_n_head``, ``base_n_kv_head``).

    The base model is the proxy: ``base_width`` wide with ``base_n_head`` heads of
    ``base_width / base_n_head`` and ``base_n_kv_head`` key/value heads. Its head size
    is what the 1/d attention rule scales from and its shapes decide the per-tensor
    multipliers, so it must be a model gptlab could build.
    """
    m = cfg.mup
    for name in ("base_n_head", "base_n_kv_head"):
        value = getattr(m, name)
        if not _positive_int_or_none(value):
            raise ModelConfigError(
                f"model.mup.{name}={value!r} must be a positive integer (the proxy's "
                f"{'heads' if name == 'base_n_head' else 'key/value heads'}), or null for "
                "the model's own"
            )
    width, heads = base_width(cfg), base_n_head(cfg)
    if heads > cfg.n_head:
        raise ModelConfigError(
            f"model.mup.base_n_head={heads} is larger than model.n_head={cfg.n_head}; µP "
            "scales up from the tuned proxy, so set base_n_head to the proxy's (smaller) "
            f"head count, at most {cfg.n_head}"
        )
    heads_key = "model.n_head" if m.base_n_head is None else "model.mup.base_n_head"
    width_key = "model.n_embd" if m.base_width is None else "model.mup.base_width"
    if width % heads:
        raise ModelConfigError(
            f"{width_key}={width} is not a multiple of {heads_key}={heads}, so the "
            f"base model's head size ({width}/{heads}) that the 1/d attention rule scales "
            f"from is not whole; choose base_width as a multiple of {heads}, or set "
            "model.mup.base_n_head to the proxy's head count"
        )
    if cfg.position == "rope" and (width // heads) % 2:
        raise ModelConfigError(
            f"{width_key}={width} with {heads_key}={heads} gives the base model an "
            f"odd head size ({width // heads}), which RoPE cannot rotate; choose base_width "
            f"as a multiple of {2 * heads}"
        )
    kv = m.base_n_kv_head
    if kv is None:
        if (heads * cfg.n_kv_head) % cfg.n_head:
            raise ModelConfigError(
                f"model.mup.base_n_head={heads} with the model's ratio of {cfg.n_head} query "
                f"to {cfg.n_kv_head} key/value heads gives the base model "
                f"{heads}*{cfg.n_kv_head}/{cfg.n_head} key/value heads, not a whole number; "
                "set model.mup.base_n_kv_head to the proxy's key/value heads"
            )
        return
    if kv > cfg.n_kv_head:
        raise ModelConfigError(
            f"model.mup.base_n_kv_head={kv} is larger than the model's {cfg.n_kv_head} "
            "key/value heads; µP scales up from the tuned proxy, so set base_n_kv_head to "
            f"the proxy's (smaller) count, at most {cfg.n_kv_head}"
        )
    if heads % kv:
        raise ModelConfigError(
            f"model.mup.base_n_kv_head={kv} does not divide the base model's {heads_key}="
            f"{heads}, so its query heads cannot share key/value heads evenly; choose a "
            f"divisor of {heads}"
        )


# ------------------------------------------------------------------ multipliers
def base_width(cfg: GPTConfig) -> int:
    """The width µP scales from: ``model.mup.base_width``, or the model's own."""
    return cfg.n_embd if cfg.mup.base_width is None else cfg.mup.base_width


def width_mult(cfg: GPTConfig) -> float:
    """``m = n_embd / base_width`` under µP; 1 under sp."""
    return cfg.n_embd / base_width(cfg) if cfg.parametrization == "mup" else 1.0


def input_multiplier(cfg: GPTConfig) -> float:
    """What the embedding output is multiplied by (1 under sp)."""
    return float(cfg.mup.input_mult) if cfg.parametrization == "mup" else 1.0


def logit_multiplier(cfg: GPTConfig) -> float:
    """What the logits are multiplied by: ``output_mult / m`` under µP, 1 under sp."""
    if cfg.parametrization != "mup":
        return 1.0
    return float(cfg.mup.output_mult) / width_mult(cfg)


def base_n_head(cfg: GPTConfig) -> int:
    """The proxy's attention heads: ``model.mup.base_n_head``, or the model's own."""
    return cfg.n_head if cfg.mup.base_n_head is None else cfg.mup.base_n_head


def base_n_kv_head(cfg: GPTConfig) -> int:
    """The proxy's key/value heads: ``model.mup.base_n_kv_head``, or the model's ratio.

    The default keeps the query-to-key/value ratio (the GQA group size) rather than the
    model's own count, because that is what keeps a multi-head model's proxy multi-head
    (``n_kv_head`` unset means ``n_head``, which the proxy, with fewer heads, cannot
    have) and what makes the default agree with today's base model when
    ``base_n_head`` is unset. A model that kept its key/value heads fixed while adding
    query heads (multi-query, say) sets ``base_n_kv_head`` itself; where the ratio gives
    no whole number, ``validate_mup`` asks for it.
    """
    if cfg.mup.base_n_kv_head is not None:
        return cfg.mup.base_n_kv_head
    return base_n_head(cfg) * cfg.n_kv_head // cfg.n_head


def base_head_size(cfg: GPTConfig) -> int:
    """The proxy's head size, ``base_width / base_n_head``: what the 1/d rule scales from."""
    return base_width(cfg) // base_n_head(cfg)


def attention_scale(cfg: GPTConfig) -> float | None:
    """The attention scores' scale: ``None`` (the backends' 1/√d) under sp or at the base head size, else √d_base/d.

    Under µP queries and keys become correlated during training, so q·k grows like d,
    not √d; 1/d keeps the scores of order one. The constant √d_base makes the scale
    exactly 1/√d at the base head size, where µP is sp. ``d_base`` is the proxy's head
    size (``base_width / base_n_head``), not ``base_width / n_head``: a model widened by
    adding heads of the proxy's size keeps sp's scale at every width, as it should,
    since no head changed.
    """
    if cfg.parametrization != "mup":
        return None
    base_head = base_head_size(cfg)
    if base_head == cfg.head_size:  # the base head size: sp's scale, computed as sp does
        return None
    return math.sqrt(base_head) / cfg.head_size


def base_config(cfg: GPTConfig) -> GPTConfig:
    """The base model's config (``n_embd = base_width``, the proxy's heads), under sp.

    Only its shapes are used (built on the meta device), so it must have the proxy's
    heads, not the widened model's: with GQA ``n_kv_head * head_size`` is part of
    ``c_attn``'s shape, and with QK-norm the head size is the norms' shape.
    """
    heads, kv = base_n_head(cfg), base_n_kv_head(cfg)
    attention = dataclasses.replace(cfg.attention, n_kv_head=None if kv == heads else kv)
    return dataclasses.replace(
        cfg,
        n_embd=base_width(cfg),
        n_head=heads,
        attention=attention,
        parametrization="sp",
        mup=MupConfig(),
    )


# ----------------------------------------------------------------- shapes and rules
@dataclass(frozen=True)
class WidthInfo:
    """How one parameter's dimensions grow with width relative to the base model.

    fan_out_mult / fan_in_mult: ``shape[0] / base[0]`` and ``shape[1] / base[1]``
    (1 for a dimension that does not grow or does not exist). infinite: how many
    dimensions grow (2: matrix-like, 1: vector-like, 0: finite).
    """

    fan_out_mult: float
    fan_in_mult: float
    infinite: int

    @property
    def width_mult(self) -> float:
        """The growing dimension's multiplier for vector-like tensors (1 for finite ones)."""
        return self.fan_out_mult if self.fan_out_mult != 1.0 else self.fan_in_mult


def width_infos(model: nn.Module) -> dict[str, WidthInfo]:
    """Each named parameter's ``WidthInfo``, from the base model built on the meta device."""
    import torch

    from gptlab.model.gpt import GPT

    cfg = _config(model)
    with torch.device("meta"):
        base = GPT(base_config(cfg))
    base_shapes = {name: tuple(p.shape) for name, p in base.named_parameters()}
    infos = {}
    for name, p in model.named_parameters():
        shape, ref = tuple(p.shape), base_shapes[name]
        mults = [s / r for s, r in zip(shape, ref, strict=True)] + [1.0, 1.0]
        grown = sum(s != r for s, r in zip(shape, ref, strict=True))
        infos[name] = WidthInfo(mults[0], mults[1] if p.dim() > 1 else 1.0, grown)
    return infos


def _config(model: nn.Module) -> GPTConfig:
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"µP rules apply to gptlab GPT models, not {type(model).__name__}")
    return cfg


def is_mup(model: nn.Module) -> bool:
    """Whether ``model`` is a GPT built with ``parametrization=mup``."""
    cfg = getattr(model, "config", None)
    return isinstance(cfg, GPTConfig) and cfg.parametrization == "mup"


def lr_multipliers(model: nn.Module, rule: str) -> dict[int, float]:
    """``id(param) -> lr factor`` under ``rule`` (adam, sgd, muon); see the module docstring.

    Empty for a model that is not µP, so optimizers leave their groups as they were.
    For ``muon``, the factor is the Newton–Schulz part's; call it for those parameters only.
    """
    if rule not in OPTIMIZER_RULES:
        raise ValueError(f"unknown µP optimizer rule {rule!r}; choose one of {OPTIMIZER_RULES}")
    if not is_mup(model):
        return {}
    infos = width_infos(model)
    factors: dict[int, float] = {}
    for name, p in model.named_parameters():
        info = infos[name]
        factor = 1.0
        if rule == "adam" and info.infinite == 2:
            factor = 1.0 / info.fan_in_mult
        elif rule == "sgd" and info.infinite == 2:
            factor = info.fan_out_mult / info.fan_in_mult
        elif rule == "sgd" and info.infinite == 1:
            factor = info.width_mult
        elif rule == "muon" and info.infinite and p.dim() == 2:
            base_max = max(p.size(0) / info.fan_out_mult, p.size(1) / info.fan_in_mult)
            factor = math.sqrt(base_max / max(p.size(0), p.size(1)))
        factors[id(p)] = factor
    return factors


# ---------------------------------------------------------------------------- init
def apply_mup_init(model: nn.Module) -> None:
    """Rescale a freshly sp-initialised GPT to µP's init (in place; see the module docstring).

    Scaling the sp sample (rather than drawing again) keeps the random stream the
    same as sp's, so at width multiplier 1 a µP model is an sp model bit for bit.
    """
    import torch

    cfg = _config(model)
    infos = width_infos(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            info = infos[name]
            if info.infinite == 2 and info.fan_in_mult != 1.0:
                p.mul_(math.sqrt(1.0 / info.fan_in_mult))  # variance / fan-in mult
        if cfg.mup.zero_query:
            q_rows = cfg.n_head * cfg.head_size
            for name, p in model.named_parameters():
                if name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
                    p[:q_rows].zero_()
        if cfg.mup.zero_readout:  # validate_mup refuses it for a tied head
            dict(model.named_parameters())["lm_head.weight"].zero_()


# -------------------------------------------------------------------------- export
def sp_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights that compute the µP model's function under sp's forward (for GPT-2 export).

    ``input_mult`` goes into ``wte``/``wpe``, ``output_mult / m`` into an untied
    ``lm_head``, the attention factor into the query rows of ``c_attn``. A tied model
    whose two multipliers differ cannot be folded and is refused. An sp model's own
    state dict comes back unchanged.
    """
    state = dict(model.state_dict())
    cfg = _config(model)
    if cfg.parametrization != "mup":
        return state
    emb, out = input_multiplier(cfg), logit_multiplier(cfg)
    if cfg.tie_embeddings and not math.isclose(emb, out, rel_tol=1e-12):
        raise ModelConfigError(
            f"cannot save as Hugging Face GPT-2: this µP model multiplies its embeddings by "
            f"{emb:g} and its logits by {out:g} (output_mult / width multiplier), which one "
            "tied matrix cannot hold; export it in gptlab's own format, or train with "
            "model.tie_embeddings=false"
        )
    scale = attention_scale(cfg)
    q_factor = 1.0 if scale is None else scale * math.sqrt(cfg.head_size)  # sp applies 1/√d
    q_rows = cfg.n_head * cfg.head_size
    qk_norm = cfg.attention.qk_norm  # then the query's norm gain carries the factor
    for name in list(state):
        value = state[name]
        if name in ("transformer.wte.weight", "transformer.wpe.weight"):
            value = value * emb
        elif name == "lm_head.weight":
            value = value * (emb if cfg.tie_embeddings else out)
        elif qk_norm and name.endswith(("attn.q_norm.weight", "attn.q_norm.bias")):
            value = value * q_factor
        elif not qk_norm and name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
            value = value.clone()
            value[:q_rows] *= q_factor
        state[name] = value
    return state
