"""Exports load back without pickle and compute the same logits as the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import CheckpointError, load_checkpoint, load_model
from gptlab.errors import ConfigError
from gptlab.export import export
from gptlab.model import GPT
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES, compose_train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("export") / "run"
    train(compose_train([*TINY_OVERRIDES, "model.bias=true", "~callbacks.sample_text"], run))
    return run / "checkpoints" / "last.ckpt"


def test_safetensors_export_round_trips(checkpoint):
    folder = export(checkpoint)
    assert folder == checkpoint.parent.parent / "export" / "safetensors"
    loaded = load_model(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    assert loaded.kind == "export" and not model.training
    reference = load_checkpoint(checkpoint)
    ids = torch.tensor([tokenizer.encode("The value")])
    assert torch.equal(model(ids), reference.model(ids))
    assert tokenizer.to_dict() == reference.tokenizer.to_dict()


def test_hf_export_loads_in_transformers_with_same_logits(checkpoint, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = export(checkpoint, "hf", tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    reference = load_checkpoint(checkpoint).model
    ids = torch.randint(0, reference.config.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, reference(ids), atol=1e-4)
        assert torch.allclose(GPT.from_hf(folder)(ids), reference(ids), atol=1e-5)


def test_unknown_format_and_missing_files(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="not an export format"):
        export(checkpoint, "onnx")
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_model(tmp_path, kind="export")
