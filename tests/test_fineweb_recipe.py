"""``experiment=gpt2_fineweb``: llm.c's GPT-2 124M recipe composes as written and runs.

The recipe's corpus is 10B tokens from the Hub; here a small parquet file of Shakespeare
(a ``text`` column, like FineWeb-Edu's) stands in for it and a micro model for GPT-2, so
three real optimizer steps of the recipe run on a CPU in seconds. Everything the run does
not shrink (the order, the validation slice, the optimizer and the schedule) is the recipe's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import SHAKESPEARE, compose_train, needs_r50k, needs_shakespeare
from tests.test_resume import cli, finish, train_losses

RECIPE = ["experiment=gpt2_fineweb"]


def write_parquet(path: Path, documents: int = 40) -> Path:
    """Shakespeare as ``documents`` parquet rows of ten paragraphs each, in a ``text`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paragraphs = [p.strip() for p in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    texts = ["\n\n".join(paragraphs[10 * i : 10 * i + 10]) for i in range(documents)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=10)
    return path


def tiny(parquet: Path) -> list[str]:
    """The recipe with a micro model on the local parquet, in fp32 on a CPU, for three steps."""
    return [
        *RECIPE,
        "model=micro",
        "model.block_size=32",
        "data.source=file",
        f"data.path={parquet}",
        "data.val_split=first",
        "data.val_documents=5",
        "data.val_tokens=256",
        "data.batch_size=2",
        "data.global_batch_tokens=128",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "trainer.precision=32-true",
        "trainer.compile=false",
        "trainer.accelerator=cpu",
        "scheduler.warmup_steps=1",
        "callbacks.progress_bar.refresh_rate=0",
        "~callbacks.sample_text",
        "tokenizer=gpt2",
    ]


def test_the_recipe_composes_with_llm_c_hyperparameters(tmp_path):
    import gptlab  # noqa: F401  (registers the config schemas)

    cfg = compose_train(RECIPE, tmp_path / "run")
    assert cfg.data.name == "HuggingFaceFW/fineweb-edu" and cfg.data.source == "hf"
    assert cfg.data.subset == "sample-10BT"
    assert cfg.data.global_batch_tokens == 524288  # 2**19: llm.c's total_batch_size
    assert cfg.data.batch_size == 64 and cfg.data.block_size == 1024
    assert cfg.data.sampling == "sequential"
    assert cfg.data.val_split == "first" and cfg.data.val_documents == 100000
    assert cfg.data.val_tokens == 10485760
    assert cfg.optimizer.lr == pytest.approx(6e-4)
    assert list(cfg.optimizer.betas) == [0.9, 0.95] and cfg.optimizer.weight_decay == 0.1
    assert cfg.scheduler.name == "cosine" and cfg.scheduler.warmup_steps == 700
    assert cfg.scheduler.min_lr_ratio == 0.1 and cfg.scheduler.total_steps == 19073
    assert cfg.trainer.max_steps == 19073 and cfg.trainer.val_check_interval == 250
    assert cfg.trainer.gradient_clip_val == 1.0
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.compile is True
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (12, 12, 768)
    assert cfg.model.block_size == 1024
    assert cfg.tokenizer._target_.endswith("build_gpt2_tokenizer")
    # 524288 / (64 x 1024) = 8 accumulation steps on one device, 1 on eight: llm.c's arithmetic.
    assert cfg.data.global_batch_tokens // (cfg.data.batch_size * cfg.data.block_size) == 8


@needs_shakespeare
@needs_r50k
@pytest.mark.slow
def test_the_recipe_trains_three_steps_on_a_local_parquet(tmp_path):
    parquet = write_parquet(tmp_path / "fineweb_sample.parquet")
    run = tmp_path / "run"
    code, log = finish(cli([*tiny(parquet), f"hydra.run.dir={run}"]))
    assert code == 0, log[-4000:]
    losses = train_losses(run)
    assert len(losses) == 3 and all(0 < v < 20 for v in losses.values()), losses
    with open(run / "metrics.csv", newline="") as f:
        tokens = [float(r["train/tokens"]) for r in csv.DictReader(f) if r.get("train/tokens")]
    assert tokens == [128, 256, 384], "each step is data.global_batch_tokens (2 micro-batches)"
    metrics = (run / "metrics.csv").read_text()
    assert "val/loss" in metrics.splitlines()[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    config = (run / "config.yaml").read_text()
    assert "sampling: sequential" in config and "global_batch_tokens: 128" in config


@needs_shakespeare
@needs_r50k
def test_a_global_batch_that_does_not_divide_is_refused_in_one_sentence(tmp_path):
    parquet = write_parquet(tmp_path / "fineweb_sample.parquet", documents=12)
    args = [*tiny(parquet), "data.global_batch_tokens=100", f"hydra.run.dir={tmp_path / 'run'}"]
    code, log = finish(cli(args))
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert code == 1 and "Traceback" not in log, log[-3000:]
    assert len(errors) == 1, log[-3000:]
    assert "data.global_batch_tokens=100" in errors[0] and "multiple" in errors[0], errors[0]
