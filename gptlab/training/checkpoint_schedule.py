"""When checkpoints are written and which ones are kept: a plain Lightning callback.

Every ``every_n_steps`` optimizer steps it writes ``step<N>.ckpt`` with
``trainer.save_checkpoint``, points ``last.ckpt`` at it (a hard link: no second write)
and keeps only the newest ``keep_last`` step files plus the best by ``monitor``. A run
also saves at its final step, so ``last.ckpt`` always holds the weights it ended with.

A step's checkpoint is taken right after its optimizer step (where Lightning's loop
state says the step is done) and written once everything about that step is known:
after its validation (so the file carries its own score) and after its metrics
reached the loggers, which are flushed first, so ``metrics.csv`` holds every row up to
the checkpoint a resumed run continues from. That is the next batch's start, or the
end of training.

The list of files and their scores is kept by file name in the callback's own state
(inside every checkpoint), so a run folder that was copied or moved still prunes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L

from gptlab.errors import ConfigError
from gptlab.training.checkpoint_io import AtomicCheckpointIO
from gptlab.training.run import LAST_CHECKPOINT
from gptlab.utils.io import atomic_link_or_copy


class CheckpointSchedule(L.Callback):
    """Save every ``every_n_steps`` steps; keep the newest ``keep_last`` and the best.

    ``keep_last=None`` keeps every step checkpoint; ``monitor=None`` keeps no "best"
    beyond the newest ones.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int | None = 250,
        keep_last: int | None = 2,
        filename: str = "step{step:06d}",
        monitor: str | None = "val/loss",
        mode: str = "min",
        at_steps: list[int] | None = None,
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("keep_last", keep_last)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(
                    f"checkpoint.{name}={value!r} must be a positive integer (or null)"
                )
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in at_steps or ()):
            raise ConfigError(
                f"callbacks.model_checkpoint.at_steps={at_steps!r} must be a list of positive steps"
            )
        if mode not in ("min", "max"):
            raise ConfigError(f"callbacks.model_checkpoint.mode={mode!r} must be min or max")
        name = filename.format(step=0)
        if os.sep in name or "/" in name or name.startswith("."):
            raise ConfigError(
                f"callbacks.model_checkpoint.filename={filename!r} must be a file name, not a path; "
                "checkpoints always go to the run's checkpoints/ folder"
            )
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.filename = filename
        self.monitor = monitor
        self.mode = mode
        # Steps saved whatever every_n_steps says and never pruned: the points another run
        # branches from (the ladder's warm-up/stable/decay branches, gptlab/training/wsd_branch.py).
        self.at_steps = frozenset(at_steps or ())
        self.saved: dict[str, float] = {}  # file name -> score (inf: none), in save order
        self._pending: str | None = None  # a checkpoint taken by save, not yet written
        self._saved_step = -1
        self._validated: tuple[int, float] | None = None  # (step, score) of the latest validation

    # -- state (inside every checkpoint) ------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        best = self.best_name
        return {
            "saved": dict(self.saved),
            "best_model_path": str(self.dirpath / best) if best else "",
            "best_model_score": self.saved.get(best, math.nan) if best else math.nan,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("saved") or {}
        self.saved = {str(k): float(v) for k, v in saved.items()}

    @property
    def best_name(self) -> str | None:
        scored = {n: s for n, s in self.saved.items() if math.isfinite(s)}
        if not self.monitor or not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=scored.__getitem__)

    @property
    def best_model_path(self) -> str:
        best = self.best_name
        return str(self.dirpath / best) if best else ""

    @property
    def last_model_path(self) -> str:
        return str(self.dirpath / LAST_CHECKPOINT)

    # -- when ---------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run's checkpoint of this step exists

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        due = bool(self.every_n_steps) and step % (self.every_n_steps or 1) == 0
        if step > self._saved_step and (due or step in self.at_steps):
            self.save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.monitor:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None:
            self._validated = (trainer.global_step, float(score))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.commit(trainer)  # the saved step is now complete: validated and logged

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.commit(trainer)
        if trainer.global_step > self._saved_step:
            self.save(trainer)
            self.commit(trainer)

    # -- saving -------------------------------------------------------------------------
    def save(self, trainer: L.Trainer) -> str:
        """Take this step's checkpoint (once per step); ``commit`` writes it. Return its path.

        With gptlab's checkpoint writer the file is held in memory and written at
        ``commit``, when the step's validation score and metrics are known; with another
        writer it is written at once.
        """
        step = trainer.global_step
        name = self.filename.format(step=step) + ".ckpt"
        if step == self._saved_step:
            return str(self.dirpath / name)
        self.saved.pop(name, None)  # re-insert: the dict's order is the save order
        self.saved[name] = self._score_of(step)
        self._saved_step = step
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            io.hold_next()
        trainer.save_checkpoint(self.dirpath / name, weights_only=False)
        self._pending = name
        if not isinstance(io, AtomicCheckpointIO):
            self.commit(trainer)
        return str(self.dirpath / name)

    def commit(self, trainer: L.Trainer) -> None:
        """Write the checkpoint taken by ``save`` (after flushing the loggers), link ``last.ckpt``, prune."""
        name, self._pending = self._pending, None
        if name is None:
            return
        for logger in trainer.loggers:  # metrics.csv must not lag behind the checkpoint
            (getattr(logger, "flush", None) or logger.save)()
        self.saved[name] = self._score_of(self._saved_step)
        io = trainer.strategy.checkpoint_io
        held = io.take_held() if isinstance(io, AtomicCheckpointIO) else None
        if held is not None and isinstance(io, AtomicCheckpointIO):
            checkpoint, path = held
            # The callbacks' states as of now: after every callback has seen the step (this one's
            # with the step's score), as a checkpoint taken after the step's last hook would hold.
            states = checkpoint.setdefault("callbacks", {})
            for callback in trainer.callbacks:  # type: ignore[attr-defined]  # set by a connector
                state = callback.state_dict()
                if state:
                    states[callback.state_key] = state
            io.write(checkpoint, path)
        path, last = self.dirpath / name, self.dirpath / LAST_CHECKPOINT
        if (
            path.is_dir()
        ):  # a sharded checkpoint (FSDP state_dict_type=sharded) is a folder: write it again
            trainer.save_checkpoint(last, weights_only=False)
        else:
            if trainer.is_global_zero:
                atomic_link_or_copy(path, last)
            trainer.strategy.barrier("gptlab-last-checkpoint")
        self._prune(trainer)
        for logger in trainer.loggers:
            upload = getattr(logger, "checkpoint_saved", None)  # the wandb logger's log_model
            if upload is not None and trainer.is_global_zero:
                upload(str(path), self.saved.get(name, math.inf), name == self.best_name)

    def _score_of(self, step: int) -> float:
        """This step's validation score; none (inf) when no validation ran at this very step."""
        worst = math.inf if self.mode == "min" else -math.inf
        if self._validated is None or self._validated[0] != step:
            return worst
        return self._validated[1]

    def _prune(self, trainer: L.Trainer) -> None:
        if self.keep_last is None:
            return
        names = list(self.saved)
        keep = set(names[-self.keep_last :])
        keep.update(self.filename.format(step=s) + ".ckpt" for s in self.at_steps)
        if self.best_name:
            keep.add(self.best_name)
        for name in names:
            if name not in keep:
                del self.saved[name]
                if trainer.is_global_zero:
                    _remove(self.dirpath / name)
        trainer.strategy.barrier("gptlab-prune")


def schedule_of(trainer: L.Trainer) -> CheckpointSchedule | None:
    """The run's checkpoint schedule, if it has one (``~callbacks.model_checkpoint`` removes it)."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]  # Lightning sets it in a connector
    return next((c for c in callbacks if isinstance(c, CheckpointSchedule)), None)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
