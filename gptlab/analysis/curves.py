"""Validation curves against steps, tokens, FLOPs or wall time, and values at a budget.

A validation row carries its step but not the cumulative tokens, FLOPs or seconds at
that step: those are logged by the ``Throughput`` callback every few steps. They grow
linearly with steps between logging points, so each validation point gets them by
interpolation over ``(0, 0)`` and the logged points (and, past the last logged point,
by the last known rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptlab.analysis import CompareError
from gptlab.analysis.runs import Run

# x option -> (the cumulative column, the axis label)
X_AXES = {
    "steps": ("step", "optimizer steps"),
    "tokens": ("train/tokens", "training tokens"),
    "flops": ("train/flops", "training FLOPs"),
    "time": ("train/wall_time", "wall time (s)"),
}


@dataclass
class Curve:
    x: np.ndarray
    y: np.ndarray


def check_x(x: str) -> str:
    if x not in X_AXES:
        raise CompareError(f"x={x} is not an axis; use one of {', '.join(X_AXES)}")
    return x


def _cumulative_at(run: Run, column: str, steps: np.ndarray) -> np.ndarray | None:
    """``column`` (cumulative, logged every few steps) at each of ``steps``."""
    points = sorted(run.series(column))
    if not points:
        return None
    known_steps = np.array([0.0] + [s for s, _ in points])
    known_values = np.array([0.0] + [v for _, v in points])
    values = np.interp(steps, known_steps, known_values)
    last_step, last_value = known_steps[-1], known_values[-1]
    beyond = steps > last_step
    if beyond.any() and last_step > 0:
        values[beyond] = last_value * steps[beyond] / last_step  # the same rate onwards
    return values


def curve(run: Run, metric: str = "val/loss", x: str = "steps") -> Curve | None:
    """``metric`` against the chosen x; ``None`` when the run never logged one of them."""
    column = X_AXES[check_x(x)][0]
    series = run.series(metric)
    if not series:
        return None
    steps = np.array([s for s, _ in series], dtype=float)
    y = np.array([v for _, v in series], dtype=float)
    if column == "step":
        return Curve(steps, y)
    xs = _cumulative_at(run, column, steps)
    return None if xs is None else Curve(xs, y)


def value_at(run: Run, budget: float, x: str, metric: str = "val/loss") -> float | None:
    """``metric`` at ``budget`` units of x (tokens, FLOPs, ...), interpolated between the
    two validations around it; ``None`` when the run stopped before the budget (its loss
    there is unknown, and extrapolating would credit or blame it for compute it never used).

    Wall time is the exception: a run that finished before the time was up had that time
    and did not need it, so it counts with its final value (equal wall-clock).
    """
    c = curve(run, metric, x)
    if c is None or len(c.x) == 0:
        return None
    order = np.argsort(c.x)
    xs, ys = c.x[order], c.y[order]
    if x == "time" and budget >= xs[-1] and not run.failed:
        return float(ys[-1])
    if budget > xs[-1] * (1 + 1e-9) or budget < 0:
        return None
    if budget <= xs[0]:
        return float(ys[0]) if np.isclose(budget, xs[0]) else None
    return float(np.interp(budget, xs, ys))
