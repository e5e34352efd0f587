"""Ctrl-C and a cluster's pre-emption (SIGTERM) end a run with a checkpoint, not a loss.

Lightning's own handling stops wherever the signal lands: a Ctrl-C raises
``KeyboardInterrupt`` mid-step and nothing is saved, and its SIGTERM flag is acted on
after any batch, also in the middle of gradient accumulation. ``StopOnSignal``
instead only notes the signal, lets the current optimizer step finish, saves a
checkpoint at that step boundary (the same kind ``resume=`` continues from) and stops
the run before the next batch by raising ``TrainingInterrupted``, which the entry point turns into one line
and the exit status ``128 + signal``. A second Ctrl-C quits at once without saving.

Under DDP every rank receives the signal's news through one small all-reduce per
step, so all ranks stop after the same step even when only one was signalled.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import lightning as L
import torch

from gptlab.errors import TrainingInterrupted
from gptlab.training.checkpointing import RunCheckpoint

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(L.Callback):
    """Turn SIGINT/SIGTERM into "finish this step, save, stop" (see the module docstring)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._step_seen = 0
        self._stop: TrainingInterrupted | None = None

    # -- handlers ---------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install after Lightning's own handlers (registered just before training starts)."""
        self._step_seen = trainer.global_step
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
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

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    # -- the step boundary ------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        stepped = trainer.global_step != self._step_seen
        self._step_seen = trainer.global_step
        if not stepped:
            return  # inside a gradient-accumulation window: the step is not done yet
        signum = self._agreed_signal(trainer, pl_module)
        if signum:
            path = save_now(trainer)
            self._stop = TrainingInterrupted(signum, trainer.global_step, path, str(trainer.default_root_dir))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        """Stop here, not at the save: Lightning hands the saved step's metrics to the loggers in between."""
        if self._stop is not None:
            raise self._stop

    def _agreed_signal(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        received = self.received or 0
        if trainer.world_size > 1:
            flag = torch.tensor([received], device=pl_module.device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max").item())
        return received


def save_now(trainer: L.Trainer) -> str:
    """Save a checkpoint of the current step where ``ckpt_path=last`` will find it."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, RunCheckpoint):
        return callback.save(trainer)
    folder = Path(getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints")
    path = str(folder / "last.ckpt")
    trainer.save_checkpoint(path)
    return path
