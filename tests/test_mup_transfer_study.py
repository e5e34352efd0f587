"""experiments/mup_transfer/table.py on run folders that gptlab really wrote.

One real ``python -m gptlab.train --multirun`` of the study's own config (2 widths x 2 lrs x
2 seeds, 3 steps, µP) checks that the table reads what training writes. Then those real
folders are copied into a full sp/µP x 4 widths x 7 lrs x 3 seeds study whose final losses
are rewritten to a known landscape (sp's optimum moves one x2 step per doubling of width,
µP's stays put, wider is better), so the best-lr, transfer and monotonicity verdicts have
answers fixed in advance. The files keep gptlab's exact layout because they are gptlab's.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, needs_shakespeare

_PATH = REPO / "experiments" / "mup_transfer" / "table.py"
_spec = importlib.util.spec_from_file_location("mup_transfer_table", _PATH)
table = importlib.util.module_from_spec(_spec)
sys.modules["mup_transfer_table"] = table  # dataclasses look their module up
_spec.loader.exec_module(table)

LRS = {-8: 2**-8, -7: 2**-7}
WIDTHS = (128, 256, 512, 1024)
GRID = range(-12, -5)  # log2 lr -12 .. -6
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study's config, shrunk: widths 32 and 64 (µP from 32), lrs 2^-8 and 2^-7, seeds 1 and 2."""
    sweep = tmp_path_factory.mktemp("mup_sweep")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable, "-m", "gptlab.train", "--multirun",
            "--config-dir", str(_PATH.parent), "experiment=mup_transfer",
            "model.parametrization=mup", "model.mup.base_width=32", "model.n_embd=32,64",
            f"optimizer.lr={LRS[-8]},{LRS[-7]}", "seed=1,2",
            "trainer.max_steps=3", "scheduler.warmup_steps=1", "trainer.log_every_n_steps=1",
            "data.val_tokens=1024", f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def summary_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["metrics"]["val/loss"]


@pytest.mark.slow
@needs_shakespeare
def test_reads_a_real_sweep(real_sweep: Path, tmp_path: Path) -> None:
    jobs = sorted(p for p in real_sweep.iterdir() if (p / "summary.json").is_file())
    assert len(jobs) == 8
    results = table.report([str(real_sweep)], tmp_path, draws=200)
    assert set(results) == {"mup"}
    res = results["mup"]
    assert sorted(res.widths) == [32, 64] and (res.reference, res.target) == (32, 64)
    for job in jobs:
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        cell = res.widths[cfg["model"]["n_embd"]].cells[math.log2(cfg["optimizer"]["lr"])]
        assert cell[cfg["seed"]] == pytest.approx(summary_loss(job))
    for wr in res.widths.values():
        assert sorted(wr.cells) == [-8, -7] and all(len(c) == 2 for c in wr.cells.values())
        assert wr.best == min(wr.means, key=wr.means.get)
        assert wr.at_edge  # a two-point grid: the best is always on its edge
    text = (tmp_path / "results.md").read_text()
    assert "after 3 steps" in text and "grid edge" in text
    assert (tmp_path / "transfer.png").stat().st_size > 10_000


def landscape(parametrization: str, width: int, k: int, seed: int) -> float:
    """Known losses: a parabola in log2 lr, 0.05 lower per doubling of width, seed noise ~0.002.

    sp's optimum is 2^-8 at 128 and one step lower per doubling (2^-11 at 1024); µP's is
    2^-8 at every width.
    """
    doublings = round(math.log2(width / 128))
    best = -8 - doublings if parametrization == "sp" else -8
    noise = 0.002 * (seed - 2) + 0.0005 * ((7 * k + width + 3 * seed) % 3 - 1)
    return 2.5 - 0.05 * doublings + 0.03 * (k - best) ** 2 + noise


def clone_run(template: Path, dest: Path, p: str, width: int, k: int, seed: int) -> None:
    """A copy of a real run folder, its config and final val/loss rewritten to this cell."""
    shutil.copytree(template, dest)
    loss, lr = landscape(p, width, k, seed), 2.0**k
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["model"].update(parametrization=p, n_embd=width)
    cfg["optimizer"]["lr"], cfg["seed"], cfg["trainer"]["max_steps"] = lr, seed, 150
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    overrides = [f"model.parametrization={p}", f"model.n_embd={width}", f"optimizer.lr={lr}"]
    for name in ("overrides.yaml", ".hydra/overrides.yaml"):
        (dest / name).write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    with open(dest / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    [*_, last] = [r for r in rows if r["val/loss"]]
    last["val/loss"] = repr(loss)
    with open(dest / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    summary = json.loads((dest / "summary.json").read_text())
    summary["metrics"]["val/loss"] = loss
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture(scope="module")
def known_study(real_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """run.sh's layout, every cell a rewritten real run; one diverged and one interrupted seed."""
    template = next(p for p in sorted(real_sweep.iterdir()) if (p / "summary.json").is_file())
    root = tmp_path_factory.mktemp("known_study")
    for p in ("sp", "mup"):
        for w in WIDTHS:
            for k in GRID:
                for s in SEEDS:
                    clone_run(template, root / p / f"w{w}" / f"log2lr{k}" / str(s), p, w, k, s)
    # sp at width 1024, lr 2^-6: seed 1 diverged as gptlab's guard reports it (no metrics.csv)
    diverged = root / "sp" / "w1024" / "log2lr-6" / "1"
    (diverged / "metrics.csv").unlink()
    summary = json.loads((diverged / "summary.json").read_text())
    summary.update(status="failed", metrics={})
    (diverged / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (diverged / "error.txt").write_text(
        "error: non-finite gradient (norm inf) on data batch 40 at step 41; no checkpoint was "
        "saved before it. Lower optimizer.lr (now 0.0156), raise scheduler.warmup_steps, or set "
        "trainer.skip_nonfinite=true to skip such steps"
    )
    # µP at width 512, lr 2^-12: seed 3 was stopped halfway, so it has no answer yet
    stopped = root / "mup" / "w512" / "log2lr-12" / "3"
    summary = json.loads((stopped / "summary.json").read_text())
    summary["status"] = "interrupted"
    (stopped / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return root


@pytest.mark.slow
@needs_shakespeare
def test_known_answers(known_study: Path, tmp_path: Path) -> None:
    results = table.report([str(known_study)], tmp_path, draws=500)
    sp, mup = results["sp"], results["mup"]
    assert [sp.widths[w].best for w in WIDTHS] == [-8, -9, -10, -11]
    assert [mup.widths[w].best for w in WIDTHS] == [-8, -8, -8, -8]
    assert (sp.shift, sp.within_one_step, sp.boot_within_one_step) == (-3, False, 0.0)
    assert (mup.shift, mup.within_one_step, mup.boot_within_one_step) == (0, True, 1.0)
    for wr in mup.widths.values():
        assert wr.vertex == pytest.approx(-8, abs=0.1)
        assert wr.p_left < 0.01 and wr.p_right < 0.01 and wr.boot_share == 1.0
        assert not wr.at_edge
    # near the proxy's optimum µP improves with every widening; sp does not (it has moved away)
    assert mup.near_optimum == [-9, -8, -7] and all(mup.monotone.values())
    assert all(p < 0.01 for ps in mup.monotone_p.values() for p in ps)
    assert sp.near_optimum == [-9, -8, -7] and not any(sp.monotone.values())
    assert sp.best_loss_monotone and mup.best_loss_monotone  # each width tuned: wider wins
    # the diverged seed makes its cell diverged (never best), the interrupted one is left out
    assert math.isinf(sp.widths[1024].means[-6]) and len(sp.widths[1024].cells[-6]) == 3
    assert len(mup.widths[512].cells[-12]) == 2
    text = (tmp_path / "results.md").read_text()
    assert "1 run folder(s) had no final loss yet" in text
    assert "diverged (1/3)" in text and "after 150 steps" in text
    assert "shift -3 grid steps. Within one x2 step: **no**" in text
    assert "shift +0 grid steps. Within one x2 step: yes" in text
    assert "there is 0 (0 expected" in text  # µP's landscape equals sp's at the base width


def test_edge_of_the_grid_is_flagged() -> None:
    cells = {k: {1: 3.0 - 0.1 * k, 2: 3.01 - 0.1 * k} for k in (-10, -9, -8)}
    wr = table.analyse_width(256, cells, boot=[-8.0, -8.0])
    assert wr.best == -8 and wr.at_edge and wr.vertex is None and wr.p_right is None


def test_bootstrap_resamples_the_seeds() -> None:
    # seed 1 prefers 2^-9, seeds 2 and 3 make 2^-8 best on the mean; a draw picks 2^-9 when
    # it holds seed 1 at least twice: 7/27 of draws (binomial, 3 draws, p = 1/3)
    cells = {-9: {1: 2.40, 2: 2.50, 3: 2.50}, -8: {1: 2.45, 2: 2.45, 3: 2.45}}
    boot = table.bootstrap_best({128: cells}, draws=2000)[128]
    wr = table.analyse_width(128, cells, boot)
    assert wr.best == -8 and wr.boot_interval == (-9, -8)
    assert wr.boot_share == pytest.approx(20 / 27, abs=0.04)
