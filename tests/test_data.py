"""Corpus sources, the token cache and the random windows, on real files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from gptlab.data import (
    DataError,
    RandomWindows,
    TextDataModule,
    cached_tokens,
    download,
    embedded_text,
)
from gptlab.tokenizer import CharTokenizer, TokenizerError
from tests.conftest import SHAKESPEARE, needs_shakespeare


def make_dm(tmp_path, **kw) -> TextDataModule:
    args = {
        "name": "t",
        "block_size": 8,
        "batch_size": 4,
        "cache_dir": str(tmp_path / "cache"),
        "val_batches": 2,
    }
    args.update(kw)
    return TextDataModule(**args)


def test_embedded_corpus_is_real_prose_and_deterministic():
    text = embedded_text()
    assert len(text) > 300_000 and text == embedded_text()
    assert " the " in text


def test_token_cache_round_trips_and_uses_smallest_dtype(tmp_path):
    tok = CharTokenizer.from_corpus("hello world\n")
    ids = cached_tokens("hello world\n" * 10, tok, tmp_path, "x")
    assert ids.dtype == np.uint16 and tok.decode(ids.tolist()) == "hello world\n" * 10
    assert isinstance(ids, np.memmap)


def test_token_cache_key_changes_with_text_and_tokenizer(tmp_path):
    a = CharTokenizer.from_corpus("abc")
    b = CharTokenizer.from_corpus("abcd")
    cached_tokens("abcabc", a, tmp_path, "x")
    cached_tokens("abcabca", a, tmp_path, "x")
    cached_tokens("abcabc", b, tmp_path, "x")
    assert len(list((tmp_path / "tokens").glob("*.bin"))) == 3


def test_corrupt_token_cache_is_rebuilt_not_trusted(tmp_path):
    tok = CharTokenizer.from_corpus("abc")
    cached_tokens("abcabc", tok, tmp_path, "x")
    (bin_path,) = (tmp_path / "tokens").glob("*.bin")
    bin_path.write_bytes(b"\x00\x01\x02")  # truncated / corrupt data
    ids = cached_tokens("abcabc", tok, tmp_path, "x")
    assert tok.decode(ids.tolist()) == "abcabc"
    (meta_path,) = (tmp_path / "tokens").glob("*.json")
    meta = json.loads(meta_path.read_text())
    meta["vocab_size"] = 999  # a header that does not describe this tokenizer
    meta_path.write_text(json.dumps(meta))
    assert tok.decode(cached_tokens("abcabc", tok, tmp_path, "x").tolist()) == "abcabc"


def test_windows_are_shifted_by_one_and_reproducible():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = RandomWindows(tokens, block_size=16, batch_size=5, seed=3)
    x, y = windows.batch(7)
    assert x.shape == (5, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, 0], x[:, 0] + 1)
    assert torch.equal(windows.batch(7)[0], x)
    other_rank = RandomWindows(tokens, block_size=16, batch_size=5, seed=3, rank=1)
    assert not torch.equal(other_rank.batch(7)[0], x)


def test_windows_reach_the_last_token():
    tokens = np.arange(20, dtype=np.uint16)
    windows = RandomWindows(tokens, block_size=4, batch_size=64, seed=0)
    seen = set()
    for i in range(20):
        seen.update(windows.batch(i)[1].flatten().tolist())
    assert 19 in seen and 0 not in seen  # the final id is a target; id 0 never is


def test_split_and_bytes_per_token(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefghij" * 100)
    dm = make_dm(tmp_path, path=str(corpus), source="file")
    dm.build_tokenizer(CharTokenizer.from_corpus)
    dm.prepare_data()
    assert len(dm.train_tokens) == 900 and len(dm.val_tokens) == 100
    assert dm.val_bytes_per_token == pytest.approx(1.0)


def test_folder_of_txt_files(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("first file " * 50)
    (folder / "b.txt").write_text("second file " * 50)
    dm = make_dm(tmp_path, path=str(folder))
    assert "first file" in dm.load_text() and "second file" in dm.load_text()


def test_missing_empty_and_tiny_corpus_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_dm(tmp_path, path=str(tmp_path / "missing.txt")).load_text()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="is empty"):
        make_dm(tmp_path, path=str(empty)).load_text()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x" * 60)  # validation split: 6 characters < block_size + 1
    dm = make_dm(tmp_path, path=str(tiny))
    dm.build_tokenizer(CharTokenizer.from_corpus)
    with pytest.raises(DataError, match="fewer than block_size"):
        dm.prepare_data()
    no_text = tmp_path / "no_text"
    no_text.mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        make_dm(tmp_path, path=str(no_text)).load_text()


def test_non_utf8_file_names_the_byte_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ".encode("latin-1") * 3)
    with pytest.raises(DataError, match="at byte 3"):
        make_dm(tmp_path, path=str(bad)).load_text()
    assert "caf" in make_dm(tmp_path, path=str(bad), errors="replace").load_text()


def test_download_verifies_checksum_and_keeps_nothing_bad(tmp_path):
    src = tmp_path / "remote.txt"
    src.write_text("some corpus text\n" * 10)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "corpus.txt"
    with pytest.raises(DataError, match="expected"):
        download(src.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and not list(dest.parent.glob("*.tmp"))
    assert download(src.as_uri(), dest, sha256=good).read_text() == src.read_text()
    src.unlink()  # now cached: no second fetch is needed
    assert download(src.as_uri(), dest, sha256=good).is_file()


def test_download_failure_says_how_to_work_offline(tmp_path):
    with pytest.raises(DataError, match="data.path"):
        download((tmp_path / "absent.txt").as_uri(), tmp_path / "out.txt")


@needs_shakespeare
def test_shakespeare_config_uses_seeded_cache(tmp_path, offline_environment):
    from tests.conftest import compose_train

    cfg = compose_train(["experiment=shakespeare_char"], tmp_path / "run")
    import hydra

    dm = hydra.utils.instantiate(cfg.data)
    assert dm.load_text() == SHAKESPEARE.read_text()
    tok = dm.build_tokenizer(hydra.utils.instantiate(cfg.tokenizer))
    assert tok.vocab_size == 65  # nanoGPT's shakespeare_char vocabulary


def test_tokenizer_learns_from_the_training_split_only(tmp_path):
    """A tokenizer that saw the validation text would flatter val/bpb."""
    from gptlab.tokenizer import BPETokenizer, TokenizerError

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 90 + "zq" * 120)  # the last 10% is "zqzq..."
    dm = make_dm(tmp_path, path=str(corpus))
    tok = dm.build_tokenizer(lambda text: BPETokenizer.train(text, vocab_size=300, progress=False))
    learned = {tok.token_bytes(i) for i in range(256, tok.vocab_size) if i != tok.eot_id}
    assert not any(b"z" in piece or b"q" in piece for piece in learned)
    dm = make_dm(tmp_path, path=str(corpus))
    dm.build_tokenizer(CharTokenizer.from_corpus)
    with pytest.raises(TokenizerError, match="'q'"):
        dm.prepare_data()


# -- loading: workers, pinned memory, no copies of the corpus ----------------------------
def _corpus_dm(tmp_path, **kw) -> TextDataModule:
    corpus = tmp_path / "c.txt"
    corpus.write_text(embedded_text()[:20_000])
    dm = make_dm(tmp_path, path=str(corpus), **kw)
    dm.build_tokenizer(CharTokenizer.from_corpus)
    dm.prepare_data()
    return dm


def _first(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_windows_pickle_the_token_cache_by_file_name_not_by_its_ids(tmp_path):
    """spawn / forkserver workers receive the dataset pickled: it must not carry the corpus."""
    import pickle

    dm = _corpus_dm(tmp_path)
    assert isinstance(dm.train_tokens, np.memmap)
    windows = RandomWindows(dm.train_tokens, 8, 4, seed=5)
    blob = pickle.dumps(windows)
    assert len(blob) < 1_000 < dm.train_tokens.nbytes
    again = pickle.loads(blob)
    assert isinstance(again.tokens, np.memmap) and str(again.tokens.filename) == str(
        dm.train_tokens.filename
    )
    assert all(torch.equal(a, b) for a, b in zip(windows.batch(3), again.batch(3)))
    in_memory = RandomWindows(
        np.arange(100, dtype=np.uint16), 8, 4
    )  # a plain array still pickles whole
    assert torch.equal(pickle.loads(pickle.dumps(in_memory)).batch(0)[0], in_memory.batch(0)[0])


@pytest.mark.filterwarnings(
    "ignore:This DataLoader will create 3 worker processes"
)  # on a 2-CPU machine
@pytest.mark.parametrize("start_batch", [0, 5])
def test_workers_serve_the_same_batches_in_the_same_order(tmp_path, start_batch):
    """Batch i depends only on (seed, rank, i) with or without workers, also from a resumed position."""
    batches = {}
    for workers in (0, 2, 3):
        dm = _corpus_dm(tmp_path, num_workers=workers)
        dm.start_batch = start_batch
        assert dm.train_dataloader().num_workers == workers
        batches[workers] = (_first(dm.train_dataloader(), 7), list(dm.val_dataloader()))
    for workers in (2, 3):
        for ours, theirs in zip(batches[0], batches[workers]):
            assert len(ours) == len(theirs)
            assert all(torch.equal(a, b) for x, y in zip(ours, theirs) for a, b in zip(x, y))


def test_num_workers_and_pin_memory_default_to_the_device(tmp_path, monkeypatch):
    from gptlab.data import datamodule

    dm = _corpus_dm(tmp_path)  # num_workers=None, pin_memory=None: automatic
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dm.loader_settings() == (0, False)
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and not loader.pin_memory
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(datamodule, "cpus_available", lambda: 16)
    assert dm.loader_settings() == (4, True)  # 8 CPUs per GPU: capped at 4
    monkeypatch.setattr(datamodule, "cpus_available", lambda: 4)
    assert dm.loader_settings() == (2, True)
    monkeypatch.setattr(datamodule, "cpus_available", lambda: 1)
    assert dm.loader_settings() == (1, True)
    dm.num_workers, dm.pin_memory = 0, False  # explicit values win
    assert dm.loader_settings() == (0, False)


def test_negative_num_workers_is_refused(tmp_path):
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(DataError, match="data.num_workers=.* must be a whole number >= 0"):
            make_dm(tmp_path, num_workers=bad)


def test_training_with_workers_matches_training_without(tmp_path):
    """The same losses step by step, and the same final weights, with data.num_workers=2 and 0."""
    import csv

    from gptlab.train import train
    from tests.conftest import TINY_OVERRIDES, compose_train

    runs = {}
    for workers in (0, 2):
        run = tmp_path / f"workers{workers}"
        cfg = compose_train(
            [
                *TINY_OVERRIDES,
                "~callbacks.sample_text",
                "model.dropout=0.1",
                "trainer.deterministic=true",
                f"data.num_workers={workers}",
            ],
            run,
        )
        train(cfg)
        with open(run / "metrics.csv", newline="") as f:
            losses = {
                int(r["step"]): float(r["train/loss"])
                for r in csv.DictReader(f)
                if r.get("train/loss")
            }
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        runs[workers] = (losses, state)
    (losses0, state0), (losses2, state2) = runs[0], runs[2]
    assert len(losses0) == 6 and losses0 == losses2
    assert all(torch.equal(state0[k], state2[k]) for k in state0)


def test_a_cache_name_with_path_parts_is_refused_where_the_path_is_built(tmp_path):
    """data.name=../../escaped wrote the cache outside the cache folder."""
    with pytest.raises(DataError, match=r"data\.name='\.\./\.\./escaped' must be a plain name"):
        make_dm(tmp_path, name="../../escaped")
    tok = CharTokenizer.from_corpus("abc")
    with pytest.raises(DataError, match="must be a plain name"):
        cached_tokens("abcabc", tok, tmp_path / "cache", "../../escaped-train")
    assert not any(tmp_path.rglob("*.bin"))


def test_a_cache_whose_ids_exceed_the_vocabulary_is_refused_in_one_sentence(tmp_path):
    """A consistent header and checksum around ids past the vocabulary failed deep in the embedding."""
    tok = CharTokenizer.from_corpus("abc")
    cached_tokens("abcabc", tok, tmp_path, "x")
    (bin_path,) = (tmp_path / "tokens").glob("*.bin")
    (meta_path,) = (tmp_path / "tokens").glob("*.json")
    data = np.array([0, 1, 2, 0, 1, 60000], dtype=np.uint16).tobytes()
    bin_path.write_bytes(data)
    meta = json.loads(meta_path.read_text())
    meta["data_sha256"] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        DataError, match=r"holds id 60000, but the tokenizer has only 3 ids; delete .* rebuilt"
    ) as caught:
        cached_tokens("abcabc", tok, tmp_path, "x")
    assert "\n" not in str(caught.value)


def test_resume_uses_the_saved_char_tokenizer_and_refuses_new_characters(tmp_path):
    """Editing the corpus and resuming rebuilt a different character vocabulary (36 of 65 ids remapped)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world, hello there\n" * 20)
    first = make_dm(tmp_path, source="file", path=str(corpus))
    saved = first.build_tokenizer(CharTokenizer.from_corpus).to_dict()

    corpus.write_text("Hello world, hello there\n" * 20)  # 'H' is new; 'h' still there
    again = make_dm(tmp_path, source="file", path=str(corpus))
    refitted = CharTokenizer.from_corpus(again.split_text()[0])
    assert refitted.chars != saved["chars"]  # what a re-fit would silently have done
    with pytest.raises(
        TokenizerError,
        match=r"1 character\(s\) that the run's saved character tokenizer does not know \('H'\)",
    ):
        again.use_saved_tokenizer(saved)

    corpus.write_text("hello world, hello there\n" * 20)
    unchanged = make_dm(tmp_path, source="file", path=str(corpus))
    tok = unchanged.use_saved_tokenizer(saved)
    assert tok.to_dict() == saved and unchanged.tokenizer is tok
    unchanged.prepare_data()
    assert tok.decode(unchanged.train_tokens[:5].tolist()) == "hello"


@pytest.mark.parametrize(
    ("key", "value"),
    [("batch_size", "abc"), ("batch_size", 0), ("block_size", 2.5), ("val_batches", -1)],
)
def test_a_datamodule_built_directly_refuses_sizes_that_are_not_positive_integers(
    tmp_path, key, value
):
    with pytest.raises(DataError, match=f"data.{key}={value!r} must be a positive whole number"):
        make_dm(tmp_path, **{key: value})
