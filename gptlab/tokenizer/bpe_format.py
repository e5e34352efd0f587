"""Reading and writing BPE tokenizers: gptlab's JSON, tiktoken's ranks files, raw text.

Every reader here checks what it reads and raises one ``TokenizerError`` sentence
naming the file, the place and the fix; nothing builds a tokenizer from half a file.

gptlab's JSON (``format_version`` 1) is self-contained, so it can also travel inside
a checkpoint as ``Tokenizer.to_dict()``, and human-readable: the merges are listed one
per line in the order they were learned, in the convention of GPT-2's ``merges.txt``
and HF's ``tokenizer.json`` (``"Ġ t"`` merges ``b" "`` and ``b"t"``; bytes are rendered
with GPT-2's printable alphabet, see ``bpe_patterns.byte_to_unicode``)::

    {
     "kind": "bpe",
     "format_version": 1,
     "pattern_regex": "'(?i:[sdmt]|ll|ve|re)|...",
     "special_tokens": {"<|endoftext|>": 4095},
     "byte_order": null,
     "merges": [
      "Ġ t",
      "h e",
      ...
     ],
     "settings_sha256": "41ab..."
    }

``pattern_regex`` is the split pattern itself, not its name, so a file keeps splitting as
when it was saved (the name, ``gpt4`` here, is recognised from it on loading). Older
files also carry the name as ``pattern``; it is ignored.

``byte_order`` says which byte each of the ids 0..255 stands for: ``null`` for id ==
byte value (tokenizers trained here), ``"gpt2"`` for GPT-2's order, or a list of 256
byte values.

The merges check themselves: a truncated file is not valid JSON, and loading rebuilds
the vocabulary, refusing a merge that is not two known tokens or that builds a token a
second time, so a hand edit that breaks them is one error naming the merge.
``settings_sha256`` catches what no such check can, an edited split pattern, special
token or byte order (each still valid on its own, but giving other ids): delete it to
accept a deliberate edit. Files without it (written before it existed) still load.
Files written before the merges checked themselves also carry ``n_merges`` and
``merges_sha256``; those are still verified when present.

tiktoken's ranks file (``.tiktoken``) is one ``base64(token_bytes) id`` per line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from gptlab.tokenizer.base import TokenizerError
from gptlab.tokenizer.bpe_encode import bpe_parts
from gptlab.tokenizer.bpe_patterns import byte_to_unicode, parse_rendered, render_bytes

FORMAT_VERSION = 1
_GPT2_BYTE_ORDER = "gpt2"


# ---------------------------------------------------------------- raw text


def read_text_file(path: str | Path, errors: str = "strict") -> str:
    """Read a UTF-8 training corpus; a bad byte is a clear error unless ``errors`` allows it.

    ``errors`` is passed to ``bytes.decode``: ``"replace"`` turns bad bytes into U+FFFD,
    ``"ignore"`` drops them.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"text file {path} does not exist; check the path")
    data = path.read_bytes()
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise TokenizerError(
            f"{path} is not valid UTF-8: byte offset {e.start} (0x{data[e.start]:02x}) {e.reason}; "
            "convert the file to UTF-8, or pass errors='replace' to accept replacement characters"
        ) from None


# ---------------------------------------------------------------- merges <-> vocabulary


def gpt2_byte_order() -> list[int]:
    """GPT-2's ids 0..255: the printable bytes first (``!`` is id 0), then the others."""
    return list(byte_to_unicode())


def vocab_from_merges(
    merges: list[tuple[int, int]], byte_order: list[int] | None = None
) -> list[bytes]:
    """Id -> bytes for the 256 byte tokens and one new token per merge, checked."""
    order = list(range(256)) if byte_order is None else byte_order
    if sorted(order) != list(range(256)):
        raise TokenizerError("byte_order must list each of the 256 byte values exactly once")
    vocab = [bytes([b]) for b in order]
    seen = set(vocab)
    for i, (a, b) in enumerate(merges):
        n = len(vocab)
        if not (0 <= a < n and 0 <= b < n):
            raise TokenizerError(
                f"merge {i} joins ids {a} and {b}, but only ids below {n} exist at that point; "
                "the merges are out of order or corrupt"
            )
        token = vocab[a] + vocab[b]
        if token in seen:
            raise TokenizerError(
                f"merge {i} ({render_bytes(vocab[a])} {render_bytes(vocab[b])}) builds "
                f"{render_bytes(token)!r}, which an earlier merge already built; each token must be built once"
            )
        seen.add(token)
        vocab.append(token)
    return vocab


def merges_from_vocab(vocab: list[bytes]) -> list[tuple[int, int]]:
    """Recover the merge behind each token of a ranks-only vocabulary (tiktoken files).

    A tiktoken file lists tokens, not merges. Encoding a token's bytes with only the
    tokens ranked before it must leave exactly two parts: the pair it was merged from.
    If it does not, the file is not a BPE vocabulary our encoder can reproduce.
    """
    ranks = {t: i for i, t in enumerate(vocab)}
    merges = []
    for rank in range(256, len(vocab)):
        parts = bpe_parts(vocab[rank], ranks, limit=rank)
        if len(parts) != 2:
            raise TokenizerError(
                f"token {rank} ({render_bytes(vocab[rank])!r}) cannot be built from two tokens "
                "ranked before it; this is not a byte-level BPE ranks file"
            )
        merges.append((ranks[parts[0]], ranks[parts[1]]))
    return merges


def merges_checksum(lines: list[str]) -> str:
    """``merges_sha256`` of older files: verified when present, no longer written."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


# The fields besides the merges that change which ids a text gets and that no structural
# check can catch being edited: ``settings_sha256`` covers them.
SETTINGS_FIELDS = ("pattern_regex", "special_tokens", "byte_order")


def settings_checksum(data: dict[str, Any]) -> str:
    settings = {key: data.get(key) for key in SETTINGS_FIELDS}
    return hashlib.sha256(
        json.dumps(settings, sort_keys=True, ensure_ascii=False).encode("utf-8")
    ).hexdigest()


def verify_settings_checksum(data: dict[str, Any], source: str) -> None:
    """Refuse a file whose split pattern, special tokens or byte order were edited after saving."""
    checksum = data.get("settings_sha256")
    if checksum is not None and checksum != settings_checksum(data):
        raise TokenizerError(
            f"{source}: pattern_regex, special_tokens or byte_order do not match their checksum "
            "(settings_sha256), so the file was edited or damaged; restore it, or delete the "
            "'settings_sha256' field if the edit was deliberate"
        )


# ---------------------------------------------------------------- gptlab JSON


def to_json_dict(
    vocab: list[bytes],
    merges: list[tuple[int, int]],
    pattern_regex: str,
    special_tokens: dict[str, int],
    byte_order: list[int] | None,
    kind: str,
) -> dict[str, Any]:
    lines = [f"{render_bytes(vocab[a])} {render_bytes(vocab[b])}" for a, b in merges]
    if byte_order is None or byte_order == list(range(256)):
        order: Any = None
    elif byte_order == gpt2_byte_order():
        order = _GPT2_BYTE_ORDER
    else:
        order = list(byte_order)
    data = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "pattern_regex": pattern_regex,
        "special_tokens": dict(special_tokens),
        "byte_order": order,
        "merges": lines,
    }
    data["settings_sha256"] = settings_checksum(data)
    return data


def parse_json_dict(data: Any, source: str, kind: str) -> dict[str, Any]:
    """Check gptlab's BPE dict and return the constructor's arguments.

    ``source`` names the file (or "checkpoint data") in every error message.
    """
    if not isinstance(data, dict):
        raise TokenizerError(
            f"{source}: expected a JSON object, got {type(data).__name__}; this is not a gptlab tokenizer"
        )
    if data.get("kind") != kind:
        raise TokenizerError(
            f"{source}: 'kind' is {data.get('kind')!r}, not {kind!r}; load it with gptlab.tokenizer.load_tokenizer"
        )
    version = data.get("format_version")
    if not isinstance(version, int):
        raise TokenizerError(
            f"{source}: no integer 'format_version'; the file is truncated or was not written by gptlab"
        )
    if version > FORMAT_VERSION:
        raise TokenizerError(
            f"{source}: format_version {version} is newer than this gptlab reads ({FORMAT_VERSION}); upgrade gptlab"
        )
    for key, types in [("pattern_regex", str), ("special_tokens", dict), ("merges", list)]:
        if not isinstance(data.get(key), types):
            raise TokenizerError(
                f"{source}: field {key!r} is missing or not a {types.__name__}; the file is truncated or was edited by hand"
            )

    lines = data["merges"]
    # Older files carry a count and a checksum of the merges: honour them while they are there.
    if "n_merges" in data and data["n_merges"] != len(lines):
        raise TokenizerError(
            f"{source}: it lists {len(lines)} merges but says n_merges={data['n_merges']}; "
            "the file is truncated or was edited by hand, so save the tokenizer again"
        )
    checksum = data.get("merges_sha256")
    if checksum is not None and checksum != merges_checksum([str(x) for x in lines]):
        raise TokenizerError(
            f"{source}: the merges do not match their checksum (merges_sha256); the file was edited "
            "or damaged; restore it, or delete the 'merges_sha256' field if the edit was deliberate"
        )

    order = data.get("byte_order")
    if order is None:
        byte_order = None
    elif order == _GPT2_BYTE_ORDER:
        byte_order = gpt2_byte_order()
    elif isinstance(order, list) and all(isinstance(b, int) for b in order):
        byte_order = order
    else:
        raise TokenizerError(
            f"{source}: 'byte_order' must be null, \"gpt2\" or a list of 256 byte values"
        )
    vocab = vocab_from_merges([], byte_order)
    ids = {t: i for i, t in enumerate(vocab)}
    merges = []
    for i, line in enumerate(lines):
        try:
            left, right = line.split(" ")
            a, b = ids[parse_rendered(left)], ids[parse_rendered(right)]
        except (AttributeError, ValueError, KeyError):
            raise TokenizerError(
                f"{source}: merge {i} ({line!r}) is not two known tokens separated by one space; "
                "the file was edited by hand or is damaged"
            ) from None
        merges.append((a, b))
        token = vocab[a] + vocab[b]
        if token in ids:
            raise TokenizerError(
                f"{source}: merge {i} ({line!r}) builds a token that already exists; the merges are corrupt"
            )
        ids[token] = len(vocab)
        vocab.append(token)

    specials = data["special_tokens"]
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in specials.items()):
        raise TokenizerError(f"{source}: 'special_tokens' must map strings to integer ids")
    return {
        "merges": merges,
        "byte_order": byte_order,
        "pattern": data[
            "pattern_regex"
        ],  # the regex decides; older files' "pattern" name is ignored
        "special_tokens": dict(specials),
    }


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist; check the path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise TokenizerError(
            f"tokenizer file {path} is not UTF-8 text (byte offset {e.start}); it is damaged"
        ) from None
    except json.JSONDecodeError as e:
        raise TokenizerError(
            f"tokenizer file {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "it is truncated or was edited by hand, so restore it or save the tokenizer again"
        ) from None


# ---------------------------------------------------------------- tiktoken ranks files


def read_tiktoken_file(path: str | Path) -> list[bytes]:
    """Read a ``.tiktoken`` ranks file into id -> bytes (ids must be 0..n-1, each once)."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"ranks file {path} does not exist; check the path")
    by_rank: dict[int, bytes] = {}
    seen: set[bytes] = set()
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token_b64, rank_text = line.split()
            token = base64.b64decode(token_b64, validate=True)
            rank = int(rank_text)
        except (ValueError, binascii.Error):
            raise TokenizerError(
                f"{path}, line {lineno}: expected 'base64_token rank', got {line[:60]!r}; "
                "the file is damaged or not a tiktoken ranks file"
            ) from None
        if rank in by_rank or token in seen or not token:
            raise TokenizerError(
                f"{path}, line {lineno}: rank {rank} or its token appears twice (or the token is empty); the file is damaged"
            )
        by_rank[rank] = token
        seen.add(token)
    n = len(by_rank)
    if n < 256 or set(by_rank) != set(range(n)):
        raise TokenizerError(
            f"{path}: ranks must be 0..n-1 with n >= 256 and no gaps; the file is truncated or not a BPE ranks file"
        )
    vocab = [by_rank[i] for i in range(n)]
    if sorted(vocab[:256]) != [bytes([b]) for b in range(256)]:
        raise TokenizerError(
            f"{path}: ranks 0..255 must be the 256 single bytes; this is not a byte-level BPE ranks file"
        )
    return vocab


def tiktoken_file_text(vocab: list[bytes]) -> str:
    return "".join(f"{base64.b64encode(t).decode('ascii')} {i}\n" for i, t in enumerate(vocab))
