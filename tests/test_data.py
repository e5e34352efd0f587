"""The DataModule on real files: corpora, the token store it trains from, loaders, the tokenizer.

Sources are tested in test_documents.py, the store's guarantees in test_store.py and the
orders in test_orders.py; here is what a user of ``data=`` meets.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from gptlab.data import DataError, TextDataModule, download, embedded_text
from gptlab.data.corpus import Corpus
from gptlab.data.orders import RandomOrder, RankBatches
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


def test_the_store_folder_changes_with_the_text_and_the_tokenizer(tmp_path):
    """Editing the corpus or changing the tokenizer prepares a new store, never reuses stale ids."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcabc")
    a, b = CharTokenizer.from_corpus("abc"), CharTokenizer.from_corpus("abcd")
    folder = Corpus("x", path=str(corpus), cache_dir=str(tmp_path)).store_folder(a)
    assert Corpus("x", path=str(corpus), cache_dir=str(tmp_path)).store_folder(a) == folder
    assert Corpus("x", path=str(corpus), cache_dir=str(tmp_path)).store_folder(b) != folder
    corpus.write_text("abcabca")
    assert Corpus("x", path=str(corpus), cache_dir=str(tmp_path)).store_folder(a) != folder


def test_split_and_bytes_per_token(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefghij" * 100)
    dm = make_dm(tmp_path, path=str(corpus), source="file")
    dm.build_tokenizer(CharTokenizer.from_corpus)
    dm.prepare_data()
    assert len(dm.view("train")) == 900 and len(dm.view("val")) == 100  # nanoGPT's split
    assert dm.val_bytes_per_token == pytest.approx(1.0)


def test_folder_of_txt_files(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("one file " * 50)
    (folder / "b.txt").write_text("file one " * 50)
    dm = make_dm(tmp_path, path=str(folder), val_split="first", val_documents=1)
    assert "one file" in dm.load_text() and "file one" in dm.load_text()
    dm.build_tokenizer(CharTokenizer.from_corpus)
    dm.prepare_data()
    tok = dm.tokenizer
    # Whole documents: the first file is the validation split, the second the training one.
    assert tok.decode(dm.view("val").slice(0, len(dm.view("val"))).tolist()) == "one file " * 50
    assert tok.decode(dm.view("train").slice(0, len(dm.view("train"))).tolist()) == "file one " * 50


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
    with pytest.raises(DataError, match="no_text"):
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


def test_batches_pickle_the_store_by_file_name_not_by_its_ids(tmp_path):
    """spawn / forkserver workers receive the dataset pickled: it must not carry the corpus."""
    import pickle

    dm = _corpus_dm(tmp_path)
    (shard,) = dm.view("train").shards
    assert isinstance(shard, np.memmap)
    batches = RankBatches(RandomOrder(dm.view("train"), 8, 4, seed=5), rank=0, world_size=1)
    blob = pickle.dumps(batches)
    assert len(blob) < 2_000 < shard.nbytes
    again = pickle.loads(blob)
    (reopened,) = again.order.view.shards
    assert isinstance(reopened, np.memmap) and str(reopened.filename) == str(shard.filename)
    assert all(torch.equal(a, b) for a, b in zip(next(iter(batches)), next(iter(again))))


@pytest.mark.filterwarnings(
    "ignore:This DataLoader will create 3 worker processes"
)  # on a 2-CPU machine
@pytest.mark.parametrize("start_batch", [0, 5])
def test_workers_serve_the_same_batches_in_the_same_order(tmp_path, start_batch):
    """Batch i depends only on (seed, rank, i) with or without workers, also from a resumed position."""
    batches = {}
    for workers in (0, 2, 3):
        dm = _corpus_dm(tmp_path, num_workers=workers)
        dm.start_chunk = start_batch
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


def test_a_corpus_name_with_path_parts_is_refused_where_the_path_is_built(tmp_path):
    """data.name=../../escaped wrote the token cache outside the cache folder."""
    with pytest.raises(DataError, match=r"data\.name='\.\./\.\./escaped' must be a plain name"):
        make_dm(tmp_path, name="../../escaped")
    with pytest.raises(DataError, match="must be a plain name"):
        Corpus("../../escaped", cache_dir=str(tmp_path / "cache"))
    assert not any(tmp_path.rglob("*.bin"))


def test_ids_past_the_vocabulary_are_refused_in_one_sentence(tmp_path):
    """Shards from another tool with ids past the run's vocabulary failed deep in the embedding."""
    from gptlab.data.shards import write_shard
    from gptlab.tokenizer import GPT2Tokenizer

    folder = tmp_path / "shards"
    write_shard(folder / "x_train_000001.bin", np.array([1, 2, 50300] * 40), 1 << 16)
    write_shard(folder / "x_val_000000.bin", np.array([1, 2, 3] * 40), 1 << 16)
    dm = make_dm(tmp_path, path=str(folder), batch_size=64)
    dm.build_tokenizer(GPT2Tokenizer())
    dm.prepare_data()
    with pytest.raises(DataError, match=r"id 50300 .*only 50,257 ids") as caught:
        next(iter(dm.train_dataloader()))
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
    assert tok.decode(unchanged.view("train").slice(0, 5).tolist()) == "hello"


@pytest.mark.parametrize(
    ("key", "value"),
    [("batch_size", "abc"), ("batch_size", 0), ("block_size", 2.5), ("val_batches", -1)],
)
def test_a_datamodule_built_directly_refuses_sizes_that_are_not_positive_integers(
    tmp_path, key, value
):
    with pytest.raises(DataError, match=f"data.{key}={value!r} must be a positive whole number"):
        make_dm(tmp_path, **{key: value})


def test_a_mixture_interleaves_its_corpora_by_weight(tmp_path):
    """data.mixture: rows come from each corpus in proportion to its weight, the same every time."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a" * 4000)
    b.write_text("b" * 4000)
    mixture = [{"path": str(a), "weight": 3}, {"path": str(b), "weight": 1}]
    counts = []
    for _ in range(2):
        dm = make_dm(tmp_path, mixture=mixture)
        dm.build_tokenizer(CharTokenizer.from_corpus("ab"))
        dm.prepare_data()
        rows = torch.cat([x for x, _ in _first(dm.train_dataloader(), 25)])  # 100 rows
        counts.append(int((rows[:, 0] == dm.tokenizer.encode("a")[0]).sum()))
    assert counts[0] == counts[1] == 75
    with pytest.raises(DataError, match=r"data.mixture\[1\] needs a positive weight"):
        make_dm(tmp_path, mixture=[{"path": str(a), "weight": 1}, {"path": str(b)}])


def test_packed_rows_start_at_documents_and_report_what_was_cropped(tmp_path):
    from gptlab.tokenizer import GPT2Tokenizer

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i:02d}.txt").write_text(f"document {i} " * (3 + 7 * (i % 5)))
    dm = make_dm(tmp_path, path=str(folder), sampling="packed", block_size=32, val_documents=4)
    tok = dm.build_tokenizer(GPT2Tokenizer())
    dm.prepare_data()
    x, _ = next(iter(dm.train_dataloader()))
    assert (x[:, 0] == tok.eot_id).all()  # every row starts a document
    assert "cropped" in dm.describe_order()
