"""Text in, text out: prompts through the tokenizer, stop strings, streaming decode.

``generate`` works on token ids; this module adds what only makes sense for text:

- ``completion_text`` cuts a completion at the first stop string (the stop string is
  not part of the completion, as in most APIs);
- ``TextStream`` turns a stream of ids into printable pieces: it holds back the end of
  the text while it could still become a stop string (so a stop string is never
  printed) or while it ends in an incomplete UTF-8 character (byte-level BPE splits
  characters across tokens; the decoder shows them as U+FFFD until complete);
- ``generate_text`` is the one-call version used by the end-of-training sample.
"""

from __future__ import annotations

from gptlab.model.gpt import GPT
from gptlab.sampling.config import SamplerConfig
from gptlab.sampling.generate import generate
from gptlab.tokenizer.base import Tokenizer

_REPLACEMENT = "\ufffd"


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Encode a prompt; unknown characters raise the tokenizer's clear ``TokenizerError``."""
    return list(tokenizer.encode(prompt)) if prompt else []


def completion_text(
    tokenizer: Tokenizer, ids: list[int], stop: list[str] | tuple[str, ...] = ()
) -> str:
    """Decode ``ids`` and cut the text before the first stop string, if any occurs."""
    text = tokenizer.decode(list(ids))
    return text[: _first_stop(text, stop)]


def _first_stop(text: str, stop: list[str] | tuple[str, ...]) -> int:
    """Index where the earliest stop string starts, or ``len(text)``."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits, default=len(text))


class TextStream:
    """Feed token ids one at a time; ``push`` returns the text that is now safe to print.

    The printed pieces concatenate to exactly ``completion_text(tokenizer, ids, stop)``
    once ``finish`` has been called.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.ids: list[int] = []
        self.printed = 0  # characters of the text already handed out
        self.stopped = False

    @property
    def text(self) -> str:
        """The completion so far, cut at a stop string."""
        return completion_text(self.tokenizer, self.ids, self.stop)

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(int(token_id))
        full = self.tokenizer.decode(self.ids)
        cut = _first_stop(full, self.stop)
        if cut < len(full):
            self.stopped = True
            return self._emit(full, cut)
        ready = full.rstrip(_REPLACEMENT)
        return self._emit(full, len(ready) - self._partial_stop(ready))

    def _partial_stop(self, text: str) -> int:
        """Length of the longest end of ``text`` that is the start of a stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def finish(self) -> str:
        """The held-back rest (the stream ended, so nothing can still complete)."""
        text = self.text
        return self._emit(text, len(text))

    def _emit(self, text: str, end: int) -> str:
        end = max(end, self.printed)
        piece = text[self.printed : end]
        self.printed = end
        return piece


def generate_text(model: GPT, tokenizer: Tokenizer, prompt: str, sampler: SamplerConfig) -> str:
    """Continue ``prompt`` and return the completion only (the prompt is not repeated).

    The completion stops at end-of-text (``sampler.stop_at_eot``), at a stop string
    (which is cut off) or after ``sampler.max_new_tokens`` tokens. Unknown characters
    in the prompt raise the tokenizer's ``TokenizerError``.
    """
    ids = encode_prompt(tokenizer, prompt)
    new = generate(model, [ids], sampler, tokenizer=tokenizer)
    return completion_text(tokenizer, new[0], sampler.stop)
