"""The comparison itself: one row per run, seed groups with mean ± std, p-values vs a baseline.

Runs are described by the overrides that *differ* between them (the ones shared by
all are printed once above the table). Runs whose overrides differ only in ``seed``
form a group: the group's mean ± std (sample std, n - 1) is what a configuration
achieves, and with a baseline each group gets the one-sided Welch t-test p-value of
"this configuration is better than the baseline".
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
from gptlab.analysis.runs import Run, is_number
from gptlab.analysis.stats import mean, std, welch_t_test

SEED_KEYS = ("seed",)


@dataclass
class Options:
    """What to compare; the defaults and their meaning are in ``gptlab/conf/compare.yaml``."""

    metric: str = "val/loss"
    mode: str = "min"
    x: str = "steps"
    at_tokens: float | None = None
    at_flops: float | None = None
    baseline: str | None = None

    def budget(self) -> tuple[str, float] | None:
        if self.at_tokens is not None and self.at_flops is not None:
            raise CompareError("give at_tokens= or at_flops=, not both")
        if self.at_tokens is not None:
            return "tokens", float(self.at_tokens)
        if self.at_flops is not None:
            return "flops", float(self.at_flops)
        return None

    def score_name(self) -> str:
        budget = self.budget()
        if budget is None:
            return f"final {self.metric}"
        return f"{self.metric} @ {budget[1]:.3g} {budget[0]}"


@dataclass
class Group:
    """Runs whose overrides differ only in the seed."""

    label: str
    runs: list[Run]
    scores: list[float] = field(default_factory=list)
    p_value: float | None = None

    @property
    def mean(self) -> float | None:
        return mean(self.scores) if self.scores else None

    @property
    def std(self) -> float | None:
        return std(self.scores) if self.scores else None


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
def run_rows(runs: Sequence[Run], opts: Options) -> list[dict[str, Any]]:
    """One dict per run with raw values, best first (failed and unscored runs last)."""
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
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
    return short(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain aligned text: numbers right-aligned, the rest left-aligned."""
    if not rows:
        return ""
    columns = list(columns or [k for k in rows[0] if not k.startswith("_")])
    cells = [[format_number(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(is_number(row.get(c)) or row.get(c) in (None, "") for row in rows) for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def group_rows(groups: Sequence[Group], opts: Options, base: Group | None) -> list[dict[str, Any]]:
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
        rows.append(row)
    return rows


def write_csv(
    path: Path, rows: Sequence[dict[str, Any]], groups: Sequence[Group], runs: Sequence[Run]
) -> None:
    """The run table as CSV (raw numbers), with each run's folder and seed-group statistics."""
    from gptlab.utils.io import atomic_open

    by_name = {r.name: r for r in runs}
    group_of = {id(run): g for g in groups for run in g.runs}
    columns = [k for k in rows[0] if not k.startswith("_")] + [
        "path",
        "group",
        "group_n",
        "group_mean",
        "group_std",
        "p_value",
    ]
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
            writer.writerow({**{k: ("" if v is None else v) for k, v in row.items()}, **extra})


def axis_label(x: str) -> str:
    return X_AXES[x][1]
