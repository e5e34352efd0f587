"""The comparison itself: one row per run, seed groups with mean ± std, p-values vs a baseline.

Runs are described by the overrides that *differ* between them (the ones shared by
all are printed once above the table). Runs whose overrides differ only in ``seed``
form a group: the group's mean ± std (sample std, n - 1) is what a configuration
achieves, and with a baseline each group gets the one-sided Welch t-test p-value of
"this configuration is better than the baseline".

Downstream columns (``gptlab.analysis.downstream``): a run shows each task's accuracy
± its binomial standard error over items; a seed group the mean over its seeds ± the
standard error of that mean (std / sqrt(n), the seed-to-seed part of the noise; one
run: its binomial error). Two configurations are then tested item by item with
McNemar (``paired_tests``): runs are paired by seed, and the pairs' items are
concatenated into one test. An item then counts once per seed pair; that is what
"both configurations, on these items, over these seeds" asks, but since the pairs
share items, a configuration's edge on particular items counts once per seed, and
the pooled p-value is a little optimistic next to a test clustered by item.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlab.analysis import CompareError
from gptlab.analysis.curves import X_AXES, value_at
from gptlab.analysis.downstream import Downstream
from gptlab.analysis.runs import Run, is_number
from gptlab.analysis.stats import McNemar, mcnemar, mean, std, welch_t_test

SEED_KEYS = ("seed",)
NOISE_P = 0.05  # the level "above the noise at this scale" means


@dataclass
class Options:
    """What to compare; the defaults and their meaning are in ``gptlab/conf/compare.yaml``."""

    metric: str = "val/loss"
    mode: str = "min"
    x: str = "steps"
    at_tokens: float | None = None
    at_flops: float | None = None
    baseline: str | None = None
    at_time: float | None = None

    def budget(self) -> tuple[str, float] | None:
        given = [
            (axis, float(value))
            for axis, value in (
                ("tokens", self.at_tokens),
                ("flops", self.at_flops),
                ("time", self.at_time),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise CompareError("give one of at_tokens=, at_flops= or at_time=, not several")
        return given[0] if given else None

    def score_name(self) -> str:
        budget = self.budget()
        if budget is None:
            return f"final {self.metric}"
        unit = "s" if budget[0] == "time" else budget[0]
        return f"{self.metric} @ {budget[1]:.3g} {unit}"


@dataclass
class Group:
    """Runs whose overrides differ only in the seed."""

    label: str
    runs: list[Run]
    scores: list[float] = field(default_factory=list)
    p_value: float | None = None
    downstream: dict[str, GroupCell] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        return mean(self.scores) if self.scores else None

    @property
    def std(self) -> float | None:
        return std(self.scores) if self.scores else None


@dataclass
class GroupCell:
    """A task column for a seed group: the mean over ``runs`` seeds and its standard error."""

    mean: float
    se: float | None
    runs: int


@dataclass
class DownstreamTable:
    """The downstream columns to show, and what each run's result files hold."""

    columns: list[str]
    metric: str = "primary"
    found: dict[str, Downstream] = field(default_factory=dict)  # run name -> results

    def of(self, run: Run) -> Downstream | None:
        return self.found.get(run.name)

    def is_suite(self, column: str) -> bool:
        return any(column in d.suites for d in self.found.values())


@dataclass
class PairedTest:
    """McNemar's test of ``label`` against ``reference`` on one task column."""

    label: str
    reference: str
    column: str
    test: McNemar | None
    pairs: int  # run pairs whose items were pooled
    paired_by: str  # "seed", "order" or "runs"
    group: Group | None = None

    @property
    def above_noise(self) -> bool:
        return self.test is not None and self.test.p < NOISE_P


# --------------------------------------------------------------------------- values
def normalize(value: Any) -> str:
    """One spelling per value, so ``1e-3``, ``0.001`` and ``0.0010`` compare equal."""
    text = str(value).strip().strip("'\"")
    try:
        return repr(float(text))
    except ValueError:
        return text.lower() if text.lower() in ("true", "false", "null", "none") else text


def short(value: Any) -> str:
    """A value as a table shows it: long floats (Optuna's) to 4 significant digits."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.4g}" if len(text) > 7 else text


def score(run: Run, opts: Options) -> float | None:
    """The number runs are ranked, grouped and tested by."""
    budget = opts.budget()
    value = (
        run.final(opts.metric)
        if budget is None
        else value_at(run, budget[1], budget[0], opts.metric)
    )
    return value if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------ overrides
def varying_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value)."""
    keys = sorted({k for r in runs for k in r.overrides})
    return [k for k in keys if len({normalize(r.overrides.get(k, "<default>")) for r in runs}) > 1]


def common_overrides(runs: Sequence[Run]) -> dict[str, str]:
    varying = set(varying_keys(runs))
    first = runs[0].overrides if runs else {}
    return {k: v for k, v in first.items() if k not in varying}


def describe(run: Run, keys: Sequence[str]) -> str:
    """``model.n_layer=2 optimizer.lr=0.001``: how this run differs from the others."""
    parts = []
    for k in keys:
        if k not in run.overrides:
            parts.append(f"{k}=(default)")
        else:
            parts.append(f"{k}={short(run.overrides[k])}" if run.overrides[k] else k)
    return " ".join(parts)


def seed_groups(runs: Sequence[Run], opts: Options) -> list[Group]:
    """Finished runs grouped by every varying override except the seed."""
    keys = [k for k in varying_keys(runs) if k.lstrip("+") not in SEED_KEYS]
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.failed:
            continue
        key = tuple((k, normalize(run.overrides.get(k, "<default>"))) for k in keys)
        group = groups.setdefault(key, Group(label=describe(run, keys) or "(all runs)", runs=[]))
        group.runs.append(run)
        value = score(run, opts)
        if value is not None:
            group.scores.append(value)
    return sorted(groups.values(), key=lambda g: _sort_value(g.mean, opts.mode))


def _sort_value(value: float | None, mode: str) -> float:
    if value is None:
        return math.inf
    return value if mode == "min" else -value


# ------------------------------------------------------------------------- baseline
def parse_baseline(text: str) -> dict[str, str]:
    """``"model.n_layer=2 optimizer.lr=1e-3"`` -> ``{"model.n_layer": "2", "optimizer.lr": "1e-3"}``."""
    terms: dict[str, str] = {}
    for item in str(text).split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CompareError(
                f'baseline={text!r}: write it as overrides, e.g. baseline="model.n_layer=2 optimizer.lr=1e-3"'
            )
        terms[key] = value
    return terms


def _run_matches(run: Run, terms: dict[str, str]) -> bool:
    for key, wanted in terms.items():
        have = run.overrides.get(key)
        if have is None:
            have = run.config.get(key.lstrip("+"))
        if have is None or normalize(have) != normalize(wanted):
            return False
    return True


def apply_baseline(groups: list[Group], text: str, mode: str) -> Group:
    """Find the baseline group and give every other group its one-sided Welch p-value."""
    terms = parse_baseline(text)
    matches = [g for g in groups if all(_run_matches(r, terms) for r in g.runs)]
    labels = "; ".join(g.label for g in groups)
    if not matches:
        raise CompareError(f"no group of runs matches baseline={text!r}; the groups are: {labels}")
    if len(matches) > 1:
        raise CompareError(
            f"baseline={text!r} matches {len(matches)} groups; add override terms to pick one of: "
            + "; ".join(g.label for g in matches)
        )
    base = matches[0]
    alternative = "less" if mode == "min" else "greater"
    for group in groups:
        if group is not base:
            p = welch_t_test(group.scores, base.scores, alternative).p
            group.p_value = None if math.isnan(p) else p
    return base


# ----------------------------------------------------------------------------- rows
def run_rows(
    runs: Sequence[Run], opts: Options, table: DownstreamTable | None = None
) -> list[dict[str, Any]]:
    """One dict per run with raw values, best first (failed and unscored runs last).

    A downstream column holds the value; its standard error is in ``row["_se"]``."""
    keys = varying_keys(runs)
    budget = opts.budget()
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name}
        for key in keys:
            row[key] = run.overrides.get(key, "-")
        if opts.metric != "val/loss":
            row[f"final {opts.metric}"] = run.final(opts.metric)
        row["final val/loss"] = run.final("val/loss")
        row["best val/loss"] = run.best("val/loss")
        if budget is not None:
            row[opts.score_name()] = score(run, opts)
        row["val/bpb"] = run.final("val/bpb")
        row["_se"] = {}
        if table is not None:
            found = table.of(run)
            for column in table.columns:
                cell = found.cell(column, table.metric) if found else None
                row[column] = cell.value if cell else None
                if cell and cell.se is not None:
                    row["_se"][column] = cell.se
        row["tokens/s"] = run.tokens_per_sec
        row["wall time (s)"] = run.wall_time
        row["params"] = run.params
        row["commit"] = run.commit or ""
        row["status"] = "failed: " + run.error if run.error else run.summary.get("status", "")
        row["_score"] = score(run, opts)
        row["_failed"] = run.failed
        rows.append(row)
    rows.sort(key=lambda r: (r["_failed"], _sort_value(r["_score"], opts.mode)))
    return rows


def format_number(key: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if key == "params" and is_number(value):
        return f"{int(value):,}"
    if key in ("tokens/s", "wall time (s)") and is_number(value):
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if key == "p (McNemar)" and is_number(value):
        return f"{value:.2g}" if value < 1e-3 else f"{value:.3f}"
    if key.startswith("Δ ") and is_number(value):
        return f"{value:+.4f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
    return short(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain aligned text: numbers right-aligned, the rest left-aligned."""
    if not rows:
        return ""
    columns = list(columns or [k for k in rows[0] if not k.startswith("_")])
    cells = [[_cell(c, row) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(is_number(row.get(c)) or row.get(c) in (None, "") for row in rows) for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(column: str, row: dict[str, Any]) -> str:
    """``0.2955±0.0046`` where the row has a standard error for the column."""
    text = format_number(column, row.get(column))
    se = (row.get("_se") or {}).get(column)
    return f"{text}±{se:.4f}" if se is not None and is_number(row.get(column)) else text


def group_rows(
    groups: Sequence[Group],
    opts: Options,
    base: Group | None,
    table: DownstreamTable | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        row: dict[str, Any] = {
            "group": g.label + ("  (baseline)" if g is base else ""),
            "n": len(g.scores),
            f"mean {opts.score_name()}": g.mean,
            "std": g.std if len(g.scores) > 1 else None,
            "best": (min(g.scores) if opts.mode == "min" else max(g.scores)) if g.scores else None,
        }
        if base is not None:
            row["p (better than baseline)"] = g.p_value
        row["_se"] = {}
        for column in table.columns if table else []:
            cell = g.downstream.get(column)
            row[column] = cell.mean if cell else None
            if cell and cell.se is not None:
                row["_se"][column] = cell.se
        rows.append(row)
    return rows


def write_csv(
    path: Path,
    rows: Sequence[dict[str, Any]],
    groups: Sequence[Group],
    runs: Sequence[Run],
    table: DownstreamTable | None = None,
    tests: Sequence[PairedTest] = (),
) -> None:
    """The run table as CSV (raw numbers), with each run's folder and seed-group statistics.

    Downstream columns add ``<task>_se`` beside each ``<task>``, the group's
    ``group_<task>`` and ``group_<task>_se``, and ``<task>_mcnemar_p`` (the group
    against the reference it was tested against), plus the result files read."""
    from gptlab.utils.io import atomic_open

    by_name = {r.name: r for r in runs}
    group_of = {id(run): g for g in groups for run in g.runs}
    task_columns = table.columns if table else []
    columns = []
    for k in rows[0]:
        if not k.startswith("_"):
            columns += [k, f"{k}_se"] if k in task_columns else [k]
    columns += ["path", "group", "group_n", "group_mean", "group_std", "p_value"]
    for c in task_columns:
        columns += [f"group_{c}", f"group_{c}_se", f"{c}_mcnemar_p"]
    if table is not None and table.columns:
        columns += ["downstream_step", "downstream_files"]
    p_of = {(id(t.group), t.column): t.test.p for t in tests if t.group and t.test}
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            run = by_name[row["run"]]
            g = group_of.get(id(run))
            extra = {
                "path": str(run.path or ""),
                "group": g.label if g else "",
                "group_n": len(g.scores) if g else "",
                "group_mean": g.mean if g else "",
                "group_std": g.std if g and len(g.scores) > 1 else "",
                "p_value": g.p_value if g and g.p_value is not None else "",
            }
            for c in task_columns:
                cell = g.downstream.get(c) if g else None
                extra[f"{c}_se"] = row["_se"].get(c, "")
                extra[f"group_{c}"] = cell.mean if cell else ""
                extra[f"group_{c}_se"] = cell.se if cell and cell.se is not None else ""
                extra[f"{c}_mcnemar_p"] = p_of.get((id(g), c), "")
            if table is not None and table.columns:
                found = table.of(run)
                extra["downstream_step"] = found.step if found and found.step is not None else ""
                extra["downstream_files"] = ";".join(str(p) for p in found.sources) if found else ""
            writer.writerow({**{k: ("" if v is None else v) for k, v in row.items()}, **extra})


def axis_label(x: str) -> str:
    return X_AXES[x][1]


# ----------------------------------------------------------------------- downstream
def group_downstream(groups: Sequence[Group], table: DownstreamTable) -> None:
    """Each group's mean ± standard error over its seeds, per downstream column."""
    for g in groups:
        for column in table.columns:
            cells = [
                c for r in g.runs if (d := table.of(r)) and (c := d.cell(column, table.metric))
            ]
            if not cells:
                continue
            values = [c.value for c in cells]
            if len(values) > 1:
                se: float | None = std(values) / math.sqrt(len(values))
            else:
                se = cells[0].se
            g.downstream[column] = GroupCell(mean(values), se, len(values))


def run_seed(run: Run) -> str | None:
    for key in SEED_KEYS:
        for k in (key, f"+{key}", f"++{key}"):
            if k in run.overrides:
                return normalize(run.overrides[k])
    value = run.config.get(SEED_KEYS[0])
    return normalize(value) if value is not None else None


def pair_runs(a: Sequence[Run], b: Sequence[Run]) -> tuple[list[tuple[Run, Run]], str]:
    """Runs of two groups paired by seed (the seeds both have), else in order."""
    seeds_a, seeds_b = [run_seed(r) for r in a], [run_seed(r) for r in b]
    unique = len(set(seeds_a)) == len(a) and len(set(seeds_b)) == len(b)
    shared = [s for s in seeds_a if s is not None and s in seeds_b] if unique else []
    if shared:
        by_a, by_b = dict(zip(seeds_a, a)), dict(zip(seeds_b, b))
        return [(by_a[s], by_b[s]) for s in shared], "seed"
    return list(zip(a, b)), "order"


def _pooled_test(
    pairs: Sequence[tuple[Run, Run]], column: str, table: DownstreamTable
) -> tuple[McNemar | None, int]:
    """McNemar over the items each pair both scored, concatenated over the pairs:
    ``b01`` counts items the reference (second) got wrong and the other right."""
    ref_outcomes: list[int] = []
    other_outcomes: list[int] = []
    used = 0
    for other, ref in pairs:
        d_other, d_ref = table.of(other), table.of(ref)
        c_other = d_other.correct(column, table.metric) if d_other else None
        c_ref = d_ref.correct(column, table.metric) if d_ref else None
        if not c_other or not c_ref:
            continue
        common = sorted(c_other.keys() & c_ref.keys())
        if common:
            used += 1
            ref_outcomes += [c_ref[k] for k in common]
            other_outcomes += [c_other[k] for k in common]
    if not used:
        return None, 0
    return mcnemar(ref_outcomes, other_outcomes), used


def paired_tests(
    groups: Sequence[Group], base: Group | None, table: DownstreamTable
) -> list[PairedTest]:
    """Per task column, McNemar of each group against the baseline; without a baseline,
    of the two groups (the first, best by the ranking metric, against the second), or of
    the two runs when there are only two."""
    with_results = [g for g in groups if any(table.of(r) for r in g.runs)]
    comparisons: list[tuple[str, list[Run], str, list[Run], Group | None]] = []
    if base is not None:
        comparisons = [(g.label, g.runs, base.label, base.runs, g) for g in groups if g is not base]
    elif len(with_results) == 2:
        first, second = with_results
        comparisons = [(first.label, first.runs, second.label, second.runs, first)]
    elif len(with_results) == 1 and len(with_results[0].runs) == 2:
        run_a, run_b = with_results[0].runs
        comparisons = [(run_a.name, [run_a], run_b.name, [run_b], None)]
    tests = []
    for label, runs, ref_label, ref_runs, group in comparisons:
        pairs, by = pair_runs(runs, ref_runs)
        if len(runs) == len(ref_runs) == 1:
            by = "runs"
        for column in table.columns:
            test, used = _pooled_test(pairs, column, table)
            tests.append(PairedTest(label, ref_label, column, test, used, by, group))
    return tests


def paired_rows(tests: Sequence[PairedTest]) -> list[dict[str, Any]]:
    rows = []
    for t in tests:
        m = t.test
        rows.append(
            {
                "comparison": f"{t.label} vs {t.reference}",
                "task": t.column,
                "paired items": m.n if m else None,
                "run pairs": t.pairs if m else None,
                "Δ accuracy": m.difference if m else None,
                "b01": m.b01 if m else None,
                "b10": m.b10 if m else None,
                "test": m.method if m else "no per-item outcomes in common",
                "p (McNemar)": m.p if m else None,
            }
        )
    return rows


def noise_lines(tests: Sequence[PairedTest]) -> list[str]:
    """One closing line per comparison: which tasks differ beyond the noise (p < 0.05)."""
    lines = []
    by_comparison: dict[tuple[str, str], list[tuple[str, McNemar]]] = {}
    for t in tests:
        if t.test is not None:
            by_comparison.setdefault((t.label, t.reference), []).append((t.column, t.test))
    for (label, ref), group in by_comparison.items():
        above = [f"{c} ({m.difference:+.4f}, p={m.p:.2g})" for c, m in group if m.p < NOISE_P]
        within = [f"{c} (p={m.p:.2g})" for c, m in group if m.p >= NOISE_P]
        lines.append(
            f"{label} vs {ref}: above the noise at this scale (p < {NOISE_P}): "
            f"{', '.join(above) or 'none'}; within the noise: {', '.join(within) or 'none'}"
        )
    return lines
