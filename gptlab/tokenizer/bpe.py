"""A byte-level BPE tokenizer written from scratch: train, encode, decode, save, load.

The whole idea in four lines:

* the base vocabulary is the 256 byte values, so *any* text can be encoded;
* training pre-splits the text (GPT-2's or GPT-4's regex), then repeatedly merges
  the most frequent adjacent pair of tokens into a new token (``bpe_train.py``);
* encoding applies the learned merges by rank, lowest first (``bpe_encode.py``);
* decoding concatenates the tokens' bytes and decodes UTF-8 once, at the end, with
  ``errors="replace"`` (a token may hold half a character; only the joined bytes are
  text).

Special tokens (``<|endoftext|>``) are cut out of the text before anything else, get
ids after the learned tokens, and are never produced by a merge.

Two engines give the same ids: our pure-Python encoder (readable, the reference) and
tiktoken's Rust engine built from *our* ranks (fast, used by default). The parity
tests hold them to each other and, with GPT-2's ranks, to tiktoken's ``r50k_base``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import regex

from gptlab.tokenizer.base import Tokenizer, TokenizerError
from gptlab.tokenizer.bpe_encode import bpe_parts, split_special
from gptlab.tokenizer.bpe_format import (
    merges_from_vocab,
    parse_json_dict,
    read_json,
    read_text_file,
    read_tiktoken_file,
    tiktoken_file_text,
    to_json_dict,
    verify_settings_checksum,
    vocab_from_merges,
)
from gptlab.tokenizer.bpe_patterns import (
    LOSSLESS_PATTERNS,
    compile_pattern,
    fix_surrogates,
    resolve_pattern,
)
from gptlab.tokenizer.bpe_train import count_chunks, learn_merges

EOT = "<|endoftext|>"
Engine = Literal["auto", "tiktoken", "python"]
AllowedSpecial = Literal["all", "none"] | Iterable[str]

# Chunks this short are memoised by the Python encoder: natural text repeats its
# words, so most chunks are answered from the cache.
_CACHE_CHUNK_CHARS = 64
_CACHE_MAX_ENTRIES = 200_000
# The trainer stores token ids as characters (chr), so ids stop at the last code point.
_MAX_VOCAB = 0x110000
# How far past the ordinary tokens a special token's id may lie (tiktoken's own leave gaps of ~20).
MAX_SPECIAL_GAP = 1 << 16


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ``vocab[id]`` is the bytes of each ordinary token, id = merge rank.

    Build one with :meth:`train`, :meth:`load`, :meth:`from_tiktoken_file` or the
    constructor (from a merges list). Every way in goes through the constructor, which
    checks the merges and special tokens, so an invalid tokenizer object never exists.
    """

    kind = "bpe"

    def __init__(
        self,
        merges: Sequence[tuple[int, int]],
        pattern: str | None = "gpt4",
        special_tokens: Iterable[str] | Mapping[str, int] = (EOT,),
        byte_order: Sequence[int] | None = None,
    ) -> None:
        """``merges[i]`` is the pair of ids that makes id ``256 + i``.

        ``pattern`` is a name (``"gpt2"``, ``"gpt4"``), ``None`` (no pre-split) or the
        regex itself; a saved tokenizer stores the regex, so it keeps splitting exactly
        as when it was saved, and its name is recognised from it (``"custom"`` if none).
        ``byte_order[i]`` is the byte that id ``i < 256`` stands for (default: byte ``i``;
        GPT-2 uses another order). ``special_tokens`` is a list (ids follow the merges)
        or a dict ``{text: id}``.
        """
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.byte_order = (
            None if byte_order is None or list(byte_order) == list(range(256)) else list(byte_order)
        )
        self.vocab = vocab_from_merges(self.merges, self.byte_order)
        self.pattern, self.pattern_regex = resolve_pattern(pattern)  # the name, the regex
        self._split = compile_pattern(self.pattern_regex)
        self._ranks = {token: i for i, token in enumerate(self.vocab)}
        self.special_tokens = _check_special_tokens(special_tokens, self._ranks)
        self._decoder = dict(enumerate(self.vocab))
        self._decoder.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self._special_re = _special_regex(self.special_tokens)
        self._all_special = frozenset(self.special_tokens)
        self._cache: dict[str, list[int]] = {}
        self._tiktoken: Any = None  # built on first use; False once it failed
        self._threads = max(1, os.cpu_count() or 1)
        self._fingerprint: str | None = None
        # A custom split pattern passed the ASCII probe of compile_pattern; each encoding also
        # checks that it kept every byte (the known patterns match all text by construction).
        self._check_kept = self.pattern_regex not in LOSSLESS_PATTERNS
        self._byte_lengths: list[int] | None = None

    # ------------------------------------------------------------ building

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int = 4096,
        pattern: str | None = "gpt4",
        special_tokens: Iterable[str] = (EOT,),
        progress: bool = True,
    ) -> BPETokenizer:
        """Learn a vocabulary of ``vocab_size`` ids (256 bytes + merges + special tokens).

        If the text runs out of pairs first, training stops early with a warning and
        the tokenizer is smaller than asked (it is still complete and valid).
        """
        # Check the special tokens before the slow part.
        specials = list(_check_special_tokens(special_tokens, {bytes([b]): b for b in range(256)}))
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise TokenizerError(
                f"vocab_size={vocab_size} is too small: byte-level BPE needs 256 byte tokens plus "
                f"{len(specials)} special token(s); use vocab_size >= {256 + len(specials)}"
            )
        if vocab_size > _MAX_VOCAB:
            raise TokenizerError(
                f"vocab_size={vocab_size} is larger than this trainer supports ({_MAX_VOCAB}); "
                "use a smaller vocab_size"
            )
        if not isinstance(text, str) or not text:
            raise TokenizerError(
                "the training text is empty; give BPETokenizer.train some text to learn from"
            )
        name, pattern_regex = resolve_pattern(pattern)
        n_merges = vocab_size - 256 - len(specials)
        counts = count_chunks(text, pattern_regex, specials, progress=progress)
        merges = learn_merges(counts, n_merges, progress=progress)
        if len(merges) < n_merges:
            warnings.warn(
                f"the training text only supports {len(merges)} merges, not the {n_merges} that "
                f"vocab_size={vocab_size} asks for, so the tokenizer has {256 + len(merges) + len(specials)} "
                "ids; use more text or a smaller vocab_size",
                UserWarning,
                stacklevel=2,
            )
        return cls(merges, pattern=pattern_regex, special_tokens=specials)

    @classmethod
    def train_from_file(
        cls, path: str | Path, *, errors: str = "strict", **train_kwargs: Any
    ) -> BPETokenizer:
        """:meth:`train` on a UTF-8 file; ``errors="replace"`` accepts files with bad bytes."""
        return cls.train(read_text_file(path, errors=errors), **train_kwargs)

    @classmethod
    def from_tiktoken_file(
        cls,
        path: str | Path,
        special_tokens: Mapping[str, int] | None = None,
        pattern: str | None = "gpt2",
    ) -> BPETokenizer:
        """Load a tiktoken ranks file (``base64(token) rank`` a line), e.g. ``r50k_base.tiktoken``.

        Ranks files hold neither the split pattern nor the special tokens: the
        defaults (GPT-2's pattern, ``<|endoftext|>`` as the id after the last rank)
        are exactly GPT-2's ``r50k_base``. The merges are recovered from the ranks.
        """
        vocab = read_tiktoken_file(path)
        if special_tokens is None:
            special_tokens = {EOT: len(vocab)}
        byte_order = [t[0] for t in vocab[:256]]
        return cls(
            merges_from_vocab(vocab),
            pattern=pattern,
            special_tokens=special_tokens,
            byte_order=byte_order,
        )

    # ------------------------------------------------------------ the interface

    @property
    def vocab_size(self) -> int:
        """Size of the model's embedding table: one more than the largest id."""
        return max(len(self.vocab), max(self.special_tokens.values(), default=-1) + 1)

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get(EOT)

    def encode(
        self, text: str, *, allowed_special: AllowedSpecial = "all", engine: Engine = "auto"
    ) -> list[int]:
        """Text -> ids. Special tokens written in the text become their ids unless
        ``allowed_special`` says otherwise (``"none"`` or a set of the allowed ones).

        ``engine="auto"`` uses tiktoken's Rust engine built from our ranks when it can,
        else the pure-Python encoder; both return the same ids.
        """
        enc = None if engine == "python" else self._engine(engine)
        if enc is None:
            ids = self.encode_python(text, allowed_special=allowed_special)
        elif not self._allowed(allowed_special):
            ids = enc.encode_ordinary(text)
        else:
            ids = enc.encode(
                text, allowed_special=self._allowed(allowed_special), disallowed_special=()
            )
        if self._check_kept:
            self._refuse_lost_text(text, ids)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text, allowed_special="none")

    def encode_batch(
        self, texts: list[str], *, allowed_special: AllowedSpecial = "all", engine: Engine = "auto"
    ) -> list[list[int]]:
        """Encode many texts on all cores (tiktoken's threads release the GIL)."""
        enc = None if engine == "python" else self._engine(engine)
        allowed = self._allowed(allowed_special)
        if enc is None:
            batch = [self.encode_python(t, allowed_special=allowed_special) for t in texts]
        elif not allowed:
            batch = enc.encode_ordinary_batch(texts, num_threads=self._threads)
        else:
            batch = enc.encode_batch(
                texts, num_threads=self._threads, allowed_special=allowed, disallowed_special=()
            )
        if self._check_kept:
            for text, ids in zip(texts, batch):
                self._refuse_lost_text(text, ids)
        return batch

    def _refuse_lost_text(self, text: str, ids: list[int]) -> None:
        """Refuse an encoding whose tokens hold fewer bytes than the text: the split pattern skipped some."""
        if self._byte_lengths is None:
            self._byte_lengths = [0] * self.vocab_size
            for i, token in self._decoder.items():
                self._byte_lengths[i] = len(token)
        kept = sum(map(self._byte_lengths.__getitem__, ids))
        given = len(fix_surrogates(text).encode("utf-8"))
        if kept != given:
            raise TokenizerError(
                f"the split pattern {self.pattern_regex!r} skipped {given - kept} of the {given} bytes of the "
                "text, which encoding would silently drop; fix the tokenizer's pattern_regex so that its "
                "alternatives match all text (e.g. end it with |\\s+|\\S)"
            )

    def encode_python(self, text: str, *, allowed_special: AllowedSpecial = "all") -> list[int]:
        """The reference encoder: special tokens, then the split regex, then BPE by rank."""
        text = fix_surrogates(text)  # exactly what tiktoken does with surrogates
        findall = self._split.findall
        cache = self._cache
        ids: list[int] = []
        for segment, is_special in split_special(
            text, self._special_re, self._allowed(allowed_special)
        ):
            if is_special:
                ids.append(self.special_tokens[segment])
                continue
            for chunk in findall(segment):
                chunk_ids = cache.get(chunk)
                if chunk_ids is None:
                    chunk_ids = self._encode_chunk(chunk.encode("utf-8"))
                    if len(chunk) <= _CACHE_CHUNK_CHARS and len(cache) < _CACHE_MAX_ENTRIES:
                        cache[chunk] = chunk_ids
                ids.extend(chunk_ids)
        return ids

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        ranks = self._ranks
        token = ranks.get(chunk)
        if token is not None:  # a whole chunk that is a token is taken as is (as tiktoken does)
            return [token]
        return [ranks[part] for part in bpe_parts(chunk, ranks)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Bytes are joined first and decoded once, so a character split
        across tokens comes back whole; bytes that are not UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
            ids = ids.tolist()
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError) as e:
            bad = e.args[0] if isinstance(e, KeyError) else e
            raise TokenizerError(
                f"cannot decode id {bad!r}: this tokenizer's ids are 0..{self.vocab_size - 1}; "
                "the ids come from another tokenizer or model"
            ) from None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (for inspecting a vocabulary)."""
        return self.decode_bytes([token_id])

    # ------------------------------------------------------------ tiktoken

    def to_tiktoken(self, name: str | None = None):
        """A ``tiktoken.Encoding`` built from our own ranks, pattern and special tokens."""
        import tiktoken

        return tiktoken.Encoding(
            name or f"gptlab-bpe-{self.fingerprint()}",
            pat_str=self.pattern_regex,
            mergeable_ranks=dict(self._ranks),
            special_tokens=dict(self.special_tokens),
        )

    def _engine(self, engine: Engine):
        """tiktoken's engine for our ranks, built once; None means use the Python encoder."""
        if self._tiktoken is None:
            try:
                self._tiktoken = self.to_tiktoken()
            except Exception as e:  # tiktoken missing, or its regex engine rejects a custom pattern
                self._tiktoken = False
                self._tiktoken_error = f"{type(e).__name__}: {e}"
                if engine == "auto":
                    warnings.warn(
                        f"tiktoken cannot run this tokenizer ({self._tiktoken_error}); "
                        "encoding with the slower pure-Python engine",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        if self._tiktoken is False:
            if engine == "tiktoken":
                raise TokenizerError(
                    f"tiktoken cannot run this tokenizer ({self._tiktoken_error}); use engine='python' or 'auto'"
                )
            return None
        return self._tiktoken

    # ------------------------------------------------------------ saving

    def fingerprint(self) -> str:
        """Cached: it is part of every token-cache key and hashes all the merges."""
        if self._fingerprint is None:
            self._fingerprint = super().fingerprint()
        return self._fingerprint

    def to_dict(self) -> dict[str, Any]:
        return to_json_dict(
            self.vocab,
            self.merges,
            self.pattern_regex,
            self.special_tokens,
            self.byte_order,
            self.kind,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "tokenizer data") -> BPETokenizer:
        tokenizer = cls(**parse_json_dict(data, source, cls.kind))
        verify_settings_checksum(data, source)  # after the fields' own checks, which name the field
        return tokenizer

    def export_tiktoken(self, path: str | Path) -> Path:
        """Write our ranks as a tiktoken ``.tiktoken`` file (atomically), for use without gptlab.

        ``save`` writes the JSON, which is all gptlab needs; this is the export for
        tiktoken (``tiktoken.load.load_tiktoken_bpe``) or any tool that reads its ranks
        format. A ranks file holds no split pattern or special tokens: pass tiktoken
        ``pattern_regex`` and ``special_tokens``. :meth:`load` reads it back.
        """
        from gptlab.utils.io import atomic_write_text

        path = Path(path)
        atomic_write_text(path, tiktoken_file_text(self.vocab))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer saved by :meth:`save` (or a ``.tiktoken`` ranks file, with GPT-2's
        pattern and ``<|endoftext|>``: see :meth:`from_tiktoken_file`)."""
        path = Path(path)
        if path.suffix == ".tiktoken":
            return cls.from_tiktoken_file(path)
        return cls.from_dict(read_json(path), source=f"tokenizer file {path}")

    # ------------------------------------------------------------ helpers

    def _allowed(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if allowed_special == "all":
            return self._all_special
        if allowed_special == "none" or not allowed_special:
            return frozenset()
        allowed = frozenset(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise TokenizerError(
                f"allowed_special names {sorted(unknown)}, which are not special tokens of this tokenizer"
            )
        return allowed

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self.pattern!r}, special_tokens={self.special_tokens})"


def _check_special_tokens(
    special_tokens: Iterable[str] | Mapping[str, int], ranks: dict[bytes, int]
) -> dict[str, int]:
    """Give special tokens ids (after the ordinary ones) and reject the ones that collide.

    Collisions that would make encoding ambiguous: the same token twice, two tokens
    with one id, an id that an ordinary token already has, a token whose text is an
    ordinary token (a single byte), and a token inside another one (which of
    ``<|a|>`` and ``<|a|>x`` matches would depend on search order).
    """
    if isinstance(special_tokens, str):
        raise TokenizerError(
            f"special_tokens must be a list of strings, not the string {special_tokens!r}"
        )
    if isinstance(special_tokens, Mapping):
        tokens = dict(special_tokens)
    else:
        listed = list(special_tokens)
        dupes = sorted({s for s in listed if listed.count(s) > 1})
        if dupes:
            raise TokenizerError(
                f"special token(s) {dupes} are listed twice; list each special token once"
            )
        tokens = {s: len(ranks) + i for i, s in enumerate(listed)}
    for s, i in tokens.items():
        if not isinstance(s, str) or not s:
            raise TokenizerError(f"special token {s!r} must be a non-empty string")
        if not isinstance(i, int) or i < 0:
            raise TokenizerError(f"special token {s!r} has id {i!r}; ids are non-negative integers")
        if i < len(ranks):
            raise TokenizerError(
                f"special token {s!r} has id {i}, which an ordinary token already uses; give it an id >= {len(ranks)}"
            )
        if i >= len(ranks) + MAX_SPECIAL_GAP:
            # The model's embedding gets max id + 1 rows: id 3e9 would ask for hundreds of GB.
            raise TokenizerError(
                f"special token {s!r} has id {i:,}, far past the {len(ranks):,} ordinary tokens, and the model "
                f"would need an embedding row for every id below it; give it an id below {len(ranks) + MAX_SPECIAL_GAP:,}"
            )
        if s.encode("utf-8") in ranks:
            raise TokenizerError(
                f"special token {s!r} is also an ordinary token; choose a special token of several characters such as '<|{s}|>'"
            )
        for other in tokens:
            if other != s and s in other:
                raise TokenizerError(
                    f"special token {s!r} occurs inside special token {other!r}; rename one so neither contains the other"
                )
    ids = list(tokens.values())
    if len(set(ids)) != len(ids):
        raise TokenizerError(f"special tokens share ids ({tokens}); give each its own id")
    return tokens


def _special_regex(special_tokens: Mapping[str, int]) -> regex.Pattern | None:
    if not special_tokens:
        return None
    return regex.compile("|".join(regex.escape(s) for s in special_tokens))


def build_bpe_tokenizer(
    text: str | None,
    vocab_size: int = 4096,
    pattern: str | None = "gpt4",
    special_tokens: Sequence[str] = (EOT,),
    path: str | Path | None = None,
    progress: bool = True,
) -> BPETokenizer:
    """Config entry point (``tokenizer=bpe``): train on ``text``, or load ``path`` if given."""
    if path:
        tok = BPETokenizer.load(path)
        if tok.vocab_size != vocab_size:
            warnings.warn(
                f"the tokenizer loaded from {path} has {tok.vocab_size} ids, not tokenizer.vocab_size="
                f"{vocab_size}; using the loaded one",
                UserWarning,
                stacklevel=2,
            )
        return tok
    if text is None:
        raise TokenizerError(
            "tokenizer=bpe needs the training text, or tokenizer.path=<a saved tokenizer>"
        )
    return BPETokenizer.train(
        text,
        vocab_size=vocab_size,
        pattern=pattern,
        special_tokens=list(special_tokens),
        progress=progress,
    )
