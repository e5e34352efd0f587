"""Warm-ups of what a training step sees: batch size, sequence length, attention window.

Each is a linear ramp ``{start, steps}`` over the first optimizer steps, off unless
configured (``curriculum=warmup``, see ``gptlab/conf/curriculum/``):

- ``batch_size``: a step trains on the first b rows of the loader's batch, b growing
  from ``start`` to the full batch (the speed record's batch-size schedule). The loader,
  and so exact resume, is untouched: the rows left out are skipped data, not replayed.
- ``seq_len``: sequence-length warm-up (Li et al. 2022, "The stability-efficiency
  dilemma"): the (B, T) batch is cut into (B·T/t, t) rows, ``t = start · 2^k`` the
  largest such length at most the ramp's value that divides T, so every step trains on
  the same tokens with a shorter context, and T once the ramp is done.
- ``window``: every layer's attention window is capped at a length growing from
  ``start`` to the block (``GPT.set_window_cap``; modded-nanogpt grows its windows
  during training). Validation always scores the uncapped model.

Rows are taken first, then cut. Every value follows from the optimizer step being
taken, so each micro-batch of an accumulated step sees the same sizes and a resumed
run continues the ramps exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gptlab.errors import ConfigError

PARTS = ("batch_size", "seq_len", "window")


@dataclass(frozen=True)
class Ramp:
    """``start`` at step 0, rising linearly to ``end`` at step ``steps``, then ``end``."""

    start: int
    steps: int

    def at(self, step: int, end: int) -> int:
        if self.steps == 0 or step >= self.steps:
            return end
        return int(self.start + (end - self.start) * step / self.steps)


class Curriculum:
    """The configured warm-ups; ``apply`` reshapes a batch, ``window_cap`` caps attention."""

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        spec = dict(spec or {})
        unknown = [k for k in spec if k not in PARTS]
        if unknown:
            raise ConfigError(f"curriculum.{unknown[0]} is not a warm-up; use {', '.join(PARTS)}")
        self.ramps = {name: _ramp(name, value) for name, value in spec.items() if value}

    @property
    def active(self) -> bool:
        return bool(self.ramps)

    def check(self, batch_size: int, block_size: int) -> None:
        """Refuse a warm-up that cannot start from, or grow to, the run's sizes."""
        ends = {"batch_size": batch_size, "seq_len": block_size, "window": block_size}
        for name, ramp in self.ramps.items():
            if ramp.start > ends[name]:
                raise ConfigError(
                    f"curriculum.{name}.start={ramp.start} is larger than the size it grows "
                    f"to ({ends[name]}); start lower"
                )
        seq = self.ramps.get("seq_len")
        if seq is not None and block_size % seq.start:
            raise ConfigError(
                f"curriculum.seq_len.start={seq.start} does not divide the block size "
                f"{block_size}; choose a divisor, e.g. {max(1, block_size // 4)}"
            )

    def sizes(self, step: int, batch_size: int, block_size: int) -> dict[str, int]:
        """The batch rows, sequence length and window cap at ``step`` (the configured parts)."""
        out = {}
        if "batch_size" in self.ramps:
            out["batch_size"] = self.ramps["batch_size"].at(step, batch_size)
        if "seq_len" in self.ramps:
            seq = self.ramps["seq_len"]
            out["seq_len"] = _dividing_length(seq.at(step, block_size), block_size, seq.start)
        if "window" in self.ramps:
            out["window"] = self.ramps["window"].at(step, block_size)
        return out

    def apply(self, batch: tuple[torch.Tensor, ...], step: int) -> tuple[torch.Tensor, ...]:
        """The batch this step trains on: its first rows, cut into shorter sequences."""
        B, T = batch[0].shape
        sizes = self.sizes(step, B, T)
        rows, t = sizes.get("batch_size", B), sizes.get("seq_len", T)
        return tuple(part[:rows].reshape(-1, t) for part in batch)

    def window_cap(self, step: int, block_size: int) -> int | None:
        """The attention window cap at ``step``; None once it covers the block."""
        if "window" not in self.ramps:
            return None
        cap = self.ramps["window"].at(step, block_size)
        return None if cap >= block_size else cap


def _ramp(name: str, value: Any) -> Ramp:
    if not isinstance(value, Mapping) or set(value) != {"start", "steps"}:
        raise ConfigError(
            f"curriculum.{name} must be {{start: <size>, steps: <optimizer steps>}}, got {value!r}"
        )
    start, steps = value["start"], value["steps"]
    if not isinstance(start, int) or isinstance(start, bool) or start < 1:
        raise ConfigError(f"curriculum.{name}.start={start!r} must be a positive integer")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"curriculum.{name}.steps={steps!r} must be an integer >= 0")
    return Ramp(start, steps)


def _dividing_length(target: int, T: int, start: int) -> int:
    """The largest ``start * 2**k <= target`` dividing T; T itself once ``target`` reaches it."""
    if target >= T:
        return T
    t = start
    while t * 2 <= target and T % (t * 2) == 0:
        t *= 2
    return t
