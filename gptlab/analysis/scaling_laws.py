"""IsoFLOP scaling-law fits with bootstrap intervals (Chinchilla's approach 2), numpy only.

The ladder trains every size ``N`` at every compute budget ``C`` on ``D = C / (6 N)``
tokens. Then:

* per budget, the loss-optimal size: a quadratic in ``log N`` through every (size, seed)
  point, its vertex ``N_opt(C)`` (clipped to the sizes tried: a vertex outside them is
  not measured) and the loss there ``L_opt(C)``;
* the power laws ``N_opt = k C^a`` and ``D_opt = C / (6 N_opt) = k' C^b`` (so ``b = 1 - a``
  by construction, as in Chinchilla), and ``L_opt = m C^g``, each a straight line in
  log-log;
* the loss predicted at a held-out larger budget from that last line.

Point estimates alone say nothing about how far to trust them (nanochat reports only
those). ``fit_ladder`` repeats the whole fit on bootstrap resamples (each budget's points
drawn with replacement, so both the seeds and the sizes are resampled) and reports the
central 90% of each number.

``N`` is whatever the caller counts: gptlab's ladder uses the blocks' weight matrices
(non-embedding, ``gptlab/training/depth.py``), so ``6 N D`` is the training FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gptlab.analysis import CompareError


@dataclass(frozen=True)
class Point:
    """One finished ladder run: its budget, size, tokens, seed and final loss."""

    budget: float
    params: float
    loss: float
    seed: int = 0
    tokens: float | None = None


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (``low``, ``high``)."""

    value: float
    low: float
    high: float

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class BudgetFit:
    """The optimum at one budget: ``n_opt``, ``d_opt = C / (6 n_opt)`` and ``loss_opt``."""

    budget: float
    n_opt: Interval
    d_opt: Interval
    loss_opt: Interval
    quadratic: tuple[float, float, float]  # loss = q0 (log N)^2 + q1 log N + q2
    sizes: int  # distinct sizes measured; below 3 the optimum is the best size measured


@dataclass(frozen=True)
class LadderFit:
    """Everything ``fit_ladder`` found; ``prediction`` is at ``holdout`` (when given)."""

    budgets: list[BudgetFit]
    a: Interval  # N_opt ∝ C^a
    b: Interval  # D_opt ∝ C^b
    g: Interval  # L_opt ∝ C^g
    confidence: float
    samples: int
    holdout: float | None = None
    prediction: Interval | None = None
    notes: list[str] = field(default_factory=list)


def optimum(points: Sequence[Point]) -> tuple[float, float, tuple[float, float, float], int]:
    """``(N_opt, L_opt, quadratic, sizes)`` of one budget's points.

    With fewer than three distinct sizes, or a fit that opens downwards, there is no
    vertex to trust: the best measured size (mean over its seeds) stands in.
    """
    x = np.log([p.params for p in points])
    y = np.array([p.loss for p in points])
    sizes = np.unique(x)
    if len(sizes) >= 3:
        q = np.polyfit(x, y, 2)
        if q[0] > 0:
            vertex = float(np.clip(-q[1] / (2 * q[0]), sizes[0], sizes[-1]))
            return math.exp(vertex), float(np.polyval(q, vertex)), (q[0], q[1], q[2]), len(sizes)
    means = [float(y[x == s].mean()) for s in sizes]
    best = int(np.argmin(means))
    return math.exp(sizes[best]), means[best], (0.0, 0.0, means[best]), len(sizes)


def power_law(budgets: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """``(exponent, log prefactor)`` of ``values = exp(log_k) * budgets ** exponent``."""
    slope, intercept = np.polyfit(np.log(budgets), np.log(values), 1)
    return float(slope), float(intercept)


def _fit_once(by_budget: dict[float, list[Point]], holdout: float | None) -> dict[str, float]:
    budgets = sorted(by_budget)
    optima = [optimum(by_budget[c]) for c in budgets]
    n_opt = [o[0] for o in optima]
    loss_opt = [o[1] for o in optima]
    a, _ = power_law(budgets, n_opt)
    b, _ = power_law(budgets, [c / (6 * n) for c, n in zip(budgets, n_opt, strict=True)])
    g, log_m = power_law(budgets, loss_opt)
    out = {"a": a, "b": b, "g": g}
    for c, n, loss in zip(budgets, n_opt, loss_opt, strict=True):
        out[f"n:{c}"], out[f"loss:{c}"] = n, loss
    if holdout is not None:
        out["prediction"] = math.exp(log_m + g * math.log(holdout))
    return out


def fit_ladder(
    points: Sequence[Point],
    holdout: float | None = None,
    samples: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
) -> LadderFit:
    """Fit the points of every budget below ``holdout`` (all of them without one); see the module.

    Points at ``holdout`` itself are left out of the fit (they are what the prediction
    is checked against, ``check_holdout``).
    """
    used = [p for p in points if holdout is None or p.budget < holdout]
    by_budget: dict[float, list[Point]] = {}
    for p in used:
        by_budget.setdefault(p.budget, []).append(p)
    if len(by_budget) < 2:
        raise CompareError(
            f"a scaling law needs at least two budgets below the held-out one, got {sorted(by_budget)}; "
            "add budgets or hold none out (holdout=null)"
        )
    best = _fit_once(by_budget, holdout)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in best}
    for _ in range(samples):
        resampled = {
            c: [pts[i] for i in rng.integers(len(pts), size=len(pts))]
            for c, pts in by_budget.items()
        }
        for k, v in _fit_once(resampled, holdout).items():
            draws[k].append(v)
    tail = (1 - confidence) / 2 * 100

    def interval(key: str) -> Interval:
        low, high = np.percentile(draws[key], [tail, 100 - tail])
        return Interval(best[key], float(low), float(high))

    fits = []
    notes = []
    for c in sorted(by_budget):
        n, loss, q, sizes = optimum(by_budget[c])
        if sizes < 3:
            notes.append(f"budget {c:.3g}: {sizes} sizes, so its optimum is the best size measured")
        elif q[0] == 0:
            notes.append(
                f"budget {c:.3g}: the losses do not curve upwards, so its optimum is the best size "
                "measured (add depths on the side of the best one)"
            )
        n_int = interval(f"n:{c}")
        d_opt = Interval(c / (6 * n_int.value), c / (6 * n_int.high), c / (6 * n_int.low))
        fits.append(BudgetFit(c, n_int, d_opt, interval(f"loss:{c}"), q, sizes))
    return LadderFit(
        budgets=fits,
        a=interval("a"),
        b=interval("b"),
        g=interval("g"),
        confidence=confidence,
        samples=samples,
        holdout=holdout,
        prediction=interval("prediction") if holdout is not None else None,
        notes=notes,
    )


def check_holdout(fit: LadderFit, points: Sequence[Point]) -> float | None:
    """The measured optimum loss at the held-out budget (``None`` when it was not run)."""
    if fit.holdout is None:
        return None
    held = [p for p in points if p.budget == fit.holdout]
    return optimum(held)[1] if held else None
