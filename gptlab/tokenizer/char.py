"""Character-level tokenizer: one id per distinct character of the training corpus.

The vocabulary is the sorted set of characters seen in the corpus (nanoGPT's
shakespeare_char does the same), so it is tiny (65 ids for Tiny Shakespeare) and every
model output is a readable character. Text with a character outside that set cannot
be encoded; the error names the characters so the user can fix the prompt.
"""

from __future__ import annotations

from typing import Any

from gptlab.tokenizer.base import Tokenizer, TokenizerError


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: list[str] | str) -> None:
        chars = list(chars)
        if not chars:
            raise TokenizerError(
                "a character tokenizer needs at least one character; the corpus is empty"
            )
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise TokenizerError(
                "a character tokenizer's vocabulary must be distinct single characters"
            )
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_corpus(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from every distinct character in ``text``."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside this vocabulary, sorted (one pass over a set)."""
        return sorted(set(text) - self._stoi.keys())

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            unknown = self.unknown_characters(text)
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise TokenizerError(
                f"the text has {len(unknown)} character(s) this character-level tokenizer never saw "
                f"in its corpus ({shown}); remove them or train with a byte-level tokenizer "
                "(tokenizer=bpe or tokenizer=gpt2), which can encode any text"
            ) from None

    def decode(self, ids: list[int]) -> str:
        chars = self.chars
        return "".join(chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        chars = data.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError(
                "character tokenizer data needs 'chars', a string of the vocabulary; the file is damaged"
            )
        return cls(list(chars))


def build_char_tokenizer(text: str) -> CharTokenizer:
    """Config entry point (``tokenizer=char``): the vocabulary comes from the training text."""
    return CharTokenizer.from_corpus(text)
