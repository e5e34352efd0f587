"""The small interface every gptlab tokenizer speaks.

A tokenizer turns text into a list of integer ids and back. The training loop, the
data cache, generation and checkpoints only ever use the methods below, so a new
tokenizer is one class plus a YAML file in ``gptlab/conf/tokenizer/``.

A tokenizer must travel inside a checkpoint without pickling code: ``to_dict`` returns
plain JSON-able data and ``gptlab.tokenizer.tokenizer_from_dict`` rebuilds the object.
This module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from gptlab.errors import GptlabError


class TokenizerError(GptlabError, ValueError):
    """A tokenizer was asked for something it cannot do (unknown characters, bad file)."""


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses set ``kind`` and register themselves by it."""

    kind: ClassVar[str] = ""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids this tokenizer can produce (the model's output size)."""

    @property
    def eot_id(self) -> int | None:
        """Id of the end-of-text token, or None when the vocabulary has none."""
        return None

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Turn text into ids."""

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids with special tokens written in it encoded as plain text.

        What a document of a corpus gets (llm.c's and nanoGPT's ``encode_ordinary``): the
        token store puts the end-of-text id between documents itself, and a web page that
        happens to contain ``<|endoftext|>`` must not end its document there.
        """
        return self.encode(text)

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Turn ids back into text."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, list, dict) that ``from_dict`` turns back into this object."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """Rebuild the tokenizer saved by ``to_dict``."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts; fast tokenizers override this to use several threads."""
        return [self.encode(t) for t in texts]

    def fingerprint(self) -> str:
        """A short hash of everything that decides the ids: part of every token-cache key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer as JSON (atomically: the old file survives a crash)."""
        from gptlab.utils.io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
