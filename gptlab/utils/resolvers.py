"""OmegaConf resolvers used by gptlab's configs, registered when gptlab is imported.

``${gptlab_run_dir:<default>}`` is ``hydra.run.dir``'s value: the ``resume=<run folder>``
when a run is resumed (``resume=auto`` resumes the run folder given), so it keeps writing (and logging) in the folder it started in,
and ``<default>`` (a new time-stamped folder under ``outputs/``) otherwise. Without it,
every resume would leave behind a new folder holding nothing but Hydra's records.
"""

from __future__ import annotations

from typing import Any


def run_dir(default: str, *, _root_: Any) -> str:
    """The resumed run's folder when ``resume`` is set in the config being composed, else ``default``."""
    from omegaconf import OmegaConf

    resume = OmegaConf.select(_root_, "resume", default=None)
    return str(resume) if resume and resume != "auto" else default


def register_resolvers() -> None:
    """Register the resolvers once per process (a second call replaces nothing)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("gptlab_run_dir"):
        OmegaConf.register_new_resolver("gptlab_run_dir", run_dir)
