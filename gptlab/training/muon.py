"""gptlab's own Muon step, for the variants ``torch.optim.Muon`` does not have.

``optimizer=muon`` keeps ``torch.optim.Muon`` while every switch here is off and the
Newton–Schulz iteration runs in bfloat16 (so a GPU run is the library's, bit for bit);
turning on ``normuon`` or ``cautious_wd``, or running the iteration in float32, swaps in
:class:`Muon` below, whose switches-off step is the same arithmetic as torch's
(Nesterov momentum by ``lerp``, the quintic Newton–Schulz, decoupled decay, then
``lr * 0.2 * sqrt(max(A, B))``, Moonshot's "match AdamW's RMS" scaling).

``ns_dtype``: torch's Muon always iterates in bfloat16, which is fast on a GPU and very
slow on a CPU without bfloat16 kernels (the whole Muon step then costs many times the
model's forward and backward; benchmarks/RESULTS.md). ``optimizer.ns_dtype=auto`` (the
default) therefore takes bfloat16 on CUDA and float32 elsewhere.

The two variants, and the exact rule each follows:

NorMuon (Li et al. 2025, arXiv 2510.05491), in the norm-preserving form of
modded-nanogpt's ``NorMuonAndAdam``: after orthogonalisation ``O`` (shape
``out x in``), keep a per-row (per output neuron) EMA of the mean square,
``v = b2 * v + (1 - b2) * mean(O**2, dim=-1)``, divide row ``i`` of ``O`` by
``sqrt(v_i) + eps``, then multiply the whole matrix by ``||O||_F / ||O_hat||_F`` so the
update's RMS is exactly plain Muon's before the same shape-adjusted lr is applied.
(The paper rescales to ``0.2 * lr * sqrt(out * in)`` instead; the two agree when ``O``
is exactly orthogonal. Because of this rescale no bias correction of ``v`` is needed:
a uniform factor on ``v`` cancels.) modded-nanogpt reduces over the longer side and
uses ``rsqrt(max(v, 1e-10))``; we always keep per-output-row statistics, as the issue asks.

Cautious weight decay (Chen et al. 2025, arXiv 2510.12402): with ``u`` the update the
optimizer subtracts (``p <- p - lr_u * u``), decay only the coordinates where ``u`` and
``p`` have the same sign (``u * p >= 0``, as modded-nanogpt), i.e. where decay pulls
the same way as the update: ``p <- p - lr_t * wd_t * [u * p >= 0] * p - lr_u * u``,
with the mask and the decay taken from ``p`` before the step (decoupled decay's order).
``lr_t`` is the group's current (scheduled) lr, so decay follows the lr schedule as
decoupled decay does; ``wd_t = wd * max(0, 1 - t / wd_decay_steps)`` when
``wd_decay_steps`` is set (``t`` = steps taken so far, counted in the group's
``wd_step`` so checkpoints resume it), else ``wd``.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic (as torch.optim.Muon)
NS_STEPS = 5
NS_EPS = 1e-7


def newton_schulz(
    g: torch.Tensor,
    steps: int = NS_STEPS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Approximately orthogonalise ``g`` (2-D) with the quintic iteration, in ``dtype``.

    The wide orientation keeps the Gram matrix small; the Frobenius norm bounds the
    spectral norm by 1 so the iteration starts inside its basin.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def normuon_normalise(
    o: torch.Tensor, v: torch.Tensor, beta2: float, eps: float = 1e-8
) -> torch.Tensor:
    """Update the per-row second moment ``v`` in place; return ``o`` row-normalised, same norm."""
    o = o.float()
    v.lerp_(o.square().mean(dim=-1), 1 - beta2)
    scaled = o / (v.sqrt() + eps).unsqueeze(-1)
    return scaled * (o.norm() / scaled.norm().clamp(min=1e-30))


def wd_factor(group: dict) -> float:
    """This step's weight decay: ``wd``, linearly to 0 at ``wd_decay_steps`` when set."""
    wd = group["weight_decay"]
    steps = group.get("wd_decay_steps")
    if steps is None:
        return wd
    return wd * max(0.0, 1.0 - group["wd_step"] / steps)


def cautious_decay_(p: torch.Tensor, update: torch.Tensor, strength: float) -> None:
    """``p -= strength * p`` where ``update * p >= 0`` (``update`` is what gets subtracted)."""
    mask = (update * p) >= 0
    p.sub_(p * mask * strength)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D matrices with the NorMuon and cautious-weight-decay switches (off by default)."""

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        normuon: bool = False,
        normuon_beta2: float = 0.95,
        normuon_eps: float = 1e-8,
        cautious_wd: bool = False,
        wd_decay_steps: int | None = None,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        self.ns_dtype = ns_dtype
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            normuon=normuon,
            normuon_beta2=normuon_beta2,
            normuon_eps=normuon_eps,
            cautious_wd=cautious_wd,
            wd_decay_steps=wd_decay_steps,
            wd_step=0,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        f"Muon takes 2-D matrices only; got a tensor of shape {tuple(p.shape)}"
                    )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            wd = wd_factor(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mu)
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
                update = newton_schulz(update, dtype=self.ns_dtype)
                if group["normuon"]:
                    if "row_second_moment" not in state:
                        state["row_second_moment"] = torch.zeros(
                            p.size(0), dtype=torch.float32, device=p.device
                        )
                    update = normuon_normalise(
                        update,
                        state["row_second_moment"],
                        group["normuon_beta2"],
                        group["normuon_eps"],
                    )
                adjusted_lr = lr * 0.2 * math.sqrt(max(p.size(0), p.size(1)))
                if group["cautious_wd"]:
                    cautious_decay_(p, update, lr * wd)
                else:
                    p.mul_(1 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-adjusted_lr)
            group["wd_step"] += 1
        return loss


class CautiousAdamW(torch.optim.AdamW):
    """AdamW whose decoupled decay is cautious in groups with ``cautious_wd`` set.

    Those groups step with ``weight_decay=0``; the decay is then applied from the
    parameters as they were, masked by the sign of the Adam update (``old - new``).
    Groups without the flag are torch's AdamW untouched.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        saved = []
        for group in self.param_groups:
            if not group.get("cautious_wd"):
                continue
            strength = group["lr"] * wd_factor(group)
            old = [p.detach().clone() for p in group["params"] if p.grad is not None]
            saved.append((group, group["weight_decay"], strength, old))
            group["weight_decay"] = 0.0
        try:
            super().step()
        finally:
            for group, wd, _, _ in saved:
                group["weight_decay"] = wd
        for group, _, strength, old in saved:
            live = [p for p in group["params"] if p.grad is not None]
            for p, before in zip(live, old, strict=True):
                update = before - p  # what the Adam step subtracted
                mask = (update * before) >= 0
                p.sub_(before * mask * strength)
            group["wd_step"] = group.get("wd_step", 0) + 1
        return loss
