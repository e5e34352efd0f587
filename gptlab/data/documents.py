"""Stream the documents of a training corpus one at a time, in the same order every time.

A document is one string of text: a ``.txt`` file, one line of a JSON-lines file, one
row of a Parquet file (FineWeb's format) or one record of a Hugging Face dataset.
``open_source(SourceSpec(...))`` returns a ``DocumentSource`` whose ``documents()``
generator yields them; the token store tokenizes each one and writes shards.

Three promises the store relies on:

- **Bounded memory.** At most one file (text), one line (JSON lines) or one Parquet
  row group is held at a time, so a 100 GB corpus streams on a laptop.
- **A fixed order.** Files are read sorted by their path relative to the folder, rows
  in file order, so ``documents(skip=n)`` after a killed run continues exactly where
  document ``n`` left off. Skipping is cheap where the format allows it: whole files
  for text, whole row groups (from the Parquet footer's row and null counts) for Parquet.
- **A cheap fingerprint.** ``fingerprint()`` hashes what identifies the input (paths,
  sizes, mtimes; or the dataset's name, config, split, revision) without reading its
  content, so a finished store can tell at once that its source has changed.

Bad input gets one sentence naming the file (and line or row) and the fix. The optional
readers (pyarrow, zstandard, datasets) are imported only when a source needs them.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from gptlab.data.shards import FORMATS, shard_header
from gptlab.data.sources import DataError, embedded_text

KINDS = ("auto", "text", "jsonl", "parquet", "hf", "embedded")
TOKEN_KINDS = ("tokens", "nanogpt_bin")  # detected here, opened by the token store
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".json.gz", ".json.zst")
PIP_DATA = 'pip install "gptlab[data]"'
SNIFF_BYTES = 8192
ROWS_PER_SLICE = 1024  # Python strings made at once from a Parquet column


@dataclass(frozen=True)
class SourceSpec:
    """Where the documents come from (the ``data.*`` config keys of the same names)."""

    path: str | None = None  # a file or a folder
    kind: str = "auto"  # auto | text | jsonl | parquet | hf | embedded
    text_field: str = "text"  # JSON key / Parquet column / dataset column holding the text
    on_bad_record: str = "error"  # error | skip
    errors: str = "strict"  # text decoding: strict | replace
    name: str | None = None  # hf: dataset name or builder ("HuggingFaceFW/fineweb-edu", "json")
    subset: str | None = None  # hf: config name ("sample-10BT")
    split: str = "train"  # hf: split
    revision: str | None = None  # hf: a pinned revision (else "whatever the hub has now")
    streaming: bool = True  # hf: read as it downloads instead of caching it all first
    data_files: tuple[str, ...] | None = None  # hf: files for a builder such as "json"/"parquet"
    cache_dir: str | None = None  # hf: where datasets caches (default: HF_HOME)

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("kind", self.kind, KINDS + TOKEN_KINDS),  # token kinds: open_source says why not
            ("on_bad_record", self.on_bad_record, ("error", "skip")),
            ("errors", self.errors, ("strict", "replace")),
        ):
            if value not in allowed:
                raise DataError(f"data.{key}={value} is not one of {', '.join(allowed)}")


# --- what a path holds -------------------------------------------------------------


def _suffix_kind(path: Path) -> str | None:
    """The kind a file's name promises, or None for files a corpus folder may also hold."""
    name = path.name.lower()
    if name.endswith(".txt"):
        return "text"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".bin"):
        return "tokens"
    return None


def _corpus_files(root: Path, kind: str | None = None) -> dict[str, list[Path]]:
    """Files under ``root`` by kind, each list sorted by relative path.

    Hidden files and folders (``.git``, ``.cache``) and unfinished ``*.tmp`` downloads
    are left out, as are files of no known kind (a dataset's README.md or LICENSE).
    """
    found: dict[str, list[Path]] = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        k = _suffix_kind(p)
        if k is not None and (kind is None or k == kind):
            found.setdefault(k, []).append(p)
    for files in found.values():
        files.sort(key=lambda p: p.relative_to(root).as_posix())
    return found


def _starts_like_shard(head: bytes) -> bool:
    """True if the first int32 is llm.c's shard magic (20240520 or 20240801)."""
    return len(head) >= 4 and int(np.frombuffer(head[:4], "<i4")[0]) in FORMATS


def detect_kind(path: str | Path) -> str:
    """What a file or folder holds: text, jsonl, parquet, tokens (llm.c shards) or nanogpt_bin."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "train.bin").is_file():  # nanoGPT's data/<name>/ (it may hold input.txt too)
            return "nanogpt_bin"
        found = _corpus_files(path)
        if not found:
            raise DataError(
                f"the folder {path} holds no .txt, .jsonl[.gz|.zst], .parquet or .bin files; "
                "point data.path at a folder of one of these"
            )
        if len(found) > 1:
            mix = " and ".join(f"{len(v)} {k} files (e.g. {v[0].name})" for k, v in found.items())
            raise DataError(
                f"the folder {path} mixes kinds: {mix}; point data.path at a folder of one kind, "
                "or set data.kind to read only the files of that kind"
            )
        kind = next(iter(found))
        if kind == "tokens":
            for shard in found[kind]:
                shard_header(shard)  # a .bin that is not a whole llm.c shard is refused by name
        return kind
    if not path.is_file():
        raise DataError(f"{path} does not exist; check data.path")
    file_kind = _suffix_kind(path)
    if file_kind == "tokens":
        with open(path, "rb") as f:
            is_shard = _starts_like_shard(f.read(4))
        if is_shard:
            shard_header(path)
            return "tokens"
        if path.name in ("train.bin", "val.bin"):
            return "nanogpt_bin"
        raise DataError(
            f"{path} is a .bin file without llm.c's shard header and not nanoGPT's train.bin/val.bin; "
            "point data.path at a folder of llm.c shards or at nanoGPT's data folder"
        )
    if file_kind is None:
        hint = (
            " (if it holds one JSON object per line, set data.kind=jsonl or rename it .jsonl)"
            if path.suffix == ".json"
            else ""
        )
        raise DataError(
            f"{path} is not a .txt, .jsonl[.gz|.zst] or .parquet file{hint}; convert it, "
            "or set data.kind=text to read it as plain text"
        )
    return file_kind


_MAGICS = (  # leading bytes -> what the file looks like and what to do about it
    (b"PAR1", "a Parquet file; name it .parquet (or set data.kind=parquet)"),
    (b"\x1f\x8b", "gzip-compressed; name it .jsonl.gz if it holds JSON lines, or gunzip it"),
    (
        b"\x28\xb5\x2f\xfd",
        "zstd-compressed; name it .jsonl.zst if it holds JSON lines, or unzstd it",
    ),
    (b"BZh", "bzip2-compressed; decompress it (bunzip2) first"),
    (b"\xfd7zXZ\x00", "xz-compressed; decompress it (unxz) first"),
    (
        b"PK\x03\x04",
        "a zip archive (or a PyTorch checkpoint); unzip it and point data.path at the folder",
    ),
    (b"\x89PNG", "a PNG image; remove it from the corpus"),
    (b"\xff\xd8\xff", "a JPEG image; remove it from the corpus"),
    (b"GIF8", "a GIF image; remove it from the corpus"),
    (b"%PDF", "a PDF; extract its text (e.g. pdftotext) first"),
    (b"\x93NUMPY", "a NumPy array; gptlab reads token ids from llm.c shards, not .npy"),
    (b"\x7fELF", "a program, not text; remove it from the corpus"),
    (codecs.BOM_UTF16_LE, "UTF-16 text; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (codecs.BOM_UTF16_BE, "UTF-16 text; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
)


def _refuse_binary(path: Path, head: bytes) -> None:
    """Raise if the first bytes of a file meant to be text say it is something else.

    Checked even with ``errors=replace``, which would otherwise turn a token shard into
    a corpus of replacement characters without a word.
    """
    if _starts_like_shard(head):
        raise DataError(
            f"{path} looks like a token shard (llm.c's format), not text; point data.path at "
            "the folder of shards to train on it as it is"
        )
    for magic, looks in _MAGICS:
        if head.startswith(magic):
            raise DataError(f"{path} is not text: it looks like {looks}")
    if b"\0" in head[:SNIFF_BYTES]:
        raise DataError(
            f"{path} holds NUL bytes, so it is binary, not text (nanoGPT's train.bin?); "
            "point data.path at text, or at nanoGPT's data folder to train on its ids"
        )


# --- the sources ---------------------------------------------------------------------


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise DataError(
            f"{path} was removed while the corpus was being read; put it back, or prepare again"
        ) from None


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class DocumentSource:
    """The documents of one corpus; ``documents()`` reads them, one iteration at a time.

    ``bytes_read`` says how far into the input the iteration is (skipped input
    included, so ``total_bytes - bytes_read`` is what is left); ``skipped`` counts the
    bad records dropped since the first document (``on_bad_record=skip`` only).
    """

    kind = ""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.total_bytes: int | None = None
        self.bytes_read = 0
        self.skipped = 0
        self._to_skip = 0  # documents still to pass over in the current iteration

    def documents(self, skip: int = 0) -> Iterator[str]:
        """Every document once, in the same order every call, after the first ``skip``."""
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.bytes_read, self.skipped, self._to_skip = 0, 0, skip
        n_text = 0
        for doc in self._read():
            n_text += bool(doc)
            yield doc
        if self._to_skip:
            raise DataError(
                f"{self.describe()} holds only {skip - self._to_skip:,} documents, fewer than the "
                f"{skip:,} to skip; it changed since the store was started, so prepare it again"
            )
        if skip == 0 and n_text == 0 and self.skipped:
            raise DataError(
                f"{self.describe()} holds no text: all {self.skipped:,} records were bad; set "
                f"data.text_field=<key> if the text is not under {self.spec.text_field!r}"
            )
        if skip == 0 and n_text == 0:
            raise DataError(f"{self.describe()} holds no text; point data.path at a corpus")

    def _passing(self) -> bool:
        """True (and one fewer to go) while the iteration is still skipping documents."""
        if self._to_skip:
            self._to_skip -= 1
            return True
        return False

    def _read(self) -> Iterator[str]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class _Files(DocumentSource):
    """A file, or the files of one kind under a folder, read one after the other."""

    def __init__(self, spec: SourceSpec, kind: str) -> None:
        super().__init__(spec)
        self.kind = kind
        self.root = Path(spec.path or "").expanduser()
        if self.root.is_dir():
            self.files = _corpus_files(self.root, kind).get(kind, [])
            if not self.files:
                raise DataError(
                    f"the folder {self.root} holds no {kind} files; point data.path at a folder "
                    "of them, or set data.kind=auto"
                )
        elif self.root.is_file():
            self.files = [self.root]
        else:
            raise DataError(f"{self.root} does not exist; check data.path")
        self.total_bytes = sum(f.stat().st_size for f in self.files)

    def fingerprint(self) -> str:
        files = []
        for f in self.files:
            st = _stat(f)
            files.append(
                [
                    f.relative_to(self.root).as_posix() if f != self.root else f.name,
                    st.st_size,
                    st.st_mtime_ns,
                ]
            )
        payload = {"kind": self.kind, "root": str(self.root.resolve()), "files": files}
        if self.kind != "text":
            payload["text_field"] = self.spec.text_field
        return _digest(payload)

    def describe(self) -> str:
        return str(self.root)


class TextFiles(_Files):
    """A ``.txt`` file is one document; a folder of them is one document per file."""

    def _read(self) -> Iterator[str]:
        for f in self.files:
            size = _stat(f).st_size
            if self._passing():
                self.bytes_read += size
                continue
            raw = f.read_bytes()
            _refuse_binary(f, raw[:SNIFF_BYTES])
            bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
            try:
                text = raw[bom:].decode("utf-8", self.spec.errors)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{f} is not valid UTF-8 at byte {e.start + bom:,}; convert it to UTF-8, "
                    "or set data.errors=replace to substitute the bad bytes"
                ) from None
            self.bytes_read += size
            yield text


class JsonlFiles(_Files):
    """One JSON object per line (plain, gzip or zstd), the text under ``text_field``."""

    def _read(self) -> Iterator[str]:
        done = 0  # bytes of the files already read
        check_skipped = self.spec.on_bad_record == "skip"  # else skipped lines are trusted
        for f in self.files:
            _stat(f)
            with open(f, "rb") as raw:
                lines, corrupt = _decompressed(f, raw)
                lineno = 0
                try:
                    for lineno, line in enumerate(lines, 1):
                        self.bytes_read = done + raw.tell()
                        if not line.strip() or (not check_skipped and self._passing()):
                            continue
                        text = self._record(f, lineno, line)
                        if text is None:
                            self.skipped += 1
                        elif not self._passing():
                            yield text
                except corrupt as e:
                    raise DataError(
                        f"{f} is truncated or corrupt after line {lineno:,} ({e}); download or "
                        "write it again"
                    ) from None
            done += f.stat().st_size
            self.bytes_read = done

    def _record(self, f: Path, lineno: int, line: bytes) -> str | None:
        """The text of one line, or None for a bad record with ``on_bad_record=skip``."""
        key = self.spec.text_field
        try:
            obj = json.loads(line.decode("utf-8", self.spec.errors).lstrip("\ufeff"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{f} line {lineno:,} is not valid UTF-8 (byte {e.start:,} of the line); convert "
                "the file to UTF-8, or set data.errors=replace to substitute the bad bytes"
            ) from None
        except ValueError as e:
            problem = f"is not JSON ({e})"
        else:
            if not isinstance(obj, dict):
                problem = f"is a JSON {type(obj).__name__}, not an object"
            elif key not in obj:
                keys = ", ".join(list(obj)[:8]) or "none"
                problem = f"has no key {key!r} (its keys: {keys})"
            elif not isinstance(obj[key], str):
                problem = f"has {key!r} of type {type(obj[key]).__name__}, not a string"
            else:
                return obj[key]
        if self.spec.on_bad_record == "skip":
            return None
        raise DataError(
            f"{f} line {lineno:,} {problem}; fix the line, set data.on_bad_record=skip to drop "
            "such lines, or data.text_field=<key> if the text is under another key"
        )


def _decompressed(
    path: Path, raw: IO[bytes]
) -> tuple[Iterator[bytes], tuple[type[BaseException], ...]]:
    """The lines of a JSON-lines file, decompressed by what its first bytes say it is, and
    the exceptions its reader raises for a truncated or corrupt file."""
    head = raw.read(SNIFF_BYTES)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return iter(gzip.GzipFile(fileobj=raw, mode="rb")), (OSError, EOFError)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            import zstandard
        except ImportError:
            raise DataError(
                f"reading {path} needs zstandard, which is not installed; {PIP_DATA} "
                "(or pip install zstandard)"
            ) from None
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return iter(io.BufferedReader(reader)), (OSError, zstandard.ZstdError)
    _refuse_binary(path, head)
    return iter(raw), (OSError,)


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"reading Parquet needs pyarrow, which is not installed; {PIP_DATA} (or pip install pyarrow)"
        ) from None
    return pq


class ParquetFiles(_Files):
    """One document per row of the ``text_field`` column, read one row group at a time."""

    def _open(self, f: Path) -> Any:
        """The ``ParquetFile``, after checking that it has a text column called ``text_field``."""
        pq = _pyarrow()
        import pyarrow as pa

        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as e:
            raise DataError(
                f"{f} is not a readable Parquet file ({e}); download or write it again"
            ) from None
        key, schema = self.spec.text_field, pf.schema_arrow
        if key not in schema.names:
            raise DataError(
                f"{f} has no column {key!r} (its columns: {', '.join(schema.names)}); "
                "set data.text_field=<column> to the one that holds the text"
            )
        t = schema.field(key).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"):
            raise DataError(
                f"the column {key!r} of {f} holds {t}, not text; set data.text_field=<column> "
                "to the one that holds the text"
            )
        return pf

    def _nulls(self, pf: Any, group: int) -> int:
        """Null texts in a row group: from the footer's statistics, else by reading the column."""
        rg = pf.metadata.row_group(group)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.path_in_schema == self.spec.text_field:
                stats = col.statistics
                if stats is not None and stats.has_null_count:
                    return int(stats.null_count)
        return int(pf.read_row_group(group, columns=[self.spec.text_field]).column(0).null_count)

    def _read(self) -> Iterator[str]:
        import pyarrow as pa

        done, skip_bad = 0, self.spec.on_bad_record == "skip"
        for f in self.files:
            size = _stat(f).st_size
            pf = self._open(f)
            n_rows, first_row = max(pf.metadata.num_rows, 1), 0
            for g in range(pf.num_row_groups):
                rows = pf.metadata.row_group(g).num_rows
                if self._to_skip:  # pass over whole row groups from the footer's counts
                    nulls = self._nulls(pf, g)
                    if rows - nulls <= self._to_skip:
                        self._to_skip -= rows - nulls
                        self.skipped += nulls if skip_bad else 0
                        first_row += rows
                        self.bytes_read = done + size * first_row // n_rows
                        continue
                try:
                    column = pf.read_row_group(g, columns=[self.spec.text_field]).column(0)
                except (pa.ArrowException, OSError) as e:
                    raise DataError(
                        f"cannot read row group {g} of {f} ({e}); download or write it again"
                    ) from None
                row = first_row
                for chunk in column.chunks:
                    for start in range(0, len(chunk), ROWS_PER_SLICE):
                        for text in chunk.slice(start, ROWS_PER_SLICE).to_pylist():
                            row += 1
                            if text is None:
                                if not skip_bad:
                                    raise DataError(
                                        f"{f} row {row - 1:,} (row group {g}) has no text (null in "
                                        f"column {self.spec.text_field!r}); set "
                                        "data.on_bad_record=skip to drop such rows"
                                    )
                                self.skipped += 1
                            elif not self._passing():
                                yield text
                del column
                first_row += rows
                self.bytes_read = done + size * first_row // n_rows
            done += size
            self.bytes_read = done


class HFDataset(DocumentSource):
    """A Hugging Face dataset through ``datasets.load_dataset``, hub name or local builder.

    ``name="json"`` or ``"parquet"`` with ``data_files`` reads local files through the
    same path as a hub dataset (which is how it is tested, offline). Without a pinned
    ``revision`` the fingerprint cannot see the hub's copy change.
    """

    kind = "hf"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        if not spec.name:
            raise DataError("data.kind=hf needs data.name (e.g. HuggingFaceFW/fineweb-edu)")
        # total_bytes stays None: bytes_read counts text, which no file size measures

    def describe(self) -> str:
        parts = [p for p in (self.spec.subset, f"split {self.spec.split}") if p]
        files = ""
        if self.spec.data_files:
            more = len(self.spec.data_files) - 1
            files = f" of {self.spec.data_files[0]}" + (f" and {more} more files" if more else "")
        return f"the Hugging Face dataset {self.spec.name}{files} ({', '.join(parts)})"

    def fingerprint(self) -> str:
        s = self.spec
        files = []
        for p in s.data_files or ():
            local = Path(p).expanduser()
            st = local.stat() if local.is_file() else None
            files.append(
                [str(local.resolve()) if st else p, st and st.st_size, st and st.st_mtime_ns]
            )
        return _digest(
            {"kind": "hf", "name": s.name, "subset": s.subset, "split": s.split, "revision": s.revision,
             "data_files": files, "text_field": s.text_field, "streaming": s.streaming}
        )  # fmt: skip

    def _load(self) -> Any:
        try:
            import datasets
        except ImportError:
            raise DataError(
                f"data.kind=hf needs the datasets library, which is not installed; {PIP_DATA} "
                "(or pip install datasets)"
            ) from None
        s = self.spec
        try:
            return datasets.load_dataset(
                s.name, s.subset, split=s.split, revision=s.revision, streaming=s.streaming,
                data_files=list(s.data_files) if s.data_files else None, cache_dir=s.cache_dir,
            )  # fmt: skip
        except Exception as e:  # datasets raises a dozen types for "cannot get it"
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(
                f"could not load {self.describe()} ({type(e).__name__}: {first}); check data.name, "
                "data.subset and data.split, the network (or HF_HUB_OFFLINE), and HF_TOKEN for gated datasets"
            ) from None

    def _read(self) -> Iterator[str]:
        ds, key = self._load(), self.spec.text_field
        features = getattr(ds, "features", None)
        if features is not None:
            if key not in features:
                raise DataError(
                    f"{self.describe()} has no column {key!r} (its columns: {', '.join(features)}); "
                    "set data.text_field=<column> to the one that holds the text"
                )
            ds = ds.select_columns([key])
        i = 0  # the record's index in the dataset, for messages
        if self.spec.on_bad_record == "error" and self._to_skip:  # every record is a document
            if hasattr(ds, "__len__"):  # a cached Dataset: jump straight to the row
                i = min(self._to_skip, len(ds))
                ds = ds.select(range(i, len(ds))) if i < len(ds) else []
            else:
                i, ds = self._to_skip, ds.skip(self._to_skip)
            self._to_skip -= i
        records = iter(ds)
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as e:  # a dropped connection or a corrupt file mid-stream
                raise DataError(
                    f"reading {self.describe()} failed at record {i:,} ({type(e).__name__}: {e}); "
                    "check the network or the files, and prepare again (it resumes)"
                ) from None
            text = record.get(key)
            if not isinstance(text, str):
                if self.spec.on_bad_record == "error":
                    what = "no such key" if key not in record else type(text).__name__
                    raise DataError(
                        f"record {i:,} of {self.describe()} has no text under {key!r} ({what}); "
                        "set data.on_bad_record=skip to drop such records, or data.text_field=<key>"
                    )
                self.skipped += 1
            elif not self._passing():
                self.bytes_read += len(text.encode("utf-8", "replace"))
                yield text
            i += 1


class EmbeddedText(DocumentSource):
    """gptlab's offline corpus (the pydoc topics every CPython ships) as one document."""

    kind = "embedded"

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._text = embedded_text()
        self.total_bytes = len(self._text.encode("utf-8"))

    def _read(self) -> Iterator[str]:
        if not self._passing():
            self.bytes_read = self.total_bytes or 0
            yield self._text

    def fingerprint(self) -> str:  # small enough to hash; it differs between Python versions
        return _digest(
            {"kind": "embedded", "sha256": hashlib.sha256(self._text.encode()).hexdigest()}
        )

    def describe(self) -> str:
        return f"the embedded corpus (Python {sys.version_info.major}.{sys.version_info.minor}'s pydoc topics)"


_FILE_SOURCES = {"text": TextFiles, "jsonl": JsonlFiles, "parquet": ParquetFiles}


def open_source(spec: SourceSpec) -> DocumentSource:
    """The ``DocumentSource`` a spec names; ``kind=auto`` detects it from the path.

    With no path, a ``name`` means a Hugging Face dataset and nothing means the
    embedded corpus. A path of token ids (llm.c shards, nanoGPT's .bin) is refused:
    there is nothing to tokenize, the token store opens it as it is.
    """
    kind = spec.kind
    if kind == "auto":
        if spec.path is None:
            kind = "hf" if spec.name else "embedded"
        else:
            kind = detect_kind(spec.path)
    if kind in TOKEN_KINDS:
        what = "llm.c token shards" if kind == "tokens" else "nanoGPT's token ids (train.bin)"
        raise DataError(
            f"{spec.path} holds {what}, not documents; there is nothing to tokenize: train on it "
            "as it is (point data.path at it) instead of preparing it"
        )
    if kind == "hf":
        return HFDataset(spec)
    if kind == "embedded":
        return EmbeddedText(spec)
    if spec.path is None:
        raise DataError(f"data.kind={kind} needs data.path (a file or a folder)")
    path = Path(spec.path).expanduser()
    if kind == "text" and path.is_file() and _suffix_kind(path) in ("jsonl", "parquet"):
        raise DataError(
            f"{path} is a {_suffix_kind(path)} file, not raw text; set data.kind={_suffix_kind(path)} "
            "(or auto) to read its documents"
        )
    return _FILE_SOURCES[kind](spec, kind)
