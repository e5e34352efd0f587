"""Guarded training on real runs: a NaN stops the run (or is skipped), divergence is reported.

The faults are injected with real PyTorch hooks for exactly one step: a forward hook
that turns the logits into NaN (a non-finite loss), or a gradient hook that turns one
parameter's gradient into NaN while the loss stays finite.
"""

from __future__ import annotations

import contextlib
import math

import lightning as L
import pytest
import torch

from gptlab.train import train
from gptlab.training.guards import OutOfMemory, TrainingDiverged
from tests.conftest import TINY_OVERRIDES, compose_train

BASE = [
    *TINY_OVERRIDES,
    "~callbacks.sample_text",
    "trainer.max_steps=6",
    "checkpoint.every_n_steps=2",
]


class PoisonStep(L.Callback):
    """Make the step after ``after_step`` non-finite: its ``loss`` or only its ``grad``."""

    def __init__(self, after_step: int, kind: str = "loss") -> None:
        self.after_step, self.kind, self._handle, self.done = after_step, kind, None, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.after_step or self.done:
            return
        self.done = True
        if self.kind == "loss":
            self._handle = pl_module.model.register_forward_hook(
                lambda m, i, out: out * float("nan")
            )
        else:
            param = next(p for p in pl_module.model.parameters() if p.requires_grad)
            self._handle = param.register_hook(lambda g: g * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def poisoned(tmp_path, kind: str, *extra: str):
    return compose_train(
        [
            *BASE,
            f"+callbacks.poison={{_target_: tests.test_guards.PoisonStep, after_step: 2, kind: {kind}}}",
            *extra,
        ],
        tmp_path / "run",
    )


@pytest.mark.parametrize(
    ("kind", "what"), [("loss", "non-finite loss"), ("grad", "non-finite gradient")]
)
def test_nonfinite_step_stops_naming_step_batch_and_checkpoint(tmp_path, kind, what):
    with pytest.raises(TrainingDiverged) as caught:
        train(poisoned(tmp_path, kind))
    message = str(caught.value)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert what in message and "step 3" in message and "data batch 2" in message, message
    assert str(last) in message and "skip_nonfinite" in message, message
    data = torch.load(last, weights_only=True)
    assert data["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in data["state_dict"].values())


def test_skip_nonfinite_skips_and_counts(tmp_path, capfd):
    train(poisoned(tmp_path, "loss", "trainer.skip_nonfinite=true"))
    data = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert data["global_step"] == 6
    assert all(torch.isfinite(t).all() for t in data["state_dict"].values())
    guard = next(v for k, v in data["callbacks"].items() if k.startswith("TrainingGuard"))
    assert guard["skipped_steps"] == 1
    err = capfd.readouterr().err
    assert "skipped step 3" in err and "diverging" not in err


def test_a_diverging_learning_rate_is_reported(tmp_path, capfd):
    cfg = compose_train(
        [
            *BASE,
            "trainer.max_steps=4",
            "trainer.val_check_interval=100",
            "optimizer.lr=3.0",
            "trainer.gradient_clip_val=0",
            "scheduler=constant",
        ],
        tmp_path / "run",
    )
    with contextlib.suppress(TrainingDiverged):  # it may go on to NaN; the warning must come first
        train(cfg)
    err = capfd.readouterr().err
    assert "diverging" in err and "learning rate" in err, err[-2000:]


def test_out_of_memory_names_the_settings_that_use_less(tmp_path):
    cfg = compose_train(TINY_OVERRIDES, tmp_path / "run")
    message = str(OutOfMemory.explain(cfg, "cuda:0"))
    for option in (
        "data.batch_size",
        "trainer.accumulate_grad_batches",
        "model.block_size",
        "trainer.precision=bf16-mixed",
        "model.activation_checkpointing=true",
    ):
        assert option in message, message


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU to run out of its memory"
)
def test_real_cuda_out_of_memory_is_one_clear_error(tmp_path):
    total = torch.cuda.get_device_properties(0).total_memory
    batch = max(64, int(total / (1024 * 50304 * 4)))  # the logits alone fill the GPU
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "trainer.accelerator=gpu",
            "model=gpt124m",
            "tokenizer=gpt2",
            "model.block_size=1024",
            f"data.batch_size={batch}",
            "trainer.max_steps=1",
        ],
        tmp_path / "run",
    )
    with pytest.raises(OutOfMemory, match="data.batch_size"):
        train(cfg)
    assert math.isfinite(torch.cuda.memory_allocated())


class RaiseOutOfMemory(L.Callback):
    """Raises the accelerator's real out-of-memory error type inside a training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_inside_fit_becomes_one_clear_error(tmp_path):
    """Without a GPU to exhaust, raise the same exception type where a step would raise it."""
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "+callbacks.oom._target_=tests.test_guards.RaiseOutOfMemory",
            "~callbacks.sample_text",
        ],
        tmp_path / "run",
    )
    with pytest.raises(OutOfMemory, match="data.batch_size") as info:
        train(cfg)
    assert "out of memory on cpu" in str(info.value)


class RecordGradNorms(L.Callback):
    """Keeps each step's logged ``train/grad_norm``."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.norms.append(float(trainer.callback_metrics["train/grad_norm"]))


def test_clipping_with_the_guards_norm_equals_clipping_alone():
    """The guard hands its gradient norm to clipping; the weights must be those of plain clipping."""
    from gptlab.training.guards import TrainingGuard
    from gptlab.training.module import GPTLightningModule

    model = {"vocab_size": 20, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16}
    optimizer = {"_target_": "gptlab.training.optim.adamw", "lr": 1e-2}
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(0, 20, (4, 8), generator=generator),
            torch.randint(0, 20, (4, 8), generator=generator),
        )
        for _ in range(4)
    ]
    results = []
    for guarded in (True, False):
        torch.manual_seed(0)
        module, norms = GPTLightningModule(model, optimizer), RecordGradNorms()
        trainer = L.Trainer(
            max_steps=4,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=0.05,
            log_every_n_steps=1,
            callbacks=[TrainingGuard(), norms] if guarded else [norms],
        )
        trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
        results.append((module.state_dict(), norms.norms))
    (guarded_weights, guarded_norms), (plain_weights, plain_norms) = results
    assert all(n > 0.05 for n in plain_norms), "the test must clip on every step"
    assert guarded_norms == pytest.approx(plain_norms, rel=1e-6)
    assert all(
        torch.allclose(guarded_weights[k], plain_weights[k], rtol=0, atol=1e-7)
        for k in plain_weights
    )
