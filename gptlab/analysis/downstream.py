"""A run's downstream (benchmark) results, read back for ``gptlab.compare``: no torch here.

Two writers leave result files (the format of ``gptlab.evaluation.results``) in a run:

    <run>/downstream/step-<N>.json          the in-loop callback, one per evaluated step
    <run>/checkpoints/<ckpt>.eval-<label>.json   python -m gptlab.evaluate task=... ckpt=...

Which result a run is compared by: each task's *newest* evaluation, where the
candidates are the newest step file and every evaluation of the checkpoint evaluated
last (``last.eval-hellaswag.json`` and ``last.eval-piqa.json`` both count: one command
per task is common). So an in-loop HellaSwag on 500 items is replaced by the full one
run afterwards on ``last.ckpt``, and a task only the loop scored still shows.
"Newest" is the file's modification time. A run with no file (a wandb run, or a run
folder copied without them) falls back to the final ``eval/<task>/<rule>`` and
``eval/<task>/<rule>_se`` values in its logged metrics: numbers, but no per-item
outcomes, so no paired test.

A column is a task (its chosen rule's accuracy ± binomial standard error) or a suite
(its score ± se, e.g. CORE's mean centred accuracy). ``correct`` gives per-item 0/1
keyed by ``(task, item index)``, so two runs are paired on the items both scored; a
suite's items are its members' items pooled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlab.analysis import CompareError
from gptlab.analysis.runs import Run, is_number
from gptlab.errors import GptlabError
from gptlab.evaluation import results as result_file

RULES = ("acc", "acc_norm", "acc_char")
METRICS = ("primary", *RULES)
LOGGED_PREFIX = "eval/"
TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"  # the shipped task YAMLs


@dataclass
class Cell:
    """One table entry: the value, its standard error, items scored, the rule it is of."""

    value: float
    se: float | None
    n: int | None
    rule: str


@dataclass
class TaskResult:
    name: str
    n: int | None
    primary: str
    metrics: dict[str, float]
    items: dict[str, list] = field(default_factory=dict)
    source: Path | None = None

    def rule(self, metric: str) -> str:
        """The accuracy rule ``metric`` means here: a task without it (LAMBADA has only
        ``acc``) falls back to its primary rule."""
        if metric != "primary" and metric in self.metrics:
            return metric
        return self.primary

    def cell(self, metric: str) -> Cell | None:
        rule = self.rule(metric)
        value = self.metrics.get(rule)
        if value is None or not is_number(value):
            return None
        se = self.metrics.get(f"{rule}_se")
        return Cell(
            float(value), float(se) if se is not None and is_number(se) else None, self.n, rule
        )

    def correct(self, metric: str) -> dict[tuple[str, int], int] | None:
        rule = self.rule(metric)
        index, outcomes = self.items.get("index"), self.items.get(rule)
        if not index or not outcomes or len(index) != len(outcomes):
            return None
        return {(self.name, int(i)): int(o) for i, o in zip(index, outcomes) if o is not None}


@dataclass
class SuiteResult:
    name: str
    score: float
    se: float | None
    tasks: list[str]
    source: Path | None = None


@dataclass
class Downstream:
    """Everything one run's downstream evaluations say."""

    tasks: dict[str, TaskResult] = field(default_factory=dict)
    suites: dict[str, SuiteResult] = field(default_factory=dict)
    step: int | None = None  # of the in-loop file, when a column came from one
    logged: bool = False  # read from the logged metrics: no per-item outcomes

    def names(self, members: bool = False) -> list[str]:
        """Column names: the suites and the tasks outside them (``members``: every task too)."""
        inside = {m for s in self.suites.values() for m in s.tasks}
        tasks = [t for t in self.tasks if members or t not in inside]
        return [*self.suites, *tasks]

    @property
    def sources(self) -> list[Path]:
        found = [t.source for t in self.tasks.values() if t.source]
        found += [s.source for s in self.suites.values() if s.source]
        return sorted(set(found))

    def cell(self, name: str, metric: str) -> Cell | None:
        if name in self.suites:
            s = self.suites[name]
            return Cell(s.score, s.se, None, "score")
        task = self.tasks.get(name)
        return task.cell(metric) if task else None

    def correct(self, name: str, metric: str) -> dict[tuple[str, int], int] | None:
        """Per-item correctness keyed by ``(task, index)``; a suite pools its members'."""
        if name in self.suites:
            pooled: dict[tuple[str, int], int] = {}
            for member in self.suites[name].tasks:
                part = self.tasks[member].correct(metric) if member in self.tasks else None
                if part is None:
                    return None
                pooled.update(part)
            return pooled
        task = self.tasks.get(name)
        return task.correct(metric) if task else None


# ------------------------------------------------------------------------- finding
def _holds_tasks(path: Path) -> dict[str, Any] | None:
    """The file's results if it is a downstream result with tasks (``.eval-pydoc-val.json``,
    the held-out loss, is not)."""
    try:
        data = result_file.read(path)
    except (OSError, ValueError, GptlabError):
        return None
    return data if isinstance(data.get("tasks"), dict) and data["tasks"] else None


def result_files(run_dir: str | Path) -> list[Path]:
    """The files a run's comparison reads, oldest first (a later file's tasks win)."""
    run_dir = Path(run_dir)
    candidates = []
    step = result_file.latest_in_run(run_dir)
    if step is not None and _holds_tasks(step):
        candidates.append(step)
    evals = [p for p in (run_dir / "checkpoints").glob("*.eval-*.json") if _holds_tasks(p)]
    if evals:
        newest = max(evals, key=_mtime)
        stem = newest.name.split(".eval-")[0]
        candidates += [p for p in evals if p.name.split(".eval-")[0] == stem]
    return sorted(candidates, key=lambda p: (_mtime(p), p.name))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def find_result(run_dir: str | Path) -> Path | None:
    """The newest downstream result file of a run, if any."""
    files = result_files(run_dir)
    return files[-1] if files else None


# ------------------------------------------------------------------------- reading
def parse_results(data: dict[str, Any], source: Path | None = None) -> Downstream:
    """A results dict (as ``gptlab.evaluation.results.read`` returns it) as a ``Downstream``."""
    out = Downstream(step=data.get("step") if isinstance(data.get("step"), int) else None)
    for name, t in (data.get("tasks") or {}).items():
        metrics = {k: v for k, v in (t.get("metrics") or {}).items() if is_number(v)}
        primary = t.get("primary") or ("acc_norm" if "acc_norm" in metrics else "acc")
        out.tasks[name] = TaskResult(
            name, t.get("n"), primary, metrics, t.get("items") or {}, source
        )
    for name, s in (data.get("suites") or {}).items():
        if is_number(s.get("score")):
            se = s.get("se")
            out.suites[name] = SuiteResult(
                name, float(s["score"]), se if is_number(se) else None, list(s["tasks"]), source
            )
    return out


def read_downstream(path: str | Path) -> Downstream:
    path = Path(path)
    try:
        data = result_file.read(path)
    except json.JSONDecodeError as e:
        raise CompareError(f"{path} is not valid JSON ({e}); rerun the evaluation") from None
    return parse_results(data, path)


def from_files(paths: list[Path]) -> Downstream | None:
    """Merge files oldest first: each task (and suite) from the newest file holding it."""
    if not paths:
        return None
    merged = Downstream()
    for path in paths:
        part = read_downstream(path)
        merged.tasks.update(part.tasks)
        merged.suites.update(part.suites)
        if part.step is not None:
            merged.step = part.step
    in_loop = [
        t.source
        for t in merged.tasks.values()
        if t.source and t.source.parent.name == result_file.RUN_FOLDER
    ]
    if not in_loop:
        merged.step = None
    return merged


def from_logged(run: Run) -> Downstream | None:
    """The final logged values, named as the in-loop callback logs them:
    ``eval/<task>/<rule>`` and ``eval/<task>/<rule>_se`` per task, ``eval/<suite>`` and
    ``eval/<suite>_se`` per suite (its members are the tasks named ``<suite>/...``)."""
    tasks: dict[str, dict[str, float]] = {}
    suites: dict[str, dict[str, float]] = {}
    for key in sorted({k for row in run.rows for k in row}):
        if not key.startswith(LOGGED_PREFIX):
            continue
        value = run.final(key)
        name, slash, metric = key[len(LOGGED_PREFIX) :].rpartition("/")
        if value is None:
            continue
        if slash and name and metric.removesuffix("_se") in RULES:
            tasks.setdefault(name, {})[metric] = value
        elif not slash and metric != "seconds":
            suite = metric.removesuffix("_se")
            suites.setdefault(suite, {})["se" if metric.endswith("_se") else "score"] = value
    if not tasks and not suites:
        return None
    out = Downstream(logged=True)
    for name, metrics in tasks.items():
        out.tasks[name] = TaskResult(name, None, _shipped_primary(name, metrics), metrics)
    for name, values in suites.items():
        if "score" in values:
            members = [t for t in tasks if t.startswith(f"{name}/")]
            out.suites[name] = SuiteResult(name, values["score"], values.get("se"), members)
    return out


def _shipped_primary(name: str, metrics: dict[str, float]) -> str:
    """A logged task's primary rule (the log does not say it): its shipped YAML's
    ``primary_metric`` (``core/piqa``: the member's, else the suite's), else acc_norm or acc."""
    import yaml

    suite, _, member = name.rpartition("/")
    path = TASK_DIR / f"{suite or member}.yaml"
    wanted = None
    try:
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        raw = None
    if isinstance(raw, dict):
        wanted = raw.get("primary_metric")
        for entry in raw.get("tasks") or [] if suite else []:
            if isinstance(entry, dict) and entry.get("name") == member:
                wanted = entry.get("primary_metric", wanted)
    for rule in (wanted, "acc_norm", "acc", "acc_char"):
        if rule in metrics:
            return str(rule)
    return "acc"


def load_downstream(run: Run) -> Downstream | None:
    """A run's downstream results: its result files, else its logged ``eval/`` metrics."""
    found = from_files(result_files(run.path)) if run.path is not None else None
    return found if found is not None else from_logged(run)


# ------------------------------------------------------------------------- columns
def parse_tasks(option: Any) -> str | list[str] | None:
    """``tasks=`` as written: ``auto``, ``all``, ``null``, a list, or ``a,b`` / ``[a,b]`` text."""
    if option is None or option is False:
        return None
    if isinstance(option, (list, tuple)):
        return [str(t).strip() for t in option if str(t).strip()]
    text = str(option).strip()
    if text.lower() in ("", "null", "none", "false"):
        return None
    if text.lower() in ("auto", "all"):
        return text.lower()
    return [t.strip().strip("'\"") for t in text.strip("[]").split(",") if t.strip()]


def select_columns(found: dict[str, Downstream], tasks: str | list[str] | None) -> list[str]:
    """The task and suite columns to show, in the order the runs' files list them."""
    if tasks is None:
        return []
    if isinstance(tasks, list):
        known = {n for d in found.values() for n in d.names(members=True)}
        missing = [t for t in tasks if t not in known]
        if missing:
            have = ", ".join(sorted(known)) or "none"
            raise CompareError(
                f"no run has downstream results for {', '.join(missing)} (the evaluated tasks are: {have}); "
                f"score them with python -m gptlab.evaluate task={missing[0]} ckpt=<run>/checkpoints/last.ckpt"
            )
        return tasks
    columns: dict[str, None] = {}
    for d in found.values():
        columns.update(dict.fromkeys(d.names(members=tasks == "all")))
    return list(columns)


def check_metric(metric: Any) -> str:
    metric = str(metric or "primary")
    if metric not in METRICS:
        raise CompareError(
            f"task_metric={metric}; use {', '.join(METRICS)} (primary: each task's own rule)"
        )
    return metric
