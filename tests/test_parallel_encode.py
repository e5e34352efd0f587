"""The parallel encoder: worker processes and threads give exactly the inline ids, in order."""

from __future__ import annotations

import numpy as np
import pytest

from gptlab.data.parallel_encode import ParallelEncoder, choose_mode, cpus_available
from gptlab.data.sources import DataError
from gptlab.tokenizer import CharTokenizer
from tests.conftest import R50K, needs_r50k

TEXTS = [f"document {i}: " + "to be or not to be, " * (i % 7) for i in range(200)]


def encoded(tokenizer, mode: str) -> list[tuple[list[int], int]]:
    batches = [TEXTS[i : i + 9] for i in range(0, len(TEXTS), 9)]
    with ParallelEncoder(tokenizer, workers=2, mode=mode) as encoder:
        assert encoder.mode == mode
        return [(ids.tolist(), n) for batch in encoder.map(iter(batches)) for ids, n in batch]


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_workers_give_the_inline_ids_in_order(mode):
    tok = CharTokenizer.from_corpus("".join(TEXTS))
    expected = [(tok.encode(t), len(t.encode())) for t in TEXTS]
    assert encoded(tok, "inline") == expected
    assert encoded(tok, mode) == expected


@needs_r50k
def test_gpt2_in_worker_processes_matches_tiktoken(tmp_path):
    from gptlab.tokenizer import GPT2Tokenizer

    assert R50K.is_file()
    tok = GPT2Tokenizer()
    assert [ids for ids, _ in encoded(tok, "processes")] == [tok.encode(t) for t in TEXTS]


def test_auto_uses_processes_on_several_cpus_and_inline_on_one():
    assert choose_mode("auto", 2) == "processes"
    assert choose_mode("threads", 4) == "threads"
    assert choose_mode("auto", 1) == "inline" and choose_mode("processes", 1) == "inline"
    assert cpus_available() >= 1
    with pytest.raises(DataError, match="data.encode_mode='fast'"):
        choose_mode("fast", 2)


def test_the_ids_are_uint32_arrays_with_byte_counts():
    tok = CharTokenizer.from_corpus("héllo")
    with ParallelEncoder(tok, workers=1) as encoder:
        ((ids, n),) = next(encoder.map(iter([["héllo"]])))
    assert ids.dtype == np.uint16 and n == len("héllo".encode())  # the shard dtype


@needs_r50k
def test_documents_keep_a_written_end_of_text_as_text_and_one_long_text_does_not():
    """A web page containing "<|endoftext|>" must not end its document there; a text whose
    author joined documents with it keeps them apart (GPT2Tokenizer.encode's convention)."""
    from gptlab.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    text = "one<|endoftext|>two"
    ((ids, _),) = next(ParallelEncoder(tok, workers=1).map(iter([[text]])))
    assert tok.eot_id not in ids.tolist() and tok.decode(ids.tolist()) == text
    ((ids, _),) = next(ParallelEncoder(tok, workers=1, ordinary=False).map(iter([[text]])))
    assert tok.eot_id in ids.tolist()
