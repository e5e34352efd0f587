"""The run folder: what it holds, who may write it, and how a run in it continues.

One training run owns one folder (``outputs/<date>/<time>``, or a sweep job's folder):

    config.yaml            the resolved config (rewritten at every launch)
    overrides.yaml         the command-line overrides that compose it; a resume reads them
    provenance.json        every launch: command line, git commit and dirty flag, packages,
                           host, device, world size (provenance.diff: the uncommitted diff)
    metrics.csv            one row per logged step (gptlab.training.metrics_csv)
    hparams.yaml           the module's hyperparameters (model config, tokenizer, ...)
    tokenizer.json         the tokenizer the run trains with
    checkpoints/           step<N>.ckpt, the best by val/loss, last.ckpt
    summary.json           status, parameters, wall time and final metrics
    sample.txt             the end-of-training sample
    wandb_run_id.txt       so that a resume continues the same wandb run
    run.lock               pid and host of the one live process writing here
    error.txt              why a sweep job failed

Everything here is plain Python (no torch, Lightning or Hydra at import time):
``gptlab.analysis`` reads run folders back with these names.

Resuming: ``resume=<run folder>`` continues that folder's ``last.ckpt`` and
``resume=auto`` does so when the run folder has one, else starts fresh. Either way the
checkpoint must fit the model this run builds, a finished run is only continued when
``trainer.max_steps`` grows, and ``metrics.csv`` is cut back to the checkpoint's step so
that the steps redone after it are not written twice.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gptlab.errors import ConfigError
from gptlab.utils.io import atomic_write_text, remove_stale_temp_files

CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"
HYDRA_OVERRIDES = ".hydra/overrides.yaml"
PROVENANCE = "provenance.json"
PROVENANCE_DIFF = "provenance.diff"
METRICS = "metrics.csv"
HPARAMS = "hparams.yaml"
TOKENIZER = "tokenizer.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
SUMMARY = "summary.json"
SAMPLE = "sample.txt"
WANDB_RUN_ID = "wandb_run_id.txt"
LOCK = "run.lock"
ERROR = "error.txt"
# Files of which at least one marks a folder as a run folder.
RUN_MARKERS = (METRICS, CONFIG, SUMMARY, ERROR)
# Where a run's overrides are recorded: gptlab's record (kept current across resumes), then Hydra's.
OVERRIDE_FILES = (OVERRIDES, HYDRA_OVERRIDES)
# Overrides that say where a run went or came from, not what it was.
LOCATION_KEYS = ("resume", "ckpt_path")
# Model settings that do not change the weights: a resume may differ in these.
RESUME_FREE_MODEL_KEYS = ("activation_checkpointing",)
# What Lightning's FSDP writes beside the shards of a sharded checkpoint folder.
SHARDED_META = "meta.pt"
_DIFF_LIMIT = 1 << 20  # a larger uncommitted diff is recorded as its size only


# -- overrides ----------------------------------------------------------------------------
def override_key(override: str) -> str:
    """``+model.n_layer=4`` -> ``model.n_layer``; ``~callbacks.hold`` -> ``callbacks.hold``."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(base: list[str], new: list[str]) -> list[str]:
    """Command-line overrides ``base`` then ``new``, one per key, the later winning.

    Hydra refuses the same key twice, so a resumed run's own overrides cannot simply be
    followed by today's. Adding a key and then deleting it cancels both.
    """
    merged: dict[str, str] = {}
    for override in [*base, *new]:
        key = override_key(override)
        previous = merged.pop(key, None)
        if override.startswith("~") and previous is not None and previous.startswith("+"):
            continue
        merged[key] = override
    return list(merged.values())


# -- the lock -----------------------------------------------------------------------------
def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def owned(folder: Path) -> Iterator[None]:
    """Hold ``run.lock`` in ``folder`` while the body runs: one live process per run folder.

    Two runs writing one folder overwrite each other's checkpoints and interleave their
    metrics. A lock left by a killed process (same host, pid gone) is taken over with one
    line saying so; a live one, or one from another host, is refused. A folder made here
    for a run that is then refused before writing anything is removed again.
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:  # being written this instant, or garbage: look again
                time.sleep(0.05)
                holder = _read_lock(path)
            if holder and (
                holder.get("host") != me["host"] or _process_alive(int(holder.get("pid", -1)))
            ):
                raise ConfigError(
                    f"the run folder {folder} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                    f"(since {holder.get('started')}); wait for that run, or give this one another folder "
                    f"(if that process is gone, delete {path})"
                ) from None
            was = f"pid {holder.get('pid')}" if holder else "an unreadable lock"
            print(
                f"gptlab: taking over {path} from {was}, which is no longer running",
                file=sys.stderr,
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        if (_read_lock(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if created:  # a run refused before it wrote anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


# -- resuming -----------------------------------------------------------------------------
@dataclass
class Resume:
    """Where this launch writes and which checkpoint (if any) it continues from."""

    folder: Path
    checkpoint: Path | None


def resume_target(resume: str | None, ckpt_path: str | None, output_dir: str | Path) -> Resume:
    """Decide from ``resume`` and ``ckpt_path`` which folder this launch writes and what it continues.

    ``resume=<folder>`` needs that folder's ``last.ckpt``; ``resume=auto`` takes the run
    folder's ``last.ckpt`` when there is one and starts fresh otherwise (safe in a
    requeued cluster job); ``ckpt_path=last`` or a file continues that checkpoint here.
    """
    output_dir = Path(output_dir).absolute()
    if resume and ckpt_path not in (None, "", "last"):
        raise ConfigError(
            "give either resume=<run folder> or ckpt_path=<checkpoint file>, not both"
        )
    if resume == "auto":
        last = output_dir / CHECKPOINTS / LAST_CHECKPOINT
        return Resume(output_dir, last if _is_checkpoint(last) else None)
    if resume:
        folder = Path(str(resume)).expanduser().absolute()
        last = folder / CHECKPOINTS / LAST_CHECKPOINT
        if not folder.is_dir():
            raise ConfigError(
                f"resume={resume}: there is no such run folder; pass a run folder such as outputs/<date>/<time>"
            )
        if not _is_checkpoint(last):
            raise ConfigError(
                f"resume={resume}: {last} does not exist, so there is nothing to resume; start a new run instead"
            )
        return Resume(folder, last)
    if ckpt_path in (None, ""):
        return Resume(output_dir, None)
    path = (
        output_dir / CHECKPOINTS / LAST_CHECKPOINT
        if ckpt_path == "last"
        else Path(str(ckpt_path)).expanduser().absolute()
    )
    if not _is_checkpoint(path):
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not point to a checkpoint file ({path} is missing)"
        )
    return Resume(output_dir, path)


def _is_checkpoint(path: Path) -> bool:
    return path.is_file() or (path / SHARDED_META).is_file()


def check_resume(
    path: Path, saved: dict[str, Any], model_config: dict[str, Any], max_steps: int
) -> None:
    """Refuse a resume whose checkpoint does not fit the model asked for, or that would train nothing."""
    check_resume_fits(path, dict(saved["hyper_parameters"]["model_config"]), model_config)
    check_not_finished(path, int(saved.get("global_step", 0)), max_steps)


def check_resume_fits(path: Path, saved: dict[str, Any], model_config: dict[str, Any]) -> None:
    """A checkpoint only continues the model it was trained for."""
    differ = sorted(
        k
        for k in set(saved) & set(model_config)
        if k not in RESUME_FREE_MODEL_KEYS and saved[k] != model_config[k]
    )
    if differ:
        was = ", ".join(f"model.{k}={saved[k]}" for k in differ)
        now = ", ".join(f"model.{k}={model_config[k]}" for k in differ)
        raise ConfigError(
            f"the checkpoint {path} was trained with {was}, but this run asks for {now}; "
            "resume with the run's own settings (resume=<run folder> reuses them)"
        )


def check_not_finished(path: Path, step: int, max_steps: int) -> None:
    """Continuing a run that already reached ``max_steps`` would train nothing: say so."""
    if max_steps >= 0 and step >= max_steps:
        raise ConfigError(
            f"the checkpoint {path} already finished at step {step} (trainer.max_steps={max_steps}); "
            f"raise trainer.max_steps to train it further, e.g. trainer.max_steps={2 * max(step, 1)}"
        )


# -- the folder ---------------------------------------------------------------------------
class RunFolder:
    """Reads and writes the files of one run folder (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def start_launch(
        self,
        config: dict[str, Any],
        tokenizer: Any,
        overrides: list[str] | None,
        trainer: Any,
        resumed_from: dict[str, Any] | None,
    ) -> None:
        """What a launch writes before training, once every check has passed (rank zero only).

        The overrides record comes after all checks on purpose: a refused resume must
        not change what the next ``resume=`` composes. A resumed run's ``metrics.csv``
        loses the rows after its checkpoint, whose steps are redone.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.checkpoints)  # left by a run killed mid-write
        if overrides is not None:
            self.record_overrides(overrides)
        self.write_config(config)
        tokenizer.save(self.path / TOKENIZER)
        self.record_launch(int(trainer.world_size), str(trainer.strategy.root_device))
        if resumed_from is not None:
            self.cut_metrics(int(resumed_from.get("global_step", 0)))

    def recorded_overrides(self) -> list[str]:
        """The overrides the run was composed with, without those that only say where it went."""
        for name in OVERRIDE_FILES:
            if (self.path / name).is_file():
                recorded = [str(o) for o in (yaml.safe_load((self.path / name).read_text()) or [])]
                return [o for o in recorded if override_key(o) not in LOCATION_KEYS]
        return []

    def record_overrides(self, overrides: list[str]) -> None:
        atomic_write_text(
            self.path / OVERRIDES,
            yaml.safe_dump([str(o) for o in overrides], default_flow_style=False),
        )

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(
            self.path / CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        )

    def record_launch(self, world_size: int, device: str) -> dict[str, Any]:
        """Append this launch to ``provenance.json`` (and save the uncommitted diff); return it."""
        launch = provenance(world_size, device)
        diff = launch.pop("diff", None)
        if diff:
            atomic_write_text(self.path / PROVENANCE_DIFF, diff)
        path = self.path / PROVENANCE
        try:
            launches = json.loads(path.read_text()).get("launches", [])
        except (OSError, ValueError, AttributeError):
            launches = []
        atomic_write_text(path, json.dumps({"launches": [*launches, launch]}, indent=1) + "\n")
        return launch

    def cut_metrics(self, step: int) -> None:
        """Drop the rows of ``metrics.csv`` logged after ``step`` optimizer steps (and a torn last line).

        Rows count steps from 0 (the row of the step that made ``step`` steps says
        ``step - 1``): rows at ``step`` and beyond belong to steps the resumed run redoes.
        """
        path = self.path / METRICS
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # the kill tore this row in half
        if not lines:
            return
        header = next(csv.reader([lines[0]]))
        kept = [lines[0]]
        for line in lines[1:]:
            row = next(csv.reader([line]), [])
            if len(row) != len(header):
                continue
            value = dict(zip(header, row, strict=True)).get("step", "")
            with contextlib.suppress(ValueError):
                if int(float(value)) < step:
                    kept.append(line)
        if len(kept) != len(lines) or len(lines) != len(text.splitlines()):
            atomic_write_text(path, "".join(kept))


# -- provenance ---------------------------------------------------------------------------
def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("gptlab", "torch", "lightning", "hydra-core", "numpy", "tiktoken"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def provenance(world_size: int, device: str) -> dict[str, Any]:
    """What made this launch: command line, code version, packages, machine."""
    source = Path(__file__).resolve().parents[2]  # the checkout gptlab runs from, if it is one
    commit = _git(source, "rev-parse", "HEAD")
    launch: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(
            getattr(sys, "orig_argv", sys.argv)
        ),  # as typed, before DDP pinning edits argv
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "device": device,
        "world_size": world_size,
        "packages": _versions(),
        "git_commit": commit.strip() if commit else None,
        "git_dirty": None,
    }
    if commit:
        status = _git(source, "status", "--porcelain", "--untracked-files=no")
        launch["git_dirty"] = bool(status and status.strip())
        if launch["git_dirty"]:
            diff = _git(source, "diff", "HEAD") or ""
            launch["diff"] = (
                diff if len(diff) <= _DIFF_LIMIT else f"# diff of {len(diff)} characters not kept\n"
            )
    return launch


def read_commit(folder: str | Path) -> str | None:
    """The git commit (12 characters, ``+`` when the tree was dirty) of a run's latest launch."""
    try:
        launches = json.loads((Path(folder) / PROVENANCE).read_text()).get("launches") or []
    except (OSError, ValueError, AttributeError):
        return None
    if not launches or not launches[-1].get("git_commit"):
        return None
    last = launches[-1]
    return str(last["git_commit"])[:12] + ("+" if last.get("git_dirty") else "")
