"""The token store keeps its promises on real files: llm.c's shard format, whole documents
in exactly one split, a resume after SIGKILL or a full disk that equals an uninterrupted
run, two processes taking turns, and one clear sentence for every store it must refuse.

Every store here is prepared from a JSON-lines corpus the test writes (Tiny Shakespeare's
paragraphs, numbered so no two documents are alike); the subprocesses are real
``python -m gptlab.prepare`` commands or plain Python children, killed and stopped with
real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gptlab.data.corpus import Corpus
from gptlab.data.documents import SourceSpec, open_source
from gptlab.data.ingest import PROGRESS, SplitRule, prepare_store
from gptlab.data.shards import HEADER_BYTES, ids_sha256, open_shard, write_shard
from gptlab.data.sources import DataError
from gptlab.data.store import FORMAT_VERSION, MANIFEST, TokenStore, docs_name, open_store
from gptlab.tokenizer import CharTokenizer
from gptlab.tokenizer.gpt2 import GPT2Tokenizer
from tests.conftest import REPO, SHAKESPEARE, needs_r50k, needs_shakespeare
from tests.disk_faults import full_disk

pytestmark = [needs_r50k, needs_shakespeare]
EOT = 50256


# -- corpora and stores the tests write -------------------------------------------------------
def write_jsonl(path: Path, n_chars: int) -> list[str]:
    """About ``n_chars`` of Shakespeare's paragraphs, one numbered document a line; returns them."""
    paragraphs = [p for p in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    docs, total = [], 0
    while total < n_chars:
        i = len(docs)
        docs.append(f"{i}. {paragraphs[i % len(paragraphs)]}")
        total += len(docs[-1])
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return docs


def corpus(path: Path, store: Path | None = None, **settings) -> Corpus:
    """The corpus at ``path``, its store in ``store`` (data.store) or under ``cache_dir``/stores."""
    settings = {"shard_tokens": 5_000, "encode_mode": "inline", **settings}
    if store is not None:
        settings["store"] = str(store)
    return Corpus("x", source="file", path=str(path), **settings)


def only_store(cache: Path) -> Path:
    """The one store folder under ``cache``/stores (named ``<corpus>-<key>``)."""
    (folder,) = (cache / "stores").iterdir()
    return folder


def split_documents(store: TokenStore, split: str) -> list[str]:
    """Every document of a split, decoded, after checking it starts with the end-of-text id."""
    tok = GPT2Tokenizer()
    view = store.split(split)
    docs = []
    for start, length in zip(*view.document_bounds()):
        ids = view.slice(int(start), int(start + length))
        assert ids[0] == EOT, (
            f"document at {start} of {split} starts with {ids[0]}, not end-of-text"
        )
        docs.append(tok.decode(ids[1:].tolist()))
    return docs


def contents(folder: Path) -> dict:
    """What decides a store's ids: the manifest less its date, and every shard's bytes and index."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest.pop("created")
    files = [e["file"] for e in manifest["shards"]]
    return {
        "manifest": manifest,
        "ids": {f: (folder / f).read_bytes() for f in files},
        "docs": {f: np.load(folder / docs_name(f), allow_pickle=False).tolist() for f in files},
    }


def one_sentence(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message and len(message) < 500, message
    return message


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def small(tmp_path_factory, gpt2) -> tuple[Path, list[str], TokenStore]:
    """~150 KB corpus prepared into ~8 shards (hash split): shared by the read-only checks."""
    root = tmp_path_factory.mktemp("small")
    docs = write_jsonl(root / "corpus.jsonl", 150_000)
    store = corpus(root / "corpus.jsonl", root / "store").open(gpt2, progress=False)
    return root / "corpus.jsonl", docs, store


@pytest.fixture(scope="module")
def big(tmp_path_factory, gpt2) -> tuple[Path, Path]:
    """~4 MB corpus (seconds to prepare, ~50 shards of 20k tokens) and its uninterrupted store."""
    root = tmp_path_factory.mktemp("big")
    write_jsonl(root / "corpus.jsonl", 4_000_000)
    corpus(root / "corpus.jsonl", root / "straight", shard_tokens=20_000).open(gpt2, progress=False)
    return root / "corpus.jsonl", root / "straight"


def copy_store(store: TokenStore, dest: Path) -> Path:
    """A copy of a prepared store that a test may damage."""
    dest.mkdir()
    for p in store.folder.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


# -- the format ----------------------------------------------------------------------------
def test_gpt2_store_is_llmc_shards_with_a_document_index_and_a_manifest(small, gpt2):
    path, docs, store = small
    folder, manifest = store.folder, store.manifest
    assert manifest["version"] == FORMAT_VERSION and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["fingerprint"] == gpt2.fingerprint()
    source = open_source(SourceSpec(path=str(path)))
    assert manifest["source"]["fingerprint"] == source.fingerprint()
    assert {e["split"] for e in manifest["shards"]} == {"train", "val"}
    assert len(manifest["shards"]) > 4
    for entry in manifest["shards"]:
        assert entry["file"].startswith(entry["split"] + "_")
        raw = (folder / entry["file"]).read_bytes()
        header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
        assert (header[0], header[1], header[2]) == (20240520, 1, entry["tokens"])
        assert len(raw) == HEADER_BYTES + 2 * entry["tokens"]
        ids = np.frombuffer(raw[HEADER_BYTES:], dtype="<u2")
        assert entry["sha256"] == ids_sha256(open_shard(folder / entry["file"]))
        starts = np.load(folder / docs_name(entry["file"]), allow_pickle=False)
        assert starts.dtype == np.int64 and len(starts) == entry["documents"]
        assert starts[0] == 0 and (ids[starts] == EOT).all()
        assert (ids == EOT).sum() == entry["documents"]  # Shakespeare never writes <|endoftext|>
    # Decoded back, the two splits are every document exactly once, whole, in source order.
    rule = SplitRule("hash", 0.1)
    for split in ("train", "val"):
        expected = [d for i, d in enumerate(docs) if rule.split_of(i) == split]
        assert split_documents(store, split) == expected
        info = manifest["splits"][split]
        assert info["documents"] == len(expected)
        assert info["tokens"] == len(store.split(split))
        assert info["text_bytes"] == sum(len(d.encode()) for d in expected)


def test_first_split_holds_the_first_documents_as_validation(tmp_path, gpt2):
    docs = write_jsonl(tmp_path / "c.jsonl", 40_000)
    store = corpus(tmp_path / "c.jsonl", tmp_path / "s", val_documents=7).open(gpt2, progress=False)
    assert store.manifest["split"] == {"mode": "first", "val_fraction": 0.1, "val_documents": 7}
    assert split_documents(store, "val") == docs[:7]
    assert split_documents(store, "train") == docs[7:]


def test_a_vocabulary_over_65536_ids_writes_uint32_shards(tmp_path):
    codes = [c for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c < 0xE000]
    tok = CharTokenizer([chr(c) for c in codes])
    assert tok.vocab_size > 1 << 16
    docs = [
        "".join(tok.chars[(i * 7919 + k * 104_729) % tok.vocab_size] for k in range(60))
        for i in range(30)
    ]
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8"
    )
    source = open_source(SourceSpec(path=str(tmp_path / "c.jsonl")))
    rule = SplitRule("first", val_documents=3)
    prepare_store(
        source, tok, tmp_path / "s", rule, shard_tokens=500, mode="inline", progress=False
    )
    store = open_store(tmp_path / "s", tok.fingerprint(), verify=True)
    assert store.manifest["dtype"] == "uint32" and len(store.manifest["shards"]) >= 3
    for entry in store.manifest["shards"]:
        raw = (tmp_path / "s" / entry["file"]).read_bytes()
        header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
        assert (header[0], header[1], header[2]) == (20240801, 7, entry["tokens"])
        assert len(raw) == HEADER_BYTES + 4 * entry["tokens"]
    train = store.split("train")
    assert train.dtype == np.uint32 and int(train.slice(0, len(train)).max()) > 1 << 16
    for split, expected in (("val", docs[:3]), ("train", docs[3:])):
        view = store.split(split)  # no end-of-text id: a document is exactly its characters
        got = [
            tok.decode(view.slice(int(s), int(s + n)).tolist())
            for s, n in zip(*view.document_bounds())
        ]
        assert got == expected


# -- stopped midway: killed, or a bad line, and the same call continues ------------------
def prepare_cli(jsonl: Path, data_dir: Path, tmp_path: Path) -> subprocess.Popen:
    """``python -m gptlab.prepare`` of ``jsonl``; its store goes under ``data_dir``/stores."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gptlab.prepare",
            "data=local",
            "data.name=x",
            f"data.path={jsonl}",
            "tokenizer=gpt2",
            "data.shard_tokens=20000",
            "data.encode_mode=inline",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=REPO,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_progress(cache: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    """The store folder under ``cache`` once its first shard is complete (progress.json exists)."""
    deadline = time.monotonic() + timeout
    while not (found := list(cache.glob(f"stores/*/{PROGRESS}"))):
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the process ended before any shard was complete:\n{out[-3000:]}")
        assert time.monotonic() < deadline, f"no {PROGRESS} under {cache} in {timeout} s"
        time.sleep(0.005)
    return found[0].parent


@pytest.mark.slow
def test_killed_prepare_continues_from_the_last_complete_shard(tmp_path, big):
    jsonl, straight = big
    proc = prepare_cli(jsonl, tmp_path / "data", tmp_path)
    store = wait_for_progress(tmp_path / "data", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (store / MANIFEST).exists(), "the kill landed after the store was finished"
    progress = json.loads((store / PROGRESS).read_text())
    done = {e["file"] for e in progress["shards"]}
    assert 0 < len(done) < len(contents(straight)["ids"])
    # Half-written shards, as a crash (or another tool) could leave them: none may be trusted.
    train_next = progress["splits"]["train"]["next_shard"]
    fake = store / f"train_{train_next:06d}.bin"  # complete-looking, but not in progress.json
    write_shard(fake, np.full(20_000, 7, dtype=np.uint16), 50257)
    np.save(store / docs_name(fake.name), np.zeros(1, dtype=np.int64), allow_pickle=False)
    (store / f"val_{progress['splits']['val']['next_shard']:06d}.bin.tmp").write_bytes(b"\0" * 5000)
    before = {f: (store / f).stat().st_mtime_ns for f in done}

    again = prepare_cli(jsonl, tmp_path / "data", tmp_path)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    assert f"token store {store}" in out
    assert contents(store) == contents(straight)
    assert {f: (store / f).stat().st_mtime_ns for f in done} == before  # kept, not redone
    assert not list(store.glob("*.tmp")) and not (store / PROGRESS).exists()


@pytest.fixture
def small_batches(monkeypatch) -> None:
    """Encoder batches of 20k characters instead of 1 MB, so a 150 KB corpus has several."""
    monkeypatch.setattr("gptlab.data.ingest.BATCH_CHARS", 20_000)


def bad_line_midway(path: Path) -> list[str]:
    """A corpus whose bad line comes after several encoder batches (use with ``small_batches``)."""
    docs = write_jsonl(path, 150_000)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = int(len(lines) * 0.9)
    path.write_text("".join([*lines[:cut], "{not json\n", *lines[cut:]]), encoding="utf-8")
    return docs


def test_a_bad_line_midway_keeps_the_complete_shards_and_the_rerun_continues(
    tmp_path, gpt2, small_batches
):
    bad_line_midway(tmp_path / "c.jsonl")
    with pytest.raises(DataError) as refused:
        corpus(tmp_path / "c.jsonl", cache_dir=tmp_path / "cache").open(gpt2, progress=False)
    assert "c.jsonl line" in one_sentence(refused.value)
    store = only_store(tmp_path / "cache")
    done = json.loads((store / PROGRESS).read_text())["shards"]
    assert done and not (store / MANIFEST).exists()
    before = {e["file"]: (store / e["file"]).stat().st_mtime_ns for e in done}
    skip = {"on_bad_record": "skip"}
    corpus(tmp_path / "c.jsonl", cache_dir=tmp_path / "cache", **skip).open(gpt2, progress=False)
    assert {f: (store / f).stat().st_mtime_ns for f in before} == before
    corpus(tmp_path / "c.jsonl", tmp_path / "straight", **skip).open(gpt2, progress=False)
    assert contents(store) == contents(tmp_path / "straight")
    assert contents(store)["manifest"]["skipped_records"] == 1


def test_a_stopped_prepare_into_data_store_continues_there(tmp_path, gpt2, small_batches):
    """Its folder has shards and no manifest, like shards other tools wrote: it is continued,
    not used as theirs."""
    bad_line_midway(tmp_path / "c.jsonl")
    with pytest.raises(DataError):
        corpus(tmp_path / "c.jsonl", tmp_path / "store").open(gpt2, progress=False)
    assert (tmp_path / "store" / PROGRESS).exists()
    skip = {"on_bad_record": "skip"}
    corpus(tmp_path / "c.jsonl", tmp_path / "store", **skip).open(gpt2, progress=False)
    corpus(tmp_path / "c.jsonl", tmp_path / "straight", **skip).open(gpt2, progress=False)
    assert contents(tmp_path / "store") == contents(tmp_path / "straight")


def edit_the_first_documents(path: Path, tok: GPT2Tokenizer) -> tuple[object, object]:
    """The first 50 documents rewritten (and the bad line dropped): another source."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    edited = [json.dumps({"text": f"EDITED {i}"}) + "\n" for i in range(50)]
    path.write_text("".join(edited + [ln for ln in lines[50:] if ln != "{not json\n"]))
    return open_source(SourceSpec(path=str(path))), tok


def another_tokenizer(path: Path, tok: GPT2Tokenizer) -> tuple[object, object]:
    """The same documents (the bad line skipped) for a character tokenizer instead."""
    text = "".join(
        json.loads(ln)["text"] for ln in path.read_text().splitlines() if ln != "{not json"
    )
    source = open_source(SourceSpec(path=str(path), on_bad_record="skip"))
    return source, CharTokenizer.from_corpus(text)


@pytest.mark.parametrize("change", [edit_the_first_documents, another_tokenizer])
def test_a_resume_never_keeps_shards_of_another_source_or_tokenizer(
    tmp_path, gpt2, small_batches, change
):
    """A half-made store of another source or tokenizer is refused or redone, never mixed in."""
    bad_line_midway(tmp_path / "c.jsonl")
    rule = SplitRule("hash", 0.1)
    settings = {"shard_tokens": 5_000, "mode": "inline", "progress": False}
    with pytest.raises(DataError):
        prepare_store(
            open_source(SourceSpec(path=str(tmp_path / "c.jsonl"))),
            gpt2,
            tmp_path / "s",
            rule,
            **settings,
        )
    assert json.loads((tmp_path / "s" / PROGRESS).read_text())["shards"]
    source, tok = change(tmp_path / "c.jsonl", gpt2)
    try:
        prepare_store(source, tok, tmp_path / "s", rule, **settings)
    except DataError as refused:  # refusing in one sentence is as good as starting over
        one_sentence(refused)
        return
    prepare_store(source, tok, tmp_path / "fresh", rule, **settings)
    assert contents(tmp_path / "s") == contents(tmp_path / "fresh")


# -- a full disk -------------------------------------------------------------------------------
def test_a_full_disk_says_so_in_one_sentence_and_the_store_stays_resumable(tmp_path, gpt2):
    write_jsonl(tmp_path / "c.jsonl", 300_000)
    corpus(tmp_path / "c.jsonl", tmp_path / "straight").open(gpt2, progress=False)
    with full_disk(tmp_path, size_kib=96) as disk:
        with pytest.raises(DataError) as failed:
            corpus(tmp_path / "c.jsonl", cache_dir=disk).open(gpt2, progress=False)
        store = only_store(disk)
        message = one_sentence(failed.value)
        assert str(store) in message and "disk filled" in message and "same command" in message
        assert not (store / MANIFEST).exists()
        assert json.loads((store / PROGRESS).read_text())["shards"], "no shard was complete"
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # space freed
        corpus(tmp_path / "c.jsonl", cache_dir=disk).open(gpt2, progress=False)
        assert contents(store) == contents(tmp_path / "straight")
        assert not list(store.glob("*.tmp"))


def test_a_full_disk_leaves_no_half_written_shard_behind(tmp_path, gpt2):
    """Closing the unfinished shard fails on a full disk too; its .tmp must go all the same."""
    write_jsonl(tmp_path / "c.jsonl", 300_000)
    with full_disk(tmp_path, size_kib=96) as disk:
        with pytest.raises(DataError):
            corpus(tmp_path / "c.jsonl", cache_dir=disk).open(gpt2, progress=False)
        assert sorted(p.name for p in only_store(disk).glob("*.tmp")) == []


@pytest.fixture
def small_pieces(monkeypatch, small_batches) -> None:
    """One text is read in pieces of 20k characters instead of 1 MB (and encoded in 20k batches)."""
    monkeypatch.setattr("gptlab.data.ingest.PIECE_CHARS", 20_000)


def test_one_text_is_cut_at_its_tail_like_nanogpt_and_resumes_after_a_full_disk(
    tmp_path, gpt2, small_pieces
):
    """nanoGPT's split: train is the first 90% of the characters, val the rest, with no
    end-of-text of its own (it continues the text); a store of one long text resumes too."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    straight = corpus(tmp_path / "input.txt", tmp_path / "straight").open(gpt2, progress=False)
    assert straight.manifest["split"]["mode"] == "tail"
    assert len(straight.manifest["shards"]) > 5
    cut = int(len(text) * 0.9)
    train, val = straight.split("train"), straight.split("val")
    ids = train.slice(0, len(train))
    assert ids[0] == EOT and gpt2.decode(ids[1:].tolist()) == text[:cut]
    assert gpt2.decode(val.slice(0, len(val)).tolist()) == text[cut:]
    assert (ids == EOT).sum() == 1 and EOT not in val.slice(0, len(val))
    with full_disk(tmp_path, size_kib=96) as disk:
        with pytest.raises(DataError, match="disk filled"):
            corpus(tmp_path / "input.txt", cache_dir=disk).open(gpt2, progress=False)
        assert json.loads((only_store(disk) / PROGRESS).read_text())["shards"]
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        corpus(tmp_path / "input.txt", cache_dir=disk).open(gpt2, progress=False)
        assert contents(only_store(disk)) == contents(tmp_path / "straight")


# -- two processes on one store ------------------------------------------------------------------
CHILD = """
import sys
from gptlab.data.corpus import Corpus
from gptlab.tokenizer.gpt2 import GPT2Tokenizer
settings = {"shard_tokens": 20_000, "encode_mode": "inline"}
corpus = Corpus("x", source="file", path=sys.argv[1], cache_dir=sys.argv[2], **settings)
print("opened", corpus.open(GPT2Tokenizer(), progress=False).describe(), flush=True)
"""


def child(jsonl: Path, cache: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, str(jsonl), str(cache)],
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.parametrize("then", ["continued", "killed"])
def test_two_prepares_of_one_store_take_turns_and_make_the_same_store(tmp_path, big, then):
    """The first is stopped (SIGSTOP) midway, so the second surely meets its lock; then the first
    is continued (the second finds its store) or killed (the second finishes what it left)."""
    jsonl, straight = big
    cache = tmp_path / "cache"
    first = child(jsonl, cache, tmp_path / "first.log")
    second = None
    try:
        store = wait_for_progress(cache, first)
        first.send_signal(signal.SIGSTOP)
        assert not (store / MANIFEST).exists()
        second = child(jsonl, cache, tmp_path / "second.log")
        deadline = time.monotonic() + 120
        while "waiting" not in (tmp_path / "second.log").read_text():
            assert second.poll() is None, (tmp_path / "second.log").read_text()
            assert time.monotonic() < deadline, "the second process never said it was waiting"
            time.sleep(0.02)
        if then == "continued":
            first.send_signal(signal.SIGCONT)
            assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
        else:
            first.kill()
            assert first.wait(timeout=60) == -signal.SIGKILL
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
    log = (tmp_path / "second.log").read_text()
    assert f"waiting for pid {first.pid} to finish preparing {store}" in log
    assert f"opened token store {store}" in log
    assert contents(store) == contents(straight)
    open_store(store, GPT2Tokenizer().fingerprint(), verify=True)


# -- stores that must be refused -----------------------------------------------------------
def test_a_store_of_another_tokenizer_is_refused_naming_both(small, tmp_path):
    path, _, store = small
    ours = store.manifest["tokenizer"]["fingerprint"]
    with pytest.raises(DataError) as refused:
        open_store(store.folder, "0123456789abcdef")
    message = one_sentence(refused.value)
    assert ours in message and "0123456789abcdef" in message
    char = CharTokenizer.from_corpus(path.read_text(encoding="utf-8"))
    with pytest.raises(DataError) as refused:
        corpus(path, store.folder).open(char, progress=False)
    message = one_sentence(refused.value)
    assert ours in message and char.fingerprint() in message


@pytest.mark.parametrize("version", [FORMAT_VERSION - 1, FORMAT_VERSION + 1])
def test_a_store_of_another_format_version_is_refused(small, tmp_path, version):
    folder = copy_store(small[2], tmp_path / "s")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": version}))
    with pytest.raises(DataError) as refused:
        open_store(folder)
    message = one_sentence(refused.value)
    assert str(folder) in message and f"version {version}" in message
    assert "python -m gptlab.prepare again" in message


def damage_magic(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(np.array([20240521], dtype="<i4").tobytes())


def damage_count(path: Path) -> None:
    n = int(np.fromfile(path, dtype="<i4", count=3)[2])
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(np.array([n + 1], dtype="<i4").tobytes())


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 10)


def shorter_but_whole(path: Path) -> None:
    """A valid shard of fewer ids than the manifest lists (replaced by another one)."""
    ids = np.array(open_shard(path)[:-5])
    write_shard(path, ids, 50257)


@pytest.mark.parametrize("damage", [damage_magic, damage_count, truncate, shorter_but_whole])
def test_a_shard_whose_header_or_size_is_wrong_is_refused_naming_it(small, tmp_path, damage):
    folder = copy_store(small[2], tmp_path / "s")
    victim = folder / small[2].manifest["shards"][2]["file"]
    damage(victim)
    with pytest.raises(DataError) as refused:
        open_store(folder, verify=False)
    assert str(victim) in one_sentence(refused.value)


def test_changed_ids_of_the_same_size_are_caught_by_verify_and_not_read_without_it(small, tmp_path):
    """Opening trusts sizes and headers (cheap for any store); the ids are only read to verify."""
    folder = copy_store(small[2], tmp_path / "s")
    victim = folder / small[2].manifest["shards"][1]["file"]
    with open(victim, "r+b") as f:
        f.seek(HEADER_BYTES + 100)
        f.write(np.array([1, 2, 3], dtype="<u2").tobytes())
    opened = open_store(folder, verify=False)
    assert all(isinstance(s, np.memmap) for s in opened.split("train").shards)
    for verify in (True, None):  # None: a small store is verified anyway
        with pytest.raises(DataError) as refused:
            open_store(folder, verify=verify)
        assert str(victim) in one_sentence(refused.value)


def test_a_damaged_manifest_or_document_index_is_refused_naming_it(small, tmp_path):
    folder = copy_store(small[2], tmp_path / "s")
    index = folder / docs_name(small[2].manifest["shards"][0]["file"])
    index.unlink()
    with pytest.raises(DataError) as refused:
        open_store(folder)
    assert str(index) in one_sentence(refused.value)
    (folder / MANIFEST).write_text((folder / MANIFEST).read_text()[:100])  # cut short
    with pytest.raises(DataError) as refused:
        open_store(folder)
    assert str(folder / MANIFEST) in one_sentence(refused.value)


# -- sources with nothing to learn from -----------------------------------------------------------
def test_an_empty_source_gets_one_sentence(tmp_path, gpt2):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "texts").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "texts" / name).write_text("")
    for path in (tmp_path / "empty.jsonl", tmp_path / "texts"):
        with pytest.raises(DataError) as refused:
            corpus(path, tmp_path / f"store-{path.name}").open(gpt2, progress=False)
        message = one_sentence(refused.value)
        assert str(path) in message and "no text" in message
        assert not (tmp_path / f"store-{path.name}" / MANIFEST).exists()


def test_a_source_whose_documents_all_land_in_train_says_how_to_fix(tmp_path, gpt2):
    write_jsonl(tmp_path / "c.jsonl", 3_000)
    with pytest.raises(DataError) as refused:
        corpus(tmp_path / "c.jsonl", tmp_path / "s", val_fraction=1e-9).open(gpt2, progress=False)
    message = one_sentence(refused.value)
    assert "val split" in message and "data.val_fraction" in message
    assert "data.val_split=first" in message  # the key Corpus and the data configs read


# -- shards other tools wrote ----------------------------------------------------------------------
def with_documents(rng: np.random.Generator, n_docs: int, first_eot: bool = True) -> np.ndarray:
    parts = [rng.integers(0, EOT, size=int(rng.integers(5, 40))) for _ in range(n_docs)]
    ids = np.concatenate([np.concatenate([[EOT], p]) for p in parts]).astype(np.uint16)
    return ids if first_eot else ids[1:]


def test_llmc_shards_are_used_as_they_are(tmp_path, gpt2):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fineweb10B"
    folder.mkdir()
    files = {
        "fineweb_train_000001.bin": with_documents(rng, 30),
        "fineweb_train_000002.bin": with_documents(rng, 20),
        "fineweb_val_000000.bin": with_documents(rng, 10),
    }
    for name, ids in files.items():
        write_shard(folder / name, ids, 50257)
    store = Corpus(name="x", source="file", path=str(folder)).open(gpt2, progress=False)
    train = np.concatenate([files["fineweb_train_000001.bin"], files["fineweb_train_000002.bin"]])
    for split, ids in (("train", train), ("val", files["fineweb_val_000000.bin"])):
        view = store.split(split)
        assert np.array_equal(view.slice(0, len(view)), ids)
        assert np.array_equal(view.doc_starts, np.flatnonzero(ids == EOT))
    assert not list(folder.glob("manifest.json")), "shards used as they are get no manifest written"


def test_nanogpt_bins_are_used_as_they_are(tmp_path, gpt2):
    rng = np.random.default_rng(1)
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    train, val = with_documents(rng, 40, first_eot=False), with_documents(rng, 8)
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    store = Corpus(name="x", source="file", path=str(folder)).open(gpt2, progress=False)
    for split, ids in (("train", train), ("val", val)):
        view = store.split(split)
        assert np.array_equal(view.slice(0, len(view)), ids)
        starts = np.flatnonzero(ids == EOT)
        expected = starts if starts[0] == 0 else np.concatenate([[0], starts])
        assert np.array_equal(view.doc_starts, expected)  # the text before the first EOT counts too


def test_a_shard_folder_without_validation_shards_gets_one_sentence(tmp_path, gpt2):
    folder = tmp_path / "shards"
    write_shard(
        folder / "fineweb_train_000001.bin", with_documents(np.random.default_rng(2), 5), 50257
    )
    with pytest.raises(DataError) as refused:
        Corpus(name="x", source="file", path=str(folder)).open(gpt2, progress=False)
    message = one_sentence(refused.value)
    assert str(folder) in message and "val" in message


def test_a_nanogpt_folder_without_val_bin_gets_one_sentence_naming_it(tmp_path, gpt2):
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    with_documents(np.random.default_rng(3), 20).tofile(folder / "train.bin")
    with pytest.raises(DataError) as refused:
        Corpus(name="x", source="file", path=str(folder)).open(gpt2, progress=False)
    message = one_sentence(refused.value)
    assert str(folder) in message and "val" in message and "not a token shard" not in message
