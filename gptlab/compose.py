"""What ``python -m gptlab.train`` composes, and what it hands back to a sweeper.

``resume=<run folder>`` composes the config again from that run's recorded overrides
followed by today's, so ``python -m gptlab.train resume=<folder>`` needs nothing else and
``resume=<folder> trainer.max_steps=5000`` extends a run. ``resume=auto`` and new runs
use the command line as it is.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from gptlab.errors import ConfigError
from gptlab.training import run as runs


def compose_run(cfg: DictConfig, given: list[str]) -> tuple[DictConfig, list[str]]:
    """The config to run and the overrides that compose it (see the module docstring)."""
    resume = cfg.get("resume")
    if not resume or resume == "auto":
        return cfg, given
    folder = Path(str(resume)).expanduser().absolute()
    today = [o for o in given if runs.override_key(o) != "resume"]
    overrides = runs.merge_overrides(runs.RunFolder(folder).recorded_overrides(), today)
    return hydra.compose(config_name="train", overrides=[*overrides, f"resume={folder}"]), overrides


def optimized_value(
    metrics: dict[str, float], name: str | None, required: bool = True
) -> float | None:
    """The metric a sweeper optimises; a clear error when the run never logged it.

    Outside a sweep nobody reads the value, so a run that never logged it is not an
    error then (``required=False``).
    """
    if not name:
        return None
    if name not in metrics:
        if not required:
            return None
        raise ConfigError(
            f"optimized_metric={name!r} was never logged; logged metrics are {sorted(metrics)}"
        )
    return metrics[name]
