"""benchmarks/speedrun_stats.py: the one-sample t-test behind the speedrun's claims,
checked against hand-computed values, and the table reader's refusal of a bad row."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[1] / "benchmarks" / "speedrun_stats.py"
_spec = importlib.util.spec_from_file_location("speedrun_stats", _PATH)
stats = importlib.util.module_from_spec(_spec)
sys.modules["speedrun_stats"] = stats  # dataclasses look their module up
_spec.loader.exec_module(stats)


def test_one_sample_below_matches_hand_computation():
    # values 1.86, 1.87, 1.88: mean 1.87, sample sd 0.01, se 0.01/sqrt(3), t = -0.03/se
    r = stats.one_sample_below([1.86, 1.87, 1.88], 1.90)
    assert r.mean == pytest.approx(1.87)
    assert r.se == pytest.approx(0.01 / math.sqrt(3))
    assert r.t == pytest.approx(-0.03 / (0.01 / math.sqrt(3)))
    # t = -5.196 on 2 df: cdf = 0.5 + t / (2 sqrt(2 + t^2)) (closed form for df=2)
    t = r.t
    assert r.p == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-6)


def test_one_sample_undefined_cases_are_nan():
    assert math.isnan(stats.one_sample_below([1.8], 1.9).p)
    assert math.isnan(stats.one_sample_below([1.8, 1.8], 1.9).p)


def test_report_and_bad_row(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("# header\n1 160 1.90 70 1.87\n2 170 1.89 72 1.88\n")
    # ratios 70/160 = 0.4375 and 72/170 = 0.4235: mean 0.4305
    text = stats.report(stats.read_table(str(table)), 1.90, 0.5)
    assert "time ratio gptlab/nanoGPT: 0.431" in text
    table.write_text("1 160 1.90 70\n")
    with pytest.raises(ValueError, match="t.tsv:1: expected"):
        stats.read_table(str(table))
