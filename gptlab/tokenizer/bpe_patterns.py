"""Pre-split patterns for byte-level BPE, and GPT-2's printable rendering of bytes.

Why pre-split at all: BPE run over raw text learns tokens that glue a word to the
punctuation or space that happens to follow it ("dog." "dog!" "dog?" become three
tokens). Splitting the text first into words, numbers, punctuation runs and
whitespace runs, and never merging across those chunks, spends the vocabulary on
reusable pieces. GPT-2 and GPT-4 (cl100k) each published one such regex; we use the
exact strings tiktoken uses so that our pure-Python encoder and tiktoken's engine
split every text the same way (the parity tests check this on arbitrary Unicode).

The patterns need the third-party ``regex`` module (Unicode classes like ``\\p{L}``
and possessive quantifiers ``++``), which the standard ``re`` lacks.
"""

from __future__ import annotations

from functools import cache

import regex

from gptlab.tokenizer.base import TokenizerError

# GPT-2 (r50k_base). Contractions, then optional-space + letters / digits / other
# symbols, then whitespace: a whitespace run keeps its last space for the next word
# (``\s+(?!\S)``), so " the" stays one chunk.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# GPT-4 (cl100k_base). Case-insensitive contractions, a letter run may take one leading
# non-letter (so "_name" or "(word" stay whole), digits in groups of at most three,
# and newlines split apart from other whitespace.
GPT4_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

# pattern=None: no pre-split; all text between special tokens is one chunk.
NO_SPLIT_PATTERN = r"""[\s\S]+"""

PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}


def resolve_pattern(pattern: str | None) -> tuple[str | None, str]:
    """Return ``(name, regex)`` for a pattern name, ``None`` (no split) or a custom regex.

    A bare word that is not a known name is rejected rather than compiled as a regex:
    ``pattern="gtp4"`` is a typo, not a request to split on the literal text "gtp4".
    """
    if pattern is None or pattern == "none":
        return None, NO_SPLIT_PATTERN
    if not isinstance(pattern, str):
        raise TokenizerError(
            f"pattern must be 'gpt2', 'gpt4', None or a regex string, not {pattern!r}"
        )
    key = pattern.lower()
    if key in PATTERNS:
        return key, PATTERNS[key]
    if pattern in PATTERNS.values() or pattern == NO_SPLIT_PATTERN:
        name = next((k for k, v in PATTERNS.items() if v == pattern), None)
        return name, pattern
    if regex.fullmatch(r"\w+", pattern):
        raise TokenizerError(
            f"unknown split pattern {pattern!r}; use 'gpt2', 'gpt4', None (no split) or a regex"
        )
    compile_pattern(pattern)  # fail now, with a clear message, rather than at first use
    return "custom", pattern


# Every printable ASCII character and the usual whitespace: a split pattern must match all of it.
_PROBE = "".join(chr(c) for c in range(32, 127)) + " \t\n\r  Hello, world! It's 42.\n"
LOSSLESS_PATTERNS = frozenset((*PATTERNS.values(), NO_SPLIT_PATTERN))


@cache
def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile (once) a split regex; refuse a syntax error and a pattern that drops text.

    Text between the pattern's matches is never encoded, so a pattern such as ``\\w+``
    would silently lose every space and punctuation mark; a probe of ordinary ASCII
    text catches that before any training or encoding (``BPETokenizer`` also checks
    each custom-pattern encoding keeps every byte).
    """
    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        raise TokenizerError(
            f"the split pattern {pattern!r} is not a valid regex ({e}); fix it"
        ) from None
    if pattern not in LOSSLESS_PATTERNS:
        missed = uncovered_characters(compiled, _PROBE)
        if missed:
            raise TokenizerError(
                f"the split pattern {pattern!r} does not match the characters {''.join(sorted(missed))!r}, "
                "so encoding would silently drop them; add alternatives that cover all text "
                "(e.g. end the pattern with |\\s+|\\S)"
            )
    return compiled


def uncovered_characters(compiled: regex.Pattern, text: str) -> set[str]:
    """The characters of ``text`` that fall between the matches of ``compiled``."""
    covered = [False] * len(text)
    for match in compiled.finditer(text):
        covered[match.start() : match.end()] = [True] * (match.end() - match.start())
    return {c for c, kept in zip(text, covered) if not kept}


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to one printable character (space -> 'Ġ', newline -> 'Ċ').

    Used only to *write* merges readably (the convention of GPT-2's merges.txt and HF's
    tokenizer.json): printable Latin-1 bytes stand for themselves and the others are
    shifted to code points 256 and up, so no token is ever rendered with a space,
    newline or control character and each merge fits on one line as ``"left right"``.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), 256),
    ]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@cache
def unicode_to_byte() -> dict[str, int]:
    """Inverse of :func:`byte_to_unicode`."""
    return {c: b for b, c in byte_to_unicode().items()}


def render_bytes(token: bytes) -> str:
    """``b" the"`` -> ``"Ġthe"``: a token as GPT-2-style printable text."""
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


def parse_rendered(text: str) -> bytes:
    """``"Ġthe"`` -> ``b" the"``; raises KeyError on a character outside the alphabet."""
    table = unicode_to_byte()
    return bytes(table[c] for c in text)


def fix_surrogates(text: str) -> str:
    """Make ``text`` encodable as UTF-8 exactly the way tiktoken does.

    A Python ``str`` may hold surrogate code points, which UTF-8 cannot encode.
    tiktoken (``Encoding.encode``) round-trips such text through UTF-16: a high+low
    surrogate pair becomes the one astral character it stands for, and a lone
    surrogate becomes U+FFFD. We do the same so both engines agree on every ``str``;
    it is the only case where ``decode(encode(s)) != s``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
