"""Text sources, the token cache, random windows and the LightningDataModule."""

from gptlab.data.datamodule import TextDataModule
from gptlab.data.sources import DataError, download, embedded_text, read_local
from gptlab.data.token_cache import cached_tokens
from gptlab.data.windows import RandomWindows

__all__ = ["DataError", "RandomWindows", "TextDataModule", "cached_tokens", "download", "embedded_text", "read_local"]
