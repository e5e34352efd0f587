"""Encode batches of documents on every core, in order, with a bounded number in flight.

``ParallelEncoder.map`` takes an iterator of batches (lists of texts) and yields, for
each batch in the same order, its ids and UTF-8 byte counts. At most ``2 x workers``
batches are submitted ahead of the one being consumed, so memory stays bounded
however long the corpus is (``multiprocessing.Pool.imap`` would read its whole input
ahead). Three ways to run:

- ``processes`` (what ``auto`` picks): worker processes. On Linux, from a process with
  no other thread, they are forked: they start at once with the parent's tokenizer
  already loaded. Elsewhere (macOS, or a parent with threads, which fork could
  deadlock) they are spawned and rebuild the tokenizer from ``to_dict()``. Measured faster than threads even for tiktoken, whose Rust core
  releases the GIL: every call takes it back to build the Python list of ids, so two
  threads on two cores reach ~1.2x one thread where two processes reach ~1.9x
  (``benchmarks/data_prepare.py``, RESULTS.md).
- ``threads``: a thread pool calling the tokenizer (less memory: one copy of the encoding).
- ``inline``: no pool, for one CPU or small inputs.

The number of workers comes from the CPU affinity mask (what a job scheduler gave
this process), not ``os.cpu_count()`` (every core of the machine).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np

from gptlab.data.shards import shard_dtype
from gptlab.data.sources import DataError
from gptlab.tokenizer import Tokenizer, tokenizer_from_dict

Encoded = list[
    tuple[np.ndarray, int]
]  # per text: its ids (the shard dtype) and its UTF-8 byte count
MODES = ("auto", "threads", "processes", "inline")


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def encode_texts(tokenizer: Tokenizer, texts: list[str], ordinary: bool = True) -> Encoded:
    """Each text's ids, in the dtype its shard stores (uint16 for GPT-2), and its UTF-8 bytes.

    ``ordinary``: special tokens written in the text stay text (documents); without it,
    ``<|endoftext|>`` written in one long text is the separator its author meant.
    """
    encode = tokenizer.encode_ordinary if ordinary else tokenizer.encode
    dtype = shard_dtype(tokenizer.vocab_size)
    return [
        (np.asarray(encode(t), dtype=dtype), len(t.encode("utf-8", errors="surrogatepass")))
        for t in texts
    ]


_worker_tokenizer: Tokenizer | None = None


def _start_worker(tokenizer: Tokenizer | dict[str, Any]) -> None:
    global _worker_tokenizer
    _worker_tokenizer = (
        tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer_from_dict(tokenizer)
    )


def _start_method() -> str:
    """fork where it is safe and fast (Linux, no other thread alive), else spawn."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _encode_in_worker(texts: list[str], ordinary: bool) -> Encoded:
    assert _worker_tokenizer is not None
    return encode_texts(_worker_tokenizer, texts, ordinary)


def choose_mode(mode: str, workers: int) -> str:
    """``auto``: worker processes, or inline on one CPU."""
    if mode not in MODES:
        raise DataError(f"data.encode_mode={mode!r}; use one of {', '.join(MODES)}")
    if workers <= 1:
        return "inline"
    return "processes" if mode == "auto" else mode


class ParallelEncoder:
    """``with ParallelEncoder(tok) as enc: for encoded in enc.map(batches): ...``"""

    def __init__(
        self,
        tokenizer: Tokenizer,
        workers: int | None = None,
        mode: str = "auto",
        ordinary: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.ordinary = ordinary
        self.workers = max(1, workers if workers is not None else cpus_available())
        self.mode = choose_mode(mode, self.workers)
        self._pool: Executor | None = None
        if self.mode == "threads":
            self._pool = ThreadPoolExecutor(self.workers)
        elif self.mode == "processes":
            method = _start_method()
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_start_worker,
                initargs=(tokenizer if method == "fork" else tokenizer.to_dict(),),
            )

    def _submit(self, texts: list[str]) -> Future[Encoded]:
        assert self._pool is not None
        if self.mode == "threads":
            return self._pool.submit(encode_texts, self.tokenizer, texts, self.ordinary)
        return self._pool.submit(_encode_in_worker, texts, self.ordinary)

    def map(self, batches: Iterable[list[str]]) -> Iterator[Encoded]:
        if self._pool is None:
            for texts in batches:
                yield encode_texts(self.tokenizer, texts, self.ordinary)
            return
        pending: deque[Future[Encoded]] = deque()
        for texts in batches:
            pending.append(self._submit(texts))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ParallelEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
