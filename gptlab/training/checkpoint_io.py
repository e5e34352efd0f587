"""Checkpoints that survive crashes: atomic, safe-to-load files and a bounded history.

Two pieces, both plugged into Lightning:

``AtomicCheckpointIO``
    Lightning's writer buffers the whole checkpoint in memory and moves it into place
    without an fsync; ours streams ``torch.save`` into a temporary file beside the
    target, fsyncs it and renames it (``gptlab.utils.io.atomic_open``), so a crash at
    any moment leaves the previous checkpoint intact. The format stays plain
    ``torch.save``, so ``torch.load(weights_only=True)`` and ``load_checkpoint`` read
    it. Reading always uses ``weights_only=True`` and turns every failure into one
    ``CheckpointError`` sentence, also when Lightning itself loads for ``ckpt_path``.

``RunCheckpoint``
    A ``ModelCheckpoint`` whose schedule is counted in optimizer steps: every
    ``every_n_steps`` it writes ``step<N>.ckpt``, points ``last.ckpt`` at it (a hard
    link: no second write) and keeps only the newest ``keep_last`` step files plus
    the one with the best validation score. Scores are taken only from a validation
    that ran at the checkpoint's own step, never from an older one. A checkpoint is
    written before its step's validation, so its own copy of the scores lacks that one;
    ``checkpoint_scores.json`` beside the checkpoints folder keeps it for a resumed run. Metrics loggers
    are flushed before each save, so ``metrics.csv`` holds every row up to the
    checkpoint a resumed run continues from.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from gptlab.checkpoint import safe_torch_load
from gptlab.errors import ConfigError
from gptlab.utils.io import atomic_link_or_copy, atomic_save, atomic_write_text

# Validation scores of the step checkpoints, by file name; beside the checkpoints folder, so
# that folder holds checkpoints only.
SCORES_FILE = "checkpoint_scores.json"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file, fsync, rename; load with ``weights_only=True`` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_save(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Always ``weights_only=True``: gptlab checkpoints hold only tensors and plain data.

        A file that needs more (a pickled class or function) is refused with a
        ``CheckpointError``, whatever the caller asked for.
        """
        return safe_torch_load(path, map_location=map_location)


class RunCheckpoint(ModelCheckpoint):
    """Save every ``every_n_steps`` optimizer steps; keep the newest ``keep_last`` and the best.

    ``keep_last=None`` keeps every step checkpoint. ``monitor=None`` keeps no "best"
    beyond the newest ones. A run also saves at its final step, so ``last.ckpt`` always
    holds the weights the run ended with.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int | None = 250,
        keep_last: int | None = 2,
        filename: str = "step{step:06d}",
        monitor: str | None = "val/loss",
        mode: str = "min",
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("keep_last", keep_last)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"checkpoint.{name}={value!r} must be a positive integer (or null)")
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=-1,  # every save is kept by Lightning; _prune decides what stays
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # a resumed run overwrites a step it redoes
            every_n_train_steps=0,  # Lightning's own triggers are off: ours are below
            every_n_epochs=0,
        )
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self._validated_step: int | None = None
        self._flush_pending = False

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath: str) -> None:
        """Silence Lightning's "folder not empty" warning: a resumed run writes into its own folder on purpose."""

    # -- when to save -----------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._flush_pending:  # the saved step's own metrics reach the loggers only after its batch
            self._flush_pending = False
            for logger in trainer.loggers:
                logger.save()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Give the checkpoint of this very step its fresh score, then prune again."""
        if trainer.sanity_checking:
            return
        self._validated_step = trainer.global_step
        path = self._last_checkpoint_saved
        score = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if score is not None and self._last_global_step_saved == trainer.global_step and path in self.best_k_models:
            self.best_k_models[path] = score.detach().cpu().clone()
            self._update_best()
            self._prune(trainer)
            if trainer.is_global_zero:
                scores = {Path(p).name: float(v) for p, v in self.best_k_models.items() if torch.isfinite(v)}
                atomic_write_text(self._scores_path(), json.dumps(scores, indent=1))

    def _scores_path(self) -> Path:
        return Path(self.dirpath).parent / SCORES_FILE

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore, then add the scores that validations gave after each checkpoint was written."""
        super().load_state_dict(state_dict)
        try:
            scores = json.loads(self._scores_path().read_text())
        except (OSError, ValueError, TypeError):
            return
        for path in self.best_k_models:
            value = scores.get(Path(path).name) if isinstance(scores, dict) else None
            if isinstance(value, (int, float)):
                self.best_k_models[path] = torch.tensor(float(value))
        self._update_best()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # epochs mean nothing for an endless stream of random windows

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            self.save(trainer)

    # -- saving -----------------------------------------------------------------------
    def save(self, trainer: L.Trainer) -> str:
        """Write ``step<N>.ckpt`` and ``last.ckpt`` now (once per step); return the checkpoint's path."""
        if self._should_skip_saving_checkpoint(trainer):
            return self.last_model_path or self._last_checkpoint_saved
        candidates = self._monitor_candidates(trainer)
        path = self.format_checkpoint_name(candidates)
        self.best_k_models.pop(path, None)  # re-insert: the dict's order is the save order
        self.best_k_models[path] = self._fresh_score(trainer, candidates)
        self.current_score = self.best_k_models[path]
        self._update_best()
        self.last_model_path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        self._save_checkpoint(trainer, path)
        if Path(path).is_dir():  # a sharded checkpoint (FSDP state_dict_type=sharded) is a folder: write it again
            trainer.save_checkpoint(self.last_model_path, self.save_weights_only)
        else:
            if trainer.is_global_zero:
                atomic_link_or_copy(path, self.last_model_path)
            trainer.strategy.barrier("gptlab-last-checkpoint")
        self._prune(trainer)
        return path

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        for logger in trainer.loggers:  # metrics.csv must not lag behind the checkpoint
            logger.save()
        super()._save_checkpoint(trainer, filepath)
        self._flush_pending = True

    def _fresh_score(self, trainer: L.Trainer, candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        worst = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        if not self.monitor or self._validated_step != trainer.global_step:
            return worst  # no validation at this step (yet): an older score would be a lie
        score = candidates.get(self.monitor)
        return worst if score is None else score.detach().cpu().clone()

    def _update_best(self) -> None:
        measured = {p: s for p, s in self.best_k_models.items() if torch.isfinite(s)}
        if not self.monitor or not measured:
            return
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(measured, key=lambda p: float(measured[p]))
        self.best_model_score = measured[self.best_model_path]

    def _prune(self, trainer: L.Trainer) -> None:
        if self.keep_last is None:
            return
        paths = list(self.best_k_models)
        keep = set(paths[-self.keep_last :])
        if self.best_model_path in self.best_k_models and torch.isfinite(self.best_k_models[self.best_model_path]):
            keep.add(self.best_model_path)
        for path in paths:
            if path not in keep:
                del self.best_k_models[path]
                if Path(path).exists():
                    self._remove_checkpoint(trainer, path)
