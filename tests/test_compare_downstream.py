"""``gptlab.compare`` with downstream results: task columns, seed means, McNemar per task.

Run folders are faked as ``tests/test_compare.py`` fakes them (metrics.csv, config,
overrides, summary), and the downstream files are written in the real format by
``gptlab.evaluation.results.write``, with per-item outcomes chosen in advance so the
expected numbers are computed here independently (and the p-values by SciPy). One
end-to-end test trains two real micro runs, scores them with ``gptlab.evaluate``'s
task path on a five-item HellaSwag file, and compares them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

from gptlab.analysis.downstream import find_result, load_downstream, result_files
from gptlab.analysis.runs import read_run
from gptlab.analysis.stats import MCNEMAR_EXACT_BELOW, mcnemar
from gptlab.compare import compare, main, parse_argv
from gptlab.evaluation import results
from tests.test_compare import fake_run

scipy_stats = pytest.importorskip("scipy.stats")


# ------------------------------------------------------------------------ helpers
def task_entry(outcomes: dict[str, list[int]], primary: str = "acc_norm", baseline: float = 0.25):
    """A task's result as gptlab.evaluation.metrics.summarize + evaluator.score_task shape it."""
    n = len(next(iter(outcomes.values())))
    metrics: dict[str, float] = {}
    for rule, values in outcomes.items():
        p = sum(values) / n
        metrics[rule], metrics[f"{rule}_se"] = p, math.sqrt(p * (1 - p) / n)
    metrics["bpb"] = 1.5
    primary = primary if primary in outcomes else "acc"
    return {
        "n": n,
        "primary": primary,
        "metrics": metrics,
        "random_baseline": baseline,
        "centered": (metrics[primary] - baseline) / (1 - baseline),
        "centered_se": metrics[f"{primary}_se"] / (1 - baseline),
        "truncated": 0,
        "items": {"index": list(range(n)), **outcomes, "nats": [1.0] * n, "bytes": [4.0] * n},
    }


def suite_entry(tasks: dict, members: list[str]) -> dict:
    centered = [tasks[m]["centered"] for m in members]
    ses = [tasks[m]["centered_se"] for m in members]
    return {
        "score": sum(centered) / len(centered),
        "se": math.sqrt(sum(s * s for s in ses)) / len(ses),
        "tasks": members,
    }


def draws(rng: random.Random, n: int, p: float) -> list[int]:
    return [int(rng.random() < p) for _ in range(n)]


def flipped(values: list[int], up: int, down: int) -> list[int]:
    """``values`` with the first ``up`` wrong items made right and the first ``down`` right ones wrong."""
    out = list(values)
    wrong = [i for i, v in enumerate(values) if v == 0][:up]
    right = [i for i, v in enumerate(values) if v == 1][:down]
    for i in wrong:
        out[i] = 1
    for i in right:
        out[i] = 0
    return out


def chi2_p(b01: int, b10: int) -> float:
    """McNemar's continuity-corrected chi-square p-value, by hand, with SciPy's chi-square tail."""
    stat = max(abs(b01 - b10) - 1, 0) ** 2 / (b01 + b10)
    return float(scipy_stats.chi2.sf(stat, df=1))


def discordant(ref: list[int], other: list[int]) -> tuple[int, int]:
    b01 = sum(1 for r, o in zip(ref, other) if r == 0 and o == 1)
    b10 = sum(1 for r, o in zip(ref, other) if r == 1 and o == 0)
    return b01, b10


# ------------------------------------------------------------------------- mcnemar
def test_mcnemar_exact_below_25_discordant_items_matches_scipy_binomtest():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 60)
        a = draws(rng, n, rng.random())
        b = draws(rng, n, rng.random())
        ours = mcnemar(a, b)
        b01, b10 = discordant(a, b)
        assert (ours.b01, ours.b10, ours.n) == (b01, b10, n)
        if b01 + b10 == 0:
            assert ours.p == 1.0 and ours.method == "exact"
        elif b01 + b10 < MCNEMAR_EXACT_BELOW:
            assert ours.method == "exact" and ours.statistic is None
            assert ours.p == pytest.approx(
                scipy_stats.binomtest(b01, b01 + b10, 0.5).pvalue, rel=1e-12
            )
        else:
            assert ours.method == "chi2"
            assert ours.statistic == pytest.approx(max(abs(b01 - b10) - 1, 0) ** 2 / (b01 + b10))
            assert ours.p == pytest.approx(chi2_p(b01, b10), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("b01,b10", [(25, 0), (13, 12), (30, 10), (500, 430), (0, 40), (13, 13)])
def test_mcnemar_chi_square_from_25_discordant_items(b01, b10):
    a = [0] * b01 + [1] * b10 + [1] * 7 + [0] * 3  # plus concordant items, which do not count
    b = [1] * b01 + [0] * b10 + [1] * 7 + [0] * 3
    ours = mcnemar(a, b)
    assert ours.method == "chi2" and (ours.b01, ours.b10, ours.n) == (b01, b10, b01 + b10 + 10)
    assert ours.p == pytest.approx(chi2_p(b01, b10), rel=1e-10, abs=1e-300)
    assert ours.difference == pytest.approx((b01 - b10) / (b01 + b10 + 10))
    if b01 == b10:
        assert ours.p == 1.0


def test_mcnemar_takes_bools_and_float_outcomes_and_refuses_unpaired_or_non_binary_input():
    assert mcnemar([True, False, 0.0], [False, True, 1.0]).b01 == 2
    with pytest.raises(ValueError, match="paired"):
        mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([1, 2], [1, 0])


def test_mcnemar_exact_and_chi_square_agree_roughly_at_the_switch():
    """Either side of 25 discordant items the two p-values are close: no jump in the verdict."""
    exact = mcnemar([0] * 18 + [1] * 6, [1] * 18 + [0] * 6)  # 24 discordant
    chi2 = mcnemar([0] * 18 + [1] * 7, [1] * 18 + [0] * 7)  # 25 discordant
    assert exact.method == "exact" and chi2.method == "chi2"
    assert exact.p == pytest.approx(scipy_stats.binomtest(6, 24).pvalue)
    assert abs(exact.p - chi2.p) < 0.03


# ----------------------------------------------------------------------- fixtures
HELLASWAG_N, PIQA_N = 400, 300
P_HELLASWAG = {"learned": 0.25, "rope": 0.33}


@pytest.fixture
def downstream_sweep(tmp_path: Path):
    """Two configurations x three seeds. HellaSwag: rope is clearly better; PIQA: rope is the
    baseline's outcome with 6 items gained and 4 lost per seed (noise); a two-member suite."""
    rng = random.Random(17)
    sweep = tmp_path / "sweep"
    outcomes: dict[tuple[str, int], dict[str, dict[str, list[int]]]] = {}
    piqa_base = {s: draws(rng, PIQA_N, 0.6) for s in (1, 2, 3)}
    job = 0
    for pos in ("learned", "rope"):
        for seed in (1, 2, 3):
            folder = fake_run(
                sweep / str(job),
                ["model=micro", f"model.pos={pos}", f"seed={seed}"],
                [3.5, 3.2, 3.0 - 0.01 * job],
            )
            piqa = piqa_base[seed] if pos == "learned" else flipped(piqa_base[seed], 6, 4)
            hs = draws(rng, HELLASWAG_N, P_HELLASWAG[pos])
            run_outcomes = {
                "hellaswag": {"acc": draws(rng, HELLASWAG_N, 0.3), "acc_norm": hs, "acc_char": hs},
                "piqa": {"acc": piqa, "acc_norm": piqa, "acc_char": piqa},
                "core/copa": {"acc": draws(rng, 50, 0.5), "acc_norm": draws(rng, 50, 0.55)},
                "core/lambada": {"acc": draws(rng, 40, 0.1)},
            }
            outcomes[(pos, seed)] = run_outcomes
            tasks = {
                name: task_entry(
                    o, baseline=0.5 if "copa" in name else 0.0 if "lambada" in name else 0.25
                )
                for name, o in run_outcomes.items()
            }
            results.write(
                results.step_file(folder, 30),
                {
                    "model": str(folder),
                    "step": 30,
                    "tasks": tasks,
                    "suites": {"core": suite_entry(tasks, ["core/copa", "core/lambada"])},
                },
            )
            job += 1
    (sweep / "multirun.yaml").write_text("{}")
    return sweep, outcomes


def value_and_se(values: list[int]) -> tuple[float, float]:
    p = float(np.mean(values))
    return p, math.sqrt(p * (1 - p) / len(values))


# -------------------------------------------------------------------------- tests
def test_task_columns_group_means_and_mcnemar_per_task_against_scipy(downstream_sweep):
    sweep, outcomes = downstream_sweep
    result = compare(parse_argv([str(sweep), "baseline=model.pos=learned", "plot=false"]))
    assert result.downstream is not None
    assert result.downstream.columns == [
        "core",
        "hellaswag",
        "piqa",
    ]  # suite first; members inside it
    assert "core/copa" not in result.rows[0]

    # Each run: the primary rule's accuracy ± its binomial standard error, printed as value±se.
    by_name = {r["run"]: r for r in result.rows}
    for job, (pos, seed) in enumerate([(p, s) for p in ("learned", "rope") for s in (1, 2, 3)]):
        row = by_name[str(job)]
        p, se = value_and_se(outcomes[(pos, seed)]["hellaswag"]["acc_norm"])
        assert row["hellaswag"] == pytest.approx(p) and row["_se"]["hellaswag"] == pytest.approx(se)
        assert f"{p:.4f}±{se:.4f}" in result.text
    assert (
        "downstream: hellaswag, piqa: accuracy (each task's primary rule) ± binomial standard error "
        "over items; core: suite score ± its standard error"
    ) in result.text

    # Seed groups: the mean over seeds ± std / sqrt(n).
    groups = {g.label: g for g in result.groups}
    for pos in ("learned", "rope"):
        values = [float(np.mean(outcomes[(pos, s)]["hellaswag"]["acc_norm"])) for s in (1, 2, 3)]
        cell = groups[f"model.pos={pos}"].downstream["hellaswag"]
        assert cell.runs == 3 and cell.mean == pytest.approx(np.mean(values))
        assert cell.se == pytest.approx(np.std(values, ddof=1) / math.sqrt(3))
        assert f"{cell.mean:.4f}±{cell.se:.4f}" in result.text
    assert "tasks: mean over seeds ± its standard error" in result.text

    # McNemar: seed pairs (1-1, 2-2, 3-3) concatenated, rope against the baseline.
    tests = {t.column: t for t in result.paired}
    assert {t.label for t in result.paired} == {"model.pos=rope"}
    for column in ("hellaswag", "piqa"):
        ref = [v for s in (1, 2, 3) for v in outcomes[("learned", s)][column]["acc_norm"]]
        other = [v for s in (1, 2, 3) for v in outcomes[("rope", s)][column]["acc_norm"]]
        b01, b10 = discordant(ref, other)
        t = tests[column]
        assert (t.test.b01, t.test.b10, t.pairs, t.paired_by) == (b01, b10, 3, "seed")
        assert t.test.n == len(ref)
        assert t.test.p == pytest.approx(chi2_p(b01, b10), rel=1e-9)
    assert (tests["piqa"].test.b01, tests["piqa"].test.b10) == (18, 12)
    assert tests["hellaswag"].test.p < 1e-4 and tests["piqa"].test.p > 0.3
    # The suite pools its members' items (each member's primary rule: acc_norm, acc).
    members = {"core/copa": "acc_norm", "core/lambada": "acc"}
    ref = [
        v
        for s in (1, 2, 3)
        for m, rule in members.items()
        for v in outcomes[("learned", s)][m][rule]
    ]
    other = [
        v for s in (1, 2, 3) for m, rule in members.items() for v in outcomes[("rope", s)][m][rule]
    ]
    assert tests["core"].test.n == 3 * 90
    assert (tests["core"].test.b01, tests["core"].test.b10) == discordant(ref, other)

    line = next(x for x in result.text.splitlines() if "above the noise at this scale" in x)
    above, _, within = line.partition("within the noise:")
    assert "hellaswag" in above and "piqa" not in above and "piqa (p=" in within
    assert line.startswith(
        "model.pos=rope vs model.pos=learned: above the noise at this scale (p < 0.05)"
    )
    assert "paired McNemar tests" in result.text and "seed pairs pooled" in result.text


def test_csv_has_value_se_group_and_p_value_columns(downstream_sweep):
    sweep, outcomes = downstream_sweep
    result = compare(parse_argv([str(sweep), "baseline=model.pos=learned", "plot=false"]))
    with open(result.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    for column in ("hellaswag", "piqa", "core"):
        assert header.index(f"{column}_se") == header.index(column) + 1
        assert {f"group_{column}", f"group_{column}_se", f"{column}_mcnemar_p"} <= set(header)
    run0 = next(r for r in rows if r["run"] == "0")
    p, se = value_and_se(outcomes[("learned", 1)]["hellaswag"]["acc_norm"])
    assert float(run0["hellaswag"]) == pytest.approx(p) and float(
        run0["hellaswag_se"]
    ) == pytest.approx(se)
    assert run0["hellaswag_mcnemar_p"] == ""  # the baseline is not tested against itself
    rope = next(r for r in rows if r["model.pos"] == "rope")
    t = next(t for t in result.paired if t.column == "hellaswag")
    assert float(rope["hellaswag_mcnemar_p"]) == pytest.approx(t.test.p)
    assert run0["downstream_step"] == "30" and run0["downstream_files"].endswith(
        "step-00000030.json"
    )


def test_two_runs_without_baseline_get_the_exact_test_and_options_pick_tasks_and_rule(tmp_path):
    """Two single runs: McNemar between them; tasks= restricts the columns, task_metric= the rule."""
    a_right = [1] * 10 + [0] * 7 + [1] * 1 + [0] * 2  # 20 items: 7 only b right, 1 only a right
    b_right = [1] * 10 + [1] * 7 + [0] * 1 + [0] * 2
    lam = [1, 0, 0, 1]
    for job, (lr, hs) in enumerate([("1e-3", a_right), ("3e-3", b_right)]):
        folder = fake_run(tmp_path / "s" / str(job), [f"optimizer.lr={lr}"], [3.0, 2.9 - job * 0.1])
        tasks = {
            "hellaswag": task_entry({"acc": hs[::-1], "acc_norm": hs, "acc_char": hs}),
            "lambada": task_entry({"acc": lam}, primary="acc", baseline=0.0),
        }
        results.write(results.step_file(folder, 20), {"step": 20, "tasks": tasks, "suites": {}})
    result = compare(parse_argv([str(tmp_path / "s"), "plot=false"]))
    (t,) = [t for t in result.paired if t.column == "hellaswag"]
    # Groups are ranked by val/loss: the 3e-3 run (lower loss) is first, tested against the other.
    assert t.label == "optimizer.lr=3e-3" and t.reference == "optimizer.lr=1e-3"
    assert (t.test.b01, t.test.b10, t.test.method) == (7, 1, "exact")
    assert t.test.p == pytest.approx(scipy_stats.binomtest(7, 8, 0.5).pvalue)
    assert t.test.difference == pytest.approx(6 / 20)
    assert (
        "above the noise at this scale (p < 0.05): none" in result.text
    )  # p = 0.07 on 8 discordant

    only = compare(
        parse_argv([str(tmp_path / "s"), "tasks=[hellaswag]", "task_metric=acc", "plot=false"])
    )
    assert only.downstream.columns == ["hellaswag"] and "lambada" not in only.rows[0]
    assert only.rows[0]["hellaswag"] == pytest.approx(np.mean(b_right[::-1]))  # acc, not acc_norm
    fallback = compare(
        parse_argv(
            [str(tmp_path / "s"), "tasks=lambada,hellaswag", "task_metric=acc_norm", "plot=false"]
        )
    )
    assert fallback.downstream.columns == ["lambada", "hellaswag"]
    assert "lambada has no acc_norm; its column shows acc" in fallback.text
    none = compare(parse_argv([str(tmp_path / "s"), "tasks=null", "plot=false"]))
    assert none.downstream is None and "hellaswag" not in none.rows[0] and not none.paired


def test_runs_without_downstream_results_are_unaffected_and_asking_for_tasks_says_how(
    tmp_path, capsys
):
    fake_run(tmp_path / "s" / "0", ["optimizer.lr=1e-3"], [3.0, 2.6])
    fake_run(tmp_path / "s" / "1", ["optimizer.lr=3e-3"], [2.9, 2.3])
    plain = compare(parse_argv([str(tmp_path / "s"), "plot=false"]))
    assert plain.downstream is None and plain.paired == []
    assert "downstream:" not in plain.text and "McNemar" not in plain.text
    with open(plain.csv_path, newline="") as f:
        assert "downstream_files" not in next(csv.reader(f))
    assert main([str(tmp_path / "s"), "tasks=[hellaswag]", "plot=false"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        "no run has downstream results" in err and "python -m gptlab.evaluate task=hellaswag" in err
    )
    assert "\n" not in err
    assert main([str(tmp_path / "s"), "task_metric=f1"]) == 1
    assert "task_metric=f1; use primary, acc, acc_norm, acc_char" in capsys.readouterr().err


def test_a_run_missing_results_gets_blanks_and_a_note_and_unknown_tasks_are_named(tmp_path, capsys):
    folder = fake_run(tmp_path / "s" / "0", ["optimizer.lr=1e-3"], [3.0, 2.6])
    fake_run(tmp_path / "s" / "1", ["optimizer.lr=3e-3"], [2.9, 2.3])
    results.write(
        results.step_file(folder, 20),
        {
            "step": 20,
            "tasks": {"piqa": task_entry({"acc": [1, 0, 1, 1]}, primary="acc")},
            "suites": {},
        },
    )
    result = compare(parse_argv([str(tmp_path / "s"), "plot=false"]))
    rows = {r["run"]: r for r in result.rows}
    assert rows["0"]["piqa"] == 0.75 and rows["1"]["piqa"] is None
    assert "1 run(s) have no downstream results: 1" in result.text
    assert all(t.test is None for t in result.paired)  # nothing to pair with
    assert main([str(tmp_path / "s"), "tasks=[hellaswag]"]) == 1
    assert (
        "no run has downstream results for hellaswag (the evaluated tasks are: piqa)"
        in capsys.readouterr().err
    )


def test_checkpoint_evaluations_of_the_last_checkpoint_merge_and_the_newest_wins(tmp_path):
    """evaluate task=hellaswag then task=piqa on last.ckpt: both count; they replace an older
    in-loop HellaSwag; the held-out-loss JSON beside them and older checkpoints are ignored."""
    run = fake_run(tmp_path / "r", [], [3.0])
    ckpts = run / "checkpoints"
    ckpts.mkdir()
    in_loop = results.write(
        results.step_file(run, 10),
        {
            "step": 10,
            "tasks": {
                "hellaswag": task_entry({"acc_norm": [0, 0, 0, 1]}),
                "arc": task_entry({"acc": [1, 1]}),
            },
        },
    )
    full_hs = results.write(
        ckpts / "last.eval-hellaswag.json",
        {"tasks": {"hellaswag": task_entry({"acc_norm": [1, 1, 0, 1, 1]})}},
    )
    piqa = results.write(
        ckpts / "last.eval-piqa.json", {"tasks": {"piqa": task_entry({"acc": [1, 0]})}}
    )
    old = results.write(
        ckpts / "step000003.eval-piqa.json", {"tasks": {"piqa": task_entry({"acc": [0, 0]})}}
    )
    (ckpts / "last.eval-pydoc-val.json").write_text(json.dumps({"loss": 2.0}))
    for age, path in enumerate([old, in_loop, full_hs, piqa]):
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    assert result_files(run) == [in_loop, full_hs, piqa]
    assert find_result(run) == piqa
    found = load_downstream(read_run(run))
    assert (
        found.cell("hellaswag", "primary").value == 0.8
        and found.cell("hellaswag", "primary").n == 5
    )
    assert found.cell("piqa", "primary").value == 0.5 and found.cell("arc", "primary").value == 1.0
    assert (
        found.tasks["hellaswag"].source == full_hs and found.step == 10
    )  # arc is still the loop's


def test_logged_eval_metrics_are_the_fallback_without_result_files(tmp_path):
    """A run whose files are gone (or a wandb run) still shows the final logged values, named
    as the in-loop callback logs them; the primary rule comes from the shipped task YAML."""
    folders = [
        fake_run(tmp_path / "s" / str(i), [f"optimizer.lr={lr}"], [3.0, 2.6 - i])
        for i, lr in enumerate(["1e-3", "3e-3"])
    ]
    for i, folder in enumerate(folders):
        logged = {
            "eval/hellaswag/acc": 0.28,
            "eval/hellaswag/acc_se": 0.0045,
            "eval/hellaswag/acc_norm": 0.3 + 0.01 * i,
            "eval/hellaswag/acc_norm_se": 0.0046,
            "eval/hellaswag/bpb": 1.2,
            "eval/hellaswag/centered": 0.07,
            "eval/winogrande/acc": 0.51,  # primary acc (its YAML), though acc_norm is logged too
            "eval/winogrande/acc_se": 0.014,
            "eval/winogrande/acc_norm": 0.49,
            "eval/winogrande/acc_norm_se": 0.014,
            "eval/core/lambada_openai/acc": 0.1,
            "eval/core/lambada_openai/acc_se": 0.01,
            "eval/core": 0.05 + 0.01 * i,
            "eval/core_se": 0.004,
            "eval/seconds": 3.0,
        }
        with open(folder / "metrics.csv", newline="") as f:
            old = list(csv.DictReader(f))
        with open(folder / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*old[0], *logged])
            writer.writeheader()
            writer.writerows([*old, {"step": 19, **logged}])
    result = compare(parse_argv([str(tmp_path / "s"), "plot=false"]))
    assert result.downstream.columns == ["core", "hellaswag", "winogrande"]  # members inside core
    rows = {r["run"]: r for r in result.rows}
    assert rows["1"]["hellaswag"] == pytest.approx(0.31) and rows["1"]["_se"]["hellaswag"] == 0.0046
    assert rows["1"]["winogrande"] == pytest.approx(0.51)
    assert rows["1"]["core"] == pytest.approx(0.06) and rows["1"]["_se"]["core"] == 0.004
    assert "0.3100±0.0046" in result.text and "seconds" not in result.downstream.columns
    assert "no per-item outcomes" in result.text and all(t.test is None for t in result.paired)


def test_groups_with_different_seeds_are_paired_in_order_and_say_so(tmp_path):
    outcomes = {}
    rng = random.Random(3)
    for job, (pos, seed) in enumerate([("a", 1), ("a", 2), ("b", 5), ("b", 6)]):
        folder = fake_run(
            tmp_path / "s" / str(job), [f"model.pos={pos}", f"seed={seed}"], [3.0 - job * 0.01]
        )
        outcomes[job] = draws(rng, 30, 0.5)
        results.write(
            results.step_file(folder, 10),
            {"step": 10, "tasks": {"piqa": task_entry({"acc": outcomes[job]}, primary="acc")}},
        )
    result = compare(parse_argv([str(tmp_path / "s"), "baseline=model.pos=a", "plot=false"]))
    (t,) = result.paired
    assert t.paired_by == "order" and t.pairs == 2
    ref = outcomes[0] + outcomes[1]
    other = outcomes[2] + outcomes[3]
    assert (t.test.b01, t.test.b10) == discordant(ref, other)


# -------------------------------------------------------------------- end to end
HELLASWAG_ITEMS = [
    {
        "ctx": "the cat sat on the",
        "endings": ["mat.", "sky and the moon.", "idea", "run"],
        "label": 2,
    },
    {
        "ctx": "a man opens the door and",
        "endings": ["walks in.", "sings", "is the", "blue"],
        "label": 1,
    },
    {
        "ctx": "she picks up the cup and",
        "endings": ["flies", "drinks the tea.", "red", "of"],
        "label": 1,
    },
    {"ctx": "the dog runs to the", "endings": ["park.", "and", "seven", "why not"], "label": 1},
    {
        "ctx": "he writes a letter to his",
        "endings": ["the", "friend.", "under", "green"],
        "label": 1,
    },
]


@pytest.fixture(scope="module")
def two_trained_runs(tmp_path_factory):
    """Two real micro runs (learning rates 1e-3 and 3e-3), each scored on five HellaSwag items."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gptlab.evaluate import evaluate
    from gptlab.train import train
    from tests.conftest import CONF_DIR, TINY_OVERRIDES, compose_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e")
    data = root / "hellaswag_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG_ITEMS))
    sweep = root / "sweep"
    try:
        for job, lr in enumerate(["1e-3", "3e-3"]):
            overrides = [*TINY_OVERRIDES, "~callbacks.sample_text", f"optimizer.lr={lr}"]
            cfg = compose_train(overrides, sweep / str(job))
            train(cfg, overrides=[f"optimizer.lr={lr}"])
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                ecfg = compose(
                    "evaluate",
                    overrides=[
                        "task=hellaswag",
                        f"task.path={data}",
                        f"ckpt={sweep / str(job) / 'checkpoints' / 'last.ckpt'}",
                        "progress=false",
                    ],
                )
            evaluate(ecfg)
    finally:
        torch.set_num_threads(threads)
    return sweep


def test_end_to_end_real_runs_scored_by_gptlab_evaluate(two_trained_runs, capsys):
    sweep = two_trained_runs
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.eval-hellaswag.json").is_file()
    assert main([str(sweep), "baseline=optimizer.lr=1e-3", "plot=false"]) == 0
    out = capsys.readouterr().out
    assert (
        "hellaswag" in out
        and "paired McNemar tests" in out
        and "above the noise at this scale" in out
    )
    result = compare(parse_argv([str(sweep), "baseline=optimizer.lr=1e-3", "plot=false"]))
    saved = {
        job: results.read(sweep / job / "checkpoints" / "last.eval-hellaswag.json")["tasks"][
            "hellaswag"
        ]
        for job in ("0", "1")
    }
    rows = {r["run"]: r for r in result.rows}
    for job, r in saved.items():
        assert rows[job]["hellaswag"] == pytest.approx(r["metrics"]["acc_norm"])
        assert rows[job]["_se"]["hellaswag"] == pytest.approx(r["metrics"]["acc_norm_se"])
    (t,) = result.paired
    b01, b10 = discordant(saved["0"]["items"]["acc_norm"], saved["1"]["items"]["acc_norm"])
    assert (t.test.b01, t.test.b10, t.test.n) == (b01, b10, 5)
    expected = scipy_stats.binomtest(b01, b01 + b10).pvalue if b01 + b10 else 1.0
    assert t.test.p == pytest.approx(expected)


def test_reading_downstream_results_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, gptlab.analysis.downstream, gptlab.analysis.report, gptlab.analysis.stats; "
        "assert 'torch' not in sys.modules and 'scipy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
