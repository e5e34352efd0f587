"""Callbacks: throughput and MFU, readable validation lines, and a text sample at the end.

Each is a small Lightning callback switched on or off by name in ``conf/callbacks/``
(``~callbacks.sample_text`` removes one from the command line).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


class Throughput(L.Callback):
    """Logs tokens/s, the learning rate, cumulative tokens and training FLOPs, and MFU.

    Timing uses wall-clock time between logging points (every ``log_every_n_steps``
    optimizer steps), so it includes data loading and the optimizer: what a user
    actually gets. ``peak_flops`` is the hardware's peak FLOP/s for the run's precision,
    summed over devices (``python -m gptlab.bench_peak`` measures one).
    """

    def __init__(self, peak_flops: float | None = None, log_every_n_steps: int = 10) -> None:
        self.peak_flops = peak_flops
        self.every = max(1, log_every_n_steps)
        self.tokens = 0
        self._window_tokens = 0
        self._t0: float | None = None
        self._flops_per_token: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        block = getattr(getattr(pl_module, "config", None), "block_size", None)
        if model is not None and hasattr(model, "flops_per_token") and block:
            self._flops_per_token = float(model.flops_per_token(block))
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = batch[0]
        n = x.numel() * trainer.world_size
        self.tokens += n
        self._window_tokens += n
        step = trainer.global_step
        if step % self.every or self._window_tokens == 0 or self._t0 is None:
            return
        now = time.perf_counter()
        tokens_per_sec = self._window_tokens / max(now - self._t0, 1e-9)
        metrics = {"perf/tokens_per_sec": tokens_per_sec, "train/tokens": float(self.tokens)}
        if trainer.optimizers:
            metrics["train/lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        if self._flops_per_token:
            metrics["train/flops"] = self.tokens * self._flops_per_token
            if self.peak_flops:
                metrics["perf/mfu"] = tokens_per_sec * self._flops_per_token / self.peak_flops
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        self._t0, self._window_tokens = now, 0


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
        if "train/loss" in m:
            parts.append(f"train loss {float(m['train/loss']):.4f}")
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
        from gptlab.sampling import SamplerConfig, generate_text
        from gptlab.tokenizer import tokenizer_from_dict

        tokenizer_state = pl_module.hparams.get("tokenizer")
        if not tokenizer_state:
            return
        tokenizer = tokenizer_from_dict(tokenizer_state)
        sampler = self.sampler if self.sampler is not None else SamplerConfig()
        was_training = pl_module.training
        pl_module.eval()
        text = generate_text(pl_module.model, tokenizer, self.prompt, sampler)
        if was_training:
            pl_module.train()
        _print_above_bar(f"\n--- sample (prompt {self.prompt!r}) ---\n{self.prompt}{text}\n---")
        if self.output_file:
            from gptlab.utils.io import atomic_write_text

            path = Path(self.output_file)
            atomic_write_text(path, f"{self.prompt}{text}\n")


def _print_above_bar(line: str) -> None:
    """Print without tearing Lightning's tqdm progress bar."""
    try:
        from tqdm import tqdm

        tqdm.write(line)
    except ImportError:  # pragma: no cover
        print(line, flush=True)
