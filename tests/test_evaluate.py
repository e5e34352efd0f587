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

from gptlab.errors import ConfigError
from gptlab.evaluate import evaluate, score_tokens
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES, compose_evaluate, compose_train


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
        window = torch.tensor(tokens[start : min(start + 5, 23)])
        logits = model(window[None, :-1])[0].detach()
        expected += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
    assert count == 22 and total == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = compose_train(
        [*TINY_OVERRIDES, "~callbacks.sample_text"], tmp_path_factory.mktemp("eval") / "run"
    )
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def test_scores_the_whole_validation_split_and_writes_json_beside_the_checkpoint(checkpoint):
    cfg = compose_evaluate([f"ckpt={checkpoint}", "data=pydoc", "progress=false", "batch_size=64"])
    result = evaluate(cfg)
    out = checkpoint.with_name("last.eval-pydoc-val.json")
    assert Path(result["output"]) == out
    saved = json.loads(out.read_text())
    assert (
        saved["predicted_tokens"] == saved["tokens"] - 1 > 10_000
    )  # the whole split, not a sample
    assert saved["perplexity"] == pytest.approx(math.exp(saved["loss"]))
    assert saved["bpb"] == pytest.approx(
        saved["loss"] / math.log(2) / (saved["bytes"] / saved["tokens"])
    )
    assert 2.0 < saved["loss"] < math.log(103) + 0.5 and saved["block_size"] == 32


def test_split_all_scores_the_whole_corpus(checkpoint, tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 40)
    result = evaluate(
        compose_evaluate(
            [
                f"ckpt={checkpoint}",
                "data=local",
                f"data.path={corpus}",
                "split=all",
                "progress=false",
                f"output={tmp_path}/e.json",
            ]
        )
    )
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
    out = subprocess.run(
        [
            *run,
            f"ckpt={checkpoint}",
            "data=local",
            f"data.path={corpus}",
            f"output={tmp_path}/r.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "perplexity" in out.stdout and "bpb" in out.stdout and "evaluating" in out.stderr
    )  # the progress bar
    assert not (tmp_path / "outputs").exists()  # no run folder for an evaluation
    bad = subprocess.run(
        [*run, f"ckpt={tmp_path}/missing.ckpt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("error:")][0].count(
        "does not exist"
    ) == 1


# --- nothing silently wrong, nothing lost ------------------------------------------------


def _damaged_copy(checkpoint: Path, folder: Path, change) -> Path:
    data = torch.load(checkpoint, weights_only=True)
    data.pop("gptlab_checksum", None)  # the damage is in the values themselves, not a flipped bit
    change(data["state_dict"])
    torch.save(data, folder / "damaged.ckpt")
    return folder / "damaged.ckpt"


def test_non_finite_weights_are_refused_not_scored_as_infinity(checkpoint, tmp_path):
    from gptlab.checkpoint import CheckpointError

    def nan(state):
        state["model.transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")

    damaged = _damaged_copy(checkpoint, tmp_path, nan)
    with pytest.raises(
        CheckpointError, match="weights are not finite .*transformer.h.0.mlp.c_fc.weight"
    ):
        evaluate(compose_evaluate([f"ckpt={damaged}", "progress=false"]))

    def huge(state):  # every weight finite, but the outputs overflow: the loss is not a number
        state["model.transformer.wte.weight"].fill_(3e38)

    damaged = _damaged_copy(checkpoint, tmp_path, huge)
    with pytest.raises(CheckpointError, match="loss of .* is not finite"):
        evaluate(compose_evaluate([f"ckpt={damaged}", "progress=false"]))
    assert not list(tmp_path.glob("*.json"))  # no JSON with "perplexity": Infinity


def _evaluate_cli(checkpoint: Path, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    corpus = cwd / "short.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 30)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gptlab.evaluate",
            f"ckpt={checkpoint}",
            "data=local",
            f"data.path={corpus}",
            "progress=false",
            *overrides,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_numbers_are_printed_even_when_the_json_cannot_be_written(checkpoint, tmp_path):
    """output= a folder, or a read-only folder: the score is on stdout, stderr says where it failed."""
    from tests.disk_faults import read_only_folder

    (tmp_path / "results").mkdir()
    out = _evaluate_cli(checkpoint, tmp_path, f"output={tmp_path / 'results'}")
    assert out.returncode == 1 and "perplexity" in out.stdout and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the numbers above were not saved: output={tmp_path / 'results'} is a folder; "
        f"give a file path, e.g. output={tmp_path / 'results'}/eval.json"
    ]
    with read_only_folder(tmp_path) as folder:
        out = _evaluate_cli(checkpoint, tmp_path, f"output={folder / 'e.json'}")
        assert out.returncode == 1 and "perplexity" in out.stdout and "Traceback" not in out.stderr
        error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert (
            len(error) == 1
            and "the numbers above were not saved" in error[0]
            and str(folder / "e.json") in error[0]
        )
        assert list(folder.iterdir()) == []
