"""Callbacks: throughput and MFU, a run summary, readable validation lines, a text sample.

Each is a small Lightning callback switched on or off by name in ``gptlab/conf/callbacks/``
(``~callbacks.sample_text`` removes one from the command line).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from gptlab.errors import TrainingInterrupted


class Throughput(L.Callback):
    """Logs tokens/s, the learning rate, cumulative tokens, training FLOPs and wall time, and MFU.

    Timing uses wall-clock time between logging points (every ``log_every_n_steps``
    optimizer steps), so it includes data loading and the optimizer: what a user
    actually gets. ``peak_flops`` is the hardware's peak FLOP/s for the run's precision,
    summed over devices (``python -m gptlab.bench_peak`` measures one). ``train/tokens``,
    ``train/flops`` and ``train/wall_time`` (seconds since training started, validation
    included) are cumulative and survive a resume, so runs can be compared at equal
    data, compute or time (``python -m gptlab.compare x=flops``).
    """

    def __init__(self, peak_flops: float | None = None, log_every_n_steps: int = 10) -> None:
        self.peak_flops = peak_flops
        self.every = max(1, log_every_n_steps)
        self.tokens = 0
        self._window_tokens = 0
        self._t0: float | None = None
        self._flops_per_token: float | None = None
        self._seen_step = -1

    def state_dict(self) -> dict[str, float]:
        """Saved in checkpoints, so a resumed run keeps counting tokens and FLOPs from where it
        stopped (compute-matched comparisons read these columns)."""
        return {"tokens": float(self.tokens)}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.tokens = int(state_dict.get("tokens", 0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        block = getattr(getattr(pl_module, "config", None), "block_size", None)
        if model is not None and hasattr(model, "flops_per_token") and block:
            self._flops_per_token = float(model.flops_per_token(block))
        self._t0 = time.perf_counter()
        self._seen_step = trainer.global_step  # no optimizer step yet (nonzero after a resume)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = batch[0]
        n = x.numel() * trainer.world_size
        self.tokens += n
        self._window_tokens += n
        step = trainer.global_step
        # With gradient accumulation this hook runs once per micro-batch: log only at the
        # micro-batch that completed an optimizer step, never again before the next one.
        stepped, self._seen_step = step != self._seen_step, step
        if not stepped or step % self.every or self._t0 is None:
            return
        now = time.perf_counter()
        tokens_per_sec = self._window_tokens / max(now - self._t0, 1e-9)
        metrics = {
            "perf/tokens_per_sec": tokens_per_sec,
            "train/tokens": float(self.tokens),
            "train/wall_time": wall_time(pl_module),
        }
        if trainer.optimizers:
            metrics["train/lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        if self._flops_per_token:
            metrics["train/flops"] = self.tokens * self._flops_per_token
            if self.peak_flops:
                metrics["perf/mfu"] = tokens_per_sec * self._flops_per_token / self.peak_flops
        log_straight(trainer, metrics)
        self._t0, self._window_tokens = now, 0


def wall_time(pl_module: L.LightningModule) -> float:
    """The run's seconds of training so far, across resumes (the module keeps the one clock)."""
    clock = getattr(pl_module, "wall_time", None)
    return float(clock()) if callable(clock) else 0.0


def log_straight(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Hand ``metrics`` to the loggers directly, as Lightning's LearningRateMonitor does.

    ``self.log`` deep-copies each metric's metadata on every call, which costs more than
    the rest of the loop's bookkeeping for a small model (RESULTS.md, loop overhead). The
    rows get the step number Lightning gives the step's own metrics (steps done so far,
    counted from 0, once the step that just finished is counted), and the values also go
    into ``callback_metrics`` so ``summary.json`` and sweeps still see them.
    """
    step = trainer.global_step - 1
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})


class RunSummary(L.Callback):
    """Sends the parameter count to every logger and writes ``summary.json`` when training ends.

    The count is what comparisons of model sizes need and no per-step metric carries;
    ``summary.json`` (parameters, FLOPs per token, steps, wall time, final metrics, and
    whether the run finished) lets ``gptlab.compare`` read a run without its checkpoint.
    """

    def __init__(self, output_file: str | None = None) -> None:
        self.output_file = output_file
        self.params: int | None = None
        self.flops_per_token: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(model, "num_parameters"):
            return
        self.params = int(model.num_parameters())
        block = getattr(getattr(pl_module, "config", None), "block_size", None)
        if block and hasattr(model, "flops_per_token"):
            self.flops_per_token = float(model.flops_per_token(block))
        info: dict[str, float] = {"model/params": self.params}
        if self.flops_per_token:
            info["model/flops_per_token"] = self.flops_per_token
        for logger in trainer.loggers:
            logger.log_hyperparams(info)
        if trainer.is_global_zero:
            for logger in _wandb_loggers(
                trainer
            ):  # also a summary field, shown in wandb's run table
                logger.experiment.summary.update(info)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "finished")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._write(
            trainer,
            pl_module,
            "interrupted"
            if isinstance(exception, (KeyboardInterrupt, TrainingInterrupted))
            else "failed",
        )

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str) -> None:
        if not self.output_file:
            return
        import json

        from gptlab.utils.io import atomic_write_text

        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if hasattr(v, "numel") and v.numel() == 1
        }
        summary = {
            "status": status,
            "params": self.params,
            "flops_per_token": self.flops_per_token,
            "global_step": int(trainer.global_step),
            "wall_time": round(wall_time(pl_module), 3),
            "metrics": metrics,
        }
        atomic_write_text(Path(self.output_file), json.dumps(summary, indent=2) + "\n")


class PrintValidation(L.Callback):
    """Prints one line per validation so the loss going down is visible without a logger."""

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if "val/loss" not in m:
            return
        parts = [f"step {trainer.global_step}"]
        # The module keeps every step's loss; train/loss is only logged every log_every_n_steps.
        train_loss = getattr(pl_module, "last_step_loss", None)
        if train_loss is None:
            train_loss = m.get("train/loss")
        if train_loss is not None:
            parts.append(f"train loss {float(train_loss):.4f}")
        parts.append(f"val loss {float(m['val/loss']):.4f}")
        if "val/bpb" in m:
            parts.append(f"val bpb {float(m['val/bpb']):.4f}")
        _print_above_bar(" | ".join(parts))


class SampleText(L.Callback):
    """Generates text from the trained model at the end of training and prints and saves it."""

    def __init__(self, sampler=None, prompt: str = "", output_file: str | None = None) -> None:
        self.sampler = sampler
        self.prompt = prompt
        self.output_file = output_file

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from gptlab.model.gpt import GPT
        from gptlab.sampling import SamplerConfig, generate_text
        from gptlab.tokenizer import tokenizer_from_dict

        tokenizer_state = pl_module.hparams.get("tokenizer")
        if not tokenizer_state:
            return
        tokenizer = tokenizer_from_dict(tokenizer_state)
        sampler = self.sampler if self.sampler is not None else SamplerConfig()
        was_training = pl_module.training
        pl_module.eval()
        text = generate_text(cast(GPT, pl_module.model), tokenizer, self.prompt, sampler)
        if was_training:
            pl_module.train()
        _print_above_bar(f"\n--- sample (prompt {self.prompt!r}) ---\n{self.prompt}{text}\n---")
        if self.output_file:
            from gptlab.utils.io import atomic_write_text

            path = Path(self.output_file)
            atomic_write_text(path, f"{self.prompt}{text}\n")
        for logger in _wandb_loggers(trainer):  # samples as a wandb Table
            logger.log_text(
                key="samples",
                columns=["step", "prompt", "sample"],
                data=[[trainer.global_step, self.prompt, text]],
            )


def _wandb_loggers(trainer: L.Trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def _print_above_bar(line: str) -> None:
    """Print without tearing Lightning's tqdm progress bar."""
    from tqdm import tqdm

    tqdm.write(line)
