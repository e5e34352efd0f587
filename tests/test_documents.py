"""Documents stream from every kind of corpus in a fixed order, skip cheaply, and bad input
gets one sentence naming the file (line, row, column) and the fix.

Every file is written here, in tmp_path; the Hugging Face path reads local files through
``datasets.load_dataset("json"/"parquet", data_files=...)`` offline.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from gptlab.data.documents import SourceSpec, detect_kind, open_source
from gptlab.data.shards import write_shard
from gptlab.data.sources import DataError, embedded_text

TEXTS = [f"document {i}: " + "word " * (i % 7) + "é" for i in range(23)]


def read(spec: SourceSpec, skip: int = 0) -> list[str]:
    return list(open_source(spec).documents(skip))


def one_sentence(excinfo: pytest.ExceptionInfo[DataError], *needles: str) -> str:
    """The error is a single line naming every needle, raised without a chained traceback."""
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message, message
    error = excinfo.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def write_jsonl(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def records(texts: list[str]) -> list[str]:
    return [json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)]


def write_parquet(path: Path, texts: list, row_group_size: int = 5, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": list(range(len(texts))), "text": pa.array(texts, pa.string())})
    pq.write_table(table, path, row_group_size=row_group_size, **kw)
    return path


# --- text ------------------------------------------------------------------------------


def test_a_text_file_is_one_document_and_a_folder_one_per_file_sorted(tmp_path: Path) -> None:
    single = tmp_path / "one.txt"
    single.write_bytes(b"\xef\xbb\xbfhello\nworld\n")  # the UTF-8 BOM is not content
    source = open_source(SourceSpec(path=str(single)))
    assert list(source.documents()) == ["hello\nworld\n"]
    assert source.bytes_read == source.total_bytes == single.stat().st_size

    folder = tmp_path / "corpus"
    for rel, text in {"b/c.txt": "C", "a.txt": "A", "b/a.txt": "BA", ".git/x.txt": "hidden",
                      "README.md": "not a document", "z.txt.tmp": "unfinished"}.items():  # fmt: skip
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    assert detect_kind(folder) == "text"
    assert read(SourceSpec(path=str(folder))) == ["A", "BA", "C"]
    assert read(SourceSpec(path=str(folder)), skip=2) == ["C"]
    assert read(SourceSpec(path=str(folder)), skip=3) == []
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(folder)), skip=4)
    one_sentence(e, str(folder), "only 3 documents", "prepare it again")


def test_a_bad_byte_names_the_file_and_offset_unless_replaced(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode() + b" \xe9t\xe9")
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path)))
    one_sentence(e, str(path), "byte 14", "data.errors=replace", "convert it to UTF-8")
    assert read(SourceSpec(path=str(path), errors="replace")) == ["café au lait \ufffdt\ufffd"]


@pytest.mark.parametrize(
    "head, looks",
    [
        (np.array([20240520, 1, 3], "<i4").tobytes(), "token shard"),
        (b"PAR1\x15\x04", "Parquet"),
        (gzip.compress(b"hi"), "gzip"),
        (zstandard.ZstdCompressor().compress(b"hi"), "zstd"),
        (b"PK\x03\x04\x14\x00", "zip"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        ("utf-16".encode("utf-16"), "UTF-16"),
        (np.arange(300, dtype="<u2").tobytes(), "NUL bytes"),
    ],
)
def test_binary_input_is_refused_by_what_it_looks_like(
    tmp_path: Path, head: bytes, looks: str
) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(head + b"\0" * 64)
    with pytest.raises(DataError) as e:  # even errors=replace must not read it as text
        read(SourceSpec(path=str(path), errors="replace"))
    one_sentence(e, str(path), looks)


def test_a_jsonl_or_parquet_path_is_never_read_as_raw_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", records(["x"]))
    with pytest.raises(DataError) as e:
        open_source(SourceSpec(path=str(path), kind="text"))
    one_sentence(e, str(path), "data.kind=jsonl")


# --- JSON lines --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.jsonl.zst", "d.json.gz"])
def test_jsonl_plain_and_compressed_stream_the_same_documents(tmp_path: Path, name: str) -> None:
    lines = records(TEXTS)
    lines.insert(3, "")  # blank lines are not records
    lines.insert(9, "   ")
    path = write_jsonl(tmp_path / name, lines)
    assert detect_kind(path) == "jsonl"
    source = open_source(SourceSpec(path=str(path)))
    assert list(source.documents()) == TEXTS
    assert source.bytes_read == source.total_bytes == path.stat().st_size
    for skip in (1, 7, 23):
        assert list(source.documents(skip)) == TEXTS[skip:]


def test_a_jsonl_folder_reads_its_files_in_path_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "c" / "2.jsonl.zst", records(TEXTS[10:]))
    write_jsonl(tmp_path / "a.jsonl", records(TEXTS[:4]))
    write_jsonl(tmp_path / "c" / "1.jsonl.gz", records(TEXTS[4:10]))
    (tmp_path / "dataset_info.json").write_text("{}")  # metadata beside the data is ignored
    assert read(SourceSpec(path=str(tmp_path))) == TEXTS
    assert read(SourceSpec(path=str(tmp_path)), skip=5) == TEXTS[5:]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"text": "unterminated', "is not JSON"),
        ('["a", "list"]', "is a JSON list, not an object"),
        ('{"content": "elsewhere"}', "has no key 'text' (its keys: content)"),
        ('{"text": 42}', "has 'text' of type int"),
        ('{"text": null}', "of type NoneType"),
    ],
)
def test_a_bad_jsonl_line_names_file_line_and_fix_or_is_skipped(
    tmp_path: Path, line: str, problem: str
) -> None:
    lines = records(["first", "second"])
    lines.insert(1, line)
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path)))
    one_sentence(e, str(path), "line 2 ", problem, "data.on_bad_record=skip", "data.text_field=")
    source = open_source(SourceSpec(path=str(path), on_bad_record="skip"))
    assert list(source.documents()) == ["first", "second"]
    assert source.skipped == 1
    assert list(source.documents(skip=1)) == ["second"] and source.skipped == 1


def test_skip_counts_documents_not_lines_when_bad_records_are_dropped(tmp_path: Path) -> None:
    lines = records(TEXTS)
    for at in (0, 5, 6, 17):
        lines.insert(at, '{"no": "text"}')
    spec = SourceSpec(path=str(write_jsonl(tmp_path / "d.jsonl", lines)), on_bad_record="skip")
    for skip in range(len(TEXTS) + 1):
        assert read(spec, skip) == TEXTS[skip:]


def test_a_non_utf8_or_truncated_jsonl_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path)))
    one_sentence(e, str(path), "line 2 ", "UTF-8", "data.errors=replace")
    assert read(SourceSpec(path=str(path), errors="replace")) == ["ok", "caf\ufffd"]

    whole = write_jsonl(tmp_path / "t.jsonl.gz", records(TEXTS * 50)).read_bytes()
    (tmp_path / "t.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(tmp_path / "t.jsonl.gz")))
    one_sentence(e, "t.jsonl.gz", "truncated or corrupt", "after line")


# --- Parquet -----------------------------------------------------------------------------


def test_parquet_streams_row_groups_in_file_order_and_skips_by_their_counts(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "shard.parquet", TEXTS, row_group_size=4)
    assert pq.ParquetFile(path).num_row_groups == 6
    expected = pq.read_table(path).column("text").to_pylist()
    source = open_source(SourceSpec(path=str(path)))
    assert list(source.documents()) == expected == TEXTS
    assert source.bytes_read == source.total_bytes == path.stat().st_size
    for skip in range(len(TEXTS) + 1):
        assert list(source.documents(skip)) == TEXTS[skip:]


@pytest.mark.parametrize("write_statistics", [True, False])
def test_parquet_nulls_are_bad_records(tmp_path: Path, write_statistics: bool) -> None:
    texts = list(TEXTS)
    for at in (1, 4, 5, 13):  # with and without footer statistics the skip counts hold
        texts[at] = None
    path = write_parquet(tmp_path / "n.parquet", texts, 4, write_statistics=write_statistics)
    good = [t for t in texts if t is not None]
    spec = SourceSpec(path=str(path), on_bad_record="skip")
    source = open_source(spec)
    assert list(source.documents()) == good and source.skipped == 4
    for skip in range(len(good) + 1):
        assert read(spec, skip) == good[skip:]
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path)))
    one_sentence(e, str(path), "row 1 ", "null", "data.on_bad_record=skip")


def test_a_parquet_folder_like_fineweb_reads_nested_files_sorted(tmp_path: Path) -> None:
    root = tmp_path / "fineweb-edu"
    write_parquet(root / "data" / "CC-MAIN-2024-10" / "000_00000.parquet", TEXTS[8:], 3)
    write_parquet(root / "data" / "CC-MAIN-2013-20" / "000_00001.parquet", TEXTS[3:8], 2)
    write_parquet(root / "data" / "CC-MAIN-2013-20" / "000_00000.parquet", TEXTS[:3], 2)
    (root / "README.md").write_text("# the dataset card")
    (root / ".gitattributes").write_text("*.parquet filter=lfs")
    assert detect_kind(root) == "parquet"
    assert read(SourceSpec(path=str(root))) == TEXTS
    for skip in (2, 3, 4, 8, 15, 23):
        assert read(SourceSpec(path=str(root)), skip) == TEXTS[skip:]


def test_parquet_holds_at_most_one_row_group_in_memory(tmp_path: Path) -> None:
    texts = [f"{i:04d}" + "x" * 20_000 for i in range(200)]  # 4 MB in 20 row groups
    path = write_parquet(tmp_path / "big.parquet", texts, 10, compression="none")
    base = peak = pa.total_allocated_bytes()
    for _ in open_source(SourceSpec(path=str(path))).documents():
        peak = max(peak, pa.total_allocated_bytes())
    # One row group is 200 KB; the whole file 4 MB. Arrow's pool is process-wide, and in a
    # full run buffers of earlier tests' readers count too (seen: 1.2 MB on a fresh CI
    # venv, 0.4 MB alone), so the bound is "far from the whole file", not "one group".
    assert peak - base < 4_000_000 / 2, peak - base


def test_a_parquet_file_without_the_text_column_lists_its_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "p.parquet", TEXTS)
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path), text_field="content"))
    one_sentence(e, str(path), "no column 'content'", "id, text", "data.text_field=")
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path), text_field="id"))
    one_sentence(e, str(path), "int64, not text", "data.text_field=")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(broken)))
    one_sentence(e, str(broken), "not a readable Parquet file")


# --- Hugging Face datasets (local files, offline) -----------------------------------------


@pytest.fixture
def offline_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return str(tmp_path / "hf_cache")


def test_hf_reads_local_json_streaming_and_parquet_cached(tmp_path: Path, offline_hf: str) -> None:
    lines = records(TEXTS)
    lines.insert(4, '{"id": -1, "text": null}')
    jsonl = write_jsonl(tmp_path / "train.jsonl", lines)
    spec = SourceSpec(kind="hf", name="json", data_files=(str(jsonl),), cache_dir=offline_hf,
                      on_bad_record="skip")  # fmt: skip
    source = open_source(spec)
    assert source.total_bytes is None  # bytes_read counts text, which no file size measures
    assert list(source.documents()) == TEXTS and source.skipped == 1
    assert list(source.documents(skip=5)) == TEXTS[5:]

    shard = write_parquet(tmp_path / "train.parquet", TEXTS, 4)
    spec = SourceSpec(kind="hf", name="parquet", data_files=(str(shard),), streaming=False,
                      cache_dir=offline_hf)  # fmt: skip
    assert read(spec) == TEXTS and read(spec, skip=9) == TEXTS[9:] and read(spec, 23) == []
    with pytest.raises(DataError) as e:
        read(spec, skip=24)
    one_sentence(e, "holds only 23 documents")
    with pytest.raises(DataError) as e:
        read(SourceSpec(kind="hf", name="parquet", data_files=(str(shard),), text_field="body",
                        cache_dir=offline_hf))  # fmt: skip
    one_sentence(e, "no column 'body'", "id, text", "data.text_field=")


def test_hf_that_cannot_be_loaded_says_what_to_check(tmp_path: Path, offline_hf: str) -> None:
    missing = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataError) as e:
        read(SourceSpec(kind="hf", name="json", data_files=(missing,), cache_dir=offline_hf))
    one_sentence(e, "could not load the Hugging Face dataset json", "data.name")
    with pytest.raises(DataError) as e:
        open_source(SourceSpec(kind="hf"))
    one_sentence(e, "data.name")


# --- the embedded corpus, token folders, detection -----------------------------------------


def test_the_embedded_corpus_is_one_document() -> None:
    source = open_source(SourceSpec())
    assert list(source.documents()) == [embedded_text()]
    assert list(source.documents(skip=1)) == []
    assert source.fingerprint() == open_source(SourceSpec(kind="embedded")).fingerprint()


def test_token_folders_are_detected_and_refused_as_documents(tmp_path: Path) -> None:
    llmc = tmp_path / "edu_fineweb10B"
    for i in range(3):
        split = "val" if i == 0 else "train"
        write_shard(llmc / f"fineweb_{split}_{i:06d}.bin", np.arange(100) + i, vocab_size=50257)
    assert detect_kind(llmc) == "tokens"
    assert detect_kind(llmc / "fineweb_train_000001.bin") == "tokens"

    nano = tmp_path / "shakespeare_char"
    nano.mkdir()
    np.arange(1000, dtype=np.uint16).tofile(nano / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(nano / "val.bin")
    (nano / "input.txt").write_text("the text it was made from")
    assert detect_kind(nano) == "nanogpt_bin"
    assert detect_kind(nano / "train.bin") == "nanogpt_bin"

    for path, what, kind in (
        (llmc, "llm.c token shards", "tokens"),
        (nano, "nanoGPT", "nanogpt_bin"),
    ):
        for spec in (SourceSpec(path=str(path)), SourceSpec(path=str(path), kind=kind)):
            with pytest.raises(DataError) as e:
                open_source(spec)
            one_sentence(e, str(path), what, "not documents", "train on it")

    (llmc / "fineweb_train_000002.bin").write_bytes(b"\0" * 2000)
    with pytest.raises(DataError) as e:
        detect_kind(llmc)
    one_sentence(e, "fineweb_train_000002.bin", "not a token shard")


def test_missing_empty_mixed_and_unknown_paths_are_one_sentence_each(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        open_source(SourceSpec(path=str(tmp_path / "absent.txt")))
    one_sentence(e, "absent.txt", "does not exist", "data.path")

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no corpus here")
    with pytest.raises(DataError) as e:
        open_source(SourceSpec(path=str(tmp_path / "empty")))
    one_sentence(e, "empty", "holds no .txt, .jsonl", "point data.path")

    mixed = tmp_path / "mixed"
    write_jsonl(mixed / "a.jsonl", records(["x"]))
    write_parquet(mixed / "b.parquet", ["y"])
    with pytest.raises(DataError) as e:
        open_source(SourceSpec(path=str(mixed)))
    one_sentence(e, str(mixed), "mixes kinds", "1 jsonl files", "1 parquet files", "data.kind")
    assert read(SourceSpec(path=str(mixed), kind="parquet")) == ["y"]  # a kind picks its files

    for name, needle in (("data.csv", "data.kind=text"), ("data.json", "rename it .jsonl")):
        (tmp_path / name).write_text("a,b")
        with pytest.raises(DataError) as e:
            open_source(SourceSpec(path=str(tmp_path / name)))
        one_sentence(e, name, needle)
    assert read(SourceSpec(path=str(tmp_path / "data.csv"), kind="text")) == ["a,b"]

    with pytest.raises(DataError) as e:
        SourceSpec(kind="csv")
    one_sentence(e, "data.kind=csv", "auto, text, jsonl, parquet, hf, embedded, tokens")


def test_a_source_without_any_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(tmp_path / "empty.txt")))
    one_sentence(e, "empty.txt", "holds no text")

    path = write_jsonl(tmp_path / "d.jsonl", ['{"content": "a"}', '{"content": "b"}'])
    with pytest.raises(DataError) as e:
        read(SourceSpec(path=str(path), on_bad_record="skip"))
    one_sentence(e, str(path), "all 2 records were bad", "data.text_field=")
    assert read(SourceSpec(path=str(path), text_field="content")) == ["a", "b"]


def test_missing_optional_libraries_name_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parquet = write_parquet(tmp_path / "p.parquet", TEXTS)
    zst = write_jsonl(tmp_path / "d.jsonl.zst", records(TEXTS))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # what an absent package does
    monkeypatch.setitem(sys.modules, "zstandard", None)
    for path, package in ((parquet, "pyarrow"), (zst, "zstandard")):
        with pytest.raises(DataError) as e:
            read(SourceSpec(path=str(path)))
        one_sentence(e, 'pip install "gptlab[data]"', f"pip install {package}")


# --- fingerprints ---------------------------------------------------------------------------


def test_the_fingerprint_changes_exactly_when_the_source_does(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", records(TEXTS[:5]))
    b = write_jsonl(tmp_path / "b.jsonl", records(TEXTS[5:]))
    spec = SourceSpec(path=str(tmp_path))
    before = open_source(spec).fingerprint()
    assert open_source(spec).fingerprint() == before
    # how bad input is handled does not change which documents a finished store holds
    assert open_source(SourceSpec(path=str(tmp_path), on_bad_record="skip")).fingerprint() == before
    assert open_source(SourceSpec(path=str(tmp_path), text_field="body")).fingerprint() != before

    st = b.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: same size
    touched = open_source(spec).fingerprint()
    assert touched != before
    b.write_bytes(b.read_bytes() + b"\n")  # grown
    assert open_source(spec).fingerprint() not in (before, touched)
    write_jsonl(tmp_path / "c.jsonl", records(["new"]))  # a new file in the folder
    assert len({before, touched, open_source(spec).fingerprint()}) == 3

    hf = SourceSpec(kind="hf", name="HuggingFaceFW/fineweb-edu", subset="sample-10BT")
    assert open_source(hf).fingerprint() == open_source(hf).fingerprint()
    pinned = SourceSpec(kind="hf", name=hf.name, subset=hf.subset, revision="v1.2.0")
    assert open_source(pinned).fingerprint() != open_source(hf).fingerprint()
