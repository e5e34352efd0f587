"""The errors that mean "the user asked for something impossible", not "gptlab has a bug".

Entry points catch exactly these and print their one-sentence message (no traceback);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal


def user_errors() -> tuple[type[BaseException], ...]:
    """Every exception type whose message is written for the user (imported lazily)."""
    from gptlab.checkpoint import CheckpointError
    from gptlab.data.sources import DataError
    from gptlab.model import ModelConfigError
    from gptlab.tokenizer import TokenizerError

    return (CheckpointError, DataError, ModelConfigError, TokenizerError, ConfigError)


class ConfigError(ValueError):
    """A run config that cannot work (e.g. a model vocabulary smaller than the tokenizer's)."""


class TrainingInterrupted(Exception):
    """The run was stopped by a signal after saving a checkpoint; ``resume=`` continues it.

    Defined here, not next to ``StopOnSignal``, so the CLI can catch it without
    importing Lightning.
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
