"""``compare at_time=``: runs compared at equal wall-clock seconds."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gptlab.analysis import CompareError
from gptlab.analysis.curves import value_at
from gptlab.analysis.runs import read_run
from gptlab.compare import compare, parse_argv
from tests.test_compare import fake_run


def slow_down(folder: Path, factor: float) -> None:
    """Make a fake run's steps take ``factor`` times as long."""
    path = folder / "metrics.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["train/wall_time"]:
            row["train/wall_time"] = str(float(row["train/wall_time"]) * factor)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_value_at_time_interpolates_and_a_finished_run_keeps_its_final_value(tmp_path):
    run = read_run(fake_run(tmp_path / "r", [], [3.0, 2.0, 1.0], every=10))  # 5 s, 10 s, 15 s
    assert value_at(run, 7.5, "time") == pytest.approx(2.5)
    assert value_at(run, 40.0, "time") == pytest.approx(1.0)  # it had the time, needed less
    assert value_at(run, 2.0, "time") is None  # before its first validation


def test_at_time_ranks_a_fast_run_above_a_better_but_slower_one(tmp_path):
    fake_run(tmp_path / "s" / "0", ["model=fast"], [3.0, 2.2, 2.0])  # 5, 10, 15 s
    slow = fake_run(tmp_path / "s" / "1", ["model=slow"], [2.8, 1.8, 1.5])
    slow_down(slow, 3.0)  # 15, 30, 45 s
    plain = compare(parse_argv([str(tmp_path / "s"), "plot=false"]))
    assert [r["model"] for r in plain.rows] == ["slow", "fast"]
    timed = compare(parse_argv([str(tmp_path / "s"), "plot=false", "at_time=15"]))
    assert [r["model"] for r in timed.rows] == ["fast", "slow"]
    column = "val/loss @ 15 s"
    assert timed.rows[0][column] == pytest.approx(2.0)
    assert timed.rows[1][column] == pytest.approx(2.8)


def test_only_one_budget_at_a_time(tmp_path):
    fake_run(tmp_path / "s" / "0", ["model=a"], [3.0, 2.0])
    with pytest.raises(CompareError, match="give one of at_tokens=, at_flops= or at_time="):
        compare(parse_argv([str(tmp_path / "s"), "plot=false", "at_time=5", "at_tokens=100"]))
