"""Optimizers, each a function ``(model, **config) -> torch.optim.Optimizer``.

Weight decay goes to matrices only (linear and embedding weights, the tensors with
two or more dimensions); biases and norm gains are left alone, as in nanoGPT and
GPT-3. A new optimizer is a new function here plus a YAML file in
``gptlab/conf/optimizer/`` naming it as ``_target_`` (a package of your own must first be
allowed from code with ``gptlab.utils.spec.allow_targets``: config data never chooses
what gets called).

Switches, all off by default (then the optimizer is torch's, with the same groups, bit
for bit): ``head_lr`` / ``embedding_lr`` (adamw, muon) put ``model.lm_head`` / every
``nn.Embedding`` in groups of their own lr, which LambdaLR schedules scale like the
rest; ``cautious_wd`` + ``wd_decay_steps`` (adamw, muon) and ``normuon`` (muon) follow
the rules written in ``gptlab.training.muon``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch
from torch import nn

from gptlab.errors import ConfigError
from gptlab.model.parametrization import lr_multipliers
from gptlab.training.muon import CautiousAdamW, Muon


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (dim >= 2) and a non-decayed one."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _kinds(model: nn.Module) -> tuple[set[int], set[int]]:
    """Ids of embedding parameters (every ``nn.Embedding``) and of ``model.lm_head``'s."""
    embedding: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            embedding.update(id(p) for p in module.parameters())
    head_module = getattr(model, "lm_head", None)
    head = (
        {id(p) for p in head_module.parameters()} if isinstance(head_module, nn.Module) else set()
    )
    return embedding, head


def kind_groups(
    model: nn.Module,
    params: list[torch.Tensor],
    weight_decay: float,
    lr: float,
    head_lr: float | None,
    embedding_lr: float | None,
) -> list[dict]:
    """``params`` as [matrices (decayed), vectors] plus a group per kind with its own lr.

    Embeddings (every ``nn.Embedding``, value embeddings included) and the head
    (``model.lm_head``) leave the two base groups only when their lr is set, so with
    both ``None`` the groups are exactly the plain split. A tied head is the token
    embedding: it goes with the embeddings, and a ``head_lr`` other than theirs is refused.
    """
    for name, value in (("head_lr", head_lr), ("embedding_lr", embedding_lr)):
        if value is not None and value < 0:
            raise ConfigError(f"optimizer.{name}={value} must be >= 0 (or null for the group's lr)")
    embedding, head = _kinds(model)
    if head & embedding and head_lr is not None:
        shared = lr if embedding_lr is None else embedding_lr
        if head_lr != shared:
            raise ConfigError(
                f"optimizer.head_lr={head_lr} cannot differ from the embedding lr ({shared}) because "
                "model.tie_embeddings=true makes the head the token embedding; unset head_lr or set "
                "model.tie_embeddings=false"
            )
        head_lr = None
    head = head - embedding
    kinds = [(embedding, embedding_lr), (head, head_lr)]
    taken = {i for ids, kind_lr in kinds if kind_lr is not None for i in ids}
    rest = [p for p in params if id(p) not in taken]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    for ids, kind_lr in kinds:
        if kind_lr is None:
            continue
        mine = [p for p in params if id(p) in ids]
        for decayed in (True, False):
            chosen = [p for p in mine if (p.dim() >= 2) == decayed]
            if chosen:
                wd = weight_decay if decayed else 0.0
                groups.append({"params": chosen, "weight_decay": wd, "lr": kind_lr})
    return groups


def mup_groups(groups: list[dict], model: nn.Module, rule: str, lr: float) -> list[dict]:
    """Split each group by its parameters' µP lr factor and set each part's ``lr``.

    ``rule`` is ``adam``, ``sgd`` or ``muon`` (``gptlab.model.parametrization`` states
    each). A part's lr is its group's (or ``lr``) times the factor, so a ``LambdaLR``
    schedule, which multiplies every group's initial lr by one factor, keeps the ratios.
    For an sp model (or factors all 1) the groups come back unchanged, bit for bit.
    """
    factors = lr_multipliers(model, rule)
    if all(f == 1.0 for f in factors.values()):
        return groups
    split: list[dict] = []
    for group in groups:
        parts: dict[float, list[torch.Tensor]] = {}
        for p in group["params"]:
            parts.setdefault(factors.get(id(p), 1.0), []).append(p)
        if not parts:
            split.append(group)
        for factor, params in parts.items():
            part = {**group, "params": params}
            if factor != 1.0:
                part["lr"] = group.get("lr", lr) * factor
            split.append(part)
    return split


def _cautious(groups: list[dict], wd_decay_steps: int | None) -> None:
    """Mark AdamW groups for cautious decay (the keys CautiousAdamW reads)."""
    for group in groups:
        group.update(cautious_wd=True, wd_decay_steps=wd_decay_steps, wd_step=0)


def _check_wd_switches(cautious_wd: bool, wd_decay_steps: int | None) -> None:
    if wd_decay_steps is not None and not cautious_wd:
        raise ConfigError(
            "optimizer.wd_decay_steps schedules the cautious decay only; set optimizer.cautious_wd=true or drop it"
        )
    if wd_decay_steps is not None and wd_decay_steps < 1:
        raise ConfigError(
            f"optimizer.wd_decay_steps={wd_decay_steps} must be >= 1 (or null for constant decay)"
        )


def _refuse_unknown(name: str, unknown: dict) -> None:
    """A Muon-only switch (or a typo) on another optimizer: one sentence, not a TypeError."""
    if not unknown:
        return
    key = sorted(unknown)[0]
    muon_only = {"normuon", "normuon_beta2", "adam_lr"}
    hint = (
        "it is a Muon option: use optimizer=muon"
        if key in muon_only
        else "see gptlab/conf/optimizer"
    )
    raise ConfigError(f"optimizer={name} has no option {key}; {hint}, or drop optimizer.{key}")


def _fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """torch's fused AdamW kernels exist for CUDA (and recent CPU builds); use them when they do."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    return all(p.device.type in ("cuda", "cpu") and p.dtype.is_floating_point for p in params)


def adamw(
    model: nn.Module,
    lr: float = 6e-4,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.1,
    eps: float = 1e-8,
    fused: bool | None = None,
    head_lr: float | None = None,
    embedding_lr: float | None = None,
    cautious_wd: bool = False,
    wd_decay_steps: int | None = None,
    **unknown,
) -> torch.optim.AdamW:
    """AdamW with decay on matrices only; ``fused=None`` picks the fused kernel where supported.

    ``head_lr`` / ``embedding_lr`` give ``model.lm_head`` / every ``nn.Embedding`` a group
    of its own at that lr (``None``: ``lr``); ``cautious_wd`` makes the decoupled decay
    cautious (rule in ``gptlab.training.muon``). All off: torch's AdamW, as before.
    """
    _refuse_unknown("adamw", unknown)
    _check_wd_switches(cautious_wd, wd_decay_steps)
    if head_lr is None and embedding_lr is None:
        groups = decay_groups(model, weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = kind_groups(model, params, weight_decay, lr, head_lr, embedding_lr)
    groups = mup_groups(groups, model, "adam", lr)
    all_params = [p for g in groups for p in g["params"]]
    use_fused = _fused_supported(all_params) if fused is None else fused
    if cautious_wd:
        _cautious(groups, wd_decay_steps)
        return CautiousAdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=use_fused or None)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=use_fused or None)


def sgd(
    model: nn.Module,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = True,
    **unknown,
) -> torch.optim.SGD:
    """Plain SGD with momentum: the baseline every optimizer study needs.

    Under µP the groups follow µP's SGD rule (``gptlab.model.parametrization``).
    """
    _refuse_unknown("sgd", unknown)
    groups = mup_groups(decay_groups(model, weight_decay), model, "sgd", lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the hidden 2-D weight matrices, AdamW for everything else.

    Muon orthogonalises each matrix's momentum (Newton–Schulz iterations), which only
    makes sense for the linear maps inside the blocks; embeddings, the output head and
    vectors keep AdamW (the speed-record recipe). The two inner optimizers share their
    parameter-group dicts with this object, so Lightning's LR scheduler, gradient
    clipping and checkpointing see one optimizer.
    """

    def __init__(
        self,
        muon_params: list[torch.Tensor] | list[dict],
        adamw_groups: list[dict],
        lr: float,
        adam_lr: float,
        momentum: float,
        weight_decay: float,
        betas: tuple[float, float],
        eps: float,
        normuon: bool = False,
        normuon_beta2: float = 0.95,
        cautious_wd: bool = False,
        wd_decay_steps: int | None = None,
        ns_dtype: str = "auto",
    ) -> None:
        # plain tensors, or groups with their own lr (µP's Muon rule)
        muon_tensors = [
            t for g in muon_params for t in (g["params"] if isinstance(g, dict) else [g])
        ]
        dtype = newton_schulz_dtype(ns_dtype, muon_tensors)
        if normuon or cautious_wd or dtype != torch.bfloat16:
            # gptlab's own step (same arithmetic as torch's with both switches off)
            self.muon = Muon(
                muon_params,
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                normuon=normuon,
                normuon_beta2=normuon_beta2,
                cautious_wd=cautious_wd,
                wd_decay_steps=wd_decay_steps,
                ns_dtype=dtype,
            )
        else:
            self.muon = torch.optim.Muon(
                muon_params,
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                adjust_lr_fn="match_rms_adamw",
            )
        adamw_class = torch.optim.AdamW
        if cautious_wd:
            _cautious(adamw_groups, wd_decay_steps)
            adamw_class = CautiousAdamW
        self.adamw = adamw_class(adamw_groups, lr=adam_lr, betas=tuple(betas), eps=eps)
        all_params = muon_tensors + [p for g in adamw_groups for p in g["params"]]
        super().__init__(all_params, {"lr": lr})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def newton_schulz_dtype(name: str, params: list[torch.Tensor]) -> torch.dtype:
    """``auto``: bfloat16 where the matrices live on CUDA, float32 elsewhere (see muon.py)."""
    if name == "auto":
        on_cuda = bool(params) and all(p.device.type == "cuda" for p in params)
        return torch.bfloat16 if on_cuda else torch.float32
    if name not in NS_DTYPES:
        raise ConfigError(
            f"optimizer.ns_dtype={name!r} is not auto, bfloat16 or float32; choose one of those"
        )
    return NS_DTYPES[name]


def muon(
    model: nn.Module,
    lr: float = 0.02,
    adam_lr: float = 3e-3,
    momentum: float = 0.95,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    normuon: bool = False,
    normuon_beta2: float = 0.95,
    cautious_wd: bool = False,
    wd_decay_steps: int | None = None,
    head_lr: float | None = None,
    embedding_lr: float | None = None,
    ns_dtype: str = "auto",
) -> torch.optim.Optimizer:
    """Muon on the blocks' 2-D matrices, AdamW (decay on matrices) on embeddings, head and vectors.

    ``normuon`` / ``cautious_wd`` switch on the variants of ``gptlab.training.muon``;
    ``head_lr`` / ``embedding_lr`` give the head / embeddings their own AdamW lr
    (``None``: ``adam_lr``). All off: ``torch.optim.Muon`` + AdamW, as before.

    Under µP the Muon matrices' lr is multiplied by ``sqrt(base_max / max)`` (not
    ``1/m``: Muon's shape-adjusted update already grows as sqrt(max(rows, cols)); the
    reasoning is in ``gptlab.model.parametrization``) and the AdamW part follows µP's
    Adam rule.
    """
    if not hasattr(torch.optim, "Muon"):
        raise RuntimeError(
            "optimizer=muon needs torch>=2.9 (torch.optim.Muon); upgrade torch or use optimizer=adamw"
        )
    if not 0.0 <= normuon_beta2 < 1.0:
        raise ConfigError(
            f"optimizer.normuon_beta2={normuon_beta2} must be within [0, 1); 0.95 is the usual value"
        )
    _check_wd_switches(cautious_wd, wd_decay_steps)
    embedding, head = _kinds(model)
    outside = embedding | head
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() == 2 and id(p) not in outside]
    rest = [p for p in params if id(p) not in {id(h) for h in hidden}]
    adamw_groups = kind_groups(model, rest, weight_decay, adam_lr, head_lr, embedding_lr)
    adamw_groups = mup_groups(adamw_groups, model, "adam", adam_lr)
    muon_groups: list[torch.Tensor] | list[dict] = hidden
    if lr_multipliers(model, "muon"):
        muon_groups = mup_groups([{"params": hidden}], model, "muon", lr)
    return MuonWithAdamW(
        muon_groups,
        adamw_groups,
        lr,
        adam_lr,
        momentum,
        weight_decay,
        betas,
        eps,
        normuon=normuon,
        normuon_beta2=normuon_beta2,
        cautious_wd=cautious_wd,
        wd_decay_steps=wd_decay_steps,
        ns_dtype=ns_dtype,
    )
