"""Exact resume: a run killed with SIGKILL and resumed matches the run that was never stopped.

Real ``python -m gptlab.train`` subprocesses, a real SIGKILL, real files. The killed run
is held (``HoldAfterStep``) right after its step-4 checkpoint, so the kill lands at a
known point without racing the (fast) training loop.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from gptlab.errors import ConfigError
from gptlab.train import train
from gptlab.training.run import merge_overrides
from tests.conftest import REPO, TINY_OVERRIDES, compose_train

N = 8  # steps of the whole run; the kill comes after the checkpoint at N/2
EXACT = [
    *TINY_OVERRIDES,
    f"trainer.max_steps={N}",
    f"trainer.val_check_interval={N // 2}",
    f"checkpoint.every_n_steps={N // 2}",
    "checkpoint.keep_last=null",
    "trainer.deterministic=true",
    "model.dropout=0.1",  # so the RNG state matters
    "~callbacks.sample_text",
]


class HoldAfterStep(L.Callback):
    """Stops the loop (by sleeping) once ``step`` optimizer steps are done and checkpointed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            (Path(trainer.default_root_dir) / "held").write_text(str(trainer.global_step))
            time.sleep(3600)


def cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "gptlab.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_folders() -> set[Path]:
    """The run folders under the repository's outputs/ (where ``cli`` runs without hydra.run.dir land)."""
    return set((REPO / "outputs").glob("*/*"))


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out + err


def train_losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as f:
        return {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")
        }


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_and_resume_matches_the_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    p_straight = cli([*EXACT, f"hydra.run.dir={straight}"])
    p_killed = cli(
        [
            *EXACT,
            f"hydra.run.dir={killed}",
            f"+callbacks.hold={{_target_: tests.test_resume.HoldAfterStep, step: {N // 2}}}",
        ]
    )
    deadline = time.monotonic() + 240
    while not (killed / "held").exists():
        assert p_killed.poll() is None, finish(p_killed)[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached the hold point"
        time.sleep(0.05)
    p_killed.send_signal(signal.SIGKILL)  # no handler, no cleanup: a crash
    p_killed.wait()
    code, log = finish(p_straight)
    assert code == 0, log[-3000:]
    assert (
        torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == N // 2
    )

    # Resume with nothing but the folder: the run's own overrides come back, minus the hold
    # (``++key=null`` replaces what the first run added; ``~key`` would not compose today's defaults).
    runs_before = run_folders()
    code, log = finish(cli([f"resume={killed}", "++callbacks.hold=null"]))
    assert code == 0, log[-3000:]
    assert run_folders() == runs_before, (
        "the resumed run left a new, empty run folder under outputs/"
    )
    assert (killed / ".hydra" / "overrides.yaml").read_text().count(
        "resume="
    ) == 1  # Hydra's record is here

    expected, got = train_losses(straight), train_losses(killed)
    assert sorted(expected) == list(range(N)) or sorted(expected) == list(range(1, N + 1))
    assert set(got) == set(expected), "metrics.csv lost the rows from before the kill"
    for step in expected:
        assert abs(got[step] - expected[step]) <= 1e-6, (step, got[step], expected[step])
    a, b = (
        weights(straight / "checkpoints" / "last.ckpt"),
        weights(killed / "checkpoints" / "last.ckpt"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_the_data_stream_and_step(tmp_path):
    run = tmp_path / "run"
    base = [
        *TINY_OVERRIDES,
        "~callbacks.sample_text",
        "trainer.accumulate_grad_batches=2",
        "trainer.val_check_interval=100",
    ]
    train(compose_train([*base, "trainer.max_steps=2", "checkpoint.every_n_steps=2"], run))
    train(compose_train([*base, "trainer.max_steps=3", f"resume={run}"], tmp_path / "elsewhere"))
    data = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert data["global_step"] == 3
    assert (
        data["gptlab"]["train_batches"] == 3 * 2
    )  # every drawn batch counted once: no repeats, no gaps
    assert not (tmp_path / "elsewhere").exists(), (
        "resume= must keep writing into the run's own folder"
    )


def test_resume_refuses_another_model_and_a_missing_run(tmp_path):
    run = tmp_path / "run"
    train(compose_train([*TINY_OVERRIDES, "~callbacks.sample_text", "trainer.max_steps=3"], run))
    with pytest.raises(ConfigError, match="n_layer"):
        train(compose_train([*TINY_OVERRIDES, "model.n_layer=3", f"resume={run}"], tmp_path / "x"))
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(compose_train([*TINY_OVERRIDES, f"resume={tmp_path}"], tmp_path / "y"))
    with pytest.raises(ConfigError, match="no such run folder"):
        train(compose_train([*TINY_OVERRIDES, f"resume={tmp_path / 'nope'}"], tmp_path / "z"))


def test_merge_overrides_later_wins_and_add_then_delete_cancels():
    merged = merge_overrides(
        ["model=micro", "trainer.max_steps=8", "+callbacks.hold={_target_: x.Y}"],
        ["trainer.max_steps=20", "~callbacks.hold", "optimizer.lr=1e-3"],
    )
    assert merged == ["model=micro", "trainer.max_steps=20", "optimizer.lr=1e-3"]


@pytest.mark.slow
def test_sigint_and_sigterm_save_at_a_step_boundary_and_exit_cleanly(tmp_path):
    """A real signal mid-run: the step finishes (all 3 accumulated batches), is saved, the run stops."""
    args = [
        *TINY_OVERRIDES,
        "~callbacks.sample_text",
        "trainer.max_steps=1000000",
        "trainer.val_check_interval=1000000",
        "checkpoint.every_n_steps=2",
        "trainer.accumulate_grad_batches=3",
    ]
    runs = {sig: tmp_path / sig.name for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = {sig: cli([*args, f"hydra.run.dir={run}"]) for sig, run in runs.items()}
    for sig, run in runs.items():
        deadline = time.monotonic() + 240
        # Training is under way once any step checkpoint exists (keep_last prunes the early ones).
        while not any((run / "checkpoints").glob("step*.ckpt")):
            assert procs[sig].poll() is None, finish(procs[sig])[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached its first checkpoint"
            time.sleep(0.05)
        procs[sig].send_signal(sig)
    for sig, run in runs.items():
        code, log = finish(procs[sig], timeout=120)
        assert code == 128 + sig, log[-3000:]
        assert (
            "Traceback" not in log and f"{sig.name} received" in log and f"resume={run}" in log
        ), log[-3000:]
        data = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert data["global_step"] >= 2
        assert data["gptlab"]["train_batches"] == 3 * data["global_step"], (
            "saved in the middle of a step"
        )
        assert max(train_losses(run)) == data["global_step"] - 1, (
            "metrics.csv lags behind the checkpoint"
        )

    run = runs[signal.SIGTERM]
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    train(
        compose_train(
            [*args, f"trainer.max_steps={step + 1}", f"resume={run}"], tmp_path / "unused"
        )
    )
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step + 1
    )
