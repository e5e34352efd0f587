"""`python -m gptlab.tokenize` trains, saves and reports; training then uses the saved file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gptlab.errors import ConfigError
from gptlab.tokenize import tokenize
from gptlab.tokenizer import BPETokenizer
from gptlab.train import train
from tests.conftest import CONF_DIR, TINY_OVERRIDES, compose_train


def compose_tokenize(overrides: list[str], output_dir: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("tokenize", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def test_tokenize_saves_a_bpe_that_training_loads(tmp_path):
    stats = tokenize(
        compose_tokenize(["tokenizer.vocab_size=300", "tokenizer.progress=false"], tmp_path / "tok")
    )
    saved = Path(stats["path"])
    assert saved.is_file() and stats["vocab_size"] == 300
    assert 1.0 < stats["val_bytes_per_token"] < 4.0  # 44 merges compress English a little
    assert BPETokenizer.load(saved).vocab_size == 300
    cfg = compose_train(
        [*TINY_OVERRIDES, "tokenizer=bpe", f"tokenizer.path={saved}", "~callbacks.sample_text"],
        tmp_path / "run",
    )
    train(cfg)
    stored = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert stored["kind"] == "bpe" and len(stored["merges"]) == 300 - 256 - 1


def test_output_a_folder_is_refused_before_training(tmp_path):
    (tmp_path / "tokenizers").mkdir()
    start = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match="output=.*tokenizers is a folder; give a file path, e.g. output=.*tokenizer.json",
    ):
        tokenize(
            compose_tokenize(
                [
                    "tokenizer.vocab_size=300",
                    "tokenizer.progress=false",
                    f"output={tmp_path / 'tokenizers'}",
                ],
                tmp_path / "tok",
            )
        )
    assert time.perf_counter() - start < 5  # refused at once, not after training
    assert list((tmp_path / "tokenizers").iterdir()) == []
