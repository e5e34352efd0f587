"""Fault injection through the real command line: kills at chosen points, requeues, two
processes on one folder, a refused resume, a signal during the end-of-run sample, a short sweep.

Every case is a real ``python -m gptlab.train`` subprocess. A run is held at a chosen
hook and step by ``HoldAt`` (it sleeps there), so that a SIGKILL lands at a known
point without racing the fast training loop.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import TINY_OVERRIDES
from tests.test_resume import cli, finish  # one way to start and finish a training subprocess

pytestmark = pytest.mark.slow

N = 8
EXACT = [
    *TINY_OVERRIDES,
    f"trainer.max_steps={N}",
    "trainer.val_check_interval=2",
    "checkpoint.every_n_steps=2",
    "checkpoint.keep_last=null",
    "trainer.deterministic=true",
    "model.dropout=0.1",
    "~callbacks.sample_text",
]
# Columns that measure the machine, not the run.
TIMING = ("perf/tokens_per_sec", "train/wall_time")


class HoldAt(L.Callback):
    """Waits in ``hook`` once ``step`` optimizer steps are done, while the file ``held`` exists in the
    run folder (the test kills the run there, or deletes the file to let it go on)."""

    def __init__(self, hook: str, step: int) -> None:
        self.hook, self.step = hook, step

    def _maybe_hold(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self.step and not trainer.sanity_checking:
            marker = Path(trainer.default_root_dir) / "held"
            marker.write_text(f"{self.hook} {trainer.global_step}")
            while marker.exists():
                time.sleep(0.05)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.hook == "on_train_batch_end":
            self._maybe_hold(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.hook == "on_validation_end":
            self._maybe_hold(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.hook == "on_train_batch_start":
            self._maybe_hold(trainer)


def hold(hook: str, step: int) -> str:
    return (
        f"+callbacks.hold={{_target_: tests.test_run_recovery.HoldAt, hook: {hook}, step: {step}}}"
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, finish(proc)[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def table(run: Path) -> list[dict[str, float]]:
    """metrics.csv without the timing columns, as numbers."""
    with open(run / "metrics.csv", newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v and k not in TIMING}
            for row in csv.DictReader(f)
        ]


def same_table(got: list[dict[str, float]], expected: list[dict[str, float]]) -> bool:
    return len(got) == len(expected) and all(
        g.keys() == e.keys()
        and all(math.isclose(g[k], e[k], rel_tol=1e-6, abs_tol=1e-7) for k in e)
        for g, e in zip(got, expected, strict=True)
    )


KILL_POINTS = [
    ("on_train_batch_end", 5),
    ("on_train_batch_end", 6),
    ("on_validation_end", 6),
    ("on_train_batch_start", 6),
]


def test_after_a_kill_anywhere_and_a_resume_metrics_csv_equals_the_straight_runs(tmp_path):
    straight = tmp_path / "straight"
    procs = {
        point: cli([*EXACT, f"hydra.run.dir={tmp_path / '-'.join(map(str, point))}", hold(*point)])
        for point in KILL_POINTS
    }
    code, log = finish(cli([*EXACT, f"hydra.run.dir={straight}"]))
    assert code == 0, log[-3000:]
    expected = table(straight)
    assert [int(r["step"]) for r in expected] == list(range(N))
    for point, proc in procs.items():
        run = tmp_path / "-".join(map(str, point))
        wait_for(run / "held", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        code, log = finish(cli([f"resume={run}", "++callbacks.hold=null"]))
        assert code == 0, (point, log[-3000:])
        assert same_table(table(run), expected), (point, table(run), expected)
        a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), point


def test_a_second_process_on_a_run_folder_is_refused_while_the_first_lives(tmp_path):
    run = tmp_path / "run"
    first = cli([*EXACT, f"hydra.run.dir={run}", hold("on_train_batch_start", 2)])
    try:
        wait_for(run / "held", first)
        code, log = finish(cli([*EXACT, f"hydra.run.dir={run}"]))
        assert code == 1 and f"in use by pid {first.pid}" in log and "Traceback" not in log, log[
            -3000:
        ]
        code, log = finish(cli([f"resume={run}", "++callbacks.hold=null"]))
        assert code == 1 and f"in use by pid {first.pid}" in log, log[-3000:]
    finally:
        first.kill()
        first.wait()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_a_refused_resume_leaves_the_run_resumable(tmp_path):
    run = tmp_path / "run"
    code, log = finish(cli([*EXACT, "trainer.max_steps=2", f"hydra.run.dir={run}"]))
    assert code == 0, log[-3000:]
    recorded = (run / "overrides.yaml").read_text()
    code, log = finish(cli([f"resume={run}", "model.n_layer=3"]))
    assert code == 1 and "n_layer" in log and "Traceback" not in log, log[-3000:]
    assert (run / "overrides.yaml").read_text() == recorded, (
        "the refused resume rewrote the overrides record"
    )
    code, log = finish(cli([f"resume={run}", "trainer.max_steps=4"]))
    assert code == 0, log[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_a_job_requeued_three_times_with_resume_auto_ends_where_a_straight_run_ends(tmp_path):
    """SIGTERM (a cluster's pre-emption), then the same command again, three times."""
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    args = [
        *EXACT,
        "trainer.max_steps=40",
        "trainer.val_check_interval=10",
        "checkpoint.every_n_steps=10",
    ]
    code, log = finish(cli([*args, f"hydra.run.dir={straight}"]))
    assert code == 0, log[-3000:]
    steps = []
    for _ in range(3):
        job = cli(
            [
                *args,
                "resume=auto",
                f"hydra.run.dir={requeued}",
                hold("on_train_batch_start", 10 * (len(steps) + 1)),
            ]
        )
        wait_for(requeued / "held", job)
        job.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        (requeued / "held").unlink()  # let it go on: it stops at the next step boundary
        code, log = finish(job, timeout=120)
        assert code == 128 + signal.SIGTERM, log[-3000:]
        steps.append(
            torch.load(requeued / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        )
    code, log = finish(cli([*args, "resume=auto", f"hydra.run.dir={requeued}"]))
    assert code == 0, log[-3000:]
    assert steps == sorted(steps) and steps[-1] < 40, steps
    assert same_table(table(requeued), table(straight))
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(requeued / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, log = finish(
        cli([*args, "resume=auto", f"hydra.run.dir={requeued}"])
    )  # requeued once too often
    assert code == 1 and "already finished at step 40" in log, log[-3000:]


def test_sigterm_during_the_end_of_run_sample_stops_at_once(tmp_path):
    run = tmp_path / "run"
    args = [
        *TINY_OVERRIDES,
        "trainer.max_steps=2",
        f"hydra.run.dir={run}",
        "sampler.max_new_tokens=1000000",
    ]
    job = cli(args)
    deadline = time.monotonic() + 240
    while not (
        run / "checkpoints" / "step000002.ckpt"
    ).exists():  # written before the sample starts
        assert job.poll() is None, finish(job)[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # well inside a million-token sample
    job.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code, log = finish(job, timeout=60)
    assert time.monotonic() - sent < 10, "the signal was announced, then ignored"
    assert (
        code == 128 + signal.SIGTERM and "after the last step" in log and "Traceback" not in log
    ), log[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_a_short_sweep_with_only_wandb_trains_validates_and_compares(tmp_path):
    """20 steps never reach val_check_interval=250, and wandb is the only logger asked for."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_DIR": str(tmp_path / "wandb_home")}
    args = [
        "--multirun",
        *TINY_OVERRIDES,
        "~callbacks.sample_text",
        "model.n_layer=1,2",
        "trainer.max_steps=20",
        "trainer.val_check_interval=250",
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "gptlab.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "job failed" not in out.stderr, out.stderr[-3000:]
    for job in ("0", "1"):
        assert not (sweep / job / "error.txt").exists()
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert any(r.get("val/loss") for r in table(sweep / job))
    done = subprocess.run(
        [sys.executable, "-m", "gptlab.compare", str(sweep)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model.n_layer" in done.stdout and "no metrics" not in done.stdout + done.stderr, (
        done.stdout
    )


def test_a_full_disk_during_training_is_one_sentence_naming_the_checkpoint(tmp_path):
    from tests.disk_faults import full_disk

    with full_disk(
        tmp_path, size_kib=600
    ) as disk:  # the run's small files fit, a checkpoint does not
        code, log = finish(cli([*EXACT, "trainer.max_steps=4", f"hydra.run.dir={disk / 'run'}"]))
        assert code == 1 and "Traceback" not in log, log[-3000:]
        assert (
            f"{disk / 'run' / 'checkpoints' / 'step000002.ckpt'} cannot be written: the disk is full"
            in log
        ), log[-3000:]
        assert not [p for p in (disk / "run" / "checkpoints").iterdir()], (
            "a half-written checkpoint was left"
        )


def test_a_read_only_run_folder_is_one_sentence_before_any_work(tmp_path):
    from tests.disk_faults import read_only_folder

    with read_only_folder(tmp_path) as folder:
        for where in (folder, folder / "new"):
            code, log = finish(cli([*EXACT, f"hydra.run.dir={where}"]))
            assert code == 1 and "Traceback" not in log and "Unable to configure" not in log, log[
                -3000:
            ]
            assert f"cannot write the run folder {where}" in log, log[-3000:]


def test_a_run_folders_overrides_cannot_make_a_resume_call_an_arbitrary_function(tmp_path):
    """overrides.yaml is data a resume reads; a crafted one must not reach os.system."""
    import yaml

    run, marker = tmp_path / "run", tmp_path / "pwned"
    code, log = finish(cli([*EXACT, "trainer.max_steps=2", f"hydra.run.dir={run}"]))
    assert code == 0, log[-3000:]
    recorded = yaml.safe_load((run / "overrides.yaml").read_text())
    for evil in (
        f"+callbacks.evil={{_target_: os.system, command: 'touch {marker}'}}",
        f"+callbacks.evil={{'_target_': 'subprocess.run', args: [touch, '{marker}']}}",
    ):
        (run / "overrides.yaml").write_text(yaml.safe_dump([*recorded, evil]))
        code, log = finish(cli([f"resume={run}", "trainer.max_steps=4"]))
        assert code == 1 and "a resume does not build from a run folder's files" in log, log[-3000:]
        assert "Traceback" not in log and not marker.exists()
