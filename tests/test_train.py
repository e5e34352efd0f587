"""End-to-end training through the real config, DataModule, LightningModule and Trainer."""

from __future__ import annotations

import csv
import logging
import math
import platform
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from gptlab.checkpoint import CheckpointError, load_checkpoint
from gptlab.errors import ConfigError
from gptlab.model import ModelConfigError
from gptlab.train import train
from gptlab.training.precision import slow_precision_warning
from tests.conftest import TINY_OVERRIDES, compose_train


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_checkpoint_config_metrics_and_sample(tiny_cfg):
    metrics = train(tiny_cfg)
    run = Path(tiny_cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file() and (run / "tokenizer.json").is_file()
    assert (run / "sample.txt").read_text().strip(), "the end-of-training sample is empty"
    rows = read_metrics(run)
    assert any(r.get("val/loss") for r in rows) and any(r.get("train/loss") for r in rows)
    assert math.isfinite(metrics["val/loss"]) and "val/bpb" in metrics and "val/ppl" in metrics


def test_loss_goes_down_from_uniform_guess(tmp_path):
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "trainer.max_steps=60",
            "trainer.val_check_interval=60",
            "optimizer.lr=3e-3",
            "~callbacks.sample_text",
        ],
        tmp_path / "run",
    )
    metrics = train(cfg)
    ckpt = load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    uniform = math.log(ckpt.model.config.vocab_size)
    # An untrained model scores ~ln(vocab); 60 steps on English must beat it clearly.
    assert metrics["val/loss"] < uniform - 0.8


def test_checkpoint_carries_model_and_tokenizer(tiny_cfg):
    train(tiny_cfg)
    loaded = load_checkpoint(Path(tiny_cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    ids = loaded.tokenizer.encode("The ")
    logits = loaded.model(torch.tensor([ids]))
    assert logits.shape == (1, len(ids), loaded.tokenizer.vocab_size)
    assert loaded.config["model"]["n_layer"] == tiny_cfg.model.n_layer


def test_checkpoint_loads_with_weights_only(tiny_cfg):
    train(tiny_cfg)
    data = torch.load(
        Path(tiny_cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert "state_dict" in data and data["hyper_parameters"]["tokenizer"]["kind"] == "char"


def test_indivisible_heads_fail_before_training(tmp_path):
    cfg = compose_train([*TINY_OVERRIDES, "model.n_embd=65"], tmp_path / "run")
    with pytest.raises(ModelConfigError, match="n_head"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_vocab_smaller_than_tokenizer_is_refused(tmp_path):
    cfg = compose_train([*TINY_OVERRIDES, "model.vocab_size=10"], tmp_path / "run")
    with pytest.raises(ConfigError, match="vocab_size"):
        train(cfg)


def test_missing_checkpoint_and_non_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a gptlab checkpoint"):
        load_checkpoint(plain)


def test_pickled_code_in_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_config": {}}, "x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_checkpoint(bad)


def test_resume_from_last_continues_the_step_count(tmp_path):
    run = tmp_path / "run"
    train(compose_train([*TINY_OVERRIDES, "~callbacks.sample_text"], run))
    cfg = compose_train(
        [*TINY_OVERRIDES, "~callbacks.sample_text", "trainer.max_steps=9", "ckpt_path=last"], run
    )
    train(cfg)
    data = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert data["global_step"] == 9


def _x86_cpu_has_bf16_kernels() -> bool | None:
    """What /proc/cpuinfo says (independently of torch): oneDNN's bf16 kernels need AVX-512 or AVX-NE-CONVERT.

    None where that cannot be read (not x86 Linux).
    """
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine().lower() not in ("x86_64", "amd64") or not cpuinfo.is_file():
        return None
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags


def test_gradient_accumulation_and_bf16_run(tmp_path, caplog):
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "trainer.accumulate_grad_batches=2",
            "trainer.precision=bf16-mixed",
            "~callbacks.sample_text",
        ],
        tmp_path / "run",
    )
    with caplog.at_level(logging.WARNING, logger="gptlab.train"):
        metrics = train(cfg)
    assert math.isfinite(metrics["val/loss"])
    slow = [r.getMessage() for r in caplog.records if "will be slow here" in r.getMessage()]
    has_bf16 = _x86_cpu_has_bf16_kernels()
    if has_bf16 is not None:
        # Without bf16 kernels a bf16 step is ~14x a float32 one: the user must be told, once.
        assert len(slow) == (0 if has_bf16 else 1), slow
    assert all("trainer.precision=32-true" in message for message in slow)


def test_no_precision_warning_for_float32_or_on_a_gpu():
    assert slow_precision_warning("32-true", torch.device("cpu")) is None
    assert slow_precision_warning("bf16-mixed", torch.device("cuda", 0)) is None


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "muon"])
@pytest.mark.parametrize("scheduler", ["cosine", "wsd"])
def test_optimizers_and_schedulers_train(tmp_path, optimizer, scheduler):
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            f"optimizer={optimizer}",
            f"scheduler={scheduler}",
            "~callbacks.sample_text",
            "trainer.max_steps=3",
        ],
        tmp_path / "run",
    )
    with open_dict(cfg):
        cfg.trainer.val_check_interval = 3
    assert math.isfinite(train(cfg)["val/loss"])


def test_tensorboard_logger_writes_event_files(tmp_path):
    cfg = compose_train(
        [*TINY_OVERRIDES, "logger=tensorboard", "~callbacks.sample_text"], tmp_path / "run"
    )
    train(cfg)
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_step_metrics_are_written_every_log_every_n_steps_and_at_the_last_step(tmp_path, capfd):
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "~callbacks.sample_text",
            "trainer.max_steps=7",
            "trainer.log_every_n_steps=3",
            "trainer.val_check_interval=7",
            "trainer.accumulate_grad_batches=2",
        ],
        tmp_path / "run",
    )
    metrics = train(cfg)
    rows = read_metrics(tmp_path / "run")
    loss_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    norm_steps = [int(r["step"]) for r in rows if r.get("train/grad_norm")]
    perf_steps = [int(r["step"]) for r in rows if r.get("perf/tokens_per_sec")]
    assert loss_steps == norm_steps == [2, 5]  # steps 3 and 6 (metrics.csv counts from 0)
    assert perf_steps == loss_steps  # the throughput callback writes once per logged optimizer step
    tokens = [float(r["train/tokens"]) for r in rows if r.get("train/tokens")]
    assert tokens == [3 * 2 * cfg.data.batch_size * cfg.data.block_size * k for k in (1, 2)]
    assert (
        "train/loss" in metrics and "train/grad_norm" in metrics
    )  # the last step's, for summary.json
    printed = capfd.readouterr().out
    assert f"step 7 | train loss {float(metrics['train/loss']):.4f}" in printed, (
        printed
    )  # step 7's loss


def test_gradient_accumulation_equals_the_large_batch():
    """Two accumulated micro-batches of 4 update the weights exactly as one batch of 8."""
    import lightning as L

    from gptlab.training.module import GPTLightningModule

    model = {
        "vocab_size": 20,
        "block_size": 8,
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 16,
        "dropout": 0.0,
    }
    # SGD: its update is linear in the gradient. (Adam divides by the gradient's size, so
    # on a gradient that is zero in theory, like the key bias's, it magnifies rounding noise.)
    optimizer = {"_target_": "gptlab.training.optim.sgd", "lr": 0.1}
    generator = torch.Generator().manual_seed(0)
    big = [
        (
            torch.randint(0, 20, (8, 8), generator=generator),
            torch.randint(0, 20, (8, 8), generator=generator),
        )
        for _ in range(3)
    ]
    halves = [(x[i : i + 4], y[i : i + 4]) for x, y in big for i in (0, 4)]
    weights = []
    for batches, accumulate in ((big, 1), (halves, 2)):
        torch.manual_seed(0)
        module = GPTLightningModule(model, optimizer)
        trainer = L.Trainer(
            max_steps=3,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=1.0,
            accumulate_grad_batches=accumulate,
        )
        trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
        assert trainer.global_step == 3
        weights.append(module.state_dict())
    large, accumulated = weights
    assert all(torch.allclose(large[k], accumulated[k], rtol=0, atol=1e-6) for k in large)
    assert not torch.equal(
        large["model.transformer.h.0.mlp.c_fc.weight"],
        GPTLightningModule(model, optimizer).state_dict()["model.transformer.h.0.mlp.c_fc.weight"],
    )
