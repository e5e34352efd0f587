"""Corpora, the token store, sampling orders and the LightningDataModule."""

from typing import Any

from gptlab.data.sources import DataError, download, embedded_text, read_local

__all__ = [
    "DataError",
    "TextDataModule",
    "download",
    "embedded_text",
    "read_local",
]


def __getattr__(name: str) -> Any:
    """``TextDataModule`` is imported on first use: it needs Lightning, whose import takes
    seconds, and the CLI reads ``DataError`` from here to report a bad config at once."""
    if name == "TextDataModule":
        from gptlab.data.datamodule import TextDataModule

        return TextDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
