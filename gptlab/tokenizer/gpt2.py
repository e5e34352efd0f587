"""GPT-2's byte-level BPE through tiktoken's fast encoder.

``r50k_base`` holds GPT-2's ranks, so its ids are GPT-2's ids (50,257 of them, id
50256 being ``<|endoftext|>``). tiktoken downloads the ranks once and caches them under
``TIKTOKEN_CACHE_DIR``; on a machine without network, seed that cache (see README).
Our own from-scratch encoder for the same ranks lives in ``bpe.py``.
"""

from __future__ import annotations

import os
from typing import Any

from gptlab.tokenizer.base import Tokenizer, TokenizerError


def _load_encoding(name: str):
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError as e:
        raise TokenizerError(f"tiktoken has no encoding named {name!r}: {e}") from None
    except Exception as e:  # network errors come in many types (requests, urllib3, OSError)
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<tmp>/data-gym-cache")
        raise TokenizerError(
            f"could not load the {name!r} BPE ranks ({type(e).__name__}: {e}); connect to the "
            f"network once, or copy the .tiktoken file into TIKTOKEN_CACHE_DIR ({cache}) under "
            "the name tiktoken expects (see README, 'Offline GPT-2 tokenizer')"
        ) from None


class GPT2Tokenizer(Tokenizer):
    kind = "tiktoken"

    def __init__(self, encoding: str = "r50k_base") -> None:
        self.encoding_name = encoding
        self._enc = _load_encoding(encoding)
        self._threads = max(1, os.cpu_count() or 1)

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    @property
    def eot_id(self) -> int | None:
        return self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        # "<|endoftext|>" written in the text is the document separator GPT-2 was trained with.
        return self._enc.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())

    def encode_ordinary(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_batch(
            texts,
            num_threads=self._threads,
            allowed_special={"<|endoftext|>"},
            disallowed_special=(),
        )

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(list(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoding": self.encoding_name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPT2Tokenizer:
        return cls(data.get("encoding", "r50k_base"))


def build_gpt2_tokenizer(text: str | None = None, encoding: str = "r50k_base") -> GPT2Tokenizer:
    """Config entry point (``tokenizer=gpt2``): fixed ranks, the training text is not used."""
    return GPT2Tokenizer(encoding)
