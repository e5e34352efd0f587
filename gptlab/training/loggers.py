"""The wandb logger: offline by itself, grouped by sweep, resumable, uploading checkpoints.

wandb's table and parallel-coordinates views can only group runs by *flat* config keys,
and they only show a sweep together when its runs share a ``group``; both are decided
here so that ``logger=wandb`` needs no other setting.
"""

from __future__ import annotations

import math
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptlab.training.run import OVERRIDE_FILES, WANDB_RUN_ID
from gptlab.utils.trees import flatten

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

    for name in OVERRIDE_FILES:  # gptlab's record (resumes), then Hydra's
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


def finish_wandb() -> None:
    """Close the wandb run, if one is open, so the next job of a multirun starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def new_run_id(length: int = 8) -> str:
    """A wandb-style run id (lowercase letters and digits); ``wandb.util.generate_id`` moved
    between wandb releases, so gptlab makes its own."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def wandb_logger(
    offline: bool | None = None,
    save_dir: str = ".",
    group: str | None = None,
    log_model: bool | str = False,
    **kwargs: Any,
):
    """A Lightning ``WandbLogger`` that goes offline by itself and groups sweeps.

    ``offline=None`` means: offline if ``WANDB_MODE=offline`` or no credentials are found,
    so a run never stops to prompt for a key. The run id is stored in the run folder
    (``wandb_run_id.txt``) so that resuming the run continues the same wandb run.
    ``group=None`` puts the jobs of one sweep in one group named after the sweep folder
    (see ``sweep_group``); a name sets it explicitly. The config sent to wandb is the
    flattened resolved config (``wandb_hparams``) plus the job's ``overrides``.

    ``log_model=true`` uploads the best and the last checkpoint when training ends,
    ``all`` every checkpoint as it is saved. gptlab's checkpoint schedule is not
    Lightning's ``ModelCheckpoint``, so the upload is done here, through wandb's own API,
    when the schedule reports a saved checkpoint (``checkpoint_saved``).
    """
    from lightning.pytorch.loggers import WandbLogger

    kept: dict[
        str, tuple[str, float, bool]
    ] = {}  # log_model=true: the best and the last checkpoint

    class GptlabWandbLogger(WandbLogger):
        def log_hyperparams(self, params: Any) -> None:
            if isinstance(params, Mapping) and "run_config" in params:
                params = {**wandb_hparams(params), "overrides": run_overrides(save_dir)}
            super().log_hyperparams(params)

        def checkpoint_saved(self, path: str, score: float, is_best: bool) -> None:
            if log_model == "all":
                upload_checkpoint(
                    self.experiment, path, score, ["latest", "best"] if is_best else ["latest"]
                )
            elif log_model:
                kept["last"] = (path, score, is_best)
                if is_best:
                    kept["best"] = (path, score, True)

        def finalize(self, status: str) -> None:
            if log_model and log_model != "all" and status == "success":
                best, last = kept.get("best"), kept.get("last")
                if best and (not last or best[0] != last[0]):
                    upload_checkpoint(self.experiment, best[0], best[1], ["best"])
                if last:
                    upload_checkpoint(
                        self.experiment,
                        last[0],
                        last[1],
                        ["latest", "best"] if last[2] else ["latest"],
                    )
            super().finalize(status)

    if offline is None:
        offline = (
            os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")
            or not wandb_has_credentials()
        )
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    id_file = Path(save_dir) / WANDB_RUN_ID
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
    return GptlabWandbLogger(
        save_dir=save_dir, offline=bool(offline), id=run_id, resume="allow", **kwargs
    )


def upload_checkpoint(run: Any, path: str, score: float, aliases: list[str]) -> None:
    """One checkpoint as a wandb model artifact (staged for ``wandb sync`` when offline).

    A checkpoint saved between validations has no score (``inf``), which wandb's
    artifact metadata refuses (JSON has no infinity): it is sent as ``null``. A file
    pruned since it was saved is skipped.
    """
    import wandb

    if not Path(path).is_file():
        return
    metadata = {
        "score": score if math.isfinite(score) else None,
        "original_filename": Path(path).name,
    }
    artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=metadata)
    artifact.add_file(path, name="model.ckpt")
    run.log_artifact(artifact, aliases=aliases)
