"""The µP transfer study's table and plot, from the run folders ``run.sh`` wrote.

    python experiments/mup_transfer/table.py [runs folder ...] [--out folder]

The claim under test (Tensor Programs V, figure 1): under µP the loss-optimal learning
rate of a width-128 proxy is still optimal at width 1024, and wider is better at that
lr; under sp the optimum moves. A single sweep cannot tell a shift of one grid step
from seed noise, so every answer here comes with its spread over seeds:

- per parametrization and width, the final validation loss at every lr, mean ± standard
  error over seeds (a diverged seed makes its cell "diverged": its loss is infinite);
- the best lr per width, how often a bootstrap over seeds picks it (the seeds are
  resampled *jointly* for every lr and width, because one seed is one initialisation and
  one data order in every cell of a width), and one-sided Welch p-values that the best
  beats each grid neighbour (``gptlab.analysis.stats.welch_t_test``, as ``compare`` uses);
- whether the widest width's best lr is within one x2 grid step of the narrowest's,
  on the means and as a bootstrap probability;
- whether the loss falls strictly with width at the narrowest width's best lr and its
  two grid neighbours (the lrs a user would transfer), with the Welch p of each step.

Runs are grouped by their resolved config (``model.parametrization``, ``model.n_embd``,
``optimizer.lr``, ``seed``), not by folder names, so any sweep layout reads the same.
Writes ``results.md`` and ``transfer.png`` (two panels, sp and µP: loss against log2 lr,
one curve per width with seed error bars).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.analysis.runs import Run, load_runs
from gptlab.analysis.stats import welch_t_test

HERE = Path(__file__).resolve().parent
METRIC = "val/loss"
# What gptlab's TrainingGuard writes into error.txt when a run's loss or gradient stops
# being finite: such a run diverged (its loss counts as infinite); any other failure is
# left out, as if it had not run.
DIVERGED_MARKERS = ("non-finite", "Lower optimizer.lr")
BOOTSTRAP_DRAWS = 2000
PANELS = ("sp", "mup")

# study[parametrization][width][log2 lr][seed] = final val loss (inf: diverged)
Study = dict[str, dict[int, dict[float, dict[int, float]]]]


# ---------------------------------------------------------------------------- reading
def run_loss(run: Run) -> float | None:
    """A run's final validation loss; ``inf`` if it diverged; ``None`` if it has no answer yet.

    Only a finished run's loss counts: an interrupted one stopped before its schedule
    ended and would flatter a high lr (or a low one).
    """
    if run.summary.get("status") == "finished" and run.final(METRIC) is not None:
        return float(run.final(METRIC))
    error_file = run.path / "error.txt" if run.path else None
    if error_file is not None and error_file.is_file():
        text = error_file.read_text()
        if any(marker in text for marker in DIVERGED_MARKERS):
            return math.inf
    return None


def log2_lr(lr: float) -> float:
    """The lr as its base-2 exponent, rounded so 2^-9 read back from YAML is exactly -9."""
    return round(math.log2(lr), 6)


def read_study(patterns: Sequence[str]) -> tuple[Study, int, str]:
    """Every run's loss by parametrization, width, log2 lr and seed; how many runs had none; the steps.

    The steps are the runs' ``trainer.max_steps``: one number, or the set when runs differ.
    """
    runs, _ = load_runs(list(patterns))
    steps = sorted({str(r.config.get("trainer.max_steps")) for r in runs if r.config})
    study: Study = {}
    missing = 0
    for run in runs:
        loss = run_loss(run)
        cfg = run.config
        if loss is None or "optimizer.lr" not in cfg:
            missing += 1
            continue
        cell = (
            study.setdefault(str(cfg.get("model.parametrization", "sp")), {})
            .setdefault(int(cfg["model.n_embd"]), {})
            .setdefault(log2_lr(float(cfg["optimizer.lr"])), {})
        )
        cell[int(cfg.get("seed", 0))] = loss
    return study, missing, steps[0] if len(steps) == 1 else "{" + ", ".join(steps) + "}"


# --------------------------------------------------------------------------- statistics
def mean(values: Sequence[float]) -> float:
    """The mean; ``inf`` as soon as one seed diverged (a diverged lr is never "best")."""
    return math.inf if any(math.isinf(v) for v in values) else statistics.fmean(values)


def standard_error(values: Sequence[float]) -> float:
    """Sample standard deviation / sqrt(n); NaN for one seed or a diverged cell."""
    if len(values) < 2 or any(math.isinf(v) for v in values):
        return math.nan
    return statistics.stdev(values) / math.sqrt(len(values))


def argmin(means: dict[float, float]) -> float | None:
    """The log2 lr with the lowest mean (ties: the smaller lr); None if every one diverged."""
    finite = {k: v for k, v in means.items() if math.isfinite(v)}
    return min(finite, key=lambda k: (finite[k], k)) if finite else None


def vertex(means: dict[float, float], best: float) -> float | None:
    """The minimum of the parabola through the best lr and its two grid neighbours (log2).

    A finer estimate of where the optimum lies than the grid point; None at the grid's
    edge, next to a diverged neighbour, or when the three points are not a valley.
    """
    grid = sorted(means)
    i = grid.index(best)
    if i == 0 or i == len(grid) - 1:
        return None
    (x0, x1, x2), (y0, y1, y2) = grid[i - 1 : i + 2], [means[k] for k in grid[i - 1 : i + 2]]
    if not all(math.isfinite(y) for y in (y0, y1, y2)):
        return None
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    return -b / (2 * a) if a > 0 else None


def welch_less(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p that ``a``'s mean loss is below ``b``'s; 0 when ``b`` diverged and ``a`` did not."""
    if any(math.isinf(v) for v in b) and not any(math.isinf(v) for v in a):
        return 0.0
    if any(math.isinf(v) for v in a):
        return math.nan
    return welch_t_test(list(a), list(b), "less").p


def bootstrap_best(
    widths: dict[int, dict[float, dict[int, float]]], draws: int, seed: int = 0
) -> dict[int, list[float | None]]:
    """The best log2 lr of every width in each of ``draws`` resamplings of the seeds.

    One draw picks seeds with replacement from all the seeds of this parametrization and
    uses them in every cell (a cell averages the drawn seeds it has), so a seed that is
    lucky at every lr moves every lr together, as it did in the real sweep.
    """
    rng = random.Random(seed)
    seeds = sorted({s for cells in widths.values() for cell in cells.values() for s in cell})
    out: dict[int, list[float | None]] = {w: [] for w in widths}
    for _ in range(draws):
        drawn = [rng.choice(seeds) for _ in seeds]
        for w, cells in widths.items():
            means = {}
            for k, cell in cells.items():
                values = [cell[s] for s in drawn if s in cell]
                if values:
                    means[k] = mean(values)
            out[w].append(argmin(means))
    return out


# ----------------------------------------------------------------------------- analysis
@dataclass
class WidthResult:
    """One width of one parametrization: its loss curve and its best lr, with their spread."""

    width: int
    cells: dict[float, dict[int, float]]
    means: dict[float, float]
    ses: dict[float, float]
    best: float | None
    at_edge: bool
    vertex: float | None
    p_left: float | None  # best beats the next smaller lr
    p_right: float | None  # best beats the next larger lr
    boot_share: float  # share of bootstrap draws whose best is ``best``
    boot_interval: tuple[float, float] | None  # 5th-95th percentile of the bootstrap best


@dataclass
class ParametrizationResult:
    """Everything the README's claims need for sp or for µP."""

    name: str
    widths: dict[int, WidthResult]
    reference: int  # the narrowest width: the proxy whose lr is transferred
    target: int  # the widest
    shift: float | None  # best(target) - best(reference), in log2 (x2 grid steps)
    within_one_step: bool | None
    boot_within_one_step: float | None  # share of draws with |shift| <= 1
    near_optimum: list[float] = field(default_factory=list)  # reference best and neighbours
    monotone: dict[float, bool] = field(default_factory=dict)
    monotone_p: dict[float, list[float]] = field(default_factory=dict)  # per width step
    best_loss_monotone: bool | None = None  # each width at its own best lr


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank: grid values stay grid values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def analyse_width(
    width: int, cells: dict[float, dict[int, float]], boot: list[float | None]
) -> WidthResult:
    """Mean ± se per lr, the best lr, its neighbours' Welch tests and its bootstrap spread."""
    grid = sorted(cells)
    means = {k: mean(list(cells[k].values())) for k in grid}
    ses = {k: standard_error(list(cells[k].values())) for k in grid}
    best = argmin(means)
    p_left = p_right = None
    if best is not None:
        i = grid.index(best)
        losses = list(cells[best].values())
        if i > 0:
            p_left = welch_less(losses, list(cells[grid[i - 1]].values()))
        if i < len(grid) - 1:
            p_right = welch_less(losses, list(cells[grid[i + 1]].values()))
    found = [b for b in boot if b is not None]
    return WidthResult(
        width=width,
        cells=cells,
        means=means,
        ses=ses,
        best=best,
        at_edge=best is not None and len(grid) > 1 and best in (grid[0], grid[-1]),
        vertex=vertex(means, best) if best is not None else None,
        p_left=p_left,
        p_right=p_right,
        boot_share=sum(b == best for b in boot) / len(boot) if boot else math.nan,
        boot_interval=(percentile(found, 0.05), percentile(found, 0.95)) if found else None,
    )


def monotone_in_width(result: dict[int, WidthResult], k: float) -> tuple[bool, list[float]]:
    """Whether the mean loss at log2 lr ``k`` falls strictly with every widening, and each step's Welch p.

    A width that lacks ``k`` or diverged there breaks the chain (it is not "better").
    """
    widths = sorted(result)
    ps, ok = [], True
    for narrow, wide in zip(widths, widths[1:], strict=False):
        a, b = result[wide].cells.get(k), result[narrow].cells.get(k)
        if not a or not b:
            ok = False
            ps.append(math.nan)
            continue
        ok = ok and mean(list(a.values())) < mean(list(b.values()))
        ps.append(welch_less(list(a.values()), list(b.values())))
    return ok, ps


def analyse(study: Study, draws: int = BOOTSTRAP_DRAWS) -> dict[str, ParametrizationResult]:
    """The per-width curves, best lrs, transfer and monotonicity verdicts of every parametrization."""
    out = {}
    for name, widths in sorted(study.items()):
        boot = bootstrap_best(widths, draws)
        per_width = {w: analyse_width(w, widths[w], boot[w]) for w in sorted(widths)}
        ref, tgt = min(per_width), max(per_width)
        b_ref, b_tgt = per_width[ref].best, per_width[tgt].best
        shift = b_tgt - b_ref if b_ref is not None and b_tgt is not None else None
        pairs = [(r, t) for r, t in zip(boot[ref], boot[tgt], strict=True) if None not in (r, t)]
        result = ParametrizationResult(
            name=name,
            widths=per_width,
            reference=ref,
            target=tgt,
            shift=shift,
            within_one_step=None if shift is None or ref == tgt else abs(shift) <= 1 + 1e-9,
            boot_within_one_step=(
                sum(abs(t - r) <= 1 + 1e-9 for r, t in pairs) / len(pairs)
                if pairs and ref != tgt
                else None
            ),
        )
        if b_ref is not None and len(per_width) > 1:
            grid = sorted(per_width[ref].cells)
            i = grid.index(b_ref)
            result.near_optimum = grid[max(0, i - 1) : i + 2]
            for k in result.near_optimum:
                result.monotone[k], result.monotone_p[k] = monotone_in_width(per_width, k)
            bests = [
                per_width[w].means[per_width[w].best]
                for w in sorted(per_width)
                if per_width[w].best is not None
            ]
            result.best_loss_monotone = len(bests) == len(per_width) and all(
                a > b for a, b in zip(bests, bests[1:], strict=False)
            )
        out[name] = result
    return out


# ------------------------------------------------------------------------------ report
def lr_label(k: float | None) -> str:
    """``-9`` -> ``2^-9``."""
    return "–" if k is None else f"2^{k:g}"


def p_label(p: float | None) -> str:
    """A p-value, or what stands in for one (no neighbour, undefined test)."""
    if p is None:
        return "edge"
    return "–" if math.isnan(p) else f"{p:.2g}"


def cell_label(values: dict[int, float], se: float) -> str:
    """``mean ± se (n)``, or how many seeds diverged."""
    losses = list(values.values())
    diverged = sum(math.isinf(v) for v in losses)
    if diverged:
        return f"diverged ({diverged}/{len(losses)})"
    if math.isnan(se):
        return f"{mean(losses):.4f} (n={len(losses)})"
    return f"{mean(losses):.4f} ± {se:.4f} ({len(losses)})"


def yes_no(value: bool | None) -> str:
    """A verdict as a word."""
    return "n/a" if value is None else ("yes" if value else "**no**")


def markdown(results: dict[str, ParametrizationResult], missing: int, steps: str) -> str:
    """results.md: the loss tables, the best lrs with their spread, and the two verdicts."""
    out = [
        "# µP transfer: results",
        "",
        f"Final validation loss (nats per character) after {steps} steps, mean ± standard "
        "error over seeds (number of seeds); the best lr of each width in bold. "
        f"{missing} run folder(s) had no final loss yet (unfinished or failed) and are left out.",
    ]
    for name, res in results.items():
        widths = sorted(res.widths)
        grid = sorted({k for w in widths for k in res.widths[w].cells})
        out += ["", f"## {name}", "", "| lr | " + " | ".join(f"width {w}" for w in widths) + " |"]
        out.append("| --- |" + " ---: |" * len(widths))
        for k in grid:
            row = []
            for w in widths:
                wr = res.widths[w]
                if k not in wr.cells:
                    row.append("")
                    continue
                text = cell_label(wr.cells[k], wr.ses[k])
                row.append(f"**{text}**" if k == wr.best else text)
            out.append(f"| {lr_label(k)} | " + " | ".join(row) + " |")
        out += [
            "",
            "| width | best lr | parabola vertex | p vs smaller lr | p vs larger lr "
            "| bootstrap: share at best | bootstrap 90% range |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for w in widths:
            wr = res.widths[w]
            edge = " (grid edge)" if wr.at_edge else ""
            vert = "–" if wr.vertex is None else f"2^{wr.vertex:.2f}"
            span = (
                "–"
                if wr.boot_interval is None
                else f"{lr_label(wr.boot_interval[0])} .. {lr_label(wr.boot_interval[1])}"
            )
            out.append(
                f"| {w} | {lr_label(wr.best)}{edge} | {vert} | {p_label(wr.p_left)} "
                f"| {p_label(wr.p_right)} | {wr.boot_share:.2f} | {span} |"
            )
        out += ["", *verdict_lines(res)]
    same = base_width_identity(results)
    if same is not None:
        out += [
            "",
            "At the base width µP is sp: the largest |sp - µP| over the seeds and lrs both ran "
            f"there is {same:.3g} (0 expected: the two runs are the same computation).",
        ]
    return "\n".join(out) + "\n"


def base_width_identity(results: dict[str, ParametrizationResult]) -> float | None:
    """The largest |sp - µP| loss difference at the narrowest width, over shared seeds and lrs.

    µP scales from width 128, so at 128 it must reproduce sp exactly; a nonzero value means
    the two sweeps did not run the same settings, and nothing else in the table can be trusted.
    """
    if "sp" not in results or "mup" not in results:
        return None
    sp, mup = results["sp"], results["mup"]
    if sp.reference != mup.reference:
        return None
    a, b = sp.widths[sp.reference].cells, mup.widths[mup.reference].cells
    diffs = [
        abs(a[k][s] - b[k][s])
        for k in a.keys() & b.keys()
        for s in a[k].keys() & b[k].keys()
        if math.isfinite(a[k][s]) and math.isfinite(b[k][s])
    ]
    return max(diffs) if diffs else None


def verdict_lines(res: ParametrizationResult) -> list[str]:
    """The transfer and monotonicity sentences of one parametrization."""
    ref, tgt = res.widths[res.reference], res.widths[res.target]
    lines = []
    if res.shift is not None:
        boot = (
            ""
            if res.boot_within_one_step is None
            else f" (bootstrap: {res.boot_within_one_step:.2f} of draws)"
        )
        lines.append(
            f"- Best lr at width {res.target}: {lr_label(tgt.best)}; at width {res.reference}: "
            f"{lr_label(ref.best)}; shift {res.shift:+g} grid steps. Within one x2 step: "
            f"{yes_no(res.within_one_step)}{boot}."
        )
        if ref.at_edge or tgt.at_edge:
            lines.append(
                "- A best lr sits on the grid's edge: the optimum may lie beyond it; extend "
                "the grid (run.sh's SP_LRS / MUP_LRS) before reading the shift."
            )
    for k in res.near_optimum:
        ps = ", ".join(p_label(p) for p in res.monotone_p[k])
        lines.append(
            f"- Loss falls with every widening at {lr_label(k)}: {yes_no(res.monotone[k])} "
            f"(one-sided Welch p per step {sorted(res.widths)}: {ps})."
        )
    if res.best_loss_monotone is not None:
        lines.append(
            f"- Each width at its own best lr, loss falls with width: {yes_no(res.best_loss_monotone)}."
        )
    return lines


# -------------------------------------------------------------------------------- plot
def plot(results: dict[str, ParametrizationResult], path: Path) -> None:
    """transfer.png: loss against log2 lr, one curve per width, sp and µP side by side."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, len(PANELS), sharex=True, sharey=True, squeeze=False)[0]
    finite = [
        v
        for res in results.values()
        for wr in res.widths.values()
        for v in wr.means.values()
        if math.isfinite(v)
    ]
    low = min(finite) if finite else 0.0
    top = min(max(finite), low + 1.0) if finite else 1.0
    widths_all = sorted({w for res in results.values() for w in res.widths})
    cmap = colormaps["viridis"]
    colour = {w: cmap(i / max(1, len(widths_all) - 1) * 0.9) for i, w in enumerate(widths_all)}
    for ax, name in zip(axes, PANELS, strict=True):
        ax.set_title({"sp": "standard parametrization (sp)", "mup": "µP (base width 128)"}[name])
        ax.set_xlabel("log2 learning rate")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # the grid's exponents
        ax.grid(alpha=0.3)
        res = results.get(name)
        if res is None:
            ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center")
            continue
        for w, wr in sorted(res.widths.items()):
            ks = [k for k in sorted(wr.means) if math.isfinite(wr.means[k])]
            errs = [0.0 if math.isnan(wr.ses[k]) else wr.ses[k] for k in ks]
            ax.errorbar(
                ks, [wr.means[k] for k in ks], yerr=errs, color=colour[w], marker="o",
                ms=3, capsize=2, label=f"width {w}",
            )  # fmt: skip
            if wr.best is not None:
                ax.plot([wr.best], [wr.means[wr.best]], marker="*", ms=12, color=colour[w])
            diverged = [k for k in sorted(wr.means) if not math.isfinite(wr.means[k])]
            if diverged:
                ax.plot(diverged, [top] * len(diverged), "x", color=colour[w], ms=8)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel(f"final {METRIC} (mean ± se over seeds; x: diverged)")
    pad = 0.03 * (top - low or 1.0)
    axes[0].set_ylim(low - pad, top + pad)
    fig.savefig(path, dpi=120)


# -------------------------------------------------------------------------------- main
def report(
    patterns: Sequence[str], out_dir: Path, draws: int = BOOTSTRAP_DRAWS
) -> dict[str, ParametrizationResult]:
    """Read the runs, analyse them, write results.md and transfer.png into ``out_dir``."""
    study, missing, steps = read_study(patterns)
    results = analyse(study, draws)
    text = markdown(results, missing, steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(text)
    plot(results, out_dir / "transfer.png")
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """``table.py [runs ...] [--out folder]``: the defaults are run.sh's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="*", default=[str(HERE.parents[1] / "outputs" / "mup_transfer")]
    )
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--draws", type=int, default=BOOTSTRAP_DRAWS)
    args = parser.parse_args(argv)
    report(args.runs, args.out, args.draws)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
