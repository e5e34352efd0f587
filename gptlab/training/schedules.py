"""Learning-rate schedules as multipliers of the optimizer's base learning rate.

Each schedule is a small picklable object ``step -> factor`` used with
``torch.optim.lr_scheduler.LambdaLR`` and stepped once per optimizer step. All of them
warm up linearly over ``warmup_steps`` (nanoGPT's ``(step + 1) / (warmup + 1)``), then:

    cosine    decays along half a cosine to ``min_lr_ratio`` at ``total_steps``
    linear    decays in a straight line to ``min_lr_ratio`` at ``total_steps``
    constant  stays at 1
    wsd       warm-up, stable at 1, then decays linearly to ``min_lr_ratio`` over the
              last ``decay_fraction`` of ``total_steps`` (the speed-record schedule)
"""

from __future__ import annotations

import math

import torch


class _Schedule:
    def __init__(
        self, warmup_steps: int = 0, total_steps: int = 1, min_lr_ratio: float = 0.0
    ) -> None:
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(
                f"scheduler needs warmup_steps >= 0 and total_steps >= 1 (got {warmup_steps}, {total_steps})"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"scheduler.min_lr_ratio={min_lr_ratio} must be within [0, 1]")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        raise NotImplementedError

    def _progress(self, step: int, start: int) -> float:
        """Fraction of the decay phase done, clamped to [0, 1]."""
        span = max(1, self.total_steps - start)
        return min(1.0, max(0.0, (step - start) / span))


class Cosine(_Schedule):
    def after_warmup(self, step: int) -> float:
        p = self._progress(step, self.warmup_steps)
        return self.min_lr_ratio + 0.5 * (1.0 + math.cos(math.pi * p)) * (1.0 - self.min_lr_ratio)


class Linear(_Schedule):
    def after_warmup(self, step: int) -> float:
        p = self._progress(step, self.warmup_steps)
        return 1.0 - p * (1.0 - self.min_lr_ratio)


class Constant(_Schedule):
    def after_warmup(self, step: int) -> float:
        return 1.0


class WarmupStableDecay(_Schedule):
    def __init__(
        self,
        warmup_steps: int = 0,
        total_steps: int = 1,
        min_lr_ratio: float = 0.0,
        decay_fraction: float = 0.2,
    ) -> None:
        super().__init__(warmup_steps, total_steps, min_lr_ratio)
        if not 0.0 < decay_fraction <= 1.0:
            raise ValueError(f"scheduler.decay_fraction={decay_fraction} must be within (0, 1]")
        self.decay_start = max(warmup_steps, int(total_steps * (1.0 - decay_fraction)))

    def after_warmup(self, step: int) -> float:
        if step < self.decay_start:
            return 1.0
        return 1.0 - self._progress(step, self.decay_start) * (1.0 - self.min_lr_ratio)


SCHEDULES = {"cosine": Cosine, "linear": Linear, "constant": Constant, "wsd": WarmupStableDecay}


def lambda_scheduler(optimizer: torch.optim.Optimizer, name: str = "cosine", **kwargs) -> dict:
    """A per-step ``LambdaLR`` in the dict form Lightning's ``configure_optimizers`` accepts."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULES)}")
    schedule = SCHEDULES[name](**kwargs)
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"}
