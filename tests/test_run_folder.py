"""The run folder's owner (gptlab/training/run.py), in process: lock, provenance, resume=auto,
batch arithmetic, validation after the last step, metrics.csv's writer, pruning after a copy.

Real training runs (tiny model, seconds each), real files; the subprocess cases
(kills, requeues, two processes, sweeps) are in ``test_run_recovery.py``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.analysis.report import Options, run_rows
from gptlab.analysis.runs import read_run
from gptlab.errors import ConfigError
from gptlab.train import train
from gptlab.training.metrics_csv import MetricsCSV
from gptlab.training.run import LOCK, RunFolder, merge_overrides, read_commit
from tests.conftest import REPO, TINY_OVERRIDES, compose_train

QUIET = [*TINY_OVERRIDES, "~callbacks.sample_text"]


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def last_step(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


# -- GPT-2 presets bring GPT-2's tokenizer --------------------------------------------------
@pytest.mark.parametrize("preset", ["gpt124m", "gpt350m", "gpt774m", "gpt1558m"])
def test_gpt2_presets_bring_gpt2s_tokenizer_and_the_command_line_still_wins(tmp_path, preset):
    assert compose_train([f"model={preset}"], tmp_path).tokenizer._target_.endswith(
        "build_gpt2_tokenizer"
    )
    chosen = compose_train([f"model={preset}", "tokenizer=char"], tmp_path)
    assert chosen.tokenizer._target_.endswith("build_char_tokenizer")
    assert compose_train([], tmp_path).tokenizer._target_.endswith(
        "build_char_tokenizer"
    )  # nano keeps char


# -- one live process per run folder -------------------------------------------------------
def test_a_folder_held_by_a_live_process_is_refused_and_a_stale_lock_taken_over(tmp_path, capfd):
    run = tmp_path / "run"
    run.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(
            json.dumps({"pid": alive.pid, "host": os.uname().nodename, "started": "then"})
        )
        with pytest.raises(ConfigError, match=rf"in use by pid {alive.pid}"):
            train(compose_train(QUIET, run))
        assert not (run / "checkpoints").exists(), "the refused run wrote into the folder"
    finally:
        alive.kill()
        alive.wait()
    # The holder is gone now: its lock is stale, taken over with one line, and released at the end.
    train(compose_train(QUIET, run))
    assert f"taking over {run / LOCK} from pid {alive.pid}" in capfd.readouterr().err
    assert not (run / LOCK).exists() and last_step(run) == 6


# -- provenance ----------------------------------------------------------------------------
def test_every_launch_records_command_commit_packages_host_and_world_size(tmp_path):
    run = tmp_path / "run"
    train(compose_train([*QUIET, "trainer.max_steps=2"], run))
    train(compose_train([*QUIET, "trainer.max_steps=3", f"resume={run}"], run))
    launches = json.loads((run / "provenance.json").read_text())["launches"]
    assert len(launches) == 2
    first = launches[0]
    assert (
        first["world_size"] == 1
        and first["device"] == "cpu"
        and first["host"] == os.uname().nodename
    )
    assert first["packages"]["torch"] == torch.__version__ and "lightning" in first["packages"]
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:  # a git checkout: the commit, the dirty flag and the diff are kept
        assert first["git_commit"] == head.stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        assert first["git_dirty"] is dirty
        assert (run / "provenance.diff").is_file() is dirty
        commit = head.stdout.strip()[:12] + ("+" if dirty else "")
        assert read_commit(run) == commit
        [row] = run_rows([read_run(run)], Options())  # what python -m gptlab.compare tabulates
        assert row["commit"] == commit


# -- resume=auto ---------------------------------------------------------------------------
def test_resume_auto_starts_fresh_continues_and_refuses_a_finished_run(tmp_path):
    run = tmp_path / "run"
    train(
        compose_train([*QUIET, "trainer.max_steps=3", "resume=auto"], run)
    )  # nothing there: fresh
    assert last_step(run) == 3
    train(compose_train([*QUIET, "trainer.max_steps=5", "resume=auto"], run))  # continues
    data = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert data["global_step"] == 5 and data["gptlab"]["train_batches"] == 5
    with pytest.raises(ConfigError, match=r"already finished at step 5 .*raise trainer.max_steps"):
        train(compose_train([*QUIET, "trainer.max_steps=5", "resume=auto"], run))


# -- batch arithmetic ----------------------------------------------------------------------
def test_global_batch_tokens_derives_the_accumulation_and_refuses_what_does_not_divide(
    tmp_path, capfd
):
    # micro-batch 4 x 32 tokens on one device: 384 tokens a step is 3 accumulated micro-batches
    run = tmp_path / "run"
    train(compose_train([*QUIET, "trainer.max_steps=2", "data.global_batch_tokens=384"], run))
    assert (
        "4 sequences x 32 tokens x 1 devices x 3 accumulated = 384 tokens per step"
        in capfd.readouterr().out
    )
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["gptlab"]["train_batches"]
        == 2 * 3
    )
    with pytest.raises(
        ConfigError,
        match=r"global_batch_tokens=300 is not a multiple of .* = 128; use a multiple such as 256",
    ):
        train(compose_train([*QUIET, "data.global_batch_tokens=300"], tmp_path / "bad"))
    with pytest.raises(ConfigError, match="set only one of them"):
        train(
            compose_train(
                [*QUIET, "data.global_batch_tokens=384", "trainer.accumulate_grad_batches=2"],
                tmp_path / "both",
            )
        )


# -- a short run still reports a validation score --------------------------------------------
def test_a_run_shorter_than_the_validation_interval_validates_at_its_last_step(tmp_path):
    run = tmp_path / "run"
    metrics = train(
        compose_train([*QUIET, "trainer.max_steps=4", "trainer.val_check_interval=250"], run)
    )
    assert "val/loss" in metrics
    val_steps = [int(r["step"]) for r in rows(run) if r.get("val/loss")]
    assert val_steps == [3]  # once, after step 4 (metrics.csv counts steps from 0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["val/loss"] == pytest.approx(metrics["val/loss"])


# -- metrics.csv ---------------------------------------------------------------------------
def test_metrics_csv_merges_a_steps_metrics_into_one_row_per_step(tmp_path):
    run = tmp_path / "run"
    train(compose_train(QUIET, run))
    steps = [int(r["step"]) for r in rows(run)]
    assert steps == sorted(set(steps)), "a step appears in more than one row"
    by_step = {int(r["step"]): r for r in rows(run)}
    assert by_step[2]["val/loss"] and by_step[2]["train/loss"] and by_step[2]["perf/tokens_per_sec"]


def test_a_new_column_rewrites_metrics_csv_whole_by_replacement_and_keeps_every_row(tmp_path):
    first = MetricsCSV(tmp_path)
    first.log_metrics({"train/loss": 4.0}, step=0)
    first.log_metrics({"train/loss": 3.5}, step=1)
    first.flush()
    before = (tmp_path / "metrics.csv").stat().st_ino
    again = MetricsCSV(tmp_path)  # a resumed run's logger
    again.log_metrics({"train/loss": 3.0}, step=2)
    again.flush()
    assert (tmp_path / "metrics.csv").stat().st_ino == before, "an append must not rewrite the file"
    again.log_metrics({"train/loss": 2.5, "perf/mfu": 0.4}, step=3)  # a column the file lacks
    again.flush()
    assert (tmp_path / "metrics.csv").stat().st_ino != before, (
        "the wider file must replace the old one atomically"
    )
    table = rows(tmp_path)
    assert [r["step"] for r in table] == ["0", "1", "2", "3"]
    assert [r["train/loss"] for r in table] == ["4", "3.5", "3", "2.5"] and table[3][
        "perf/mfu"
    ] == "0.4"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cut_metrics_drops_the_steps_after_the_checkpoint_and_a_torn_last_row(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,train/loss\n0,4.1\n1,4.0\n2,3.9\n3,3.8\n4,3.")
    RunFolder(tmp_path).cut_metrics(3)
    assert (tmp_path / "metrics.csv").read_text() == "step,train/loss\n0,4.1\n1,4.0\n2,3.9\n"
    (tmp_path / "metrics.csv").write_text(
        "step,train/loss\n0,4.1\n1,4.0\n1"
    )  # torn in the step cell
    RunFolder(tmp_path).cut_metrics(5)
    assert (tmp_path / "metrics.csv").read_text() == "step,train/loss\n0,4.1\n1,4.0\n"


# -- a copied run folder still prunes --------------------------------------------------------
def test_a_run_folder_copied_elsewhere_and_resumed_still_keeps_only_keep_last(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    args = [
        *QUIET,
        "checkpoint.every_n_steps=2",
        "checkpoint.keep_last=1",
        "callbacks.model_checkpoint.monitor=null",
    ]
    train(compose_train([*args, "trainer.max_steps=4"], original))
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # the old location is gone: nothing may depend on it
    train(compose_train([*args, "trainer.max_steps=8", f"resume={copy}"], copy))
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step000008.ckpt",
    ]


def test_merge_overrides_without_hydra_keeps_one_per_key():
    assert merge_overrides(["a=1", "+b=2", "++c=3"], ["a=4", "~b", "c=5"]) == ["a=4", "c=5"]


# -- no private Lightning internals ----------------------------------------------------------
PRIVATE = re.compile(
    r"(trainer|pl_module|logger|callback|strategy|fit_loop|epoch_loop|self\.trainer)\._[a-z]"
    r"|\bself\._trainer\b|_batches_that_stepped|_ModelCheckpoint|_checkpoint_connector|_logger_connector"
    r"|from lightning[\w.]* import _|lightning[\w.]*\._\w"
)


def test_gptlab_reaches_no_private_lightning_attribute_without_saying_why():
    offenders = []
    for path in sorted((REPO / "gptlab").rglob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            code = line.split("#", 1)[0]
            if PRIVATE.search(code) or "_current_fx_name" in code:
                said = "#" in line or (number > 1 and lines[number - 2].strip().startswith("#"))
                if not said:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# -- compile is how to train, not what the model is ------------------------------------------
def test_trainer_compile_is_the_switch_and_old_checkpoints_with_model_compile_still_load(tmp_path):
    from gptlab.checkpoint import load_model

    run = tmp_path / "run"
    train(compose_train([*QUIET, "trainer.max_steps=2"], run))
    path = run / "checkpoints" / "last.ckpt"
    data = torch.load(path, weights_only=True)
    assert "compile" not in data["hyper_parameters"]["model_config"]
    assert data["hyper_parameters"]["compile"] is False
    data["hyper_parameters"]["model_config"]["compile"] = (
        True  # as checkpoints before trainer.compile had it
    )
    data.pop("gptlab_checksum", None)
    torch.save(data, tmp_path / "old.ckpt")
    assert load_model(tmp_path / "old.ckpt").model_config.n_layer == 2


def test_checkpoints_carry_a_checksum_and_a_damaged_one_is_refused_on_resume(tmp_path):
    from gptlab.checkpoint import CheckpointError

    run = tmp_path / "run"
    train(compose_train([*QUIET, "trainer.max_steps=2"], run))
    path = run / "checkpoints" / "last.ckpt"
    data = torch.load(path, weights_only=True)
    assert isinstance(data.get("gptlab_checksum"), str)
    name = next(k for k in data["state_dict"] if k.endswith("c_fc.weight"))
    data["state_dict"][name].view(-1)[0] += 1.0  # one changed weight, the checksum kept
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="damaged"):
        train(compose_train([*QUIET, "trainer.max_steps=4", f"resume={run}"], run))
