"""Sweeps through the real command line: a multirun grid, an Optuna search, bad sweep values.

Each subprocess starts Python, Hydra, Lightning and torch afresh (~10 s on a busy CPU),
so one grid serves several tests (module-scoped fixture), and the grid is built to
show everything at once: two good jobs around a failing one.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from gptlab.analysis.plot import comparison_figure
from gptlab.compare import compare, parse_argv
from tests.conftest import CONF_DIR, TINY_OVERRIDES

SWEEP_OVERRIDES = [*TINY_OVERRIDES, "~callbacks.sample_text"]


def run_train(
    args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    # One thread: a micro model gains nothing from more, and on a shared CPU extra threads
    # make each step 10x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gptlab.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def flat_config(run_dir: Path) -> dict:
    """The resolved config with the run's own folder written as <run>, so two jobs compare by content."""
    text = (run_dir / "config.yaml").read_text().replace(str(run_dir), "<run>")
    return {k: v for k, v in _flatten(yaml.safe_load(text)).items()}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, name) if isinstance(v, dict) and v else {name: v})
    return out


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``--multirun optimizer.lr=1e-3,bad,3e-3``: job 1 cannot build its optimizer."""
    root = tmp_path_factory.mktemp("grid")
    out = run_train(
        [
            "--multirun",
            *SWEEP_OVERRIDES,
            "optimizer.lr=1e-3,bad,3e-3",
            f"hydra.sweep.dir={root}/sweep",
        ],
        cwd=root,
    )
    return root / "sweep", out


@pytest.mark.slow
def test_multirun_writes_one_folder_per_job_differing_only_in_the_swept_value(grid):
    sweep, out = grid
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    for job in ("0", "2"):
        run = sweep / job
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file()
        assert (run / "summary.json").is_file() and not (run / "error.txt").exists()
    a, b = flat_config(sweep / "0"), flat_config(sweep / "2")
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"optimizer.lr"}
    assert (a["optimizer.lr"], b["optimizer.lr"]) == (0.001, 0.003)
    overrides = [
        yaml.safe_load((sweep / j / ".hydra" / "overrides.yaml").read_text()) for j in ("0", "2")
    ]
    assert set(overrides[0]) ^ set(overrides[1]) == {"optimizer.lr=0.001", "optimizer.lr=0.003"}


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_finish(grid):
    sweep, out = grid
    error = (sweep / "1" / "error.txt").read_text()
    assert "lr" in error.lower() or "str" in error, error[-500:]
    assert "job failed" in out.stderr
    assert not (sweep / "1" / "checkpoints" / "last.ckpt").exists()
    for job in ("0", "2"):  # before and after the failure
        with open(sweep / job / "metrics.csv", newline="") as f:
            assert any(r.get("val/loss") for r in csv.DictReader(f))


@pytest.mark.slow
def test_compare_over_the_sweep_writes_table_csv_and_two_curves(grid, tmp_path):
    sweep, _ = grid
    result = compare(parse_argv([str(sweep), "x=tokens", f"output_dir={tmp_path}"]))
    assert "optimizer.lr" in result.text and "final val/loss" in result.text
    with open(tmp_path / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    finished = [r for r in rows if not r["status"].startswith("failed")]
    assert sorted(r["optimizer.lr"] for r in finished) == ["0.001", "0.003"]
    assert all(math.isfinite(float(r["final val/loss"])) and int(r["params"]) > 0 for r in finished)
    assert [r["run"] for r in rows if r["status"].startswith("failed")] == ["1"]
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    fig = comparison_figure(result.runs, result.groups, x="tokens")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and all(
        len(line.get_xdata()) == 2 for line in lines
    )  # 2 validations each
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == [
        "optimizer.lr=0.001",
        "optimizer.lr=0.003",
    ]


@pytest.mark.slow
def test_optuna_search_of_three_trials_returns_a_finite_best_value(tmp_path):
    # optuna 2.10 (pinned by hydra-optuna-sweeper 1.3) uses SQLAlchemy APIs that 2.x flags
    # with MovedIn20Warning: silence exactly that, nothing else.
    out = run_train(
        [
            "hparams_search=lr_wd",
            "hydra.sweeper.n_trials=3",
            *SWEEP_OVERRIDES,
            f"hydra.sweep.dir={tmp_path}/opt",
        ],
        cwd=tmp_path,
        env={"PYTHONWARNINGS": "ignore::sqlalchemy.exc.MovedIn20Warning"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "opt" / "optimization_results.yaml").read_text())
    assert math.isfinite(results["best_value"]) and results["best_value"] < math.log(103)
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay"}
    assert 1e-4 <= results["best_params"]["optimizer.lr"] <= 1e-2
    assert sorted(p.name for p in (tmp_path / "opt").iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert "MovedIn20Warning" not in out.stderr


@pytest.fixture(scope="module")
def bad_value(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("bad")
    return root / "sweep", run_train(
        ["--multirun", *SWEEP_OVERRIDES, "model.n_layer=two", f"hydra.sweep.dir={root}/sweep"],
        cwd=root,
    )


@pytest.mark.slow
def test_sweep_value_of_the_wrong_type_never_trains(bad_value):
    sweep, out = bad_value
    assert "n_layer" in out.stderr and "two" in out.stderr
    assert not list(sweep.glob("*/checkpoints"))


@pytest.mark.slow
def test_sweep_value_of_the_wrong_type_fails_before_any_job_with_hydras_message(bad_value):
    sweep, out = bad_value
    assert out.returncode == 1 and "could not be converted to Integer" in out.stderr
    assert not (sweep / "0").exists()


# ------------------------------------------------------------------ configs only (fast)
def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train", overrides=[*overrides, "hydra.sweep.dir=/tmp/sweep"], return_hydra_config=True
        )


def test_optuna_search_config_is_tpe_with_a_fixed_seed():
    cfg = compose_with_hydra(["hparams_search=lr_wd", "hydra.sweeper.n_trials=7"])
    sweeper = cfg.hydra.sweeper
    assert (
        sweeper._target_.endswith("OptunaSweeper")
        and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    )
    assert (
        sweeper.sampler.seed == 1234 and sweeper.n_trials == 7 and sweeper.direction == "minimize"
    )
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay"}
    assert cfg.optimized_metric == "val/loss"


@pytest.mark.filterwarnings(
    r"ignore:\s*.hydra/launcher/\w+. is validated against ConfigStore schema:UserWarning"
)
def test_joblib_launcher_config_runs_processes_in_parallel():
    launcher = compose_with_hydra(
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
    ).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 3 and launcher.backend == "loky"


@pytest.mark.filterwarnings(
    r"ignore:\s*.hydra/launcher/\w+. is validated against ConfigStore schema:UserWarning"
)
def test_submitit_slurm_launcher_follows_the_trainer():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher",
        reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]')",
    )
    cfg = compose_with_hydra(
        ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)


def test_fsdp_trainer_wraps_each_block():
    import hydra

    from gptlab.model.gpt import Block

    cfg = compose_with_hydra(["trainer=fsdp"])
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert type(strategy).__name__ == "FSDPStrategy" and strategy.kwargs["use_orig_params"] is True
    assert Block in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
