"""Prepare a token store: stream documents, encode them on every core, write shards.

The pipeline, in bounded memory however large the corpus::

    documents (gptlab/data/documents.py)  ->  pieces: (split, text, new document?)
      ->  batches of ~1 MB of text  ->  ParallelEncoder (in order)
      ->  per split: [end-of-text] + ids appended to the open shard
      ->  a shard closes at shard_tokens (at a document boundary); progress.json records it

Which documents are validation (``SplitRule``):

- ``hash``: a document is validation when a hash of its position in the source falls
  under ``val_fraction``: whole documents, spread over the corpus, the same on every run.
- ``first``: the first ``val_documents`` documents (FineWeb's recipes hold out a fixed
  first slice).
- ``tail``: one text cut at ``1 - val_fraction`` of its characters, nanoGPT's split of
  Tiny Shakespeare (so ``experiment=shakespeare_char`` keeps its numbers). Only for a
  source that is one document; the validation part continues that document, so it gets
  no end-of-text of its own.

Killed midway, the same call continues: ``progress.json`` lists the complete shards and,
per split, how many pieces of the stream they hold; everything else in the folder (a
half-written ``.tmp``, a shard written after the last record) is deleted and redone.
Two processes preparing the same store take turns on ``prepare.lock``: the second one
waits, then finds the finished manifest. The manifest is written last.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.data.parallel_encode import ParallelEncoder
from gptlab.data.shards import ShardWriter, shard_dtype
from gptlab.data.sources import DataError
from gptlab.data.store import (
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    PROGRESS,
    SPLITS,
    docs_name,
    read_manifest,
    shard_name,
)
from gptlab.tokenizer import Tokenizer
from gptlab.utils.io import atomic_open, atomic_write_text

SPLIT_MODES = ("hash", "first", "tail")
BATCH_CHARS = (
    1 << 20
)  # text per encoder task: large enough to amortise, small enough to bound memory
PIECE_CHARS = (
    1 << 20
)  # a long single text is read and encoded in newline-aligned pieces of this size


@dataclass(frozen=True)
class SplitRule:
    """Which documents go to validation; part of the store's identity."""

    mode: str = "hash"
    val_fraction: float = 0.1
    val_documents: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise DataError(f"data.val_split={self.mode!r}; use one of {', '.join(SPLIT_MODES)}")
        if self.mode == "first" and not (
            isinstance(self.val_documents, int) and self.val_documents >= 1
        ):
            raise DataError(
                "data.val_split=first needs data.val_documents=<how many leading documents are validation>"
            )

    def split_of(self, index: int) -> str:
        if self.mode == "first":
            assert self.val_documents is not None
            return "val" if index < self.val_documents else "train"
        return "val" if _unit_hash(index) < self.val_fraction else "train"


def _unit_hash(index: int) -> float:
    """A fixed pseudo-random number in [0, 1) for a document position (splitmix64)."""
    z = (index + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) / 2.0**64


@dataclass
class _Piece:
    split: str
    text: str
    new_doc: bool  # the first piece of a document: its tokens start a new entry in the index
    bos: bool  # put the end-of-text id before it (GPT-2's convention for a document start)


@dataclass
class _SplitState:
    """One split's progress: complete shards, and the open one."""

    name: str
    next_shard: int = 0
    pieces_done: int = 0  # pieces of the stream held by the complete shards
    tokens: int = 0
    documents: int = 0
    text_bytes: int = 0
    writer: ShardWriter | None = field(default=None, repr=False)
    doc_starts: list[int] = field(default_factory=list, repr=False)
    open_tokens: int = 0
    open_documents: int = 0
    open_text_bytes: int = 0

    def record(self) -> dict[str, int]:
        keys = ("next_shard", "pieces_done", "tokens", "documents", "text_bytes")  # not the name
        return {k: getattr(self, k) for k in keys}


def prepare_store(
    source: Any,
    tokenizer: Tokenizer,
    folder: str | Path,
    rule: SplitRule,
    *,
    shard_tokens: int = 100_000_000,
    workers: int | None = None,
    mode: str = "auto",
    progress: bool = True,
    single_text: Path | None = None,
    errors: str = "strict",
) -> dict[str, Any]:
    """Write the store for ``source`` into ``folder`` (or finish one a killed call started).

    ``source`` is a ``DocumentSource``; with ``single_text`` (a path) the text is instead
    read from that one file in pieces, so a multi-gigabyte text never sits in memory.
    Returns the manifest.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        manifest = read_manifest(folder)
        if manifest is not None:  # another process finished it while we waited
            return manifest
        return _prepare(
            source,
            tokenizer,
            folder,
            rule,
            shard_tokens,
            workers,
            mode,
            progress,
            single_text,
            errors,
        )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``prepare.lock``; a second process waits (and says so) instead of writing beside us."""
    try:
        import fcntl
    except ImportError:  # Windows: one prepare at a time is the user's job
        yield
        return
    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            print(f"waiting for {holder} to finish preparing {folder}", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(
    source: Any,
    tokenizer: Tokenizer,
    folder: Path,
    rule: SplitRule,
    shard_tokens: int,
    workers: int | None,
    mode: str,
    progress: bool,
    single_text: Path | None,
    errors: str,
) -> dict[str, Any]:
    identity = {
        "source": source_record(source)["fingerprint"],
        "tokenizer": tokenizer.fingerprint(),
        "split": asdict(rule),
    }
    state, shards = _resume(folder, identity)
    start = min(state[s].pieces_done for s in SPLITS)
    total = _total_bytes(source, single_text)
    pieces = _pieces(source, rule, start, single_text, errors)
    dtype = shard_dtype(tokenizer.vocab_size)
    eot_ids = None if tokenizer.eot_id is None else np.array([tokenizer.eot_id], dtype=dtype)
    small = total is not None and total < 8 * BATCH_CHARS
    # Documents are encoded as plain text (their separators are ours); one long text keeps
    # any <|endoftext|> its author wrote into it as the separator it was meant to be.
    ordinary = rule.mode != "tail"
    encoder = ParallelEncoder(
        tokenizer, workers=1 if small else workers, mode=mode, ordinary=ordinary
    )
    # The bar comes after the workers are forked: tqdm starts a thread.
    bar = _progress_bar(total, progress, folder)
    index = start - 1
    try:
        with encoder:
            for batch, encoded in _encoded(encoder, pieces):
                for piece, (ids, n_bytes) in zip(batch, encoded):
                    index += 1
                    split = state[piece.split]
                    if index < split.pieces_done:
                        continue  # already in a complete shard (the other split was behind)
                    _append(folder, split, piece, ids, n_bytes, eot_ids, tokenizer)
                    if split.open_tokens >= shard_tokens:
                        _close(folder, split, shards, index + 1)
                        _save_progress(folder, state, shards, source, identity)
                    if bar is not None:
                        bar.update(n_bytes)
                if bar is not None:
                    bar.set_postfix(_counts(state), refresh=False)
            for name in SPLITS:
                if state[name].writer is not None:
                    _close(folder, state[name], shards, index + 1)
    except OSError as e:
        _abort(state)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DataError(
                f"the disk filled while preparing {folder} ({len(shards)} shard(s) complete); free "
                "some space and run the same command again: it continues from the last complete shard"
            ) from None
        raise DataError(
            f"could not write the token store {folder} ({e.strerror or e}); run the same command "
            "again once the folder is writable: it continues from the last complete shard"
        ) from None
    except BaseException:
        _abort(state)
        raise
    finally:
        if bar is not None:
            bar.close()
    return _finish(folder, state, shards, source, tokenizer, rule, shard_tokens, dtype)


def _encoded(encoder: ParallelEncoder, pieces: Iterator[_Piece]):
    """(batch of pieces, their encodings), in stream order."""
    batches: deque[list[_Piece]] = deque()

    def texts() -> Iterator[list[str]]:
        batch: list[_Piece] = []
        chars = 0
        for piece in pieces:
            batch.append(piece)
            chars += len(piece.text)
            if chars >= BATCH_CHARS:
                batches.append(batch)
                yield [p.text for p in batch]
                batch, chars = [], 0
        if batch:
            batches.append(batch)
            yield [p.text for p in batch]

    for encoded in encoder.map(texts()):
        yield batches.popleft(), encoded


def _counts(state: dict[str, _SplitState]) -> dict[str, str]:
    docs = sum(s.documents + s.open_documents for s in state.values())
    tokens = sum(s.tokens + s.open_tokens for s in state.values())
    return {"docs": f"{docs:,}", "tokens": f"{tokens:,}"}


def _append(
    folder: Path,
    split: _SplitState,
    piece: _Piece,
    ids: np.ndarray,
    n_bytes: int,
    eot_ids: np.ndarray | None,
    tokenizer: Tokenizer,
) -> None:
    if split.writer is None:
        path = folder / shard_name(split.name, split.next_shard)
        split.writer = ShardWriter(path, tokenizer.vocab_size)
        split.doc_starts = []
    if piece.new_doc:
        split.doc_starts.append(split.open_tokens)
        split.open_documents += 1
    if piece.bos and eot_ids is not None:
        split.writer.write(eot_ids)
        split.open_tokens += 1
    split.writer.write(ids)
    split.open_tokens += len(ids)
    split.open_text_bytes += n_bytes


def _close(
    folder: Path, split: _SplitState, shards: list[dict[str, Any]], pieces_done: int
) -> None:
    assert split.writer is not None
    file = split.writer.path.name
    docs = np.asarray(split.doc_starts or [0], dtype=np.int64)
    with atomic_open(folder / docs_name(file), "wb") as f:
        np.save(f, docs, allow_pickle=False)
    sha = split.writer.sha256
    split.writer.close()
    shards.append(
        {
            "file": file,
            "split": split.name,
            "tokens": split.open_tokens,
            "documents": split.open_documents,
            "sha256": sha,
        }
    )
    split.tokens += split.open_tokens
    split.documents += split.open_documents
    split.text_bytes += split.open_text_bytes
    split.open_tokens = split.open_documents = split.open_text_bytes = 0
    split.next_shard += 1
    split.pieces_done = pieces_done
    split.writer = None


def _abort(state: dict[str, _SplitState]) -> None:
    for split in state.values():
        if split.writer is not None:
            with contextlib.suppress(OSError):
                split.writer.abort()
            split.writer = None


def _resume(
    folder: Path, identity: dict[str, Any]
) -> tuple[dict[str, _SplitState], list[dict[str, Any]]]:
    """Read progress.json and delete every file it does not vouch for.

    Shards a stopped prepare left are kept only when they came from the same source,
    tokenizer and split; a folder half-filled from another one is refused, not mixed in.
    """
    state = {s: _SplitState(s) for s in SPLITS}
    shards: list[dict[str, Any]] = []
    path = folder / PROGRESS
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if isinstance(saved, dict) and saved.get("identity") not in (None, identity):
            raise DataError(
                f"{folder} holds a partly prepared store of another source, tokenizer or split; "
                "delete the folder (or choose another data.store) and run again"
            )
        try:
            shards = [e for e in saved["shards"] if isinstance(e.get("file"), str)]
            for s in SPLITS:
                for key, value in saved["splits"][s].items():
                    setattr(state[s], key, int(value))
        except (ValueError, KeyError, TypeError, AttributeError):  # damaged: start over
            state, shards = {s: _SplitState(s) for s in SPLITS}, []
    keep = {e["file"] for e in shards} | {docs_name(e["file"]) for e in shards}
    for p in folder.iterdir():
        if p.name in (PROGRESS, LOCK) or p.name in keep:
            continue
        if p.suffix in (".bin", ".npy", ".tmp") or p.name.startswith("."):
            p.unlink(missing_ok=True)
    return state, shards


def _save_progress(
    folder: Path,
    state: dict[str, _SplitState],
    shards: list[dict[str, Any]],
    source: Any,
    identity: dict[str, Any],
) -> None:
    record = {
        "identity": identity,
        "shards": shards,
        "splits": {s: state[s].record() for s in SPLITS},
        "skipped_records": getattr(source, "skipped", 0),
    }
    atomic_write_text(folder / PROGRESS, json.dumps(record, indent=1))


def _finish(
    folder: Path,
    state: dict[str, _SplitState],
    shards: list[dict[str, Any]],
    source: Any,
    tokenizer: Tokenizer,
    rule: SplitRule,
    shard_tokens: int,
    dtype: np.dtype,
) -> dict[str, Any]:
    where = source.describe() if source is not None else "the text"
    if not any(state[s].tokens for s in SPLITS):
        raise DataError(
            f"the source {where} holds no text; point data.path at a corpus with text in it"
        )
    for s, hint in (
        ("train", "lower data.val_fraction or data.val_documents"),
        ("val", "raise data.val_fraction, or set data.val_split=first data.val_documents=<n>"),
    ):
        if state[s].tokens == 0:
            raise DataError(f"no document of {where} went to the {s} split; {hint}")
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dtype": dtype.name,
        "tokenizer": {
            "fingerprint": tokenizer.fingerprint(),
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
        },
        "source": source_record(source),
        "split": asdict(rule),
        "shard_tokens": shard_tokens,
        "shards": shards,
        "splits": {
            s: {
                k: v
                for k, v in state[s].record().items()
                if k in ("tokens", "documents", "text_bytes")
            }
            for s in SPLITS
        },
        "skipped_records": getattr(source, "skipped", 0),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    (folder / PROGRESS).unlink(missing_ok=True)
    return manifest


def source_record(source: Any) -> dict[str, Any]:
    return {
        "fingerprint": source.fingerprint() if source is not None else None,
        "describe": source.describe() if source is not None else None,
    }


# -- the stream of pieces -------------------------------------------------------------------
def _pieces(
    source: Any, rule: SplitRule, start: int, single_text: Path | None, errors: str
) -> Iterator[_Piece]:
    if rule.mode == "tail":
        yield from _tail_pieces(source, rule, start, single_text, errors)
        return
    for index, text in enumerate(source.documents(skip=start), start=start):
        yield _Piece(rule.split_of(index), text, new_doc=True, bos=True)


def _tail_pieces(
    source: Any, rule: SplitRule, start: int, single_text: Path | None, errors: str
) -> Iterator[_Piece]:
    """One text cut at ``1 - val_fraction`` of its characters, in pieces; the first ``start`` skipped."""
    if single_text is not None:
        n_chars = sum(len(p) for p in _file_pieces(single_text, errors))
        texts: Iterator[str] = _file_pieces(single_text, errors)
    else:
        docs = list(source.documents())
        if len(docs) != 1:
            raise DataError(
                f"data.val_split=tail cuts one text, but {source.describe()} holds {len(docs)} documents; "
                "use data.val_split=hash (whole documents) for a corpus of many"
            )
        n_chars = len(docs[0])
        texts = iter(_cut_pieces(docs[0]))
    cut = int(n_chars * (1.0 - rule.val_fraction))
    position, index, first_val = 0, 0, True
    for text in texts:
        parts = [("train", text)]
        if position < cut < position + len(text):
            parts = [("train", text[: cut - position]), ("val", text[cut - position :])]
        elif position >= cut:
            parts = [("val", text)]
        position += len(text)
        for split, part in parts:
            new_doc = index == 0 or (split == "val" and first_val)
            if split == "val":
                first_val = False
            if index >= start:
                yield _Piece(split, part, new_doc=new_doc, bos=index == 0)
            index += 1


def _cut_pieces(text: str) -> list[str]:
    """``text`` in newline-aligned pieces of about ``PIECE_CHARS`` (what the encoder gets)."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + PIECE_CHARS)
        end = len(text) if end == -1 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces or [text]


def _file_pieces(path: Path, errors: str) -> Iterator[str]:
    """A text file decoded in newline-aligned pieces, never all of it in memory."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    carry = ""
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(PIECE_CHARS)
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path} is not valid UTF-8 at byte {offset + e.start}; convert the file to UTF-8 "
                    "or set data.errors=replace to substitute the bad bytes"
                ) from None
            offset += len(raw)
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1
            if cut == 0:
                carry = text
                continue
            yield text[:cut]
            carry = text[cut:]


def _total_bytes(source: Any, single_text: Path | None) -> int | None:
    if single_text is not None:
        return single_text.stat().st_size
    return getattr(source, "total_bytes", None)


def _progress_bar(total: int | None, enabled: bool, folder: Path):
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"preparing {folder.name}",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        mininterval=1.0,
    )
