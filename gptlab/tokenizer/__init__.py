"""Tokenizers: character-level, GPT-2 via tiktoken, and a from-scratch byte-level BPE.

``tokenizer_from_dict`` rebuilds any of them from the plain data stored in a
checkpoint; ``load_tokenizer`` reads the JSON that ``Tokenizer.save`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptlab.tokenizer.base import Tokenizer, TokenizerError
from gptlab.tokenizer.bpe import BPETokenizer
from gptlab.tokenizer.char import CharTokenizer
from gptlab.tokenizer.gpt2 import GPT2Tokenizer

_KINDS: dict[str, type[Tokenizer]] = {
    CharTokenizer.kind: CharTokenizer,
    GPT2Tokenizer.kind: GPT2Tokenizer,
    BPETokenizer.kind: BPETokenizer,
}


def register_tokenizer(cls: type[Tokenizer]) -> type[Tokenizer]:
    """Make a new tokenizer class loadable from checkpoints by its ``kind``."""
    _KINDS[cls.kind] = cls
    return cls


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()`` output."""
    if not isinstance(data, dict) or "kind" not in data:
        raise TokenizerError("the tokenizer data has no 'kind' field; it was not written by gptlab")
    kind = data["kind"]
    if kind not in _KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; known kinds: {sorted(_KINDS)}")
    return _KINDS[kind].from_dict(data)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer JSON written by ``Tokenizer.save``."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist; check the path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(
            f"tokenizer file {path} is not valid JSON ({e}); it is truncated or corrupt"
        ) from None
    return tokenizer_from_dict(data)


__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "register_tokenizer",
    "tokenizer_from_dict",
]
