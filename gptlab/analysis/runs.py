"""Find run folders and read what a training run left in them.

A run folder (``outputs/<date>/<time>`` or one job of ``outputs/multirun/<date>/<time>``)
holds ``config.yaml`` (the resolved config), ``metrics.csv`` (every logged metric, one
row per logging step), ``overrides.yaml`` or ``.hydra/overrides.yaml`` (the command-line
overrides that made this run different), ``summary.json`` (parameters, wall time, status) and, for a failed
sweep job, ``error.txt``. Everything here reads files only: no torch, no Hydra.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gptlab.analysis import CompareError
from gptlab.training.run import (
    CONFIG,
    ERROR,
    HPARAMS,
    METRICS,
    OVERRIDE_FILES,
    RUN_MARKERS,
    SUMMARY,
    read_commit,
)
from gptlab.utils.trees import flatten

# Overrides that say where a run went or came from, not what it was.
_LOCATION_PREFIXES = ("hydra.", "paths.", "hydra/", "resume", "ckpt_path")


@dataclass
class Run:
    """One training run, from its folder or from wandb.

    ``rows`` are the logged metric rows; ``step`` in them counts optimizer steps done
    (Lightning logs a 0-based batch index; one is added when reading, so the row of the
    validation after 250 steps says 250).
    """

    name: str
    path: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    commit: str | None = None  # the git commit of the latest launch (``+``: uncommitted changes)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.summary.get("status") == "failed"

    def series(self, key: str) -> list[tuple[float, float]]:
        """(step, value) for every row that logged ``key``, in logging order."""
        return [(r["step"], r[key]) for r in self.rows if key in r and "step" in r]

    def final(self, key: str) -> float | None:
        values = self.series(key)
        return values[-1][1] if values else None

    def best(self, key: str, mode: str = "min") -> float | None:
        values = [v for _, v in self.series(key)]
        if not values:
            return None
        return min(values) if mode == "min" else max(values)

    @property
    def params(self) -> int | None:
        value = self.summary.get("params") or self.config.get("model/params")
        return int(value) if value else None

    @property
    def wall_time(self) -> float | None:
        """Seconds of training: from ``summary.json``, else the last logged ``train/wall_time``."""
        value = self.summary.get("wall_time") or self.final("train/wall_time")
        return float(value) if value else None

    @property
    def tokens_per_sec(self) -> float | None:
        """The median of the logged throughput windows: robust to the slow first window
        (warm-up, compilation) and to windows that include a validation."""
        values = sorted(v for _, v in self.series("perf/tokens_per_sec"))
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# ------------------------------------------------------------------------ discovery
def _is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def _expand(pattern: str) -> list[Path]:
    if any(ch in pattern for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    return [Path(os.path.expanduser(pattern))]


def find_run_dirs(patterns: list[str]) -> list[Path]:
    """Every run folder named by, or found below, the given folders and globs.

    Below a folder the search stops at each run folder, so a run's own ``checkpoints/``
    or ``wandb/`` are never mistaken for runs.
    """
    if not patterns:
        raise CompareError(
            "name the runs to compare: run folders, a sweep folder or a glob, e.g. "
            "python -m gptlab.compare outputs/multirun/2025-01-31/12-00-00-000000"
        )
    found: list[Path] = []
    for pattern in patterns:
        paths = _expand(pattern)
        if not paths or not any(p.exists() for p in paths):
            raise CompareError(
                f"{pattern} does not exist; give a run folder, a sweep folder or a glob of them"
            )
        for path in paths:
            if not path.is_dir():
                continue
            if _is_run_dir(path):
                found.append(path)
                continue
            for root, dirs, _files in os.walk(path):
                dirs.sort()
                here = Path(root)
                if here != path and _is_run_dir(here):
                    found.append(here)
                    dirs.clear()
                dirs[:] = [d for d in dirs if not d.startswith(".")]
    unique = sorted({p.resolve(): p for p in found}.values(), key=_natural_key)
    if not unique:
        raise CompareError(
            f"no runs found in {', '.join(patterns)}: a run folder holds config.yaml and metrics.csv "
            "(written by python -m gptlab.train); point at outputs/<date>/<time> or outputs/multirun/<date>/<time>"
        )
    return unique


def _natural_key(path: Path) -> list:
    """Sort job folders 2 before 10."""
    return [int(part) if part.isdigit() else part for part in path.parts]


# -------------------------------------------------------------------------- reading
def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["model.n_layer=4", "~callbacks.sample_text"]`` -> ``{"model.n_layer": "4", "~callbacks.sample_text": ""}``,
    without the overrides that only say where the run went (``hydra.*``, ``paths.*``)."""
    parsed: dict[str, str] = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        key = key.strip()
        if key.lstrip("+~").startswith(_LOCATION_PREFIXES):
            continue
        parsed[key] = value.strip()
    return parsed


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a Lightning ``metrics.csv`` as floats (empty cells left out), steps counted from 1."""
    if not path.is_file():
        return []
    rows: list[dict[str, float]] = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, float] = {}
            for key, text in raw.items():
                if key is None or text in (None, ""):
                    continue
                try:
                    row[key] = float(text)
                except ValueError:
                    continue
            if "step" in row:
                row["step"] += 1
            if len(row) > 1:
                rows.append(row)
    return rows


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None


def read_run(path: Path, name: str | None = None) -> Run:
    """Everything a comparison needs from one run folder (missing files are simply absent)."""
    config = _read_yaml(path / CONFIG) or {}
    overrides: Any = next(
        (o for f in OVERRIDE_FILES if (o := _read_yaml(path / f)) is not None), []
    )
    summary: dict[str, Any] = {}
    if (path / SUMMARY).is_file():
        try:
            summary = json.loads((path / SUMMARY).read_text())
        except json.JSONDecodeError:
            summary = {}
    error_file = path / ERROR
    error = (
        error_file.read_text().strip().splitlines()[-1]
        if error_file.is_file() and error_file.read_text().strip()
        else None
    )
    if error is None and error_file.is_file():
        error = "failed (empty error.txt)"
    run = Run(
        name=name or path.name,
        path=path,
        overrides=parse_overrides(overrides if isinstance(overrides, list) else []),
        config=flatten(config) if isinstance(config, dict) else {},
        rows=read_metrics_csv(path / METRICS),
        summary=summary,
        error=error,
        commit=read_commit(path),
    )
    if not run.params:
        run.summary.setdefault("params", _params_from_hparams(path))
    return run


def _params_from_hparams(path: Path) -> int | None:
    """Older runs without ``summary.json``: count the parameters of the model described in
    ``hparams.yaml``, built on the meta device (no memory, no weights)."""
    hparams = _read_yaml(path / HPARAMS)
    if not isinstance(hparams, dict):
        return None
    if hparams.get("model/params"):
        return int(hparams["model/params"])
    model_config = hparams.get("model_config")
    if not isinstance(model_config, dict):
        return None
    try:
        import torch

        from gptlab.model import GPT, GPTConfig

        with torch.device("meta"):
            return int(GPT(GPTConfig.from_dict(model_config)).num_parameters())
    except Exception:  # an unreadable config only costs the parameter column
        return None


def load_runs(patterns: list[str]) -> tuple[list[Run], Path]:
    """Read every run under ``patterns``; names are paths relative to the runs' common folder."""
    dirs = find_run_dirs(patterns)
    root = Path(os.path.commonpath([d.resolve() for d in dirs]))
    if len(dirs) == 1:
        root = root.parent
    runs = [read_run(d, name=str(d.resolve().relative_to(root))) for d in dirs]
    return runs, root


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
