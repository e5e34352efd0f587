"""Optimizers, each a function ``(model, **config) -> torch.optim.Optimizer``.

Weight decay goes to matrices only (linear and embedding weights, the tensors with
two or more dimensions); biases and norm gains are left alone, as in nanoGPT and
GPT-3. A new optimizer is a new function here plus a YAML file in
``gptlab/conf/optimizer/`` naming it as ``_target_`` (a package of your own must first be
allowed from code with ``gptlab.utils.spec.allow_targets``: config data never chooses
what gets called).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch
from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (dim >= 2) and a non-decayed one."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


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
) -> torch.optim.AdamW:
    """AdamW with decay on matrices only; ``fused=None`` picks the fused kernel where supported."""
    groups = decay_groups(model, weight_decay)
    all_params = [p for g in groups for p in g["params"]]
    use_fused = _fused_supported(all_params) if fused is None else fused
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=use_fused or None)


def sgd(
    model: nn.Module,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = True,
) -> torch.optim.SGD:
    """Plain SGD with momentum: the baseline every optimizer study needs."""
    return torch.optim.SGD(
        decay_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov
    )


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
        muon_params: list[torch.Tensor],
        adamw_groups: list[dict],
        lr: float,
        adam_lr: float,
        momentum: float,
        weight_decay: float,
        betas: tuple[float, float],
        eps: float,
    ) -> None:
        self.muon = torch.optim.Muon(
            muon_params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            adjust_lr_fn="match_rms_adamw",
        )
        self.adamw = torch.optim.AdamW(adamw_groups, lr=adam_lr, betas=tuple(betas), eps=eps)
        all_params = list(muon_params) + [p for g in adamw_groups for p in g["params"]]
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


def muon(
    model: nn.Module,
    lr: float = 0.02,
    adam_lr: float = 3e-3,
    momentum: float = 0.95,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """Muon on the blocks' 2-D matrices, AdamW (decay on matrices) on embeddings, head and vectors."""
    if not hasattr(torch.optim, "Muon"):
        raise RuntimeError(
            "optimizer=muon needs torch>=2.9 (torch.optim.Muon); upgrade torch or use optimizer=adamw"
        )
    outside = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            outside.update(id(p) for p in module.parameters())
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Module):
        outside.update(id(p) for p in head.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() == 2 and id(p) not in outside]
    rest = [p for p in params if id(p) not in {id(h) for h in hidden}]
    adamw_groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    return MuonWithAdamW(hidden, adamw_groups, lr, adam_lr, momentum, weight_decay, betas, eps)
