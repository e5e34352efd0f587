"""A checkpoint crafted to run code when unpickled is refused on every path that reads one.

The payload would create a file; the tests check the refusal *and* that the file was
never created. Paths: ``ckpt_path=``, ``resume=`` and Lightning's own loader (the
``CheckpointIO`` that ``trainer.fit(ckpt_path=...)`` goes through).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import CheckpointError
from gptlab.train import train
from gptlab.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_OVERRIDES, compose_train


class Payload:
    """Unpickling this calls ``open(marker, "w")``: code running where only data was expected."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {},
            "hyper_parameters": {"model_config": {}},
            "global_step": 1,
            "x": Payload(marker),
        },
        path,
    )
    return path


def test_ckpt_path_with_pickled_code_is_refused_before_any_work(tmp_path):
    marker = tmp_path / "pwned"
    evil = craft(tmp_path / "evil.ckpt", marker)
    cfg = compose_train([*TINY_OVERRIDES, f"ckpt_path={evil}"], tmp_path / "run")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        train(cfg)
    assert not marker.exists()
    assert not (tmp_path / "run").exists(), (
        "nothing may be written before the checkpoint is trusted"
    )


def test_resume_folder_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    craft(run / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        train(compose_train([*TINY_OVERRIDES, f"resume={run}"], tmp_path / "other"))
    assert not marker.exists()


def test_lightnings_loader_is_weights_only_whatever_it_asks(tmp_path):
    marker = tmp_path / "pwned"
    evil = craft(tmp_path / "evil.ckpt", marker)
    io = AtomicCheckpointIO()
    for weights_only in (None, False, True):
        with pytest.raises(CheckpointError, match="arbitrary code"):
            io.load_checkpoint(evil, weights_only=weights_only)
    assert not marker.exists()
    good = tmp_path / "good.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "step": 3}, good)
    assert io.load_checkpoint(good)["step"] == 3
    assert list(tmp_path.glob(".*.tmp")) == []
