"""``gptlab.compare`` on synthetic run folders whose numbers are known in advance."""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from gptlab.analysis import CompareError
from gptlab.analysis.curves import curve, value_at
from gptlab.analysis.plot import MAX_LABEL, comparison_figure
from gptlab.analysis.runs import read_run
from gptlab.analysis.stats import student_t_cdf, welch_t_test
from gptlab.analysis.wandb_source import load_wandb_runs
from gptlab.compare import compare, main, parse_argv

scipy_stats = pytest.importorskip("scipy.stats")

TOKENS_PER_STEP = 512
FLOPS_PER_TOKEN = 1e6


def fake_run(
    folder: Path,
    overrides: list[str],
    val_losses: list[float],
    every: int = 10,
    tokens_per_step: int = TOKENS_PER_STEP,
    error: str | None = None,
    params: int = 1000,
) -> Path:
    """A run folder as gptlab.train writes it: validations every ``every`` steps, throughput each step."""
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"seed": 1, "optimizer": {"lr": 0.001}, "model": {"n_layer": 2}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    columns = [
        "epoch",
        "perf/tokens_per_sec",
        "step",
        "train/flops",
        "train/loss",
        "train/tokens",
        "train/wall_time",
        "val/loss",
    ]
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for i, loss in enumerate(val_losses):
            for step in range(i * every + 1, (i + 1) * every + 1):
                tokens = step * tokens_per_step
                writer.writerow(
                    {
                        "epoch": 0,
                        "step": step - 1,
                        "perf/tokens_per_sec": 1000.0,
                        "train/loss": loss + 0.1,
                        "train/tokens": tokens,
                        "train/flops": tokens * FLOPS_PER_TOKEN,
                        "train/wall_time": step * 0.5,
                    }
                )
            writer.writerow({"epoch": 0, "step": (i + 1) * every - 1, "val/loss": loss})
    status = "failed" if error else "finished"
    (folder / "summary.json").write_text(
        json.dumps({"status": status, "params": params, "wall_time": 12.5})
    )
    if error:
        (folder / "error.txt").write_text(f"Traceback ...\n{error}\n")
    return folder


@pytest.fixture
def seed_sweep(tmp_path: Path) -> tuple[Path, dict[str, list[float]]]:
    """Two configurations x four seeds, with final losses drawn around different means."""
    rng = random.Random(7)
    finals = {
        "learned": [3.0 + rng.gauss(0, 0.01) for _ in range(4)],
        "rope": [2.985 + rng.gauss(0, 0.01) for _ in range(4)],
    }
    job = 0
    for pos, losses in finals.items():
        for seed, final in enumerate(losses, start=1):
            fake_run(
                tmp_path / "sweep" / str(job),
                ["model=micro", f"model.pos={pos}", f"seed={seed}"],
                [3.5, 3.2, final],
            )
            job += 1
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    return tmp_path / "sweep", finals


def test_seed_groups_mean_std_and_welch_p_value_match_scipy(seed_sweep):
    sweep, finals = seed_sweep
    result = compare(parse_argv([str(sweep), "baseline=model.pos=learned"]))
    groups = {g.label: g for g in result.groups}
    assert set(groups) == {"model.pos=learned", "model.pos=rope"}  # seed is not a grouping key
    for pos, values in finals.items():
        g = groups[f"model.pos={pos}"]
        assert g.mean == pytest.approx(np.mean(values), abs=1e-12)
        assert g.std == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    expected = scipy_stats.ttest_ind(
        finals["rope"], finals["learned"], equal_var=False, alternative="less"
    ).pvalue
    assert groups["model.pos=rope"].p_value == pytest.approx(expected, rel=1e-9)
    assert (
        result.baseline is groups["model.pos=learned"]
        and groups["model.pos=learned"].p_value is None
    )
    assert "(baseline)" in result.text and "mean ± std" in result.text
    with open(result.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["model.pos"] for r in rows} == {"learned", "rope"}
    rope_rows = [r for r in rows if r["model.pos"] == "rope"]
    assert float(rope_rows[0]["p_value"]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
def test_welch_t_test_matches_scipy(alternative):
    rng = random.Random(alternative)
    for _ in range(200):
        a = [rng.gauss(0, rng.uniform(0.01, 2)) for _ in range(rng.randint(2, 9))]
        b = [rng.gauss(rng.uniform(-1, 1), rng.uniform(0.01, 2)) for _ in range(rng.randint(2, 9))]
        ours = welch_t_test(a, b, alternative)
        ref = scipy_stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-9)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)


def test_student_t_cdf_matches_scipy_in_the_tails():
    for df in (0.7, 1, 3.3, 30, 3000):
        for t in (-40, -4, -0.5, 0, 0.5, 4, 40):
            assert student_t_cdf(t, df) == pytest.approx(
                scipy_stats.t.cdf(t, df), rel=1e-8, abs=1e-15
            )


def test_welch_needs_two_values_per_group():
    assert math.isnan(welch_t_test([1.0], [1.0, 2.0]).p)
    assert math.isnan(welch_t_test([1.0, 1.0], [2.0, 2.0]).p)  # no spread: undefined, not 0


def test_runs_sorted_by_final_loss_with_best_and_failed_last(tmp_path):
    fake_run(tmp_path / "s" / "0", ["optimizer.lr=1e-3"], [3.0, 2.5, 2.6])
    fake_run(tmp_path / "s" / "1", ["optimizer.lr=3e-3"], [2.9, 2.4, 2.3])
    fake_run(tmp_path / "s" / "2", ["optimizer.lr=1e-2"], [2.0], error="RuntimeError: boom")
    result = compare(parse_argv([str(tmp_path / "s")]))
    assert [r["run"] for r in result.rows] == ["1", "0", "2"]
    assert result.rows[1]["final val/loss"] == 2.6 and result.rows[1]["best val/loss"] == 2.5
    assert result.rows[0]["params"] == 1000 and result.rows[0]["wall time (s)"] == 12.5
    assert result.rows[2]["status"] == "failed: RuntimeError: boom"
    assert "failed: 2 (RuntimeError: boom)" in result.text


def test_curves_against_tokens_flops_and_time(tmp_path):
    run = read_run(fake_run(tmp_path / "r", [], [3.0, 2.0, 1.0], every=10))
    steps = curve(run, x="steps")
    assert list(steps.x) == [10, 20, 30] and list(steps.y) == [3.0, 2.0, 1.0]
    assert list(curve(run, x="tokens").x) == [
        10 * TOKENS_PER_STEP,
        20 * TOKENS_PER_STEP,
        30 * TOKENS_PER_STEP,
    ]
    assert curve(run, x="flops").x[-1] == pytest.approx(30 * TOKENS_PER_STEP * FLOPS_PER_TOKEN)
    assert list(curve(run, x="time").x) == [5.0, 10.0, 15.0]


def test_compute_matched_value_interpolates_and_refuses_unreached_budgets(tmp_path):
    run = read_run(fake_run(tmp_path / "r", [], [3.0, 2.0, 1.0], every=10))
    assert value_at(run, 15 * TOKENS_PER_STEP, "tokens") == pytest.approx(2.5)
    assert value_at(run, 25 * TOKENS_PER_STEP * FLOPS_PER_TOKEN, "flops") == pytest.approx(1.5)
    assert value_at(run, 31 * TOKENS_PER_STEP, "tokens") is None  # never trained that far
    assert value_at(run, 5 * TOKENS_PER_STEP, "tokens") is None  # before the first validation


def test_at_tokens_ranks_by_the_loss_at_equal_data(tmp_path):
    # The big run ends lower only because it saw twice the tokens.
    fake_run(
        tmp_path / "s" / "0", ["model=small"], [3.0, 2.0, 1.8], tokens_per_step=200
    )  # 2k, 4k, 6k tokens
    fake_run(
        tmp_path / "s" / "1", ["model=big"], [2.9, 1.5, 1.0], tokens_per_step=400
    )  # 4k, 8k, 12k tokens
    plain = compare(parse_argv([str(tmp_path / "s"), "plot=false", "x=tokens"]))
    assert [r["model"] for r in plain.rows] == ["big", "small"]
    assert "different tokens budgets; at_tokens=6e+03 compares them all" in plain.text
    matched = compare(parse_argv([str(tmp_path / "s"), "at_tokens=6000", "x=tokens"]))
    assert [r["model"] for r in matched.rows] == ["small", "big"]
    column = "val/loss @ 6e+03 tokens"
    assert matched.rows[0][column] == pytest.approx(1.8)
    assert matched.rows[1][column] == pytest.approx(2.2)  # halfway between 4k (2.9) and 8k (1.5)
    beyond = compare(parse_argv([str(tmp_path / "s"), "at_tokens=10000", "plot=false"]))
    assert (
        beyond.rows[1]["val/loss @ 1e+04 tokens"] is None
        and "every run reached 6e+03" in beyond.text
    )


def test_suggested_budget_is_never_beyond_what_a_run_reached(tmp_path):
    """6,147 tokens printed to 3 digits would round up to 6.15e+03, which the small run never reached."""
    fake_run(
        tmp_path / "s" / "0", ["model=small"], [3.0, 2.0, 1.8], every=1, tokens_per_step=2049
    )  # ends at 6,147
    fake_run(tmp_path / "s" / "1", ["model=big"], [2.9, 1.5, 1.0], every=1, tokens_per_step=4000)
    plain = compare(parse_argv([str(tmp_path / "s"), "plot=false", "x=tokens"]))
    suggested = re.search(r"at_tokens=(\S+) compares", plain.text).group(1)
    assert 6000 <= float(suggested) <= 3 * 2049
    matched = compare(parse_argv([str(tmp_path / "s"), f"at_tokens={suggested}", "plot=false"]))
    column = next(k for k in matched.rows[0] if k.startswith("val/loss @"))
    assert all(row[column] is not None for row in matched.rows)


def test_long_legend_entries_keep_every_override(tmp_path):
    """Overrides beyond the legend's line width wrap onto more lines instead of being cut."""
    common = ["model.attention.backend=manual", "data.batch_size=12", "optimizer.weight_decay=0.1"]
    fake_run(tmp_path / "s" / "0", [*common, "optimizer.lr=0.001"], [3.0, 2.0])
    fake_run(tmp_path / "s" / "1", [*common, "optimizer.lr=0.003"], [2.9, 1.9])
    fake_run(
        tmp_path / "s" / "2",
        [
            "model.attention.backend=sdpa",
            "data.batch_size=8",
            "optimizer.weight_decay=0.0",
            "optimizer.lr=0.003",
        ],
        [2.8, 1.8],
    )
    result = compare(parse_argv([str(tmp_path / "s"), "plot=false"]))
    texts = [
        t.get_text()
        for t in comparison_figure(result.runs, result.groups).axes[0].get_legend().get_texts()
    ]
    assert len(set(texts)) == 3
    assert sum("optimizer.lr=0.001" in t.replace("\n", " ") for t in texts) == 1
    assert all(len(line) <= MAX_LABEL for t in texts for line in t.splitlines())


def test_figure_has_one_line_per_run_and_seed_groups_share_a_colour(seed_sweep):
    sweep, _ = seed_sweep
    result = compare(parse_argv([str(sweep), "plot=false"]))
    fig = comparison_figure(result.runs, result.groups, x="tokens")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 8
    assert len({line.get_color() for line in lines}) == 2
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == [
        "model.pos=learned",
        "model.pos=rope",
    ]
    assert fig.axes[0].get_xlabel() == "training tokens"


def test_key_value_options_and_paths_are_told_apart(tmp_path):
    options = parse_argv(
        [
            str(tmp_path),
            "x=flops",
            "at_flops=1e15",
            "baseline=model.n_layer=2 optimizer.lr=1e-3",
            "plot=false",
        ]
    )
    assert (
        options["runs"] == [str(tmp_path)]
        and options["x"] == "flops"
        and options["at_flops"] == "1e15"
    )
    assert options["baseline"] == "model.n_layer=2 optimizer.lr=1e-3" and options["plot"] is False
    with pytest.raises(CompareError, match="unknown option colour="):
        parse_argv(["colour=red"])


def test_bad_input_gets_one_plain_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no runs found in") and "\n" not in err

    silent = tmp_path / "silent"
    (silent / "0").mkdir(parents=True)
    (silent / "0" / "config.yaml").write_text("seed: 1\n")
    (silent / "0" / "error.txt").write_text("error: the corpus is empty\n")
    assert main([str(silent)]) == 1
    assert "has logged any metrics" in capsys.readouterr().err

    fake_run(tmp_path / "ok" / "0", ["seed=1"], [2.0])
    for args, expected in [
        (["x=parsecs"], "x=parsecs is not an axis"),
        (["at_tokens=lots"], "not a number"),
        (["baseline=model.pos=alibi"], "no group of runs matches"),
        (["metric=val/acc"], "no run in"),
    ]:
        assert main([str(tmp_path / "ok"), *args]) == 1
        assert expected in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_wandb_source_without_project_says_what_to_set(capsys):
    assert main(["source=wandb"]) == 1
    err = capsys.readouterr().err
    assert "project=<name>" in err and "Traceback" not in err


class FakeWandbRun:
    def __init__(self, name: str, lr: str, losses: list[float], state: str = "finished") -> None:
        self.name, self.id, self.state = name, name, state
        self.config = {
            "optimizer.lr": float(lr),
            "overrides": [f"optimizer.lr={lr}", "hydra.run.dir=x"],
            "model/params": 99,
        }
        self.summary = {"_runtime": 42.0, "model/params": 99}
        self._rows = []
        for i, loss in enumerate(losses):
            step = 10 * (i + 1) - 1
            self._rows += [
                {"trainer/global_step": step, "train/tokens": 512.0 * (step + 1), "_step": 2 * i},
                {"trainer/global_step": step, "val/loss": loss, "_step": 2 * i + 1},
            ]

    def scan_history(self):
        return iter(self._rows)


class FakeApi:
    def __init__(self, runs: list[FakeWandbRun]) -> None:
        self._runs = runs
        self.asked: tuple | None = None

    def runs(self, path, filters=None):
        self.asked = (path, filters)
        return self._runs


def test_wandb_runs_map_onto_the_same_table(tmp_path):
    api = FakeApi([FakeWandbRun("a", "1e-3", [3.0, 2.5]), FakeWandbRun("b", "3e-3", [3.0, 2.2])])
    runs = load_wandb_runs("gptlab", entity="me", group="2025-01-31/12-00-00", api=api)
    assert api.asked == ("me/gptlab", {"group": "2025-01-31/12-00-00"})
    assert [r.overrides for r in runs] == [{"optimizer.lr": "1e-3"}, {"optimizer.lr": "3e-3"}]
    assert runs[1].final("val/loss") == 2.2 and runs[1].params == 99 and runs[1].wall_time == 42.0
    assert list(curve(runs[0], x="tokens").x) == [5120.0, 10240.0]


def test_wandb_api_failure_is_one_sentence():
    class BrokenApi:
        def runs(self, path, filters=None):
            raise ValueError("Could not find project nope")

    with pytest.raises(CompareError, match="could not read wandb project 'nope'.*WANDB_API_KEY"):
        load_wandb_runs("nope", api=BrokenApi())
