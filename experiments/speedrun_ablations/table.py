"""The ablation table and plot from the run folders ``run.sh`` wrote.

    python experiments/speedrun_ablations/table.py [runs folder]

For every configuration of ``configs.txt`` and size: the effect of its switch on the
validation loss, *with minus without* (negative: the switch helps), as the difference
of the seed means ± its standard error, and the one-sided Welch p-value that the switch
helps, computed with the functions ``gptlab.compare`` uses. "+x" rows add x to their
reference (GPT-2-style ``base`` or ``modern``), "-x" rows take it out of ``modern``,
and the ``modern`` row is the whole preset against ``base``.
Twice: at equal steps (final validation) and at equal wall-clock. Wall-clock comes
from ``step_costs.json`` (``step_costs.py``: every configuration timed side by side, so
a busy machine cannot favour one): the group whose steps cost more is read where the
other group's runs ended in time (its validation curve interpolated there), the cheaper
group keeps its final value. The slower group's learning-rate schedule was laid out for
all its steps, so it is judged before its decay ended: a reading that favours the
cheaper group. Without the file, the runs' own median wall times are used.
Writes ``results.md`` and ``ablation.png``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from gptlab.analysis.curves import value_at
from gptlab.analysis.runs import Run, load_runs
from gptlab.analysis.stats import welch_t_test

HERE = Path(__file__).resolve().parent


def configurations() -> list[tuple[str, str]]:
    rows = []
    for line in (HERE / "configs.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, ref, _ = (part.strip() for part in line.split("|", 2))
            rows.append((name, ref))
    return rows


def finished(folder: Path) -> list[Run]:
    if not folder.is_dir():
        return []
    runs, _ = load_runs([str(folder)])
    return [r for r in runs if r.summary.get("status") == "finished" and r.series("val/loss")]


def final_loss(run: Run) -> float:
    return float(sorted(run.series("val/loss"))[-1][1])


def wall_time(run: Run) -> float:
    return float(sorted(run.series("train/wall_time"))[-1][1])


def last_step(run: Run) -> float:
    return float(sorted(run.series("val/loss"))[-1][0])


def step_costs() -> dict[str, float]:
    path = HERE / "step_costs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def at_equal_time(
    runs: list[Run], reference: list[Run], ratio: float | None
) -> tuple[list[float | None], list[float | None], float]:
    """The two groups' losses at the shorter group's training time, and the time ratio used.

    The budget is whichever group finished sooner: the slower group is read earlier on
    its validation curve, the quicker one keeps its final value (it had no more time).
    """
    if ratio is None:  # the runs' own wall times
        budget = min(
            statistics.median(wall_time(r) for r in reference),
            statistics.median(wall_time(r) for r in runs),
        )
        ratio = statistics.median(wall_time(r) for r in runs) / statistics.median(
            wall_time(r) for r in reference
        )
        return (
            [value_at(r, budget, "time") for r in runs],
            [value_at(r, budget, "time") for r in reference],
            ratio,
        )
    # time in units of one reference step: the runs' steps cost `ratio` each
    budget = min(
        statistics.median(last_step(r) for r in reference),
        ratio * statistics.median(last_step(r) for r in runs),
    )
    return (
        [value_at(r, min(budget / ratio, last_step(r)), "steps") for r in runs],
        [value_at(r, min(budget, last_step(r)), "steps") for r in reference],
        ratio,
    )


def effect(with_: list[float], without: list[float]) -> tuple[float, float, float]:
    """(mean with - mean without, its standard error, one-sided p that "with" is lower)."""
    se = math.sqrt(
        statistics.variance(with_) / len(with_) + statistics.variance(without) / len(without)
    )
    p = welch_t_test(with_, without, "less").p
    return statistics.mean(with_) - statistics.mean(without), se, p


def table(runs_dir: Path) -> list[dict]:
    rows = []
    costs = step_costs()
    for size in sorted(p.name for p in runs_dir.iterdir() if p.is_dir()):
        refs = {ref: finished(runs_dir / size / ref) for ref in ("base", "modern")}
        for name, ref in configurations():
            if name == "modern":  # the whole preset against the GPT-2-style baseline
                ref = "base"
            runs, reference = finished(runs_dir / size / name), refs[ref]
            if name == "base" or len(runs) < 2 or len(reference) < 2:
                continue
            steps = ([final_loss(r) for r in runs], [final_loss(r) for r in reference])
            key, ref_key = f"{size}/{name}", f"{size}/{ref}"
            ratio = costs[key] / costs[ref_key] if key in costs and ref_key in costs else None
            *timed, time_ratio = at_equal_time(runs, reference, ratio)
            removed = name.startswith("-")  # the switch is in the reference, not in the runs
            row = dict(size=size, switch=name, reference=ref, seeds=len(runs))
            for key, (a, b) in (("steps", steps), ("time", timed)):
                a = [v for v in a if v is not None]
                b = [v for v in b if v is not None]
                if len(a) >= 2 and len(b) >= 2:
                    row[key] = effect(b, a) if removed else effect(a, b)
            row["time_ratio"] = time_ratio
            rows.append(row)
    return rows


def reference_lines(runs_dir: Path) -> list[str]:
    lines = []
    for size in sorted(p.name for p in runs_dir.iterdir() if p.is_dir()):
        for ref in ("base", "modern"):
            runs = finished(runs_dir / size / ref)
            if len(runs) >= 2:
                losses = [final_loss(r) for r in runs]
                se = statistics.stdev(losses) / math.sqrt(len(losses))
                secs = statistics.median(wall_time(r) for r in runs)
                lines.append(
                    f"| {size} | {ref} | {len(runs)} | {statistics.mean(losses):.4f} ± {se:.4f} "
                    f"| {secs:.1f} |"
                )
    return lines


def cell(value: tuple[float, float, float] | None) -> str:
    if value is None:
        return "–"
    d, se, p = value
    return f"{d:+.4f} ± {se:.4f} | {p:.2g}"


def markdown(rows: list[dict], runs_dir: Path) -> str:
    out = [
        "| size | reference | seeds | final val loss (mean ± se) | training s (median) |",
        "| --- | --- | ---: | ---: | ---: |",
        *reference_lines(runs_dir),
        "",
        "Effect of each switch on the validation loss, with minus without (negative helps), "
        "± standard error; p: one-sided Welch, the switch helps.",
        "",
        "| size | switch | seeds | equal steps: Δ ± se | p | equal wall-clock: Δ ± se | p "
        "| step time vs reference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['size']} | `{r['switch']}` | {r['seeds']} | {cell(r.get('steps'))} "
            f"| {cell(r.get('time'))} | {r['time_ratio']:.2f}x |"
        )
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        mine = [r for r in rows if r["size"] == size and "steps" in r]
        y = range(len(mine))
        for key, colour, shift in (("steps", "tab:blue", -0.18), ("time", "tab:orange", 0.18)):
            xs = [r[key][0] if key in r else math.nan for r in mine]
            errs = [r[key][1] if key in r else 0.0 for r in mine]
            label = "equal steps" if key == "steps" else "equal wall-clock"
            ax.errorbar(xs, [i + shift for i in y], xerr=errs, fmt="o", color=colour, label=label)
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_yticks(list(y), [r["switch"] for r in mine])
        ax.invert_yaxis()
        ax.set_xlabel("Δ val loss, with − without (negative: helps)")
        ax.set_title(size)
        ax.legend(loc="lower left")  # the switches cluster near 0, on the right
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    runs_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "runs"
    rows = table(runs_dir)
    text = markdown(rows, runs_dir)
    (HERE / "results.md").write_text(text)
    print(text)
    if rows:
        plot(rows, HERE / "ablation.png")


if __name__ == "__main__":
    main()
