"""Ctrl-C and a cluster's pre-emption (SIGTERM) end a run with a checkpoint, not a loss.

Lightning's own handling stops wherever the signal lands: a Ctrl-C raises
``KeyboardInterrupt`` mid-step and nothing is saved, and its SIGTERM flag is acted on
after any batch, also in the middle of gradient accumulation. ``StopOnSignal``
instead only notes the signal, lets the current optimizer step finish (with its
validation, if one is due), saves a checkpoint at that step boundary (the same kind
``resume=`` continues from) and stops the run before the next batch by raising
``TrainingInterrupted``, which the entry point turns into one line and the exit status
``128 + signal``. A second Ctrl-C quits at once without saving. After the last step
(the final checkpoint is written first) a signal stops what is left at once: the
end-of-run sample is abandoned, not finished.

Under DDP every rank receives the signal's news through one small all-reduce per
step, so all ranks stop after the same step even when only one was signalled.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch

from gptlab.errors import TrainingInterrupted
from gptlab.training.checkpoint_schedule import schedule_of
from gptlab.training.run import CHECKPOINTS, LAST_CHECKPOINT

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(L.Callback):
    """Turn SIGINT/SIGTERM into "finish this step, save, stop" (see the module docstring).

    Put it first among the callbacks: its end-of-training hook saves the final
    checkpoint before the others (the sample) run.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._step_seen = 0
        self._stop_after_step = False
        self._ending: tuple[L.Trainer, str] | None = (
            None  # set once the final checkpoint is written
        )

    # -- handlers ---------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install after Lightning's own handlers (registered just before training starts)."""
        self._step_seen = trainer.global_step
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self._ending is not None:  # nothing is left that a checkpoint could keep
            trainer, path = self._ending
            self._ending = None
            print(
                f"\ngptlab: {signal.Signals(signum).name} received after the last step; stopping now",
                file=sys.stderr,
                flush=True,
            )
            raise TrainingInterrupted(
                signum, trainer.global_step, path, str(trainer.default_root_dir)
            )
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user will not wait for the step
        if self.received is None:
            print(
                f"\ngptlab: {signal.Signals(signum).name} received; saving a checkpoint after this step "
                "(press Ctrl-C again to quit without saving)",
                file=sys.stderr,
                flush=True,
            )
        self.received = signum

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._ending = None
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._ending = None
        self._restore()

    # -- the step boundary ------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stepped = trainer.global_step != self._step_seen
        self._step_seen = trainer.global_step
        if stepped and self._agreed_signal(trainer, pl_module):  # not inside an accumulation window
            self._stop_after_step = True
            _take_checkpoint(trainer)  # where Lightning's loop state says this step is done

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Save and stop here: by now the finished step's validation ran and its metrics were logged."""
        if self._stop_after_step:
            path = save_now(trainer)  # writes the checkpoint taken at the step's end
            raise TrainingInterrupted(
                self.received or signal.SIGTERM,
                trainer.global_step,
                path,
                str(trainer.default_root_dir),
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule = schedule_of(trainer)
        path = ""
        if schedule is not None:
            schedule.on_train_end(trainer, pl_module)  # the final checkpoint, before the sample
            path = schedule.last_model_path
        if self.received:  # arrived after the last step began: the run is complete and saved
            path = path or save_now(trainer)
            raise TrainingInterrupted(
                self.received, trainer.global_step, path, str(trainer.default_root_dir)
            )
        self._ending = (trainer, path)

    def _agreed_signal(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        received = self.received or 0
        if trainer.world_size > 1:
            flag = torch.tensor([received], device=pl_module.device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max").item())
        return received


def _take_checkpoint(trainer: L.Trainer) -> None:
    schedule = schedule_of(trainer)
    if schedule is not None:
        schedule.save(trainer)


def save_now(trainer: L.Trainer) -> str:
    """Save a checkpoint of the current step where ``ckpt_path=last`` will find it."""
    schedule = schedule_of(trainer)
    if schedule is not None:
        path = schedule.save(trainer)
        schedule.commit(trainer)
        return path
    path = str(Path(trainer.default_root_dir) / CHECKPOINTS / LAST_CHECKPOINT)
    trainer.save_checkpoint(path, weights_only=False)
    return path
