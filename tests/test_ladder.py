"""``python -m gptlab.ladder``: a real tiny ladder through Hydra multirun, fit-only mode, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from gptlab.errors import ConfigError
from gptlab.ladder import ladder

# Depths 1 and 2 at 16 per layer, 32-token context: 18 to 211 steps of at most 256 tokens.
TINY = [
    "model.aspect_ratio=16",
    "model.head_dim=16",
    "model.block_size=32",
    "model.ref_depth=1",
    "model.ref_batch_tokens=256",
    "data.val_batches=2",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar.refresh_rate=0",
]


def run_tiny_ladder(root, *options: str) -> tuple:
    """``python -m gptlab.ladder`` on depths 1-2 x budgets 3e8-1e9 in ``root``; (sweep, stdout)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptlab.ladder",
            "budgets=[3e8,1e9]",
            "depths=[1,2]",
            f"sweep_dir={root}/sweep",
            *options,
            *TINY,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return root / "sweep", done.stdout


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return run_tiny_ladder(tmp_path_factory.mktemp("ladder"), "samples=100")


@pytest.mark.slow
def test_the_ladder_runs_every_budget_and_depth_and_fits_them(sweep):
    folder, printed = sweep
    jobs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        config = yaml.safe_load((job / "config.yaml").read_text())
        scaled = config["scaled"]
        assert scaled["tokens"] == int(scaled["flops_budget"] / (6 * scaled["params"]))
        assert (
            config["trainer"]["val_check_interval"] == scaled["max_steps"]
        )  # validated at the end
        seen.add((scaled["flops_budget"], scaled["depth"]))
    assert seen == {(c, d) for c in (3e8, 1e9) for d in (1, 2)}
    fit = json.loads((folder / "fit.json").read_text())
    assert [b["budget"] for b in fit["fit"]["budgets"]] == [3e8, 1e9]
    assert math.isfinite(fit["fit"]["a"]["value"]) and len(fit["points"]) == 4
    assert (folder / "ladder.png").stat().st_size > 10_000
    assert "N_opt ∝ C^a" in printed and "C=3e+08 depth=1: N=3,072" in printed


@pytest.mark.slow
def test_fit_mode_reads_the_sweep_back_without_launching(sweep):
    folder, _ = sweep
    before = sorted(p.name for p in folder.iterdir())
    fit, text = ladder([f"fit={folder}", "samples=100"])
    assert sorted(p.name for p in folder.iterdir()) == before
    assert len(fit.budgets) == 2 and "2 sizes, so its optimum is the best size measured" in text


def test_a_budget_too_small_for_one_step_is_refused_before_launching(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"budget 1e\+05 FLOPs is too small for depth 1 \(N=3,072\) .* raise the budget",
    ):
        ladder(["budgets=[1e5,1e9]", "depths=[1,2]", f"sweep_dir={tmp_path}/sweep", *TINY])
    assert not (tmp_path / "sweep").exists()


def test_a_depth_the_head_size_does_not_divide_is_refused_before_launching(tmp_path):
    with pytest.raises(ConfigError, match="does not divide"):
        ladder(
            [
                "budgets=[1e9]",
                "depths=[1]",
                f"sweep_dir={tmp_path}/sweep",
                *TINY,
                "model.head_dim=32",
            ]
        )
    assert not (tmp_path / "sweep").exists()


def test_a_budget_that_is_not_a_list_is_refused(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^budgets=\S+ must be a non-empty list, e.g. budgets=\[1,2\]"
    ):
        ladder(["budgets=1e9", f"sweep_dir={tmp_path}/sweep"])


def test_help_lists_every_option(capsys):
    from omegaconf import OmegaConf

    from gptlab.ladder import CONFIG, main

    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("``python -m gptlab.ladder``")
    assert all(f"\n{key}:" in printed for key in OmegaConf.load(CONFIG))
