"""Keep the extra processes of a DDP run on this job, in this job's folder.

Lightning's DDP launcher starts ranks 1..N-1 by re-running ``sys.argv``. Under
``--multirun`` that would start the whole sweep again in every child, and Hydra would
give each child a fresh time-stamped folder. So the parent rewrites ``sys.argv`` to its
own job's overrides and passes its run folder down through the environment; a child
finds it there and writes nothing of the folder's own (config, lock, provenance).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

RUN_DIR_ENV = "GPTLAB_RUN_DIR"


def is_child() -> bool:
    """A rank > 0 started by Lightning's launcher (LOCAL_RANK set) for a parent that pinned it."""
    return os.environ.get("LOCAL_RANK", "0") != "0" and RUN_DIR_ENV in os.environ


def is_rank_zero() -> bool:
    """The one process of a (possibly multi-node) run that owns the run folder."""
    return (
        int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0 and not is_child()
    )


def pin(cfg: DictConfig) -> None:
    """In the parent: record the run folder and this job's overrides for the children; in a child: use them."""
    if is_child():
        with open_dict(cfg):
            cfg.paths.output_dir = os.environ[RUN_DIR_ENV]
        return
    os.environ[RUN_DIR_ENV] = str(cfg.paths.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg: Any = HydraConfig.get()  # a DictConfig at run time, typed as its schema
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        OmegaConf.set_readonly(hydra_cfg, False)
        with open_dict(hydra_cfg):
            hydra_cfg.run.dir = str(cfg.paths.output_dir)
