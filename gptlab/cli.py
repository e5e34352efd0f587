"""What every ``python -m gptlab.<command>`` does with an error: one sentence, or a traceback for a bug.

    @hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
    @entry_point
    def main(cfg: DictConfig) -> None: ...

``entry_point`` wraps the function Hydra calls:

* a ``GptlabError`` prints ``error: <its sentence>`` to stderr and exits 1;
* so do the raw failures a user can cause, each turned into one sentence by
  ``user_message``: disk problems (``OSError``: a missing file, a read-only folder, a
  full disk, a folder where a file should be), Hydra's ``InstantiationException`` (the
  error of the object the config builds), a file that is not JSON, not UTF-8 or not a
  safetensors file;
* ``TrainingInterrupted`` (a signal stopped training after a checkpoint) prints
  ``gptlab: <message>`` and exits with the shell's status for the signal, 128 + signum;
* in a Hydra multirun, a failed job must not end the sweep: it prints
  ``job failed: <last line>``, writes ``error.txt`` (the sentence, or the traceback of a
  bug) into the job's run folder and returns ``cfg.fail_value`` (default inf) as the
  job's result for the sweeper;
* anything else is a bug and keeps its traceback.

Light imports only (no torch, no Lightning), so a command fails fast on bad input.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptlab.errors import GptlabError, TrainingInterrupted

# What to tell the user for the OSErrors a path or a disk causes (errno -> problem; fix).
_OS_ERRORS = {
    errno.ENOENT: ("does not exist", "check the path"),
    errno.EACCES: (
        "cannot be accessed (permission denied)",
        "choose a path you may read and write, or fix its permissions",
    ),
    errno.EPERM: (
        "cannot be accessed (operation not permitted)",
        "choose a path you may read and write, or fix its permissions",
    ),
    errno.EROFS: (
        "is on a read-only file system",
        "write somewhere else (e.g. under your home folder)",
    ),
    errno.ENOSPC: (
        "cannot be written: the disk is full",
        "free some space or write to another disk",
    ),
    errno.EDQUOT: (
        "cannot be written: the disk quota is exceeded",
        "free some space or write to another disk",
    ),
    errno.EISDIR: ("is a folder where a file is expected", "give a file path"),
    errno.ENOTDIR: (
        "has a file where a folder is expected",
        "give a path whose parent folders are folders",
    ),
    errno.EEXIST: ("already exists", "remove it or choose another path"),
    errno.ENAMETOOLONG: ("is too long a name", "choose a shorter path"),
    errno.EFBIG: (
        "cannot be written: the file size limit is reached",
        "raise the limit (ulimit -f) or write less",
    ),
    errno.EMFILE: (
        "cannot be opened: too many open files",
        "raise the limit (ulimit -n) or use fewer data workers",
    ),
}


def user_message(error: BaseException) -> str | None:
    """The one sentence for an error the user caused (what went wrong and the fix), or None for a bug."""
    if isinstance(error, GptlabError):
        return str(error)
    if isinstance(error, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at position "
            f"{error.start}); save it as UTF-8"
        )
    if isinstance(error, json.JSONDecodeError):
        return f"a JSON file is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); fix or rewrite it"
    if isinstance(error, OSError) and error.errno is not None:
        return _os_message(error)
    if type(error).__name__ == "MissingMandatoryValue" and getattr(error, "full_key", None):
        key = error.full_key  # type: ignore[attr-defined]  # omegaconf's errors carry it
        return f"{key} is required; give it on the command line, e.g. {key}=<value>"
    if _is_safetensors_error(error):
        return f"a .safetensors file is not readable ({str(error).splitlines()[0]}); it may be truncated or corrupt"
    if _is_instantiation_error(error):
        return _instantiation_message(error)
    return None


def _os_message(error: OSError) -> str:
    where = _written_file(error.filename) if error.filename is not None else None
    problem, fix = _OS_ERRORS.get(
        error.errno or 0, (f"failed: {error.strerror or error}", "check the path and the disk")
    )
    if where is None:
        return f"a file {problem} ({error.strerror}); {fix}"
    if error.filename2 is not None and error.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        where = error.filename2  # os.replace(tmp, target): the target is what the user named
    return f"{where} {problem}; {fix}"


def _written_file(name: Any) -> str:
    """The file the user named, for the temporary file an atomic write makes beside it."""
    path = Path(os.fsdecode(name)) if isinstance(name, (str, bytes, os.PathLike)) else None
    found = re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]+\.tmp", path.name) if path is not None else None
    return str(path.with_name(found.group(1))) if found and path is not None else str(name)


def _is_safetensors_error(error: BaseException) -> bool:
    safetensors = sys.modules.get("safetensors")
    kind = getattr(safetensors, "SafetensorError", None)
    return kind is not None and isinstance(error, kind)


def _is_instantiation_error(error: BaseException) -> bool:
    errors = sys.modules.get("hydra.errors")
    kind = getattr(errors, "InstantiationException", None)
    return kind is not None and isinstance(error, kind)


def _instantiation_message(error: BaseException) -> str | None:
    """Hydra wraps what a config's ``_target_`` raised: report that, or Hydra's own first line."""
    cause = error.__cause__
    if cause is not None:
        inner = user_message(cause)
        if inner is not None:
            return inner
        if not isinstance(cause, (TypeError, ValueError, ImportError)):
            return None  # a bug inside the object being built keeps its traceback
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines[:2]) if lines else type(error).__name__
    return f"{text}; check that config's keys and values"


def entry_point(fn: Callable[..., Any] | None = None, *, return_code: bool = False) -> Any:
    """Wrap a command's main function (see the module docstring for what happens to errors).

    ``@entry_point`` exits the process with the status; ``@entry_point(return_code=True)``
    returns it instead (1, or 128 + signum), for a ``main(argv) -> int`` that tests call.
    """
    if fn is None:
        return functools.partial(entry_point, return_code=return_code)

    def stop(code: int) -> int:
        if return_code:
            return code
        sys.exit(code)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted as e:
            # Not a failure: the checkpoint is saved. Stop (a sweep too) with the shell's status for a signal.
            print(f"gptlab: {e}", file=sys.stderr)
            return stop(128 + e.signum)
        except Exception as e:
            message = user_message(e)
            if _in_multirun():
                return failed_job(
                    args[0] if args else None,
                    f"error: {message}" if message else traceback.format_exc(),
                )
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return stop(1)

    return wrapper


def check_output_folder(argv: list[str]) -> None:
    """Refuse, in one sentence, a run folder that cannot be written, before Hydra starts.

    Hydra opens the run folder's ``train.log`` before any gptlab code runs, so a
    read-only folder would otherwise end in Hydra's "Unable to configure handler 'file'".
    The folder is ``hydra.run.dir`` (or ``hydra.sweep.dir``, or a ``resume=`` folder) when
    given, else ``outputs/`` under the working directory.
    """
    given = {k: v for k, _, v in (a.lstrip("+").partition("=") for a in argv[1:])}
    resume = given.get("resume")
    target = (
        given.get("hydra.run.dir")
        or given.get("hydra.sweep.dir")
        or (resume if resume not in (None, "auto") else None)
    )
    folder = Path(target or "outputs").expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = (
            "is not a folder"
            if not existing.is_dir()
            else "cannot be written (read-only or no permission)"
        )
        print(
            f"error: cannot write the run folder {folder}: {existing} {problem}; "
            "give a folder you may write with hydra.run.dir=<folder>",
            file=sys.stderr,
        )
        sys.exit(1)


def _in_multirun() -> bool:
    if "hydra" not in sys.modules:
        return False
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failed_job(cfg: Any, failure: str) -> float:
    """Record one failed sweep job (stderr line + ``error.txt``) and return its fail value."""
    from gptlab.utils.io import atomic_write_text

    print(f"job failed: {failure.strip().splitlines()[-1]}", file=sys.stderr)
    output_dir = _job_dir(cfg)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "error.txt", failure)
    except OSError as e:  # the sweep goes on; say why there is no error.txt
        print(
            f"job failed: could not write {output_dir / 'error.txt'} ({e.strerror})",
            file=sys.stderr,
        )
    fail_value = cfg.get("fail_value", math.inf) if hasattr(cfg, "get") else math.inf
    return float(fail_value)


def _job_dir(cfg: Any) -> Path:
    """The job's run folder: ``cfg.paths.output_dir`` when the config has one, else Hydra's."""
    try:
        return Path(cfg.paths.output_dir)
    except Exception:  # no such key, or it does not resolve
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
