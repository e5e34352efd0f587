"""The pretraining LightningModule: next-token cross-entropy, optimizer, schedule, metrics.

It receives plain data (the model's config dict, the optimizer and scheduler specs,
the tokenizer's dict), never built objects, so ``load_from_checkpoint`` and notebooks
rebuild it without Hydra, and checkpoints load with ``torch.load(weights_only=True)``.

Resuming continues a run exactly: besides what Lightning stores (weights, optimizer,
scheduler, loop counters) each checkpoint carries, under ``"gptlab"``, the number of
training batches drawn so far and, from the DataModule, the position in the global
batch order (chunks consumed over every rank: a resume at another number of devices
continues it), and the random generators' states (dropout), restored just before the
first resumed step.

Metrics, per optimizer step (handed to Lightning on the steps it writes: every
``trainer.log_every_n_steps``, and the last) or per validation:
    train/loss            mean next-token cross-entropy of the step's batch (nats/token)
    train/grad_norm       total gradient norm before clipping
    val/loss, val/ppl     over the fixed validation batches; perplexity = exp(loss)
    val/bpb               bits per byte = loss / ln 2 * tokens per byte of the validation
                          text, comparable between tokenizers
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from gptlab.model import GPT, GPTConfig
from gptlab.training.curriculum import Curriculum
from gptlab.training.rng_state import capture_rng_state, restore_rng_state
from gptlab.utils.spec import build


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``targets[b, t]`` from ``logits[b, t]``."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


# Attributes assigned every step that are never parameters, buffers or submodules.
# nn.Module.__setattr__ checks each assignment against all three, through Python-level
# isinstance hooks, and Lightning assigns ``_current_fx_name`` around every hook, dozens of
# times a step; skipping the checks for these names removes most of Lightning's per-step
# cost over a bare loop (measured in benchmarks/RESULTS.md, "loop overhead").
_PLAIN_STEP_ATTRIBUTES = frozenset(
    {
        "_current_fx_name",  # Lightning's own attribute: naming it is the only way to skip the checks
        "train_batches",
        "last_train_loss",
        "last_step_loss",
        "unclipped_grad_norm",
    }
)


class GPTLightningModule(L.LightningModule):
    """Trains a ``GPT`` built from ``model_config`` on (x, y) window batches."""

    def __init__(
        self,
        model_config: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        tokenizer: dict[str, Any] | None = None,
        run_config: dict[str, Any] | None = None,
        compile: bool = False,
        curriculum: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = GPTConfig.from_dict(model_config)
        self.model = GPT(self.config)
        self.curriculum = Curriculum(curriculum) if curriculum else None
        if compile:  # trainer.compile: how to train, not what the model is
            self.model.compile()  # in place: parameter names (and checkpoints) stay unchanged
        self.val_bytes_per_token: float | None = None
        self._val_losses: list[torch.Tensor] = []
        self._step_losses: list[torch.Tensor] = []  # this optimizer step's micro-batch losses
        self.train_batches = 0  # training batches this rank drew so far, over every launch
        self._batches_at_launch = (
            0  # ... of which before this launch (restored from the checkpoint)
        )
        self._rng_to_restore: dict[str, Any] | None = None
        # Set by TrainingGuard after backward: this step's total gradient norm, reused for clipping.
        self.unclipped_grad_norm: torch.Tensor | None = None
        self.last_train_loss: torch.Tensor | None = None  # the latest batch's loss (detached)
        self.last_step_loss: torch.Tensor | None = None  # the latest step's, over its micro-batches
        self._wall_time_before = 0.0  # seconds of training before a resume (from the checkpoint)
        self._started: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_STEP_ATTRIBUTES:
            object.__setattr__(
                self, name, value
            )  # what nn.Module ends up doing for them, minus the checks
        else:
            super().__setattr__(name, value)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _logits(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The model on ``batch[0]``, masked per document when the model asks for it.

        A third element, each token's document number, is there with data.document_ids.
        """
        docs = batch[2] if self.config.attention.document_mask and len(batch) > 2 else None
        return self.model(batch[0], document_ids=docs)

    # -- training ---------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        self.train_batches += 1
        if self.curriculum is not None:
            batch = self._warm_up(batch)
        loss = next_token_loss(self._logits(batch), batch[1])
        self.last_train_loss = loss.detach()
        self._step_losses.append(self.last_train_loss)
        if self._ends_step():
            losses = self._step_losses
            self.last_step_loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
            losses.clear()
            if self.logs_this_step():
                self._log_step_loss()
        return loss

    def _warm_up(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The curriculum's batch for the step being taken, and its window cap on the model."""
        assert self.curriculum is not None
        trainer = self._attached_trainer()
        step = trainer.global_step if trainer is not None else 0
        block = self.config.block_size
        self.model.set_window_cap(self.curriculum.window_cap(step, block))
        if self.logs_this_step():  # rows taken from the loader's batch, context, window cap
            B, T = batch[0].shape
            for name, value in self.curriculum.sizes(step, B, T).items():
                self.log(f"train/{name}", float(value), on_step=True, on_epoch=False)
        batch = self.curriculum.apply(batch, step)
        return batch

    def on_validation_start(self) -> None:
        self.model.set_window_cap(None)  # validation scores the model as it will be used

    def _ends_step(self) -> bool:
        """Whether this micro-batch is the last of its optimizer step (launches start at a step)."""
        trainer = self._attached_trainer()
        accumulate = int(trainer.accumulate_grad_batches) if trainer is not None else 1
        return (self.train_batches - self._batches_at_launch) % accumulate == 0

    def _log_step_loss(self) -> None:
        """``train/loss``: the mean over the step's micro-batches and devices, the loss the step took."""
        trainer = self._attached_trainer()
        several = trainer is not None and trainer.world_size > 1
        assert self.last_step_loss is not None
        self.log(
            "train/loss",
            self.last_step_loss,
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            sync_dist=several,
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Validate after the last step too: stop through Lightning's public flag, which does so.

        Without it a run whose ``max_steps`` is not a multiple of ``val_check_interval``
        (a short sweep job) would end without any validation score to report. When a
        validation is due at the last step anyway, nothing changes.
        """
        trainer = self.trainer
        if not 0 < trainer.max_steps <= trainer.global_step:
            return
        every = trainer.val_check_batch  # training batches between validations (inf: none planned)
        batches = trainer.global_step * trainer.accumulate_grad_batches
        if every is None or math.isinf(every) or batches % int(every):
            trainer.should_stop = True

    def logs_this_step(self) -> bool:
        """Whether this optimizer step's metrics reach the loggers: hand them over only then.

        Lightning writes step metrics every ``trainer.log_every_n_steps`` steps and drops
        the others, yet each ``self.log`` call costs Python time (about as much as all the
        rest of Lightning's loop for the shakespeare_char model). So the per-step metrics
        are logged on the steps that are written, and on the last step.
        """
        trainer = self._attached_trainer()
        if trainer is None:
            return True
        step = trainer.global_step + 1  # the step being taken (global_step counts finished ones)
        every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by a connector
        return (every > 0 and step % every == 0) or step == trainer.max_steps

    def _attached_trainer(self) -> L.Trainer | None:
        try:
            return self.trainer
        except RuntimeError:  # not attached (a notebook or a test calling the module directly)
            return None

    def wall_time(self) -> float:
        """Seconds of training so far, over every launch of the run (validation included)."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._wall_time_before + running

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.val_bytes_per_token = getattr(datamodule, "val_bytes_per_token", None)

    # -- exact resume -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gptlab"] = {
            "train_batches": self.train_batches,
            "rng": capture_rng_state(),
            "wall_time": self.wall_time(),
        }
        datamodule = self._datamodule()
        if datamodule is not None and hasattr(datamodule, "position"):
            drawn = self.train_batches - self._batches_at_launch
            checkpoint["gptlab"]["data"] = datamodule.position(drawn)

    def _datamodule(self) -> Any:
        trainer = self._attached_trainer()
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Continue the data stream where the checkpoint stopped (the loaders are built after this).

        The lr schedule's shape (warm-up, total steps, decay start) is today's config; the
        checkpoint gives only its position and base lrs. torch's LambdaLR would otherwise
        copy the saved schedule object's fields over today's: a resume with its own config
        is unchanged either way, but a run branched from another's checkpoint with its own
        decay (the ladder's warm-up/stable/decay branches) would silently keep the old one.
        """
        for scheduler in checkpoint.get("lr_schedulers") or []:
            if isinstance(scheduler, dict) and "lr_lambdas" in scheduler:
                scheduler["lr_lambdas"] = [None] * len(scheduler["lr_lambdas"])
        trainer = self._attached_trainer()
        state = checkpoint.get("gptlab") or {}
        self._wall_time_before = float(state.get("wall_time", 0.0))
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        # Checkpoints from before the counter existed: every step drew accumulate_grad_batches batches.
        self.train_batches = int(
            state.get("train_batches", checkpoint.get("global_step", 0) * accumulate)
        )
        self._batches_at_launch = self.train_batches
        self._rng_to_restore = state.get("rng")
        datamodule = self._datamodule()
        if datamodule is not None and hasattr(datamodule, "resume_at"):
            datamodule.resume_at(state.get("data"), self.train_batches)

    def on_train_start(self) -> None:
        """Restore the generators only now: setting up the loaders and the loop draws nothing after this."""
        self._started = time.perf_counter()
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    # -- validation -------------------------------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._val_losses.append(next_token_loss(self._logits(batch), batch[1]).detach())

    def on_validation_epoch_end(self) -> None:
        """The mean over every validation batch of every rank, however unevenly they were shared.

        Each rank sends its sum and count (a rank may have none: every rank must still
        join the reduction, or the others wait for it forever).
        """
        losses = self._val_losses
        local = torch.stack(losses).sum() if losses else torch.zeros((), device=self.device)
        count = torch.tensor(float(len(losses)), device=local.device)
        self._val_losses = []
        total, n = self.trainer.strategy.reduce(torch.stack([local, count]), reduce_op="sum")
        if n == 0:
            return
        loss = total / n
        # Every rank now holds the same value, so sync_dist only silences Lightning's warning.
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", torch.exp(loss), sync_dist=True)
        if self.val_bytes_per_token:
            self.log("val/bpb", loss / math.log(2) / self.val_bytes_per_token, sync_dist=True)

    # -- optimizer --------------------------------------------------------------------
    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip here, not in Lightning's precision plugin, so fused AdamW can be clipped.

        Lightning refuses to clip for any optimizer that "handles unscaling" (the fused
        ones) because fp16 gradients may still be scaled. Without a gradient scaler
        (fp32, bf16) they are not, so clipping is safe; with one, Lightning's path runs.
        """
        if not gradient_clip_val:
            return
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [
            p for group in optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            norm, self.unclipped_grad_norm = self.unclipped_grad_norm, None
            if norm is not None and hasattr(
                torch.nn.utils, "clip_grads_with_norm_"
            ):  # torch >= 2.6
                torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)
            else:
                norm = torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            if self.logs_this_step():
                self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def configure_optimizers(self):
        optimizer = build(dict(self.hparams["optimizer"]), self.model)
        if not self.hparams["scheduler"]:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": build(dict(self.hparams["scheduler"]), optimizer),
        }
