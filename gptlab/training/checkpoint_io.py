"""The Lightning plug-in that writes and reads checkpoint files: atomic, checksummed, safe to load.

Lightning's writer buffers the whole checkpoint in memory and moves it into place
without an fsync; ``AtomicCheckpointIO`` streams ``torch.save`` into a temporary file
beside the target, fsyncs it and renames it (``gptlab.utils.io.atomic_save``), so a
crash at any moment leaves the previous checkpoint intact. The format stays plain
``torch.save`` (with a checksum of the weights inside), so ``torch.load(weights_only=True)``
and ``gptlab.checkpoint.load_model`` read it. Reading always uses ``weights_only=True``
and turns every failure into one ``CheckpointError`` sentence, also when Lightning
itself loads for ``ckpt_path``.

The checkpoint schedule may ask for the next file to be *held* (``hold_next``): the
checkpoint is taken at the step boundary, where Lightning's loop state says "this step
is done", and written a moment later (``write_held``), once the step's validation and
metrics are in. Nothing changes the weights in between: the next optimizer step has not
begun.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from gptlab import checkpoint as checkpoint_files
from gptlab.utils.io import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file, fsync, rename; load with ``weights_only=True`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.held: tuple[dict[str, Any], Any] | None = None

    def hold_next(self) -> None:
        """Keep the next checkpoint in memory until ``write_held`` (see the module docstring)."""
        self.hold, self.held = True, None

    def take_held(self) -> tuple[dict[str, Any], Any] | None:
        """The held checkpoint and its path (None on ranks that write nothing), no longer held."""
        held, self.hold, self.held = self.held, False, None
        return held

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        if self.hold:
            self.hold, self.held = False, (checkpoint, path)
            return
        self.write(checkpoint, path)

    def write(self, checkpoint: dict[str, Any], path: Any) -> None:
        checkpoint_files.add_checksum(checkpoint)  # verified whenever the file is loaded
        atomic_save(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Always ``weights_only=True``: gptlab checkpoints hold only tensors and plain data.

        A file that needs more (a pickled class or function) is refused with a
        ``CheckpointError``, whatever the caller asked for.
        """
        return checkpoint_files.safe_torch_load(path, map_location=map_location)
