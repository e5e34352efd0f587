"""One knob for size: ``model=scaled model.depth=D`` derives the rest, the way nanochat does.

From the depth (and a few settings that rarely change) follow, in this order, each from
the ones before it:

* width ``n_embd = depth x aspect_ratio`` and heads ``n_head = n_embd / head_dim``;
* ``N``, the parameters of the blocks' weight matrices (attention and MLP, see
  ``matrix_params``): Kaplan's non-embedding count. nanochat adds its ``lm_head`` too;
  gptlab cannot, because the vocabulary is known only once the tokenizer is built,
  after the config is settled, and at gptlab's CPU sizes a character vocabulary's
  table would dominate ``N`` anyway;
* training tokens ``T = tokens_per_param x N`` (Chinchilla's 20), or ``C / (6 N)`` for
  a compute budget ``flops_budget = C`` (what the ladder sets);
* the batch ``B = B_ref x (T / T_ref) ^ 0.383`` rounded to a power of two (Power Lines,
  arXiv:2505.13738), where the reference is the same recipe at ``ref_depth`` trained on
  ``T_ref = tokens_per_param x N_ref`` tokens in batches of ``ref_batch_tokens``;
* every learning rate times ``sqrt(B / B_ref)`` and the weight decay times
  ``sqrt(B / B_ref) x T_ref / T`` (a constant AdamW timescale, arXiv:2405.13698): the
  optimizer preset's own values are taken as the reference model's;
* ``trainer.max_steps = T // B``.

``derive`` is a pure function of plain values; ``apply_depth`` writes its result into a
composed config, except where the command line set a key itself, and then the later
values follow the given one (``model.n_embd=512`` changes the heads, ``N``, ``T``, ...).
Nothing here imports torch, so the ladder can check a whole grid before launching it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gptlab.errors import ConfigError
from gptlab.model.config import GPTConfig

# Power Lines' exponent of the loss-optimal batch in the training tokens.
BATCH_EXPONENT = 0.383


@dataclass(frozen=True)
class DepthSettings:
    """The knobs of ``model=scaled`` (the ``model.*`` keys that are not the model's shape)."""

    depth: int = 4
    aspect_ratio: int = 64
    head_dim: int = 64
    tokens_per_param: float = 20.0
    flops_budget: float | None = None
    ref_depth: int = 4
    ref_batch_tokens: int = 8192
    # Warm-up/stable/decay branches (gptlab/training/wsd_branch.py): the smaller budgets a
    # stable run keeps checkpoints for, or the stable runs' sweep a branch starts from.
    wsd_branches: list[float] | None = None
    wsd_from: str | None = None


KNOBS = tuple(f.name for f in dataclasses.fields(DepthSettings))


@dataclass(frozen=True)
class Derived:
    """Every value ``derive`` computes, as printed at the start and saved in ``config.yaml``."""

    block_size: int
    n_layer: int
    n_embd: int
    n_head: int
    params: int  # N: the blocks' weight matrices (matrix_params)
    tokens: int  # T
    ref_params: int
    ref_tokens: int
    batch_tokens: int  # B
    batch_size: int  # sequences per micro-batch: B / block_size at most
    lr_scale: float
    weight_decay_scale: float
    max_steps: int

    def describe(self) -> str:
        return (
            f"gptlab: model=scaled derived {self.n_layer} layers x {self.n_embd} wide, "
            f"{self.n_head} heads; N={self.params:,} block-matrix parameters; "
            f"T={self.tokens:,} tokens; batch B={self.batch_tokens:,} tokens "
            f"({self.batch_size} sequences a micro-batch); lr x{self.lr_scale:.4g}, "
            f"weight decay x{self.weight_decay_scale:.4g}; {self.max_steps:,} steps "
            f"(reference: N={self.ref_params:,}, T={self.ref_tokens:,})"
        )


def matrix_params(config: GPTConfig) -> int:
    """``N``: the weights of the blocks' matrices, attention (q, k, v, out) and MLP.

    Embeddings, the head, norms, biases and scalar gates are left out: they cost no
    (or next to no) FLOPs per token, so ``6 N`` is the training FLOPs of one token.
    """
    d, hs = config.n_embd, config.head_size
    attention = d * config.n_head * hs + 2 * d * config.n_kv_head * hs + config.n_head * hs * d
    matrices_in = 2 if config.mlp == "swiglu" else 1
    mlp = (matrices_in + 1) * d * config.mlp_hidden_size
    return config.n_layer * (attention + mlp)


def shape(settings: DepthSettings, depth: int) -> tuple[int, int]:
    """``(n_embd, n_head)`` of ``depth``; refuses a width the head size does not divide."""
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"model.depth={depth} must be a whole number of layers, at least 1")
    width = depth * settings.aspect_ratio
    if settings.head_dim < 1 or width % settings.head_dim:
        raise ConfigError(
            f"model.depth={depth} x model.aspect_ratio={settings.aspect_ratio} gives width {width}, "
            f"which model.head_dim={settings.head_dim} does not divide; choose a depth, aspect ratio "
            f"or head size whose product is a multiple of the head size (e.g. model.head_dim=64)"
        )
    return width, width // settings.head_dim


def derive(
    settings: DepthSettings,
    model: Mapping[str, Any],
    batch_size: int,
    given: Mapping[str, Any] | None = None,
) -> Derived:
    """The derived values for ``settings`` on the model fields ``model`` (block_size, mlp, ...).

    ``given`` holds the values the user set themselves, under their config keys
    (``model.n_embd``, ``data.global_batch_tokens``, ``trainer.max_steps``, ...): each is
    used as it is, and what follows from it is derived from it.
    """
    given = dict(given or {})
    block_size = int(model["block_size"])
    width, heads = shape(settings, settings.depth)
    n_layer = int(given.get("model.n_layer", settings.depth))
    n_embd = int(given.get("model.n_embd", width))
    n_head = int(given.get("model.n_head", max(1, n_embd // settings.head_dim)))
    params = matrix_params(_config(model, n_layer, n_embd, n_head))
    ref_width, ref_heads = shape(settings, settings.ref_depth)
    ref_params = matrix_params(_config(model, settings.ref_depth, ref_width, ref_heads))
    ref_tokens = int(settings.tokens_per_param * ref_params)
    if settings.flops_budget is not None:
        tokens = int(settings.flops_budget / (6 * params))
    else:
        tokens = int(settings.tokens_per_param * params)
    if "data.global_batch_tokens" in given:
        batch = int(given["data.global_batch_tokens"])
    else:
        predicted = settings.ref_batch_tokens * (max(tokens, 1) / ref_tokens) ** BATCH_EXPONENT
        batch = max(2 ** round(math.log2(predicted)), _next_power_of_two(block_size))
    rows = int(
        given.get("data.batch_size", _largest_power_of_two(min(batch_size, batch // block_size)))
    )
    ratio = batch / settings.ref_batch_tokens
    steps = int(given.get("trainer.max_steps", tokens // batch))
    return Derived(
        block_size=block_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        params=params,
        tokens=tokens,
        ref_params=ref_params,
        ref_tokens=ref_tokens,
        batch_tokens=batch,
        batch_size=max(rows, 1),
        lr_scale=math.sqrt(ratio),
        weight_decay_scale=math.sqrt(ratio) * ref_tokens / max(tokens, 1),
        max_steps=steps,
    )


def check_derived(derived: Derived) -> None:
    """Refuse less than one batch of tokens, and a micro-batch that does not divide the batch."""
    micro = derived.batch_size * derived.block_size
    if derived.batch_tokens % micro:
        raise ConfigError(
            f"model=scaled derives a batch of {derived.batch_tokens:,} tokens, which data.batch_size="
            f"{derived.batch_size} x data.block_size={derived.block_size} does not divide; leave "
            "data.batch_size unset (it is derived) or give data.global_batch_tokens yourself"
        )
    if derived.max_steps < 1:
        raise ConfigError(
            f"model=scaled at depth {derived.n_layer} (N={derived.params:,}) trains on "
            f"{derived.tokens:,} tokens, less than one batch of {derived.batch_tokens:,}; raise "
            "model.flops_budget or model.tokens_per_param, or use a smaller depth"
        )


def _config(model: Mapping[str, Any], n_layer: int, n_embd: int, n_head: int) -> GPTConfig:
    fields = {k: v for k, v in model.items() if k not in KNOBS}
    fields.update(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=1)
    return GPTConfig.from_dict(fields)


def _mup_proxy_heads(model: Mapping[str, Any], settings: DepthSettings) -> dict[str, int]:
    """Under µP, the proxy's head count: the depth knob widens at a fixed head size.

    µP's attention scale compares the model's head size with the proxy's, which it takes
    as ``base_width / base_n_head`` (``base_n_head`` defaulting to the model's own heads,
    right only when widening keeps the head count). Every ``model=scaled`` size has heads
    of ``head_dim``, so its proxy has ``base_width / head_dim`` of them; a command-line
    ``model.mup.base_n_head`` wins as every key does.
    """
    mup = model.get("mup") or {}
    base_width = mup.get("base_width")
    if model.get("parametrization") != "mup" or base_width is None:
        return {}
    if mup.get("base_n_head") is not None:
        return {}
    if base_width % settings.head_dim:
        raise ConfigError(
            f"model=scaled widens at a fixed head size (model.head_dim={settings.head_dim}), so "
            f"µP's proxy has model.mup.base_width / head_dim heads, but base_width={base_width} "
            f"is not a multiple of {settings.head_dim}; choose a base width that is, or set "
            f"model.mup.base_n_head"
        )
    return {"model.mup.base_n_head": base_width // settings.head_dim}


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _largest_power_of_two(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1) if n >= 1 else 1


# The optimizer keys that hold a learning rate (adam_lr is Muon's AdamW part).
LR_KEYS = ("lr", "adam_lr", "head_lr", "embedding_lr")


def is_scaled(cfg: Any) -> bool:
    """Whether the composed config asks for ``model=scaled`` (it has a ``model.depth``)."""
    return "depth" in (cfg.get("model") or {})


def derive_from_config(
    cfg: Any, overrides: list[str] | None = None
) -> tuple[DepthSettings, Derived, set[str]]:
    """``derive`` on a composed ``model=scaled`` config; also the settings and the keys ``overrides`` set."""
    from omegaconf import OmegaConf

    model: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    settings = DepthSettings(**{k: model[k] for k in KNOBS if k in model})
    explicit = {o.split("=", 1)[0].lstrip("+~") for o in overrides or []}
    given = {key: OmegaConf.select(cfg, key) for key in explicit}
    given = {key: value for key, value in given.items() if value is not None}
    if settings.wsd_from:  # a branch keeps its stable run's batch
        from gptlab.training.wsd_branch import stable_values

        _, shared = stable_values(cfg, settings.wsd_from, settings.depth)
        given = {**{k: v for k, v in shared.items() if k.startswith("data.")}, **given}
    return settings, derive(settings, model, int(cfg.data.batch_size), given), explicit


def apply_depth(cfg: Any, overrides: list[str] | None = None) -> Derived | None:
    """Write ``derive``'s values into the composed ``cfg``; ``None`` when it is not ``model=scaled``.

    ``overrides`` is the command line: a key set there keeps its value. The knobs leave
    ``cfg.model`` (the model's config holds only its shape) for ``cfg.scaled``, which keeps
    them with every derived value, so the run's ``config.yaml`` shows the numbers.
    """
    from omegaconf import OmegaConf, open_dict

    if not is_scaled(cfg):
        return None
    settings, derived, explicit = derive_from_config(cfg, overrides)
    check_derived(derived)
    model: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    values: dict[str, Any] = {
        "model.n_layer": derived.n_layer,
        "model.n_embd": derived.n_embd,
        "model.n_head": derived.n_head,
        "data.global_batch_tokens": derived.batch_tokens,
        "data.batch_size": derived.batch_size,
        "trainer.max_steps": derived.max_steps,
    }
    for key in LR_KEYS:
        if cfg.optimizer.get(key) is not None:
            values[f"optimizer.{key}"] = float(cfg.optimizer[key]) * derived.lr_scale
    if cfg.optimizer.get("weight_decay") is not None:
        values["optimizer.weight_decay"] = (
            float(cfg.optimizer.weight_decay) * derived.weight_decay_scale
        )
    values.update(_mup_proxy_heads(model, settings))
    if settings.wsd_from or settings.wsd_branches:
        from gptlab.training.wsd_branch import branch_values

        values.update(branch_values(cfg, settings, derived))
    shape_only = {k: v for k, v in model.items() if k not in KNOBS}
    with open_dict(cfg):
        cfg.model = OmegaConf.create(shape_only)
        for key, value in values.items():
            # resume=auto with nothing to resume is a fresh start, which a WSD branch makes
            # from its stable run's checkpoint (wsd_branch.branch_values clears it then).
            if key not in explicit or key == "resume":
                OmegaConf.update(cfg, key, value, merge=False)
        cfg.scaled = {**dataclasses.asdict(settings), **dataclasses.asdict(derived)}
        if settings.wsd_from:  # what the branch took from its stable run instead
            from gptlab.training.wsd_branch import SHARED_KEYS

            taken = (*SHARED_KEYS, "ckpt_path")
            cfg.scaled.branch_of = {k: v for k, v in values.items() if k in taken}
    return derived
