"""Random and damaged files: every reader answers with its own clear error, never a crash or hang.

Checkpoints must raise ``CheckpointError`` (or load, when a flipped byte only touched
tensor data), tokenizer files ``TokenizerError``, and a token store whose files are
garbage ``DataError`` (one sentence saying to prepare it again), never wrong ids.
"""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.checkpoint import CheckpointError, load_checkpoint
from gptlab.data.ingest import SplitRule, prepare_store
from gptlab.data.sources import DataError
from gptlab.data.store import MANIFEST, open_store
from gptlab.tokenizer import CharTokenizer, TokenizerError, load_tokenizer

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TEXT = "The quick brown fox jumps over the lazy dog.\n" * 20
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) if one read takes longer than ``seconds``."""

    def alarm(signum, frame):
        raise TimeoutError(f"reading a damaged file took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> bytes:
    """The bytes of a tiny but real gptlab checkpoint (trained for one step)."""
    from gptlab.train import train
    from tests.conftest import TINY_OVERRIDES, compose_train

    run = tmp_path_factory.mktemp("fuzz") / "run"
    train(
        compose_train(
            [
                *TINY_OVERRIDES,
                "~callbacks.sample_text",
                "trainer.max_steps=1",
                "trainer.val_check_interval=1",
            ],
            run,
        )
    )
    return (run / "checkpoints" / "last.ckpt").read_bytes()


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_a_checkpoint(tmp_path, data):
    path = tmp_path / "random.ckpt"
    path.write_bytes(data)
    with no_hang(), pytest.raises(CheckpointError):
        load_checkpoint(path)


@FUZZ
@given(
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=8),
)
def test_damaged_real_checkpoint(tmp_path, real_checkpoint, cut, flips):
    data = bytearray(real_checkpoint)
    for where, xor in flips:
        data[int(where * (len(data) - 1))] ^= xor
    if cut < 0.5:  # half the examples are truncated as well
        data = data[: int(cut * 2 * len(data))]
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(bytes(data))
    with no_hang():
        try:
            loaded = load_checkpoint(path)
        except CheckpointError:
            return  # refused with a sentence for the user
    assert loaded.model is not None  # the damage only touched tensor bytes


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_as_a_tokenizer_file(tmp_path, data):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(data)
    with no_hang(), pytest.raises(TokenizerError):
        load_tokenizer(path)


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2", None])
@FUZZ
@given(value=JSON)
def test_random_json_as_a_tokenizer_file(tmp_path, value, kind):
    if kind is not None and isinstance(value, dict):
        value = {**value, "kind": kind}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(value))
    with no_hang(), suppress(TokenizerError):  # loading may also succeed: then it is a tokenizer
        load_tokenizer(path)


class _Text:
    """A one-document source: what a store needs from ``gptlab.data.documents``."""

    skipped, total_bytes = 0, len(TEXT)

    def documents(self, skip: int = 0):
        yield from [TEXT][skip:]

    def fingerprint(self) -> str:
        return "fuzz"

    def describe(self) -> str:
        return "the fuzz text"


def _store(folder: Path) -> CharTokenizer:
    tok = CharTokenizer.from_corpus(TEXT)
    prepare_store(_Text(), tok, folder, SplitRule("tail", 0.1), progress=False)
    return tok


@FUZZ
@given(
    shard=st.binary(max_size=2048),
    manifest=st.none() | st.binary(max_size=256) | JSON.map(lambda v: json.dumps(v).encode()),
)
def test_a_garbage_token_store_is_refused_in_one_sentence(tmp_path, shard, manifest):
    folder = tmp_path / "store"
    if not folder.exists():
        tok = _store(folder)
    tok = CharTokenizer.from_corpus(TEXT)
    (folder / "train_000000.bin").write_bytes(shard)
    if manifest is not None:
        (folder / MANIFEST).write_bytes(manifest)
    with no_hang(), pytest.raises(DataError) as caught:
        open_store(folder, tok.fingerprint())
    assert "\n" not in str(caught.value)
    (folder / MANIFEST).unlink(missing_ok=True)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


def test_a_store_with_a_right_size_but_wrong_ids_is_refused(tmp_path):
    """Same length, valid header, different ids: only the ids' checksum can tell."""
    tok = _store(tmp_path / "store")
    shard = tmp_path / "store" / "train_000000.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:1024] + bytes(reversed(data[1024:])))
    with pytest.raises(DataError, match="do not match the checksum"):
        open_store(tmp_path / "store", tok.fingerprint())
    assert len(open_store(tmp_path / "store", tok.fingerprint(), verify=False).split("train"))


def test_checkpoint_io_error_types_are_stable(tmp_path):
    """An empty file and a folder are refused with the same error type as a damaged file."""
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for path in (empty, tmp_path, Path(tmp_path / "missing.ckpt")):
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="not a gptlab checkpoint"):
        load_checkpoint(tmp_path / "list.ckpt")
