"""Token shards in llm.c's format, so the shards of llm.c and modded-nanogpt load as they are.

A shard is a header of 256 little-endian int32 followed by the ids::

    header[0]  magic    20240520 (ids are uint16: GPT-2-sized vocabularies)
                        20240801 (ids are uint32: vocabularies over 65,536, llm.c's Llama 3 variant)
    header[1]  version  1 for uint16, 7 for uint32 (llm.c's numbers)
    header[2]  number of ids that follow

nanoGPT's ``train.bin``/``val.bin`` are the same ids with no header at all (uint16).

A shard is written to a temporary file and renamed into place only once it is complete
and on disk, so a shard file that exists is whole; its size must still match its
header, which ``open_shard`` checks before trusting it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from gptlab.data.sources import DataError

FLUSH_IDS = 1 << 20  # a writer gathers appends until this many ids, then writes them at once
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
FORMATS: dict[int, tuple[int, np.dtype]] = {  # magic -> (version, dtype)
    20240520: (1, np.dtype("<u2")),
    20240801: (7, np.dtype("<u4")),
}


def shard_dtype(vocab_size: int) -> np.dtype:
    """The id type a vocabulary needs: uint16 up to 65,536 ids, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _magic_for(dtype: np.dtype) -> int:
    return next(magic for magic, (_, dt) in FORMATS.items() if dt == dtype)


def shard_header(path: str | Path) -> tuple[np.dtype, int]:
    """(id dtype, number of ids) of a shard, after checking its magic, version and size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
        header = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4")
    except OSError as e:
        raise DataError(f"cannot read the token shard {path} ({e.strerror or e})") from None
    if len(header) < 3 or int(header[0]) not in FORMATS:
        raise DataError(
            f"{path} is not a token shard: its first int32 is not llm.c's magic number 20240520 "
            "(or 20240801); prepare the data again with python -m gptlab.prepare"
        )
    version, dtype = FORMATS[int(header[0])]
    if int(header[1]) != version:
        raise DataError(
            f"the token shard {path} has format version {int(header[1])}, expected {version}; "
            "prepare the data again with python -m gptlab.prepare"
        )
    n_tokens = int(header[2])
    if n_tokens < 0 or size != HEADER_BYTES + n_tokens * dtype.itemsize:
        raise DataError(
            f"the token shard {path} is {size:,} bytes but its header promises {n_tokens:,} ids "
            f"({HEADER_BYTES + max(n_tokens, 0) * dtype.itemsize:,} bytes): it is truncated or was "
            "overwritten; delete it and prepare the data again"
        )
    return dtype, n_tokens


def open_shard(path: str | Path) -> np.ndarray:
    """A shard's ids as a read-only memory map (nothing is read until used)."""
    dtype, n_tokens = shard_header(path)
    if n_tokens == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def open_raw_ids(path: str | Path, dtype: str = "uint16") -> np.ndarray:
    """nanoGPT's header-less ``train.bin``/``val.bin`` as a read-only memory map."""
    path = Path(path)
    dt = np.dtype(dtype)
    size = path.stat().st_size
    if size % dt.itemsize:
        raise DataError(
            f"{path} is {size:,} bytes, not a whole number of {dt.name} ids; is it really a nanoGPT .bin?"
        )
    return np.memmap(path, dtype=dt, mode="r", shape=(size // dt.itemsize,))


class ShardWriter:
    """Write one shard by appending ids, in bounded memory; ``close()`` makes it appear whole.

    The ids go to ``<name>.tmp`` behind a placeholder header (a document's few hundred ids
    are gathered and written a million at a time); ``close`` writes the real header,
    flushes to disk and renames the file into place. ``sha256`` is the hash of
    the ids (not the header), so a store's manifest can say what each shard must hold.
    """

    def __init__(self, path: str | Path, vocab_size: int) -> None:
        self.path = Path(path)
        self.dtype = shard_dtype(vocab_size)
        self.vocab_size = vocab_size
        self.n_tokens = 0
        self._pending: list[
            np.ndarray
        ] = []  # small appends, written together (one call per ~1M ids)
        self._pending_ids = 0
        self._hash = hashlib.sha256()
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._tmp, "wb")  # noqa: SIM115  # held until close() or abort()
        self._file.write(b"\0" * HEADER_BYTES)

    def write(self, ids: np.ndarray) -> None:
        """Append ``ids``; an id past the vocabulary is refused before anything of them is written."""
        self._pending.append(np.asarray(ids))
        self._pending_ids += len(ids)
        self.n_tokens += len(ids)
        if self._pending_ids >= FLUSH_IDS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate(self._pending)
        self._pending, self._pending_ids = [], 0
        if len(ids) and int(ids.max()) >= self.vocab_size:
            raise DataError(
                f"the tokenizer produced id {int(ids.max())} although it has {self.vocab_size:,} ids; "
                "its file is inconsistent: rebuild or fix the tokenizer"
            )
        data = np.ascontiguousarray(ids, dtype=self.dtype).tobytes()
        self._file.write(data)
        self._hash.update(data)

    @property
    def sha256(self) -> str:
        self._flush()
        return self._hash.hexdigest()

    def close(self) -> None:
        self._flush()
        header = np.zeros(HEADER_INTS, dtype="<i4")
        magic = _magic_for(self.dtype)
        header[0], header[1], header[2] = magic, FORMATS[magic][0], self.n_tokens
        self._file.seek(0)
        self._file.write(header.tobytes())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file), leaving nothing that looks complete.

        On a full disk closing fails too (its buffered bytes cannot be flushed): the
        temporary file is removed anyway, or it would keep the space the user must free.
        """
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


def write_shard(path: str | Path, ids: np.ndarray, vocab_size: int) -> str:
    """Write ``ids`` as one complete shard; return the sha256 of the ids."""
    writer = ShardWriter(path, vocab_size)
    try:
        writer.write(np.asarray(ids))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.sha256


def ids_sha256(tokens: np.ndarray, chunk: int = 1 << 24) -> str:
    """The sha256 of a shard's ids as stored (what ``ShardWriter.sha256`` recorded)."""
    h = hashlib.sha256()
    for start in range(0, len(tokens), chunk):
        h.update(np.ascontiguousarray(tokens[start : start + chunk]).tobytes())
    return h.hexdigest()
