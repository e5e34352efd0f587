"""The comparison figure: validation-loss curves of every run on one axis.

Runs of one seed group share a colour (and one legend entry), so seed repeats read as
a band and configurations stay distinguishable; failed runs are dashed. With a budget
(``at_tokens=`` / ``at_flops=``) a vertical line marks where the runs are compared.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptlab.analysis.curves import curve
from gptlab.analysis.report import Group, axis_label
from gptlab.analysis.runs import Run

MAX_LABEL = 60  # legend lines wrap at this width, so the legend never swallows the plot sideways


def legend_label(label: str) -> str:
    """``label`` wrapped onto lines of at most ``MAX_LABEL`` characters, between overrides.

    Cutting a long label would drop the overrides at its end, and those are often the
    ones that tell two groups apart; wrapping keeps every one.
    """
    import textwrap

    return "\n".join(textwrap.wrap(label, MAX_LABEL, break_on_hyphens=False)) or label


def comparison_figure(
    runs: Sequence[Run],
    groups: Sequence[Group] = (),
    metric: str = "val/loss",
    x: str = "steps",
    budget: float | None = None,
    title: str | None = None,
):
    """A matplotlib Figure with one line per run that logged ``metric`` (Agg, no display)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    group_of = {id(r): i for i, g in enumerate(groups) for r in g.runs}
    labelled: set[int] = set()
    palette = [f"C{i}" for i in range(10)]
    for index, run in enumerate(runs):
        c = curve(run, metric, x)
        if c is None:
            continue
        slot = group_of.get(id(run), len(groups) + index)
        label = None
        if slot not in labelled:
            labelled.add(slot)
            in_group = slot < len(groups) and groups[slot].label != "(all runs)"
            label = groups[slot].label if in_group else run.name
            label = legend_label(label)
        ax.plot(
            c.x,
            c.y,
            color=palette[slot % len(palette)],
            linestyle="--" if run.failed else "-",
            marker="o",
            markersize=3,
            linewidth=1.5,
            label=label,
        )
    if budget is not None:
        ax.axvline(budget, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(metric)
    if x in ("tokens", "flops"):
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{metric} against {axis_label(x)}")
    if ax.get_lines():
        ax.legend(
            fontsize=8 if len(labelled) <= 10 else 6,
            loc="upper right",
            ncol=1 if len(labelled) <= 10 else 2,
        )
    return fig
