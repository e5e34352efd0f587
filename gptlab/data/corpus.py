"""One corpus: where its text comes from, how it splits, and the token store made from it.

``Corpus`` turns the ``data.*`` settings into a document source
(``gptlab/data/documents.py``), a split rule and a store folder, and opens the store,
preparing it first when it does not exist (``gptlab/data/ingest.py``). The store's
folder is ``<cache>/stores/<name>-<key>``, where the key hashes the source's
fingerprint, the tokenizer's fingerprint and the split rule: editing the corpus,
changing the tokenizer or the split prepares a new store instead of reusing stale ids.
``data.store=<folder>`` puts it somewhere chosen instead, and a folder of shards that
other tools wrote (llm.c's, modded-nanogpt's, nanoGPT's ``.bin`` files) is used as it is.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from gptlab.data.names import check_plain_name, is_hub_name
from gptlab.data.sources import DataError, default_cache_dir, download
from gptlab.data.store import (
    TokenStore,
    looks_like_shards,
    open_existing_shards,
    open_store,
    read_manifest,
    store_key,
)
from gptlab.tokenizer import Tokenizer

SOURCES = ("embedded", "url", "file", "hf")
VAL_SPLITS = ("auto", "hash", "first", "tail")
_TOKEN_KINDS = ("tokens", "nanogpt_bin")


class Corpus:
    """The ``data.*`` settings of one corpus (see ``gptlab/conf/data/pydoc.yaml`` for each)."""

    def __init__(
        self,
        name: str,
        source: str = "embedded",
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        filename: str | None = None,
        kind: str = "auto",
        text_field: str = "text",
        on_bad_record: str = "error",
        errors: str = "strict",
        subset: str | None = None,
        split: str = "train",
        revision: str | None = None,
        data_files: list[str] | None = None,
        val_split: str = "auto",
        val_fraction: float = 0.1,
        val_documents: int | None = None,
        store: str | None = None,
        shard_tokens: int = 100_000_000,
        cache_dir: str | Path | None = None,
        workers: int | None = None,
        encode_mode: str = "auto",
        verify: bool | None = None,
    ) -> None:
        if source not in SOURCES:
            raise DataError(f"unknown data.source={source!r}; use one of {', '.join(SOURCES)}")
        if val_split not in VAL_SPLITS:
            raise DataError(f"data.val_split={val_split!r}; use one of {', '.join(VAL_SPLITS)}")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(
                f"data.val_fraction={val_fraction} must be between 0 and 1 (exclusive), e.g. 0.1"
            )
        if source == "hf" and not (is_hub_name(name) or re.fullmatch(r"[\w.-]+", str(name))):
            raise DataError(
                f"data.name={name!r} is not a Hugging Face dataset name; use e.g. "
                "data.name=HuggingFaceFW/fineweb-edu"
            )
        if not is_hub_name(name):  # the name becomes part of a folder name
            check_plain_name("data.name", name, "my_corpus")
        if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens < 1:
            raise DataError(f"data.shard_tokens={shard_tokens!r} must be a positive whole number")
        self.name = name
        self.source = source
        self.path = path
        self.url, self.sha256, self.filename = url, sha256, filename
        self.kind_setting, self.text_field = kind, text_field
        self.on_bad_record, self.errors = on_bad_record, errors
        self.subset, self.hf_split, self.revision = subset, split, revision
        self.data_files = list(data_files) if data_files else None
        self.val_split, self.val_fraction, self.val_documents = (
            val_split,
            val_fraction,
            val_documents,
        )
        self.store = store
        self.shard_tokens = shard_tokens
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.workers, self.encode_mode, self.verify = workers, encode_mode, verify
        self._source: Any = None
        self._text: str | None = None
        # Looked up once: a download is checked against its sha256 on every lookup, and the
        # identity a run records must be that of the data its store was made from.
        self._path: tuple[Path | None] | None = None
        self._kind: str | None = None
        self._identity: tuple[str, dict[str, Any] | None] | None = None

    # -- the documents --------------------------------------------------------------------
    def local_path(self) -> Path | None:
        """The file or folder the text comes from (downloading it first for ``source=url``)."""
        if self._path is None:
            self._path = (self._find_path(),)
        return self._path[0]

    def _find_path(self) -> Path | None:
        if self.path:
            return Path(self.path).expanduser()
        if self.source == "url":
            if not self.url:
                raise DataError("data.source=url needs data.url (and data.sha256 to verify it)")
            dest = self.cache_dir / "corpora" / (self.filename or Path(self.url).name)
            return download(self.url, dest, self.sha256)
        if self.source == "file":
            raise DataError(
                "data.source=file needs data.path=<a text file, a folder, .jsonl, .parquet or token shards>"
            )
        return None

    def kind(self) -> str:
        """What the source holds: text, jsonl, parquet, hf, embedded, or tokens already."""
        if self._kind is None:
            self._kind = self._detect_kind()
        return self._kind

    def _detect_kind(self) -> str:
        from gptlab.data.documents import detect_kind

        if self.source == "hf" and not self.path:
            return "hf"
        path = self.local_path()
        if path is None:
            return "embedded"
        if self.kind_setting != "auto":
            return self.kind_setting
        if not path.exists():
            raise DataError(f"the corpus {path} does not exist; check data.path")
        return detect_kind(path)

    def documents(self) -> Any:
        """The ``DocumentSource`` of this corpus (opened once)."""
        if self._source is None:
            from gptlab.data.documents import SourceSpec, open_source

            kind = self.kind()
            path = self.local_path()
            self._source = open_source(
                SourceSpec(
                    path=str(path) if path else None,
                    kind=kind,
                    text_field=self.text_field,
                    on_bad_record=self.on_bad_record,
                    errors=self.errors,
                    name=self.name if kind == "hf" else None,
                    subset=self.subset,
                    split=self.hf_split,
                    revision=self.revision,
                    data_files=tuple(self.data_files) if self.data_files else None,
                )
            )
        return self._source

    def _single_text(self) -> Path | None:
        """The one text file this corpus is, if it is one (read in pieces, never whole)."""
        path = self.local_path()
        if path is not None and path.is_file() and self.kind() == "text":
            return path
        return None

    def rule(self) -> Any:
        from gptlab.data.ingest import SplitRule

        mode = self.val_split
        if mode == "auto" and self.val_documents:
            mode = "first"
        elif mode == "auto":  # one text is cut by characters (nanoGPT); many are split by document
            mode = "tail" if self.kind() == "embedded" or self._single_text() else "hash"
        return SplitRule(mode, self.val_fraction, self.val_documents)

    def full_text(self) -> str:
        """The whole corpus as one string: only for learning a tokenizer on a small corpus."""
        if self._text is None:
            single = self._single_text()
            if single is not None:
                from gptlab.data.sources import read_local

                self._text = read_local(single, errors=self.errors)
            else:
                self._text = "\n\n".join(self.documents().documents())
            if not self._text.strip():
                raise DataError(
                    f"the corpus {self.describe()} is empty; give data.path a file with text in it"
                )
        return self._text

    def split_text(self) -> tuple[str, str]:
        """(training text, validation text), split by the corpus's rule (small corpora)."""
        rule = self.rule()
        if rule.mode == "tail":
            text = self.full_text()
            cut = int(len(text) * (1.0 - rule.val_fraction))
            return text[:cut], text[cut:]
        parts: dict[str, list[str]] = {"train": [], "val": []}
        for index, doc in enumerate(self.documents().documents()):
            parts[rule.split_of(index)].append(doc)
        return "\n\n".join(parts["train"]), "\n\n".join(parts["val"])

    def describe(self) -> str:
        if self.path:
            return str(self.path)
        return f"{self.name!r} ({self.source})"

    # -- the store ------------------------------------------------------------------------
    def is_tokens(self) -> bool:
        """Whether the source is token shards already (used as they are, never prepared)."""
        if self.source == "hf" and not self.path:
            return False
        if self.store and looks_like_shards(Path(self.store)):
            return True
        return self.kind() in _TOKEN_KINDS

    def identity(self, tokenizer: Tokenizer) -> dict[str, Any] | None:
        """What decides the store's ids: the source, the tokenizer and the split (cheap to compute).

        None for shards other tools wrote, which carry no such record. Computed once per
        tokenizer: a checkpoint records the data its store was made from, even when the
        files change during the run.
        """
        fingerprint = tokenizer.fingerprint()
        if self._identity is None or self._identity[0] != fingerprint:
            identity = None
            if not self.is_tokens():
                identity = {
                    "source": self.documents().fingerprint(),
                    "tokenizer": fingerprint,
                    "split": vars(self.rule()),
                }
            self._identity = (fingerprint, identity)
        return self._identity[1]

    def store_folder(self, tokenizer: Tokenizer) -> Path:
        if self.store:
            return Path(self.store).expanduser()
        key = store_key(self.identity(tokenizer) or {})
        return self.cache_dir / "stores" / f"{self.name.replace('/', '__')}-{key}"

    def open(self, tokenizer: Tokenizer, progress: bool = True) -> TokenStore:
        """The corpus's token store, prepared now if it does not exist yet."""
        if self.is_tokens():
            folder = Path(self.store) if self.store else self.local_path()
            assert folder is not None
            return open_existing_shards(folder, tokenizer.eot_id, tokenizer.vocab_size)
        folder = self.store_folder(tokenizer)
        if read_manifest(folder) is None:
            from gptlab.data.ingest import prepare_store

            prepare_store(
                self.documents(),
                tokenizer,
                folder,
                self.rule(),
                shard_tokens=self.shard_tokens,
                workers=self.workers,
                mode=self.encode_mode,
                progress=progress,
                single_text=self._single_text(),
                errors=self.errors,
            )
        store = open_store(folder, tokenizer.fingerprint(), verify=self.verify)
        if self.store:  # a chosen folder may hold a store of another corpus
            identity = self.identity(tokenizer)
            assert identity is not None
            _check_same_source(store, identity["source"], self.describe())
        return store


def corpus_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a ``data`` config that describe the corpus (the rest shape the batches)."""
    accepted = inspect.signature(Corpus).parameters
    return {k: v for k, v in settings.items() if k in accepted}


def mixture_parts(
    name: str, base: Mapping[str, Any], entries: list[Mapping[str, Any]] | None
) -> list[tuple[Corpus, float]]:
    """``data.mixture``: each entry's settings over the base ones, with its weight."""
    parts = []
    for i, entry in enumerate(entries or []):
        entry = dict(entry)
        weight = entry.pop("weight", None)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise DataError(
                f"data.mixture[{i}] needs a positive weight, e.g. {{path: ..., weight: 0.5}}; got {weight!r}"
            )
        part_name = entry.pop("name", None) or f"{name}-part{i}"
        parts.append((Corpus(part_name, **{**base, **entry}), float(weight)))
    return parts


def training_corpora(corpus: Corpus, mixture: list[tuple[Corpus, float]]) -> list[Corpus]:
    """The corpora a run trains on: the mixture's parts when there is one, else the corpus."""
    return [c for c, _ in mixture] or [corpus]


def build_tokenizer(factory: Any, corpus: Corpus) -> Tokenizer:
    """The run's tokenizer; a factory that learns, learns from the training split only.

    A BPE that has seen the validation text compresses it better than unseen text,
    which would flatter ``val/bpb``; a character vocabulary learned from the training
    split names any character that only the validation text has. A tokenizer that does
    not learn (GPT-2's, a saved one) never reads the corpus here.
    """
    if isinstance(factory, Tokenizer):
        return factory
    return factory(text=corpus.split_text()[0] if needs_training_text(factory) else None)


def _check_same_source(store: TokenStore, fingerprint: str, where: str) -> None:
    theirs = store.manifest.get("source", {})
    if theirs.get("fingerprint") not in (None, fingerprint):
        raise DataError(
            f"the token store {store.folder} was prepared from {theirs.get('describe')}, which has changed "
            f"since (or is not {where}); prepare it again (delete the folder) or point data.store elsewhere"
        )


def needs_training_text(factory: Any) -> bool:
    """Whether a tokenizer factory learns from the corpus (so the text must be read).

    GPT-2's ranks are fixed and a saved tokenizer (``tokenizer.path``) is loaded, so
    neither needs the text, and a prepared multi-gigabyte store then starts without
    reading a byte of it. A factory whose ``text`` parameter has a default does not need it.
    """
    if isinstance(factory, partial) and factory.keywords.get("path"):
        return False
    func = factory.func if isinstance(factory, partial) else factory
    try:
        parameter = inspect.signature(func).parameters.get("text")
    except (TypeError, ValueError):
        return True
    return parameter is not None and parameter.default is inspect.Parameter.empty
