"""Impossible configs are refused before any work, with one sentence naming key and fix.

Every case also points ``data.path`` at a corpus that does not exist: if the config
error (and not "corpus does not exist") comes out, the check ran before any data work.
"""

from __future__ import annotations

import pytest

from gptlab.errors import ConfigError
from gptlab.model import ModelConfigError
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES, compose_train

NO_CORPUS = ["data=local", "data.path=/nonexistent/corpus.txt"]


@pytest.mark.parametrize(
    ("overrides", "error", "expected"),
    [
        (["model.n_embd=65"], ModelConfigError, "not divisible by model.n_head"),
        (["+model.attention.n_kv_head=3"], ModelConfigError, "n_kv_head"),
        (["data.block_size=64"], ConfigError, "longer than the model's context"),
        (["trainer.precision=16-mixed"], ConfigError, "needs a GPU"),
        (["trainer.precision=fp8"], ConfigError, "not a precision"),
        (["trainer.accelerator=gpu", "trainer.devices=64"], ConfigError, "asks for 64 GPU"),
        (["trainer.devices=0"], ConfigError, "at least 1"),
        (["optimizer.lr=-1"], ConfigError, "optimizer.lr"),
        (["optimizer.lr=.nan"], ConfigError, "optimizer.lr"),
        (["checkpoint.keep_last=0"], ConfigError, "checkpoint.keep_last"),
        (["checkpoint.every_n_steps=-5"], ConfigError, "checkpoint.every_n_steps"),
        (["trainer.skip_nonfinite=maybe"], ConfigError, "true or false"),
        (["trainer.accumulate_grad_batches=0"], ConfigError, "accumulate_grad_batches"),
        (["data.num_workers=-1"], ConfigError, "data.num_workers=-1 must be a whole number"),
        (["data.num_workers=two"], ConfigError, "data.num_workers='two' must be a whole number"),
    ],
)
def test_impossible_config_is_refused_before_any_work(tmp_path, overrides, error, expected):
    cfg = compose_train([*TINY_OVERRIDES, *NO_CORPUS, *overrides], tmp_path / "run")
    with pytest.raises(error, match=expected) as caught:
        train(cfg)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_vocabulary_smaller_than_the_tokenizer_is_refused_before_training(tmp_path):
    cfg = compose_train([*TINY_OVERRIDES, "model.vocab_size=10"], tmp_path / "run")
    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_gptlab_trainer_keys_do_not_reach_lightning(tmp_path):
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "~callbacks.sample_text",
            "trainer.max_steps=1",
            "trainer.val_check_interval=1",
            "trainer.skip_nonfinite=true",
        ],
        tmp_path / "run",
    )
    assert "val/loss" in train(cfg)  # Lightning would refuse an unknown skip_nonfinite argument
