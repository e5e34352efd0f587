"""``python -m gptlab.compare``: a table, a CSV and a plot of finished runs.

    python -m gptlab.compare outputs/multirun/2025-01-31/12-00-00-000000
    python -m gptlab.compare 'outputs/multirun/2025-01-31/*' x=tokens
    python -m gptlab.compare outputs/multirun/... baseline="model.pos=learned"   # seeds + p-values
    python -m gptlab.compare outputs/multirun/... x=flops at_flops=1e15           # compute-matched
    python -m gptlab.compare outputs/multirun/... x=time at_time=120              # equal wall-clock
    python -m gptlab.compare source=wandb project=gptlab group=2025-01-31/12-00-00-000000
    python -m gptlab.compare outputs/multirun/... tasks=[hellaswag,core] task_metric=acc

Runs that hold downstream results (``<run>/downstream/step-<N>.json`` from the in-loop
evaluation, ``<run>/checkpoints/*.eval-<task>.json`` from ``python -m gptlab.evaluate
task=...``) get a column per task (accuracy ± standard error) and per suite; with a
baseline, or two configurations, a McNemar test per task on the items both scored
says which differences are above the noise.

Positional arguments are run folders, sweep folders or globs; ``key=value`` arguments
set the options documented in ``gptlab/conf/compare.yaml`` (the same spelling as Hydra
overrides, without Hydra: a path is not an override). The work is done by
``gptlab.analysis``; ``compare(options)`` returns everything it computed, for tests
and notebooks.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gptlab.analysis import CompareError
from gptlab.analysis.curves import check_x, curve
from gptlab.analysis.downstream import check_metric, load_downstream, parse_tasks, select_columns
from gptlab.analysis.report import (
    DownstreamTable,
    Group,
    Options,
    PairedTest,
    apply_baseline,
    common_overrides,
    format_table,
    group_downstream,
    group_rows,
    noise_lines,
    paired_rows,
    paired_tests,
    run_rows,
    seed_groups,
    short,
    write_csv,
)
from gptlab.analysis.runs import Run, load_runs
from gptlab.cli import entry_point

CONFIG = Path(__file__).resolve().parent / "conf" / "compare.yaml"


@dataclass
class Comparison:
    runs: list[Run]
    rows: list[dict[str, Any]]
    groups: list[Group]
    baseline: Group | None
    text: str
    csv_path: Path | None
    png_path: Path | None
    downstream: DownstreamTable | None = None
    paired: list[PairedTest] = field(default_factory=list)


def parse_argv(argv: list[str]) -> dict[str, Any]:
    """Split ``key=value`` options (keys of gptlab/conf/compare.yaml) from run paths."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG))
    options, runs = dict(defaults), list(defaults.get("runs") or [])
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in defaults and key != "runs":
            options[key] = _parse_value(value)
        elif sep and "/" not in key and not Path(arg).exists() and key.isidentifier():
            raise CompareError(
                f"unknown option {key}=; the options are {', '.join(k for k in defaults if k != 'runs')}"
            )
        else:
            runs.append(arg)
    options["runs"] = runs
    return options


def _parse_value(text: str) -> Any:
    if text.lower() in ("null", "none", ""):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _number(options: dict[str, Any], key: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CompareError(f"{key}={value} is not a number; write e.g. {key}=1e15") from None
    if not math.isfinite(number) or number <= 0:
        raise CompareError(f"{key}={value} must be a positive number")
    return number


def _options(options: dict[str, Any]) -> Options:
    mode = str(options.get("mode") or "min")
    if mode not in ("min", "max"):
        raise CompareError(f"mode={mode}; use min (lower is better, losses) or max")
    return Options(
        metric=str(options.get("metric") or "val/loss"),
        mode=mode,
        x=check_x(str(options.get("x") or "steps")),
        at_tokens=_number(options, "at_tokens"),
        at_flops=_number(options, "at_flops"),
        at_time=_number(options, "at_time"),
        baseline=options.get("baseline") or None,
    )


def _load(options: dict[str, Any]) -> tuple[list[Run], Path, str]:
    source = options.get("source") or "local"
    if source == "wandb":
        from gptlab.analysis.wandb_source import load_wandb_runs

        runs = load_wandb_runs(options.get("project"), options.get("entity"), options.get("group"))
        return runs, Path.cwd(), f"wandb project {options.get('project')}"
    if source != "local":
        raise CompareError(f"source={source}; use local (run folders) or wandb (with project=...)")
    runs, root = load_runs([str(p) for p in options.get("runs") or []])
    return runs, root, str(root)


def _check_metrics(runs: list[Run], where: str, metric: str) -> list[str]:
    """Fail when nothing can be compared; otherwise notes on the runs that cannot be."""
    if not any(r.rows for r in runs):
        raise CompareError(
            f"none of the {len(runs)} runs in {where} has logged any metrics (no metrics.csv rows): they failed "
            "before their first step (see their error.txt) or ran with logger=none; rerun with logger=csv"
        )
    if not any(r.series(metric) for r in runs):
        logged = sorted({k for r in runs for row in r.rows for k in row if k != "step"})
        raise CompareError(
            f"no run in {where} logged {metric}; the logged metrics are {', '.join(logged)}"
        )
    notes = []
    silent = [r.name for r in runs if not r.series(metric)]
    if silent:
        notes.append(
            f"{len(silent)} run(s) have no {metric} yet (failed before their first validation, or "
            f"still running): {', '.join(silent)}"
        )
    failed = [f"{r.name} ({r.error})" for r in runs if r.error]
    if failed:
        notes.append("failed: " + "; ".join(failed))
    return notes


def _round_down(value: float, digits: int = 3) -> float:
    """``value`` cut, not rounded, to ``digits`` significant digits: a budget printed for the
    user to pass back (``at_tokens=6.14e+03``) must not lie beyond what a run reached."""
    if value <= 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.floor(value / scale * (1 + 1e-12)) * scale


def _budget_note(runs: list[Run], opts: Options) -> str | None:
    """Point out when runs used different token or FLOP budgets, and which budget all reached."""
    budget = opts.budget()
    axis = budget[0] if budget else opts.x
    if axis not in ("tokens", "flops"):
        return None
    reached = []
    for run in runs:
        c = None if run.failed else curve(run, opts.metric, axis)
        if c is not None and len(c.x):
            reached.append(float(c.x.max()))
    if not reached:
        return None
    common = min(reached)
    if budget is None and max(reached) > common * 1.01:
        return (
            f"the runs used different {axis} budgets; at_{axis}={_round_down(common):.3g} compares them all "
            "at the largest budget every run reached"
        )
    if budget is not None and budget[1] > common * (1 + 1e-9):
        return (
            f"some runs stopped before {budget[1]:.3g} {axis} and have no value there; every run reached "
            f"{_round_down(common):.3g}"
        )
    return None


def _downstream_table(runs: list[Run], options: dict[str, Any]) -> DownstreamTable | None:
    """The task columns to show (``tasks=``, ``task_metric=``), or None when no run has any."""
    tasks = parse_tasks(options.get("tasks", "auto"))
    metric = check_metric(options.get("task_metric"))
    if tasks is None:
        return None
    found = {r.name: d for r in runs if (d := load_downstream(r)) is not None}
    if not found and tasks in ("auto", "all"):
        return None
    if not found:
        raise CompareError(
            f"tasks={','.join(tasks)} but no run has downstream results (<run>/downstream/step-*.json or "
            "<run>/checkpoints/*.eval-*.json); score them with python -m gptlab.evaluate "
            f"task={tasks[0]} ckpt=<run>/checkpoints/last.ckpt"
        )
    columns = select_columns(found, tasks)
    return DownstreamTable(columns, metric, found) if columns else None


def _downstream_notes(runs: list[Run], table: DownstreamTable, opts: Options) -> list[str]:
    """What a reader of the task columns should know: runs without results, other rules, other items."""
    notes = []
    missing = [r.name for r in runs if table.of(r) is None and not r.failed]
    if missing:
        notes.append(
            f"{len(missing)} run(s) have no downstream results: {', '.join(missing)} "
            "(python -m gptlab.evaluate task=<name> ckpt=<run>/checkpoints/last.ckpt scores one)"
        )
    logged = [name for name, d in table.found.items() if d.logged]
    if logged:
        notes.append(
            "task values from logged eval/ metrics only (no result file, so no per-item outcomes "
            f"and no paired test): {', '.join(logged)}"
        )
    found = list(table.found.values())
    for column in table.columns:
        rules = {c.rule for d in found if (c := d.cell(column, table.metric))}
        if table.metric != "primary" and rules and table.metric not in rules | {"score"}:
            notes.append(
                f"{column} has no {table.metric}; its column shows {', '.join(sorted(rules))}"
            )
        sizes = sorted({c.n for d in found if (c := d.cell(column, table.metric)) and c.n})
        if len(sizes) > 1:
            notes.append(
                f"{column}: the runs scored different numbers of items ({', '.join(map(str, sizes))}); "
                "its values are not on the same items (the paired test uses the items both scored)"
            )
    steps = {name: d.step for name, d in table.found.items() if d.step is not None}
    if len(set(steps.values())) > 1:
        notes.append(
            "the downstream results come from different steps: "
            + ", ".join(f"{name} step {step}" for name, step in steps.items())
        )
    if opts.budget() is not None:
        notes.append(
            "the task columns are each run's latest evaluation, not the values at the budget"
        )
    return notes


def _downstream_header(table: DownstreamTable) -> str:
    rule = "each task's primary rule" if table.metric == "primary" else table.metric
    suites = [c for c in table.columns if table.is_suite(c)]
    tasks = [c for c in table.columns if c not in suites]
    parts = (
        [f"{', '.join(tasks)}: accuracy ({rule}) ± binomial standard error over items"]
        if tasks
        else []
    )
    parts += [f"{', '.join(suites)}: suite score ± its standard error"] if suites else []
    return "downstream: " + "; ".join(parts)


def compare(options: dict[str, Any]) -> Comparison:
    """Load the runs, rank them, group seeds, test against the baseline, write CSV and PNG."""
    opts = _options(options)
    runs, root, where = _load(options)
    notes = _check_metrics(runs, where, opts.metric)
    table = _downstream_table(runs, options)
    rows = run_rows(runs, opts, table)
    groups = seed_groups(runs, opts)
    base = apply_baseline(groups, opts.baseline, opts.mode) if opts.baseline else None
    tests: list[PairedTest] = []
    if table is not None:
        group_downstream(groups, table)
        tests = paired_tests(groups, base, table)
        notes += _downstream_notes(runs, table, opts)

    lines = [f"{len(runs)} run(s) in {where}"]
    common = common_overrides(runs)
    if common and len(runs) > 1:
        lines.append(
            "common overrides: "
            + " ".join(f"{k}={short(v)}" if v else k for k, v in common.items())
        )
    better = "lower" if opts.mode == "min" else "higher"
    lines += [f"sorted by {opts.score_name()} ({better} is better)"]
    lines += [_downstream_header(table)] if table is not None else []
    lines += ["", format_table(rows)]
    if base is not None or any(len(g.scores) > 1 for g in groups):
        lines += [
            "",
            f"seed groups: mean ± std of {opts.score_name()} over runs that differ only in seed"
            + (
                "; tasks: mean over seeds ± its standard error (one run: its binomial error)"
                if table is not None
                else ""
            ),
            format_table(group_rows(groups, opts, base, table)),
        ]
        if base is not None and all(g.p_value is None for g in groups if g is not base):
            lines.append(
                "(p-values need at least 2 runs with values in each group: repeat with --multirun seed=1,2,3)"
            )
    if tests:
        pooled = any(t.pairs > 1 for t in tests)
        lines += [
            "",
            "paired McNemar tests on the items both scored (two-sided; b01: items only the first got right, "
            "b10: only the second"
            + ("; seed pairs pooled by concatenating their items" if pooled else "")
            + "; exact binomial below 25 discordant items, else chi-square with continuity correction)",
            format_table(paired_rows(tests)),
            *noise_lines(tests),
        ]
    budget_note = _budget_note(runs, opts)
    notes += [budget_note] if budget_note else []
    plot_x = opts.budget()[0] if opts.budget() else opts.x
    if not any(curve(r, opts.metric, plot_x) is not None for r in runs):
        notes.append(
            f"no run logged the cumulative column x={plot_x} needs (from the throughput callback), "
            "so the plot is empty; try x=steps"
        )
    if notes:
        lines += ["", *notes]

    out_dir = Path(options.get("output_dir") or root)
    csv_path = png_path = None
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "comparison.csv"
    write_csv(csv_path, rows, groups, runs, table, tests)
    if options.get("plot", True):
        png_path = out_dir / "comparison.png"
        _save_figure(runs, groups, opts, png_path)
    lines += ["", f"wrote {csv_path}" + (f" and {png_path}" if png_path else "")]
    return Comparison(runs, rows, groups, base, "\n".join(lines), csv_path, png_path, table, tests)


def _save_figure(runs: list[Run], groups: list[Group], opts: Options, path: Path) -> None:
    from gptlab.analysis.plot import comparison_figure
    from gptlab.utils.io import atomic_open

    budget = opts.budget()
    x = budget[0] if budget else opts.x
    fig = comparison_figure(runs, groups, opts.metric, x, budget[1] if budget else None)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


@entry_point(return_code=True)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nOptions (gptlab/conf/compare.yaml):\n\n" + CONFIG.read_text())
        return 0
    print(compare(parse_argv(argv)).text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
