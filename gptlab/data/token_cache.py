"""Tokenize a corpus once and keep the ids on disk as a memory-mapped array.

A cache is two files: ``<key>.bin`` (the raw ids, uint16 when the vocabulary fits,
else uint32) and ``<key>.json`` (dtype, token count, vocabulary size, the text's
sha256, the tokenizer's fingerprint and the sha256 of the ids themselves). The ids'
checksum is verified on every use up to ``VERIFY_LIMIT`` bytes (well under a second);
larger caches are checked by size and header only, so that opening a many-gigabyte
cache stays instant. The key itself is derived from the text
hash and the tokenizer fingerprint, so editing the corpus or changing the
tokenizer re-tokenizes instead of silently reusing stale ids. A cache whose header
does not match its data (a crash, an edit, another tokenizer) is rebuilt, not trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from gptlab.data.names import check_plain_name
from gptlab.data.sources import DataError
from gptlab.tokenizer import Tokenizer, TokenizerError
from gptlab.utils.io import atomic_open, atomic_write_text, sha256_file

FORMAT_VERSION = 2  # 2: the header carries data_sha256
VERIFY_LIMIT = 256 << 20  # verify the ids' sha256 for caches up to this many bytes
_CHUNK_CHARS = 1 << 20  # encode ~1 MB pieces in parallel (split on newlines)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 up to 65,536 ids."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def encode_corpus(text: str, tokenizer: Tokenizer) -> list[int]:
    """Encode a long text in newline-aligned chunks so fast tokenizers can use every core."""
    if len(text) <= _CHUNK_CHARS:
        return tokenizer.encode(text)
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + _CHUNK_CHARS)
        end = len(text) if end == -1 else end + 1
        chunks.append(text[start:end])
        start = end
    ids: list[int] = []
    for part in tokenizer.encode_batch(chunks):
        ids.extend(part)
    return ids


def _expected_header(text_hash: str, tokenizer: Tokenizer) -> dict:
    return {
        "version": FORMAT_VERSION,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "vocab_size": tokenizer.vocab_size,
        "text_sha256": text_hash,
        "tokenizer": tokenizer.fingerprint(),
    }


def _valid(bin_path: Path, meta_path: Path, expected: dict) -> dict | None:
    """Return the header if the cache on disk matches what we would write, else None."""
    if not (bin_path.is_file() and meta_path.is_file()):
        return None
    try:
        header = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict) or any(header.get(k) != v for k, v in expected.items()):
        return None
    n_tokens = header.get("n_tokens")
    itemsize = np.dtype(expected["dtype"]).itemsize
    if not isinstance(n_tokens, int) or bin_path.stat().st_size != n_tokens * itemsize:
        return None
    if not isinstance(header.get("data_sha256"), str):
        return None
    if n_tokens * itemsize <= VERIFY_LIMIT and sha256_file(bin_path) != header["data_sha256"]:
        return None
    return header


def cached_tokens(text: str, tokenizer: Tokenizer, cache_dir: str | Path, name: str) -> np.ndarray:
    """Return ``text`` as a read-only memory-mapped id array, tokenizing only on a cache miss."""
    check_plain_name("data.name", name, "my_corpus")  # the cache must stay inside cache_dir/tokens
    text_hash = text_sha256(text)
    key = f"{name}-{text_hash[:12]}-{tokenizer.fingerprint()}"
    folder = Path(cache_dir) / "tokens"
    bin_path, meta_path = folder / f"{key}.bin", folder / f"{key}.json"
    expected = _expected_header(text_hash, tokenizer)
    header = _valid(bin_path, meta_path, expected)
    from_disk = header is not None
    if header is None:
        ids = np.asarray(encode_corpus(text, tokenizer), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
            raise TokenizerError(
                f"the {tokenizer.kind} tokenizer produced id {int(ids.max())} (or a negative one) although it "
                f"says it has {tokenizer.vocab_size} ids; its file is inconsistent, so rebuild or fix the tokenizer"
            )
        data = ids.astype(expected["dtype"]).tobytes()
        with atomic_open(bin_path, "wb") as f:
            f.write(data)
        n_tokens = len(data) // np.dtype(expected["dtype"]).itemsize
        header = {**expected, "n_tokens": n_tokens, "data_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_text(meta_path, json.dumps(header, indent=1))
    if header["n_tokens"] == 0:
        return np.zeros(0, dtype=expected["dtype"])
    tokens = np.memmap(bin_path, dtype=expected["dtype"], mode="r", shape=(header["n_tokens"],))
    if from_disk:  # freshly written ids were checked above
        _check_ids_fit(tokens, tokenizer.vocab_size, bin_path)
    return tokens


def _check_ids_fit(tokens: np.ndarray, vocab_size: int, bin_path: Path) -> None:
    """An id past the vocabulary would fail deep inside the embedding at some later step: refuse it now.

    One pass over the mapped ids (about a second per GB), done on every load because
    caches over ``VERIFY_LIMIT`` are not checksummed and a header can be edited.
    """
    largest = int(tokens.max())
    if largest >= vocab_size:
        raise DataError(
            f"the token cache {bin_path} holds id {largest}, but the tokenizer has only {vocab_size} ids; "
            f"delete {bin_path} and {bin_path.with_suffix('.json')} so that it is rebuilt, or use the tokenizer "
            "that wrote it"
        )
