"""A ladder sweep's runs as fit points, and the fit as a table, a JSON file and a figure.

Each run of ``python -m gptlab.ladder`` is a ``model=scaled`` run whose ``config.yaml``
keeps the derived values under ``scaled:`` (``gptlab/training/depth.py``): its budget
(``scaled.flops_budget``), ``N`` (``scaled.params``) and tokens. So the fit reads the
sizes the runs really had, not the ones the launcher meant.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.analysis import CompareError
from gptlab.analysis.runs import Run
from gptlab.analysis.scaling_laws import LadderFit, Point


def ladder_points(runs: Sequence[Run], metric: str) -> tuple[list[Point], list[str]]:
    """The finished ladder runs as ``Point`` s, and a line for each run left out (and why)."""
    points, skipped = [], []
    for run in runs:
        budget, params = run.config.get("scaled.flops_budget"), run.config.get("scaled.params")
        loss = run.final(metric)
        if run.failed or budget is None or params is None or loss is None:
            why = run.error or (f"no {metric}" if loss is None else "not a ladder run")
            skipped.append(f"{run.name}: {why}")
            continue
        points.append(
            Point(
                budget=float(budget),
                params=float(params),
                loss=float(loss),
                seed=int(run.config.get("seed", 0)),
                tokens=float(run.config.get("scaled.tokens") or 0) or None,
            )
        )
    if not points:
        raise CompareError(
            f"none of the {len(runs)} runs is a finished ladder run with {metric}; "
            "point fit= at a sweep folder written by python -m gptlab.ladder"
        )
    return points, skipped


def format_fit(fit: LadderFit, measured: float | None, metric: str) -> str:
    """The table printed at the end: per budget N_opt, D_opt, L_opt; the laws; the prediction."""
    pct = f"{fit.confidence:.0%}"
    lines = [
        f"{'budget C':>10}  {'sizes':>5}  N_opt [{pct}]  D_opt [{pct}]  {metric} at N_opt [{pct}]"
    ]
    for b in fit.budgets:
        lines.append(f"{b.budget:>10.3g}  {b.sizes:>5}  {b.n_opt}  {b.d_opt}  {b.loss_opt}")
    lines.append(f"N_opt ∝ C^a: a = {fit.a}   D_opt ∝ C^b: b = {fit.b}   L_opt ∝ C^g: g = {fit.g}")
    if fit.prediction is not None:
        line = f"predicted {metric} at C={fit.holdout:.3g}: {fit.prediction}"
        if measured is not None:
            inside = "inside" if fit.prediction.covers(measured) else "OUTSIDE"
            line += f"; measured {measured:.4g} ({inside} the interval, miss {measured - fit.prediction.value:+.4g})"
        lines.append(line)
    lines.extend(f"note: {n}" for n in fit.notes)
    return "\n".join(lines)


def write_fit(path: Path, fit: LadderFit, points: Sequence[Point], measured: float | None) -> None:
    """``fit.json``: every number of the fit and the points it was made from."""
    data: dict[str, Any] = {
        "fit": dataclasses.asdict(fit),
        "measured_at_holdout": measured,
        "points": [dataclasses.asdict(p) for p in points],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def ladder_figure(fit: LadderFit, points: Sequence[Point], metric: str, measured: float | None):
    """Left: loss against N per budget with its parabola; right: N_opt, D_opt and L_opt against C."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(12, 4.5))
    iso, laws, loss_ax = fig.subplots(1, 3)
    colours = [f"C{i}" for i in range(10)]
    budgets = sorted({p.budget for p in points})
    for i, c in enumerate(budgets):
        colour = colours[i % 10]
        here = [p for p in points if p.budget == c]
        iso.scatter([p.params for p in here], [p.loss for p in here], color=colour, s=12)
        fitted = next((b for b in fit.budgets if b.budget == c), None)
        label = f"C={c:.2g}" + ("" if fitted else " (held out)")
        if fitted and fitted.quadratic[0] > 0:
            x = np.linspace(
                np.log(min(p.params for p in here)), np.log(max(p.params for p in here)), 50
            )
            iso.plot(np.exp(x), np.polyval(fitted.quadratic, x), color=colour, label=label)
            iso.plot([fitted.n_opt.value], [fitted.loss_opt.value], "*", color=colour, ms=10)
        else:
            iso.plot([], [], color=colour, label=label)
    iso.set(
        xscale="log", xlabel="N (block-matrix parameters)", ylabel=metric, title="isoFLOP curves"
    )
    iso.legend(fontsize=8)
    iso.xaxis.set_minor_formatter(NullFormatter())
    cs = np.array([b.budget for b in fit.budgets])
    for name, key, colour in (("N_opt", "n_opt", "C0"), ("D_opt", "d_opt", "C1")):
        vals = [getattr(b, key) for b in fit.budgets]
        laws.errorbar(
            cs,
            [v.value for v in vals],
            yerr=[[v.value - v.low for v in vals], [v.high - v.value for v in vals]],
            fmt="o",
            color=colour,
            label=name,
        )
        slope, intercept = np.polyfit(np.log(cs), np.log([v.value for v in vals]), 1)
        grid = np.geomspace(cs.min(), fit.holdout or cs.max(), 20)
        laws.plot(grid, np.exp(intercept) * grid**slope, color=colour, lw=1)
    laws.set(
        xscale="log",
        yscale="log",
        xlabel="C (FLOPs)",
        title=f"a={fit.a.value:.3f}, b={fit.b.value:.3f}",
    )
    laws.legend(fontsize=8)
    loss_ax.errorbar(
        cs,
        [b.loss_opt.value for b in fit.budgets],
        yerr=[
            [b.loss_opt.value - b.loss_opt.low for b in fit.budgets],
            [b.loss_opt.high - b.loss_opt.value for b in fit.budgets],
        ],
        fmt="o",
        label="fitted optima",
    )
    if fit.prediction is not None and fit.holdout is not None:
        p = fit.prediction
        loss_ax.errorbar(
            [fit.holdout],
            [p.value],
            yerr=[[p.value - p.low], [p.high - p.value]],
            fmt="s",
            color="C3",
            label=f"predicted ({fit.confidence:.0%})",
        )
        if measured is not None:
            loss_ax.plot([fit.holdout], [measured], "x", color="k", ms=9, label="measured")
    loss_ax.set(
        xscale="log", xlabel="C (FLOPs)", ylabel=f"{metric} at N_opt", title="loss at the optimum"
    )
    loss_ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
