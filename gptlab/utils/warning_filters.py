"""Warnings and log lines that every run would print and no user can act on."""

from __future__ import annotations

import logging
import warnings


class _WithoutLitLoggerTip(logging.Filter):
    """Lightning 2.6 advertises its cloud logger at the start of every run that does not use one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def install() -> None:
    """Silence them for this process (the entry points call this once at import)."""
    # Lightning 2.6 with torch >= 2.10 warns about its own use of a deprecated torch API.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    # gptlab/conf/hydra/launcher/*.yaml share the launcher plugins' names (hydra/launcher=joblib),
    # so Hydra warns on every job that they are checked against the plugins' schemas.
    warnings.filterwarnings(
        "ignore",
        message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema",
        category=UserWarning,
    )
    # Lightning advises more DataLoader workers whenever a loader has fewer than 2; on a CPU our
    # batches (a gather from a memory-mapped array) are faster without any (data.num_workers=null).
    warnings.filterwarnings(
        "ignore", message=r".*does not have many workers which may be a bottleneck"
    )
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_WithoutLitLoggerTip())
