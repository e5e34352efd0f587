"""``metrics.csv``: one row per logged step, appended, never lost.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts (a resumed
run would lose its history) and rewrites the whole file with ``"w"`` whenever a new
metric column appears (a kill during that rewrite leaves it empty). This logger,
written on Lightning's public ``Logger`` interface:

* merges everything logged for one step into one row (train loss, validation,
  throughput), so the file reads like a table of steps;
* appends finished rows to the file, and when a new column appears rewrites it to a
  temporary file that replaces the old one atomically;
* is flushed (``flush``) by the checkpoint schedule before every checkpoint, so the file holds
  every row up to the checkpoint a resumed run continues from; the run folder cuts
  the rows after it (``RunFolder.cut_metrics``) before the resumed run starts.

``hparams.yaml`` beside it holds the module's hyperparameters (model config, tokenizer).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from gptlab.training.run import HPARAMS, METRICS
from gptlab.utils.io import atomic_write_text


class MetricsCSV(Logger):
    """Append each step's metrics to ``<save_dir>/metrics.csv`` (see the module docstring)."""

    def __init__(self, save_dir: str | Path, name: str = "", version: str = "") -> None:
        super().__init__()
        self._dir = Path(save_dir)
        self._name, self._version = name, version
        self._pending: dict[int, dict[str, float]] = {}  # step -> metrics not written yet
        self._columns: list[str] | None = None  # the file's header, read on the first write
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def save_dir(self) -> str:
        return str(self._dir)

    @property
    def log_dir(self) -> str:
        return str(self._dir)

    @property
    def path(self) -> Path:
        return self._dir / METRICS

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = int(step) if step is not None else max(self._pending, default=-1) + 1
        row = self._pending.setdefault(step, {})
        for key, value in metrics.items():
            row[key] = float(value.item() if hasattr(value, "item") else value)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self._hparams.update(_plain(dict(params) if not isinstance(params, dict) else params))
        self._dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self._dir / HPARAMS, yaml.safe_dump(self._hparams, sort_keys=False, allow_unicode=True)
        )

    @rank_zero_only
    def save(self) -> None:
        """Write the rows that are complete: every step before the newest one that logged.

        Lightning calls this after each of its own ``log_metrics`` calls, when the
        newest step may still get more metrics (its validation comes after its loss).
        """
        newest = max(self._pending, default=None)
        self._write(sorted(s for s in self._pending if s != newest), durable=False)

    @rank_zero_only
    def flush(self) -> None:
        """Write every pending row and make it durable (the checkpoint schedule calls it
        before each checkpoint, when the step's metrics are all in)."""
        self._write(sorted(self._pending), durable=True)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()

    # -- writing ------------------------------------------------------------------------
    def _write(self, steps: list[int], durable: bool) -> None:
        if not steps:
            return
        rows = [{"step": float(s), **self._pending.pop(s)} for s in steps]
        columns = self._header()
        new = [k for row in rows for k in row if k not in columns]
        if new:
            columns = [*columns, *dict.fromkeys(new)]
            self._rewrite(columns)
        self._columns = columns
        lines = csv_text([[_cell(row.get(c)) for c in columns] for row in rows])
        self._dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(lines)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    def _header(self) -> list[str]:
        if self._columns is None:
            self._columns = []
            with (
                contextlib.suppress(FileNotFoundError),
                open(self.path, newline="", encoding="utf-8") as f,
            ):
                self._columns = list(next(csv.reader(f), []))
        return self._columns

    def _rewrite(self, columns: list[str]) -> None:
        """The file under a wider header, replaced atomically: a kill leaves the old or the new one."""
        old: list[dict[str, str]] = []
        with (
            contextlib.suppress(FileNotFoundError),
            open(self.path, newline="", encoding="utf-8") as f,
        ):
            old = list(csv.DictReader(f))
        text = csv_text([columns, *[[row.get(c) or "" for c in columns] for row in old]])
        atomic_write_text(self.path, text)


def csv_text(rows: list[list[Any]]) -> str:
    """Rows as CSV text, one ``\n`` per row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _plain(tree: Any) -> Any:
    """Hyperparameters as YAML-safe plain data (anything else as its text)."""
    if isinstance(tree, dict):
        return {str(k): _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    return str(tree)
