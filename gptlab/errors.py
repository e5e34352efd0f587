"""The errors that mean "the user asked for something impossible", not "gptlab has a bug".

Entry points catch exactly these and print their one-sentence message (no traceback);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """Every exception type whose message is written for the user (imported lazily)."""
    from gptlab.checkpoint import CheckpointError
    from gptlab.data.sources import DataError
    from gptlab.model import ModelConfigError
    from gptlab.tokenizer import TokenizerError

    return (CheckpointError, DataError, ModelConfigError, TokenizerError, ConfigError)


class ConfigError(ValueError):
    """A run config that cannot work (e.g. a model vocabulary smaller than the tokenizer's)."""
