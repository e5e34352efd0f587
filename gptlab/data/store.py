"""A token store: a corpus tokenized once into shards, with a manifest that says what it holds.

::

    <store>/manifest.json          what the store is (below); written last, so a store with
                                   a manifest is complete
    <store>/train_000000.bin       llm.c's shard format (gptlab/data/shards.py)
    <store>/train_000000.docs.npy  where each document starts in that shard (int64)
    <store>/val_000000.bin ...

The manifest records the format version, the tokenizer's fingerprint, the source's
fingerprint, how documents were split into train and validation, and for every shard
its split, token count, document count and the sha256 of its ids. Opening a store
trusts the manifest and checks each shard by its size and header, so opening a
many-gigabyte store costs milliseconds; the ids' checksums are verified when the store
is small (``VERIFY_LIMIT``) or when asked (``verify=True``).

``python -m gptlab.prepare`` writes stores (``gptlab/data/ingest.py``); training reads
them through ``open_store``. Shards that other tools wrote (llm.c's and modded-nanogpt's
FineWeb ``.bin`` files, nanoGPT's ``train.bin``/``val.bin``) are used as they are by
``open_existing_shards``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.data.shards import ids_sha256, open_raw_ids, open_shard
from gptlab.data.sources import DataError
from gptlab.data.token_view import TokenView

FORMAT = "gptlab-token-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"  # what a prepare that has not finished has written so far
LOCK = "prepare.lock"  # held by the process preparing the store
SPLITS = ("train", "val")
VERIFY_LIMIT = 256 << 20  # verify the ids' sha256 on open for stores up to this many bytes


def store_key(parts: dict[str, Any]) -> str:
    """A short hash of everything that decides a store's ids (its folder name carries it)."""
    blob = json.dumps({"version": FORMAT_VERSION, **parts}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def docs_name(shard: str) -> str:
    return shard.removesuffix(".bin") + ".docs.npy"


@dataclass
class TokenStore:
    """An opened store: its manifest and each split's shards as one ``TokenView``."""

    folder: Path
    manifest: dict[str, Any]
    splits: dict[str, TokenView]

    def split(self, name: str) -> TokenView:
        return self.splits[name]

    @property
    def identity(self) -> str:
        """What a checkpoint records: it changes whenever any id in the store would."""
        shards = [(s["file"], s["tokens"], s.get("sha256")) for s in self.manifest["shards"]]
        return store_key({"tokenizer": self.manifest.get("tokenizer"), "shards": shards})

    def bytes_per_token(self, split: str) -> float | None:
        """UTF-8 bytes of text per token in ``split`` (for bits per byte); None when unknown."""
        info = self.manifest.get("splits", {}).get(split, {})
        text_bytes, tokens = info.get("text_bytes"), info.get("tokens")
        return text_bytes / tokens if text_bytes and tokens else None

    def describe(self) -> str:
        parts = [f"{n} {len(v):,} tokens" for n, v in self.splits.items()]
        return f"token store {self.folder} ({', '.join(parts)})"


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The store's manifest, or None when the folder holds no complete store."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(
            f"{path} is not a readable store manifest; delete the folder {folder} and prepare it again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a gptlab token store manifest; point data.store elsewhere")
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(
            f"the token store {folder} has format version {manifest.get('version')}, this gptlab "
            f"reads version {FORMAT_VERSION}; delete the folder and run python -m gptlab.prepare again"
        )
    if not _well_formed(manifest):
        raise DataError(
            f"{path} lacks fields a store manifest has (it was edited or damaged); delete the folder "
            f"{folder} and prepare it again"
        )
    return manifest


def _well_formed(manifest: dict[str, Any]) -> bool:
    """The fields ``open_store`` reads are there and have the right types."""
    try:
        np.dtype(manifest["dtype"])
        fingerprint = manifest["tokenizer"]["fingerprint"]
        shards = manifest["shards"]
        return (
            isinstance(fingerprint, str)
            and isinstance(shards, list)
            and all(
                isinstance(s, dict)
                and isinstance(s.get("file"), str)
                and "/" not in s["file"]
                and ".." not in s["file"]
                and s.get("split") in SPLITS
                and isinstance(s.get("tokens"), int)
                for s in shards
            )
        )
    except (KeyError, TypeError, ValueError):
        return False


def open_store(
    folder: str | Path,
    tokenizer_fingerprint: str | None = None,
    verify: bool | None = None,
) -> TokenStore:
    """Open a prepared store; refuse one made with another tokenizer or whose shards changed.

    ``verify``: None checks the ids' sha256 only when the store is small, True always,
    False never (sizes and headers are always checked).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(
            f"{folder} holds no prepared token store (no {MANIFEST}); run python -m gptlab.prepare"
        )
    theirs = manifest["tokenizer"]["fingerprint"]
    if tokenizer_fingerprint is not None and theirs != tokenizer_fingerprint:
        raise DataError(
            f"the token store {folder} was prepared with tokenizer {theirs} "
            f"({manifest['tokenizer'].get('kind')}), but this run's tokenizer is {tokenizer_fingerprint}; "
            "use the tokenizer the store was made with, or prepare a store for this one"
        )
    total_bytes = (
        sum(s["tokens"] for s in manifest["shards"]) * np.dtype(manifest["dtype"]).itemsize
    )
    check_ids = verify if verify is not None else total_bytes <= VERIFY_LIMIT
    shards: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    docs: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise DataError(
                f"the token store {folder} lists {entry['file']}, which is missing; "
                "delete the folder and prepare it again"
            )
        ids = open_shard(path)
        if len(ids) != entry["tokens"] or ids.dtype != np.dtype(manifest["dtype"]):
            raise DataError(
                f"{path} holds {len(ids):,} {ids.dtype} ids but the manifest says {entry['tokens']:,} "
                f"{manifest['dtype']}; the shard was replaced: delete the folder and prepare it again"
            )
        if check_ids and entry.get("sha256") and ids_sha256(ids) != entry["sha256"]:
            raise DataError(
                f"the ids in {path} do not match the checksum in the manifest (the file was "
                "changed or damaged); delete the folder and prepare it again"
            )
        shards[entry["split"]].append(ids)
        docs[entry["split"]].append(_doc_starts(folder / docs_name(entry["file"])))
    splits = {s: TokenView(shards[s], docs[s]) for s in SPLITS}
    return TokenStore(folder, manifest, splits)


def _doc_starts(path: Path) -> np.ndarray:
    try:
        starts = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError):
        raise DataError(
            f"the document index {path} is missing or damaged; delete its store and prepare it again"
        ) from None
    if starts.dtype != np.int64 or starts.ndim != 1:
        raise DataError(
            f"the document index {path} is not a list of int64 positions; delete its store and prepare it again"
        )
    return starts  # a read-only memory map: a DataLoader worker receives it by file name


# -- shards written by other tools ----------------------------------------------------------
def looks_like_shards(folder: Path) -> bool:
    """A folder of shards another tool wrote (llm.c's ``*train*.bin``/``*val*.bin``, nanoGPT's pair).

    A folder gptlab prepares into holds a manifest once finished and ``progress.json`` or
    ``prepare.lock`` before: neither is foreign.
    """
    return (
        folder.is_dir()
        and any(folder.glob("*.bin"))
        and not any((folder / name).exists() for name in (MANIFEST, PROGRESS, LOCK))
    )


def open_existing_shards(folder: str | Path, eot_id: int | None, vocab_size: int) -> TokenStore:
    """Use shards other tools prepared as they are: llm.c's headers or nanoGPT's raw uint16.

    Files whose name holds ``val`` are the validation split, the others training. Their
    tokenizer cannot be checked (they carry no fingerprint), so the run's tokenizer must
    be the one they were made with; ids past its vocabulary are refused when the
    loader sees them. Documents start at each end-of-text id, as GPT-2 shards put one
    before every document.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.bin") if p.is_file())
    nanogpt = bool({p.name for p in files} & {"train.bin", "val.bin"})  # raw ids, no header
    shards: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    entries = []
    for path in files:
        split = "val" if "val" in path.name else "train"
        ids = open_raw_ids(path) if nanogpt else open_shard(path)
        shards[split].append(ids)
        entries.append({"file": path.name, "split": split, "tokens": len(ids)})
    for split in SPLITS:
        if not shards[split]:
            raise DataError(
                f"the shard folder {folder} has no {split} shards (file names with "
                f"{'val' if split == 'val' else 'train'} in them); add them or prepare the corpus"
            )
    dtype = shards["train"][0].dtype
    if vocab_size > 1 << 16 and dtype == np.uint16:
        raise DataError(
            f"the shards in {folder} hold uint16 ids, too narrow for a {vocab_size:,}-id tokenizer"
        )
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dtype": dtype.name,
        "tokenizer": {"fingerprint": None, "kind": "as prepared", "vocab_size": vocab_size},
        "source": {"kind": "nanogpt_bin" if nanogpt else "tokens", "describe": str(folder)},
        "shards": entries,
        "splits": {s: {"tokens": int(sum(len(a) for a in shards[s]))} for s in SPLITS},
    }
    views = {s: TokenView(shards[s], [_EotStarts(a, eot_id) for a in shards[s]]) for s in SPLITS}
    return TokenStore(folder, manifest, views)


class _EotStarts:
    """Document starts found by scanning a shard for end-of-text ids, on first use only."""

    def __init__(self, ids: np.ndarray, eot_id: int | None) -> None:
        self.ids, self.eot_id = ids, eot_id

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self.eot_id is None:
            return np.zeros(1, dtype=np.int64)
        starts = np.flatnonzero(np.asarray(self.ids) == self.eot_id).astype(np.int64)
        return starts if len(starts) and starts[0] == 0 else np.concatenate([[0], starts])
