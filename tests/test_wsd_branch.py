"""Warm-up/stable/decay branches: a real tiny ladder with wsd=true, the schedule a branch follows, bad input."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from gptlab.errors import ConfigError
from gptlab.training.depth import apply_depth
from gptlab.training.schedules import WarmupStableDecay
from gptlab.training.wsd_branch import decay_start
from tests.conftest import compose_train
from tests.test_ladder import run_tiny_ladder


@pytest.mark.parametrize(
    ("steps", "warmup", "fraction"), [(63, 10, 0.2), (15, 10, 0.2), (211, 0, 0.35)]
)
def test_the_branch_point_is_where_wsd_starts_its_decay(steps, warmup, fraction):
    assert (
        decay_start(steps, warmup, fraction)
        == WarmupStableDecay(warmup, steps, 0.0, fraction).decay_start
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return run_tiny_ladder(tmp_path_factory.mktemp("wsd"), "wsd=true", "samples=50")


@pytest.mark.slow
def test_each_smaller_budget_is_a_decay_off_the_stable_run(sweep):
    folder, printed = sweep
    assert "WSD branching: 4 runs become 2 stable runs and 2 decays" in printed
    assert (
        printed.count("gptlab: a WSD branch, using its stable run's {'data.global_batch_tokens'")
        == 2
    )
    stable = {}
    for job in sorted((folder / "stable").glob("[0-9]*")):
        config = yaml.safe_load((job / "config.yaml").read_text())
        stable[config["scaled"]["depth"]] = (job, config)
    for job in sorted((folder / "branches").glob("[0-9]*")):
        config = yaml.safe_load((job / "config.yaml").read_text())
        parent, parent_config = stable[config["scaled"]["depth"]]
        steps = config["trainer"]["max_steps"]
        start = decay_start(steps, 10, 0.2)
        assert config["ckpt_path"] == str(parent / "checkpoints" / f"step{start:06d}.ckpt")
        assert start in parent_config["callbacks"]["model_checkpoint"]["at_steps"]
        for key in ("global_batch_tokens", "batch_size"):
            assert config["data"][key] == parent_config["data"][key]
        assert config["optimizer"] == parent_config["optimizer"]  # the same lr and weight decay
        assert config["scaled"]["branch_of"]["ckpt_path"] == config["ckpt_path"]
        with open(job / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert int(rows[0]["step"]) + 1 > start and any(r.get("val/loss") for r in rows)
        # The branch decays on its own schedule, not the stable run's it was restored from.
        saved = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
        schedule = saved["lr_schedulers"][0]["lr_lambdas"][0]
        assert (schedule["total_steps"], schedule["decay_start"]) == (steps, start)
    fit = json.loads((folder / "fit.json").read_text())
    assert len(fit["points"]) == 4 and {p["budget"] for p in fit["points"]} == {3e8, 1e9}


@pytest.mark.slow
def test_a_branch_resumes_from_its_own_checkpoints(sweep, tmp_path):
    folder, _ = sweep
    branch = sorted((folder / "branches").glob("[0-9]*"))[0]
    overrides = yaml.safe_load((branch / ".hydra" / "overrides.yaml").read_text())
    for resume, expected in ((str(branch), None), ("auto", None)):
        cfg = compose_train([*overrides, f"resume={resume}"], branch)
        apply_depth(cfg, [*overrides, f"resume={resume}"])
        assert cfg.ckpt_path is expected and cfg.resume == resume
    fresh = compose_train([*overrides, "resume=auto"], tmp_path / "new")
    apply_depth(fresh, [*overrides, "resume=auto"])
    assert fresh.ckpt_path.startswith(str(folder / "stable")) and fresh.resume is None


def test_a_branch_without_its_stable_run_is_refused(tmp_path):
    overrides = ["model=scaled", "model.depth=1", "scheduler=wsd", f"model.wsd_from={tmp_path}"]
    cfg = compose_train(overrides, tmp_path / "run")
    with pytest.raises(ConfigError, match="holds no stable run of depth 1 and seed 1337"):
        apply_depth(cfg, overrides)


def test_branching_needs_the_wsd_schedule(tmp_path):
    overrides = ["model=scaled", "model.depth=1", "model.wsd_branches=[1e9]"]
    cfg = compose_train(overrides, tmp_path / "run")
    with pytest.raises(ConfigError, match="need scheduler=wsd"):
        apply_depth(cfg, overrides)
