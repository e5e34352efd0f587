"""The errors that mean "the user asked for something impossible", not "gptlab has a bug".

Every such error subclasses ``GptlabError`` where it is defined (``ConfigError`` here,
``CheckpointError`` in ``checkpoint.py``, ``DataError``, ``ModelConfigError``,
``TokenizerError``, ``CompareError``, the training guards' ``TrainingDiverged`` and
``OutOfMemory``). Its message is one sentence written for the user that names the fix;
the entry points (``gptlab.cli.entry_point``) print it as ``error: ...`` without a
traceback. Anything else is a bug and keeps its traceback.

This module imports nothing heavy (no torch, no Lightning), so a command-line tool can
catch these types before it has imported either.
"""

from __future__ import annotations

import signal


class GptlabError(Exception):
    """Base of every error whose message is one sentence for the user (problem and fix)."""


class ConfigError(GptlabError, ValueError):
    """A run config that cannot work (e.g. a model vocabulary smaller than the tokenizer's)."""


class TrainingInterrupted(Exception):
    """The run was stopped by a signal after saving a checkpoint; ``resume=`` continues it.

    Not a ``GptlabError``: it is not a failure, and the entry point exits with the shell's
    status for the signal (128 + signum). Defined here, not next to ``StopOnSignal``, so
    the CLI can catch it without importing Lightning.
    """

    def __init__(self, signum: int, step: int, checkpoint: str, run_dir: str) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after step {step} and saved {checkpoint}; "
            f"continue with python -m gptlab.train resume={run_dir}"
        )
