"""``gptlab.evaluate``: every token of the split scored once, numbers checked by hand."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gptlab.errors import ConfigError
from gptlab.evaluate import evaluate, score_tokens
from gptlab.train import train
from tests.conftest import CONF_DIR, TINY_OVERRIDES, compose_train


class Uniform(torch.nn.Module):
    """Equal logits everywhere: the loss of every prediction is exactly ln(vocab)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.lengths: list[tuple[int, int]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.lengths.append(tuple(ids.shape))
        return torch.zeros(*ids.shape, self.vocab)


@pytest.mark.parametrize("n_tokens", [2, 9, 33, 64, 65])
def test_every_token_after_the_first_is_predicted_exactly_once(n_tokens):
    model = Uniform(vocab=7)
    total, count = score_tokens(model, np.arange(n_tokens) % 7, block_size=8, batch_size=3)
    assert count == n_tokens - 1
    assert total / count == pytest.approx(math.log(7))
    assert sum(b * t for b, t in model.lengths) == n_tokens - 1
    assert all(t <= 8 for _, t in model.lengths)


def test_windows_do_not_overlap_and_see_only_their_own_context():
    """Brute force: the sum over windows equals the per-window losses of an exact model call."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 5))
    tokens = np.random.default_rng(0).integers(0, 5, size=23)
    total, count = score_tokens(model, tokens, block_size=4, batch_size=2)
    expected = 0.0
    for start in range(0, 22, 4):
        window = torch.tensor(tokens[start:min(start + 5, 23)])
        logits = model(window[None, :-1])[0].detach()
        expected += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
    assert count == 22 and total == pytest.approx(expected, rel=1e-6)


def compose_evaluate(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A micro model on a shared CPU runs fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = compose_train([*TINY_OVERRIDES, "~callbacks.sample_text"], tmp_path_factory.mktemp("eval") / "run")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def test_scores_the_whole_validation_split_and_writes_json_beside_the_checkpoint(checkpoint):
    cfg = compose_evaluate([f"ckpt={checkpoint}", "data=pydoc", "progress=false", "batch_size=64"])
    result = evaluate(cfg)
    out = checkpoint.with_name("last.eval-pydoc-val.json")
    assert Path(result["output"]) == out
    saved = json.loads(out.read_text())
    assert saved["predicted_tokens"] == saved["tokens"] - 1 > 10_000  # the whole split, not a sample
    assert saved["perplexity"] == pytest.approx(math.exp(saved["loss"]))
    assert saved["bpb"] == pytest.approx(saved["loss"] / math.log(2) / (saved["bytes"] / saved["tokens"]))
    assert 2.0 < saved["loss"] < math.log(103) + 0.5 and saved["block_size"] == 32


def test_split_all_scores_the_whole_corpus(checkpoint, tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 40)
    result = evaluate(compose_evaluate([f"ckpt={checkpoint}", "data=local", f"data.path={corpus}", "split=all",
                                        "progress=false", f"output={tmp_path}/e.json"]))
    assert result["predicted_tokens"] == len(corpus.read_text()) - 1  # characters: one token each
    assert json.loads((tmp_path / "e.json").read_text())["split"] == "all"


def test_bad_settings_are_refused_in_one_sentence(checkpoint):
    with pytest.raises(ConfigError, match="ckpt=<path"):
        evaluate(compose_evaluate([]))
    with pytest.raises(ConfigError, match="split=test"):
        evaluate(compose_evaluate([f"ckpt={checkpoint}", "split=test"]))


@pytest.mark.slow
def test_cli_prints_the_numbers_and_user_errors_without_traceback(checkpoint, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "gptlab.evaluate"]
    corpus = tmp_path / "short.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 30)
    out = subprocess.run([*run, f"ckpt={checkpoint}", "data=local", f"data.path={corpus}", f"output={tmp_path}/r.json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "perplexity" in out.stdout and "bpb" in out.stdout and "evaluating" in out.stderr  # the progress bar
    assert not (tmp_path / "outputs").exists()  # no run folder for an evaluation
    bad = subprocess.run([*run, f"ckpt={tmp_path}/missing.ckpt"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("error:")][0].count("does not exist") == 1
