"""One error base and one entry-point wrapper: what a user sees when something goes wrong.

Every user-facing error is a ``GptlabError``; ``gptlab.cli.entry_point`` prints it, and
the raw failures a user can cause (disk, JSON, UTF-8, safetensors, Hydra's
instantiation), as ``error: <one sentence>`` and exits 1, keeps a bug's traceback,
exits 128 + signum for an interrupted run, and in a multirun records a failed job and
returns the fail value. The failures here are real ones (real files, real mounts, a
real Hydra sweep), not constructed stand-ins.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gptlab.cli import entry_point, user_message
from gptlab.errors import ConfigError, GptlabError, TrainingInterrupted
from tests.disk_faults import full_disk, read_only_folder

ROOT = Path(__file__).resolve().parents[1]


def caught(action) -> BaseException:
    try:
        action()
    except BaseException as e:  # the point is to look at whatever was raised
        return e
    raise AssertionError("nothing was raised")


def test_every_user_facing_error_has_the_one_base():
    from gptlab.analysis import CompareError
    from gptlab.checkpoint import CheckpointError
    from gptlab.data.sources import DataError
    from gptlab.model import ModelConfigError
    from gptlab.tokenizer import TokenizerError
    from gptlab.training.guards import OutOfMemory, TrainingDiverged

    for kind in (
        ConfigError,
        CheckpointError,
        DataError,
        ModelConfigError,
        TokenizerError,
        CompareError,
        OutOfMemory,
        TrainingDiverged,
    ):
        assert issubclass(kind, GptlabError), kind
    assert not issubclass(TrainingDiverged, ConfigError)  # a diverged run is not a bad config
    assert not issubclass(TrainingInterrupted, GptlabError)  # an interrupted run is not a failure


def test_the_error_types_import_without_torch():
    code = "import sys, gptlab.errors, gptlab.cli; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


# --- the raw failures a user causes become one sentence naming the path ----------------


def test_disk_errors_name_the_path_and_the_fix(tmp_path):
    regular = tmp_path / "notes.txt"
    regular.write_text("x")
    cases = [
        (
            lambda: (tmp_path / "missing.txt").read_text(),
            "missing.txt does not exist; check the path",
        ),
        (lambda: tmp_path.write_text("x"), "is a folder where a file is expected"),
        (lambda: (regular / "below.txt").write_text("x"), "has a file where a folder is expected"),
    ]
    for action, expected in cases:
        message = user_message(caught(action))
        assert message is not None and expected in message and "\n" not in message, message


def test_a_full_disk_is_one_sentence(tmp_path):
    with full_disk(tmp_path, size_kib=16) as disk:

        def fill():
            with open(disk / "big.bin", "wb") as f:
                f.write(b"\0" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())

        error = caught(fill)
        assert isinstance(error, OSError) and error.errno == errno.ENOSPC
        message = user_message(
            error
        )  # a write has no file name: the commands name their folder themselves
        assert (
            "the disk is full" in message and "free some space or write to another disk" in message
        )


def test_a_read_only_folder_is_one_sentence(tmp_path):
    with read_only_folder(tmp_path) as folder:
        message = user_message(caught(lambda: (folder / "new.txt").write_text("x")))
        assert str(folder / "new.txt") in message
        assert "read-only file system" in message or "permission denied" in message
        from gptlab.utils.io import atomic_write_text

        message = user_message(caught(lambda: atomic_write_text(folder / "result.json", "{}")))
        assert message.startswith(
            f"{folder / 'result.json'} "
        )  # the file asked for, not the temporary one


def test_json_utf8_and_safetensors_failures(tmp_path):
    from safetensors.torch import load_file

    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxxx")
    for action, expected in [
        (lambda: json.loads('{"a": 1,'), "is not valid JSON"),
        (lambda: b"caf\xe9".decode("utf-8"), "is not UTF-8 text"),
        (lambda: load_file(tmp_path / "bad.safetensors"), "is not readable"),
    ]:
        message = user_message(caught(action))
        assert message is not None and expected in message, message


def test_hydra_instantiation_errors_are_unwrapped():
    from hydra.utils import instantiate

    bad_corpus = caught(
        lambda: instantiate({"_target_": "gptlab.data.sources.load_corpus", "name": "no-such"})
    )
    message = user_message(bad_corpus)
    assert (
        message is not None and "Error in call to target" not in message
    )  # the DataError's own sentence
    bad_key = caught(lambda: instantiate({"_target_": "gptlab.sampling.SamplerConfig", "topk": 3}))
    assert "topk" in user_message(bad_key)
    no_target = caught(lambda: instantiate({"_target_": "gptlab.no_such_module.Thing"}))
    assert "gptlab.no_such_module.Thing" in user_message(no_target)


def test_a_bug_keeps_its_traceback():
    assert user_message(caught(lambda: [][1])) is None
    with pytest.raises(IndexError):
        entry_point(lambda: [][1])()


# --- the wrapper ------------------------------------------------------------------------


def test_entry_point_prints_one_line_and_exits_1(capsys, tmp_path):
    def command() -> None:
        raise ConfigError("model.n_layer=0 must be positive; use 1 or more")

    with pytest.raises(SystemExit) as stop:
        entry_point(command)()
    assert stop.value.code == 1
    assert capsys.readouterr().err == "error: model.n_layer=0 must be positive; use 1 or more\n"
    assert entry_point(return_code=True)(lambda: (tmp_path / "gone.txt").read_bytes())() == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'gone.txt'} does not exist")


def test_an_interrupted_run_exits_with_the_signal_status(capsys):
    def command() -> None:
        raise TrainingInterrupted(signal.SIGTERM, 7, "last.ckpt", "outputs/run")

    assert entry_point(return_code=True)(command)() == 128 + signal.SIGTERM
    assert capsys.readouterr().err.startswith("gptlab: SIGTERM received: stopped after step 7")


def test_a_failed_multirun_job_records_error_txt_and_the_sweep_goes_on(tmp_path):
    """A real Hydra sweep of two jobs that both fail: exit 0, one line and one error.txt each."""
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptlab.evaluate",
            "--multirun",
            f"ckpt={tmp_path}/a.ckpt,{tmp_path}/b.ckpt",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    failed = [line for line in out.stderr.splitlines() if line.startswith("job failed: ")]
    assert len(failed) == 2 and all("does not exist" in line for line in failed), out.stderr
    errors = sorted(sweep.glob("*/error.txt"))
    assert len(errors) == 2 and errors[0].read_text().startswith("error: checkpoint ")
    assert "Traceback" not in out.stderr
