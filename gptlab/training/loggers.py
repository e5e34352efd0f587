"""Logger builders that need a decision at run time (wandb's online/offline mode)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def wandb_has_credentials() -> bool:
    """True when wandb could log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(offline: bool | None = None, save_dir: str = ".", **kwargs: Any):
    """A Lightning ``WandbLogger`` that goes offline by itself when there is no API key.

    ``offline=None`` means: offline if ``WANDB_MODE=offline`` or no credentials are found,
    so a run never stops to prompt for a key. The run id is stored in the run folder
    (``wandb_run_id.txt``) so that resuming the run continues the same wandb run.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun") or not wandb_has_credentials()
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    id_file = Path(save_dir) / "wandb_run_id.txt"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        import wandb

        from gptlab.utils.io import atomic_write_text

        run_id = wandb.util.generate_id()
        atomic_write_text(id_file, run_id)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "tags" in kwargs:
        kwargs["tags"] = list(kwargs["tags"])
    return WandbLogger(save_dir=save_dir, offline=offline, id=run_id, resume="allow", **kwargs)


def csv_logger(save_dir: str, name: str = "", version: str = ""):
    """Lightning's CSV logger, except that a resumed run appends to its ``metrics.csv``.

    Lightning's own writer deletes an existing ``metrics.csv`` when it starts, so a run
    resumed in its own folder would lose the history before the resume.
    """
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    class AppendingCSVLogger(CSVLogger):
        @property
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(save_dir=save_dir, name=name, version=version)
