"""Nothing half-written: a checkpoint write killed midway leaves the previous file whole.

The kill is a real SIGKILL sent to a real process while its temporary file is growing;
the bounded history (``checkpoint.every_n_steps`` / ``keep_last``) is checked on a real
training run.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gptlab.train import train
from gptlab.utils.io import remove_stale_temp_files
from tests.conftest import REPO, TINY_OVERRIDES, compose_train

WRITER = """
import sys, torch
from gptlab.training.checkpoint_io import AtomicCheckpointIO
io, path, megabytes = AtomicCheckpointIO(), sys.argv[1], int(sys.argv[2])
io.save_checkpoint({"version": "old", "w": torch.arange(10)}, path)
big = {"version": "new", "w": [torch.ones(1 << 18) for _ in range(megabytes)]}  # 1 MiB each
print("old saved", flush=True)
io.save_checkpoint(big, path)
"""


def kill_while_writing(path: Path, megabytes: int) -> bool:
    """Start a writer, SIGKILL it once its temporary file holds some data; True if it was mid-write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(megabytes)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "old saved", proc.stderr.read()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            temps = list(path.parent.glob(f".{path.name}.*.tmp"))
            if temps and temps[0].exists() and temps[0].stat().st_size > (1 << 20):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.001)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_kill_during_a_large_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    for megabytes in (128, 1024):  # a fast disk may finish the smaller write before the kill lands
        if kill_while_writing(path, megabytes):
            break
    else:
        raise AssertionError("could not catch the writer mid-write")
    data = torch.load(path, weights_only=True)
    assert data["version"] == "old" and torch.equal(data["w"], torch.arange(10))
    assert remove_stale_temp_files(path.parent), (
        "the killed writer's partial file should be there to clean"
    )
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_keep_last_bounds_the_checkpoints_and_last_is_the_newest(tmp_path):
    run = tmp_path / "run"
    stale = run / "checkpoints" / ".step000002.ckpt.0123abcd.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint from a killed run")
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "~callbacks.sample_text",
            "trainer.max_steps=8",
            "checkpoint.every_n_steps=2",
            "checkpoint.keep_last=2",
            "callbacks.model_checkpoint.monitor=null",
        ],
        run,
    )
    train(cfg)
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "last.ckpt",
        "step000006.ckpt",
        "step000008.ckpt",
    ]
    last, newest = folder / "last.ckpt", folder / "step000008.ckpt"
    assert last.read_bytes() == newest.read_bytes()
    assert torch.load(last, weights_only=True)["global_step"] == 8


def test_the_best_by_validation_survives_pruning(tmp_path):
    run = tmp_path / "run"
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "~callbacks.sample_text",
            "trainer.max_steps=6",
            "trainer.val_check_interval=2",
            "checkpoint.every_n_steps=2",
            "checkpoint.keep_last=1",
            "optimizer.lr=3e-2",
        ],
        run,
    )
    train(cfg)
    with open(run / "metrics.csv", newline="") as f:
        val = {int(r["step"]): float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")}
    val_step = min(val, key=val.get)
    best_step = val_step + 1  # metrics.csv counts steps from 0
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert names == {"last.ckpt", "step000006.ckpt", f"step{best_step:06d}.ckpt"}, (names, val)
    state = next(
        v
        for k, v in torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)[
            "callbacks"
        ].items()
        if k.startswith("CheckpointSchedule")
    )
    assert os.path.basename(state["best_model_path"]) in names
    assert abs(float(state["best_model_score"]) - val[val_step]) < 1e-6


def test_atomic_files_get_normal_permissions(tmp_path):
    """Temporary files are owner-only; the renamed result must be readable like any file."""
    import os

    from gptlab.utils.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
