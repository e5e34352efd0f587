"""Logger builders that need a decision at run time (wandb's mode and group, CSV resume).

wandb's table and parallel-coordinates views can only group runs by *flat* config keys,
and they only show a sweep together when its runs share a ``group``; both are decided
here so that ``logger=wandb`` needs no other setting.
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The resolved config, flattened, goes to wandb; the tokenizer's own state (a BPE's merges
# can be megabytes) does not: its kind and vocabulary size say all a comparison needs.
_SKIPPED_HPARAMS = ("tokenizer", "optimizer", "scheduler", "model_config")


def wandb_has_credentials() -> bool:
    """True when wandb could log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"model": {"n_layer": 4}}`` -> ``{"model.n_layer": 4}``; lists stay values.

    The dotted keys are the ones a user types on the command line (``model.n_layer=4``),
    so a wandb column reads exactly like the override that produced it.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def sweep_group(run_dir: str | Path, max_depth: int = 3) -> str | None:
    """The wandb group for a multirun job: its sweep folder's last two parts (``<date>/<time>``).

    Hydra writes ``multirun.yaml`` into the sweep folder before any job starts, and every
    job's folder lies below it (``<sweep dir>/<job num>``), so this works with every
    launcher and sweeper, and a single run (no ``multirun.yaml`` above it) gets no group.
    """
    run_dir = Path(run_dir).absolute()
    for parent in list(run_dir.parents)[:max_depth]:
        if (parent / "multirun.yaml").is_file():
            return "/".join(parent.parts[-2:])[-128:]  # wandb caps group names at 128 characters
    return None


def run_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides of the job that writes to ``run_dir`` (Hydra's record)."""
    import yaml

    for name in ("overrides.yaml", ".hydra/overrides.yaml"):  # gptlab's record (resumes), then Hydra's
        path = Path(run_dir) / name
        if path.is_file():
            return [str(o) for o in yaml.safe_load(path.read_text()) or []]
    return []


def wandb_hparams(params: Mapping[str, Any]) -> dict[str, Any]:
    """What gptlab sends to wandb's config: the run's resolved config, flattened.

    The LightningModule's hyperparameters hold the resolved run config (``run_config``)
    beside the pieces built from it; only the former is sent, flattened, plus the
    tokenizer's kind and the model's vocabulary size (``model.vocab_size`` is ``null``
    in the run config when it comes from the tokenizer).
    """
    params = dict(params)
    flat = flatten(params.pop("run_config", None) or {})
    tokenizer = params.get("tokenizer") or {}
    model_config = params.get("model_config") or {}
    if model_config.get("vocab_size") is not None:
        flat["model.vocab_size"] = model_config["vocab_size"]
    if tokenizer.get("kind"):
        flat["tokenizer.kind"] = tokenizer["kind"]
    for key, value in params.items():
        if key not in _SKIPPED_HPARAMS:
            flat.update(flatten({key: value}) if isinstance(value, Mapping) else {key: value})
    return flat


def new_run_id(length: int = 8) -> str:
    """A wandb-style run id (lowercase letters and digits); ``wandb.util.generate_id`` moved
    between wandb releases, so gptlab makes its own."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def wandb_logger(offline: bool | None = None, save_dir: str = ".", group: str | None = None, **kwargs: Any):
    """A Lightning ``WandbLogger`` that goes offline by itself and groups sweeps.

    ``offline=None`` means: offline if ``WANDB_MODE=offline`` or no credentials are found,
    so a run never stops to prompt for a key. The run id is stored in the run folder
    (``wandb_run_id.txt``) so that resuming the run continues the same wandb run.
    ``group=None`` puts the jobs of one sweep in one group named after the sweep folder
    (see ``sweep_group``); a name sets it explicitly. The config sent to wandb is the
    flattened resolved config (``wandb_hparams``) plus the job's ``overrides``.
    """
    from lightning.pytorch.loggers import WandbLogger

    class GptlabWandbLogger(WandbLogger):
        def log_hyperparams(self, params: Any) -> None:
            if isinstance(params, Mapping) and "run_config" in params:
                params = {**wandb_hparams(params), "overrides": run_overrides(save_dir)}
            super().log_hyperparams(params)

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            """``log_model=true`` uploads the checkpoints a run *ends* with; ``all`` each one as saved.

            gptlab's checkpoint callback keeps every save from Lightning's bookkeeping
            (``save_top_k=-1``) and prunes files itself, which would otherwise make
            Lightning upload every checkpoint at once, including ones about to be deleted.
            """
            if self._log_model == "all":
                self._scan_and_log_checkpoints(checkpoint_callback)
            elif self._log_model:
                self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

        def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
            log_checkpoint_artifacts(self, checkpoint_callback)

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
        from gptlab.utils.io import atomic_write_text

        run_id = new_run_id()
        atomic_write_text(id_file, run_id)
    group = group or sweep_group(save_dir)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "tags" in kwargs:
        kwargs["tags"] = list(kwargs["tags"])
    if group:
        kwargs["group"] = group
    # Lightning refuses log_model with offline=True, yet an offline wandb run can stage
    # artifacts for `wandb sync`; WANDB_MODE=offline (set above) keeps the run offline.
    lightning_offline = offline and not kwargs.get("log_model")
    return GptlabWandbLogger(save_dir=save_dir, offline=lightning_offline, id=run_id, resume="allow", **kwargs)


def log_checkpoint_artifacts(logger: Any, checkpoint_callback: Any) -> None:
    """Lightning's checkpoint upload, minus its two failure modes with gptlab's checkpoints.

    A checkpoint saved between validations has no score yet (``inf``), which wandb's
    artifact metadata refuses (JSON has no infinity): it is sent as ``null``. A file
    pruned since it was listed is skipped instead of failing the upload.
    """
    import math

    import wandb
    from lightning.pytorch.loggers.utilities import _scan_checkpoints

    for mtime, path, score, _tag in _scan_checkpoints(checkpoint_callback, logger._logged_model_time):
        if not Path(path).is_file():
            continue
        value = score.item() if hasattr(score, "item") else score
        metadata = {
            "score": value if isinstance(value, (int, float)) and math.isfinite(value) else None,
            "original_filename": Path(path).name,
            "monitor": getattr(checkpoint_callback, "monitor", None),
            "mode": getattr(checkpoint_callback, "mode", None),
        }
        if not logger._checkpoint_name:
            logger._checkpoint_name = f"model-{logger.experiment.id}"
        artifact = wandb.Artifact(name=logger._checkpoint_name, type="model", metadata=metadata)
        artifact.add_file(path, name="model.ckpt", policy=logger.add_file_policy)
        aliases = ["latest", "best"] if path == checkpoint_callback.best_model_path else ["latest"]
        logger.experiment.log_artifact(artifact, aliases=aliases)
        logger._logged_model_time[path] = mtime


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
