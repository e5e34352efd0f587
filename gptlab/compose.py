"""What ``python -m gptlab.train`` composes, and what it hands back to a sweeper.

``resume=<run folder>`` composes the config again from that run's recorded overrides
followed by today's, so ``python -m gptlab.train resume=<folder>`` needs nothing else and
``resume=<folder> trainer.max_steps=5000`` extends a run. ``resume=auto`` and new runs
use the command line as it is.

A run folder is data, perhaps someone else's: its ``overrides.yaml`` may name objects to
build (``_target_``) only from gptlab, Lightning and torch. Anything else must come from
today's command line, where the user typed it.
"""

from __future__ import annotations

import re
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
    for override in overrides:
        if override not in today:
            _check_recorded_targets(folder, override)
    return hydra.compose(config_name="train", overrides=[*overrides, f"resume={folder}"]), overrides


# What a recorded override may build; the optimizer and scheduler are narrowed further by
# gptlab.utils.spec when the module builds them.
RECORDED_TARGET_PREFIXES = ("gptlab.", "lightning.", "torch.")
_TARGET = re.compile(r"_target_['\"]?\s*[:=]\s*['\"]?([^'\",}\s]+)")


def _check_recorded_targets(folder: Path, override: str) -> None:
    for target in _TARGET.findall(override):
        if not target.startswith(RECORDED_TARGET_PREFIXES):
            raise ConfigError(
                f"{folder / runs.OVERRIDES} asks to build {target}, which a resume does not build from "
                "a run folder's files (only gptlab, lightning and torch objects); if you trust it, "
                "give that override on the command line yourself"
            )


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
