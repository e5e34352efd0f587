"""Exports load back without pickle and compute the same logits as the checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
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


# --- disk problems: one sentence, nothing already there lost ------------------------------


def test_out_an_existing_file_is_refused(checkpoint, tmp_path):
    (tmp_path / "model.bin").write_text("keep me")
    with pytest.raises(ConfigError, match="out=.*model.bin is a file; an export is a folder"):
        export(checkpoint, out=tmp_path / "model.bin")
    assert (tmp_path / "model.bin").read_text() == "keep me"


def test_read_only_export_folder_is_one_sentence(checkpoint, tmp_path):
    from tests.disk_faults import read_only_folder

    with read_only_folder(tmp_path, {"config.json": b"{}"}) as folder:
        with pytest.raises(
            ConfigError,
            match=f"could not write the export to {folder} .*choose a folder you can write",
        ):
            export(checkpoint, out=folder)
        assert [p.name for p in folder.iterdir()] == ["config.json"]


def test_full_disk_leaves_the_previous_export_whole(checkpoint, tmp_path):
    from tests.disk_faults import full_disk

    size = sum(p.stat().st_size for p in export(checkpoint, out=tmp_path / "probe").iterdir())
    with full_disk(tmp_path, size_kib=size // 1024 + 64) as disk:
        first = export(checkpoint, out=disk / "export")  # the micro model's export fits
        before = {p.name: p.read_bytes() for p in first.iterdir()}
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - 4096))
        with pytest.raises(
            ConfigError, match="could not write the export to .*No space left on device"
        ):
            export(checkpoint, out=first)
        assert {
            p.name: p.read_bytes() for p in first.iterdir()
        } == before  # no temporary file, nothing cut
        assert load_model(first).kind == "export"


def test_cli_refuses_in_one_line(checkpoint, tmp_path):
    (tmp_path / "x").write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "gptlab.export", f"ckpt={checkpoint}", f"out={tmp_path / 'x'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        out.returncode == 1 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: out=")
    )
    missing = subprocess.run(
        [sys.executable, "-m", "gptlab.export"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        missing.returncode == 1
        and missing.stderr
        == "error: ckpt is required; give it on the command line, e.g. ckpt=<value>\n"
    )
