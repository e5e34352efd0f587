"""Guarded training: a NaN never silently poisons the weights, a diverging run is reported.

``TrainingGuard`` looks at every optimizer step just before the optimizer runs
(after backward, before clipping), with one device sync per step:

* a non-finite loss or gradient stops the run with ``TrainingDiverged`` naming the
  step, the data batch and the last good checkpoint, before the bad update reaches
  the weights; with ``trainer.skip_nonfinite=true`` the step is skipped instead (all
  gradients dropped, so the optimizer moves nothing; the schedule and step counter
  go on) and the skips are counted (``train/skipped_steps``, kept in checkpoints);
* a learning rate that is not a finite number stops the run;
* a training loss that climbs well above the uniform guess (``ln vocab_size``: what
  an untrained model scores) is reported once, with the learning rate, because it
  means the run diverged even though every number is still finite.

With fp16 loss scaling (``precision=16-mixed``) inf gradients are expected and the
scaler already skips those steps, so only the learning-rate check runs there.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch

from gptlab.errors import GptlabError

# How far (in nats) the smoothed loss may rise above ln(vocab_size) before we call it diverged.
DIVERGENCE_MARGIN = 1.0


class TrainingDiverged(GptlabError):
    """A non-finite loss, gradient or learning rate; the message names where and what to change."""


class OutOfMemory(GptlabError):
    """The accelerator ran out of memory; the message names the settings that use less."""

    @classmethod
    def explain(cls, cfg, device: str) -> OutOfMemory:
        """The settings of ``cfg`` that decide memory use, and what to change first."""
        data, model, trainer = cfg.data, cfg.model, cfg.trainer
        accumulate = int(trainer.get("accumulate_grad_batches", 1))
        fixes = [
            f"lower data.batch_size (now {data.batch_size}; raise trainer.accumulate_grad_batches from "
            f"{accumulate} to keep the tokens per step)",
            f"lower model.block_size (now {model.block_size})",
        ]
        if "16" not in str(trainer.get("precision")):  # neither bf16 nor fp16 yet
            fixes.append(f"use trainer.precision=bf16-mixed (now {trainer.get('precision')})")
        if not model.get("activation_checkpointing", False):
            fixes.append(
                "set model.activation_checkpointing=true (recompute activations in backward)"
            )
        return cls(f"out of memory on {device}; to use less: " + "; ".join(fixes))


# What torch's CPU allocator says when malloc fails (c10/core/impl/alloc_cpu.cpp), and what
# Python says for a failed allocation of its own (MemoryError has no message of its kind).
_CPU_OOM_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
)


@contextlib.contextmanager
def out_of_memory_explained(cfg: Any, device: str) -> Iterator[None]:
    """Turn running out of memory inside the block into ``OutOfMemory`` naming what to change."""
    try:
        yield
    except Exception as e:
        if is_out_of_memory(e):
            raise OutOfMemory.explain(cfg, device) from None
        raise


def is_out_of_memory(error: BaseException) -> bool:
    """True for running out of memory: CUDA's own error type, MPS's and the CPU allocator's RuntimeError."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    if oom_type is not None and isinstance(error, oom_type):
        return True
    if isinstance(error, MemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    message = str(error)
    if any(text in message for text in _CPU_OOM_MESSAGES):
        return True
    return "out of memory" in message.lower() and "MPS" in message


def total_grad_norm(parameters) -> torch.Tensor | None:
    """The 2-norm of all gradients together (non-finite if any gradient is), or None without gradients."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return None
    norms = (
        torch._foreach_norm(grads, 2.0)
        if hasattr(torch, "_foreach_norm")
        else [g.norm(2.0) for g in grads]
    )
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]), 2.0)


class TrainingGuard(L.Callback):
    """Stop on (or skip) non-finite steps and report divergence; see the module docstring."""

    def __init__(self, skip_nonfinite: bool = False) -> None:
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0
        self._losses: list[torch.Tensor] = []
        self._batches: list[int] = []
        self._smoothed: float | None = None
        self._warned = False
        self._uniform: float | None = None

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        vocab = getattr(getattr(pl_module, "config", None), "vocab_size", None)
        self._uniform = math.log(vocab) if vocab else None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        # The module's own counter is the data position (RankBatches' micro-batch index); fall back to Lightning's.
        self._batches.append(int(getattr(pl_module, "train_batches", batch_idx)))

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer
    ) -> None:
        losses, batches = self._losses, self._batches
        self._losses, self._batches = [], []
        step = trainer.global_step + 1  # the step this update would complete
        _check_learning_rate(optimizer, step)
        if getattr(trainer.precision_plugin, "scaler", None) is not None or not losses:
            return
        norm = total_grad_norm(pl_module.parameters())
        # Gradient clipping runs right after this hook and needs the same norm: hand it over
        # (GPTLightningModule.configure_gradient_clipping) instead of computing it twice.
        pl_module.unclipped_grad_norm = norm
        values = torch.stack(
            [x.float().reshape(()) for x in losses] + ([norm] if norm is not None else [])
        )
        values = values.tolist()  # the one device sync of the step
        loss_values, grad_norm = values[: len(losses)], (values[-1] if norm is not None else 0.0)
        # Under DDP gradients are already averaged over ranks, so deciding on them keeps ranks in step.
        loss_ok = trainer.world_size > 1 or all(math.isfinite(v) for v in loss_values)
        if loss_ok and math.isfinite(grad_norm):
            self._watch_divergence(trainer, optimizer, sum(loss_values) / len(loss_values), step)
            return
        what = _describe(loss_values, grad_norm, batches)
        if not self.skip_nonfinite:
            raise TrainingDiverged(
                f"{what} at step {step}; {_last_checkpoint(trainer)}. Lower optimizer.lr (now "
                f"{_lr(optimizer):.3g}), raise scheduler.warmup_steps, or set trainer.skip_nonfinite=true "
                "to skip such steps"
            )
        for p in pl_module.parameters():
            p.grad = None  # the optimizer leaves parameters without gradients untouched
        pl_module.unclipped_grad_norm = None
        self.skipped_steps += 1
        pl_module.log(
            "train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False
        )
        if trainer.is_global_zero:
            _say(f"gptlab: skipped step {step} ({what}); {self.skipped_steps} skipped so far")

    def _watch_divergence(self, trainer: L.Trainer, optimizer, loss: float, step: int) -> None:
        self._smoothed = loss if self._smoothed is None else 0.7 * self._smoothed + 0.3 * loss
        if self._uniform is None:
            return
        diverged = self._smoothed > self._uniform + DIVERGENCE_MARGIN
        if diverged and not self._warned and trainer.is_global_zero:
            _say(
                f"gptlab: warning: the training loss ({self._smoothed:.2f}) at step {step} is worse than a "
                f"uniform guess (ln {round(math.exp(self._uniform))} = {self._uniform:.2f}): the run is "
                f"diverging. The learning rate ({_lr(optimizer):.3g}) is probably too high; lower "
                "optimizer.lr or raise scheduler.warmup_steps"
            )
        self._warned = diverged


def _check_learning_rate(optimizer, step: int) -> None:
    for group in optimizer.param_groups:
        lr = group.get("lr")
        lr = float(lr) if lr is not None else 0.0
        if not math.isfinite(lr) or lr < 0:
            raise TrainingDiverged(
                f"the learning rate became {lr} at step {step}; check optimizer.lr and the scheduler settings"
            )


def _lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _describe(loss_values: list[float], grad_norm: float, batches: list[int]) -> str:
    for value, batch in zip(loss_values, batches):
        if not math.isfinite(value):
            return f"non-finite loss ({value}) on data batch {batch}"
    span = (
        f"data batch {batches[0]}"
        if len(batches) == 1
        else f"data batches {batches[0]}-{batches[-1]}"
    )
    return (
        f"non-finite gradient (norm {grad_norm}) on {span}"
        if batches
        else f"non-finite gradient (norm {grad_norm})"
    )


def _last_checkpoint(trainer: L.Trainer) -> str:
    from gptlab.training.checkpoint_schedule import schedule_of

    schedule = schedule_of(trainer)
    path = schedule.last_model_path if schedule is not None else None
    if path and Path(path).is_file():
        return f"the last good checkpoint is {path} (resume from it with ckpt_path={path})"
    return "no checkpoint was saved before it"


def _say(line: str) -> None:
    """Print without tearing Lightning's progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
