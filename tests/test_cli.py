"""The commands a user types, run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO


def run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_debug_run_trains_and_prints_loss_and_sample(tmp_path):
    out = run_cli(["gptlab.train", "debug=default", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "parameters" in out.stdout and "val loss" in out.stdout and "--- sample" in out.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (out.stdout + out.stderr).count(
        "GPU available"
    ) == 1  # Lightning's info lines once, not twice
    assert (
        "litlogger" not in out.stdout + out.stderr
    )  # without Lightning's advert for its cloud logger
    assert "GPU available" in (tmp_path / "run" / "train.log").read_text()  # and in the run's log


def test_default_run_folder_is_under_outputs_with_subsecond_time(tmp_path):
    out = run_cli(
        ["gptlab.train", "debug=default", "trainer.max_steps=1", "trainer.val_check_interval=1"],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert (
        len(run.name.split("-")) == 4
    )  # HH-MM-SS-microseconds: two runs in one second never collide
    assert (run / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.n_embd=65", "not divisible"),
        ("data.path=/nonexistent/corpus.txt", "does not exist"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, override, expected):
    out = run_cli(
        ["gptlab.train", "debug=default", override, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], out.stderr[-2000:]


def test_unknown_config_option_uses_hydra_message(tmp_path):
    out = run_cli(["gptlab.train", "model=does_not_exist"], cwd=tmp_path)
    assert (
        out.returncode == 1 and "does_not_exist" in out.stderr and "Available options" in out.stderr
    )


@pytest.mark.slow
def test_own_presets_outside_the_package_with_config_dir(tmp_path):
    """The configs live inside the package; a user's own group files sit in a folder of theirs."""
    mine = tmp_path / "my_conf" / "model"
    mine.mkdir(parents=True)
    nano = (REPO / "gptlab" / "conf" / "model" / "nano.yaml").read_text()
    (mine / "mine.yaml").write_text(nano.replace("n_layer: 4", "n_layer: 3"))
    assert "n_layer: 4" in nano  # else the replacement above tests nothing
    out = run_cli(
        ["gptlab.train", "--config-dir", str(tmp_path / "my_conf"), "model=mine", "--cfg", "job"],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "n_layer: 3" in out.stdout and "n_embd: 128" in out.stdout


def test_ddp_two_processes_on_cpu_write_one_checkpoint(tmp_path):
    """A real 2-process DDP job (gloo on CPU): it finishes, in one run folder, one checkpoint."""
    out = run_cli(
        [
            "gptlab.train",
            "debug=default",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "logger=csv",
            "trainer.max_steps=4",
            "trainer.val_check_interval=4",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Starting with 2 processes" in out.stdout + out.stderr
    assert out.stdout.count("parameters (") == 1  # printing is rank-zero only
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the child did not make its own folder
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt", "step000004.ckpt"]
    data = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert data["global_step"] == 4
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") >= 2


def test_repo_has_no_shared_data_committed():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert not [p for p in tracked if p.endswith(("tinyshakespeare.txt", ".tiktoken"))]


def test_config_errors_are_found_before_lightning_is_imported():
    """A typo is reported in seconds: the CLI's module and its error types leave Lightning unimported."""
    code = (
        "import sys, gptlab.train, gptlab.errors; "
        "from gptlab.errors import TrainingInterrupted; print(sorted(m for m in sys.modules if m == 'lightning'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", (
        "importing gptlab.train (or its error types) imported Lightning"
    )
