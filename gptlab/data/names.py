"""Names are names, not paths: the check for config values that become one file name.

``data.name`` becomes part of a token-cache file name and
``callbacks.model_checkpoint.filename`` the name of a checkpoint file. A value such as
``../../escaped`` would write outside the cache or run folder, so both are refused
unless they are a single path component.
"""

from __future__ import annotations

import re

from gptlab.data.sources import DataError

_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")  # owner/dataset, as the Hugging Face Hub names them


def is_hub_name(value: object) -> bool:
    """``owner/dataset``: one '/', no '..'; its store folder replaces the '/' (gptlab/data/corpus.py)."""
    text = str(value)
    return bool(_HUB_NAME.fullmatch(text)) and ".." not in text


def check_plain_name(
    key: str, value: object, example: str, error: type[Exception] = DataError
) -> str:
    """Return ``value`` if it is a non-empty name without path separators or ``..``; else raise ``error``."""
    text = str(value)
    if not text.strip() or "/" in text or "\\" in text or ".." in text or "\x00" in text:
        raise error(
            f"{key}={text!r} must be a plain name without '/', '\\' or '..', because it names a file "
            f"inside gptlab's own folder; use e.g. {key}={example}"
        )
    return text
