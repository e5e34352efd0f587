"""The LightningDataModule: text in, random token windows out.

Steps, in order: read the corpus (embedded, downloaded or local), build the tokenizer
from it (or load a saved one), split the text into train/validation at
``1 - val_fraction`` of its characters (for a character tokenizer this is exactly
nanoGPT's split of the encoded array), tokenize each split once into a cached
memory-mapped file, and serve random windows. Validation always uses the same
``val_batches`` batches so that its loss is cheap and comparable between runs.

Loading: ``num_workers`` and ``pin_memory`` default to null, which means "decide from
the device the batches go to". On a CUDA device the loader uses a few worker processes
(``AUTO_WORKERS_PER_GPU`` at most, never more than the CPUs per device) and pinned
memory, so the next batches are gathered and pinned while the GPU computes. On a CPU
it uses neither: a batch is a gather of a few thousand ids from a memory-mapped array,
tens of microseconds, and workers would only add their start-up time
(``benchmarks/data_throughput.py`` measures both). An explicit value always wins.
Workers never change the batches: batch ``i`` depends only on ``(seed, rank, i)`` and
the workers take turns in order (see ``gptlab/data/windows.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from gptlab.data.loader_settings import check_num_workers
from gptlab.data.names import check_plain_name
from gptlab.data.sources import DataError, default_cache_dir, download, embedded_text, read_local
from gptlab.data.token_cache import cached_tokens
from gptlab.data.windows import RandomWindows
from gptlab.tokenizer import CharTokenizer, Tokenizer, TokenizerError, tokenizer_from_dict

TokenizerFactory = Callable[..., Tokenizer]
AUTO_WORKERS_PER_GPU = (
    4  # what num_workers=null gives each CUDA device (fewer if the CPUs are fewer)
)


def cpus_available() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_num_workers(on_cuda: bool, devices: int = 1) -> int:
    """``data.num_workers=null``: none on a CPU, up to ``AUTO_WORKERS_PER_GPU`` per CUDA device."""
    if not on_cuda:
        return 0
    return min(AUTO_WORKERS_PER_GPU, max(1, cpus_available() // max(1, devices)))


class TextDataModule(L.LightningDataModule):
    """Serve (x, y) windows of ``block_size`` tokens from one text corpus.

    ``source`` is ``"embedded"`` (Python's own pydoc topics; no network), ``"url"``
    (download ``url`` once, checked against ``sha256``) or ``"file"`` (``path``: a text
    file or a folder of .txt files). Setting ``path`` always wins, so a downloaded
    corpus can be replaced by a local copy with ``data.path=...``.
    """

    def __init__(
        self,
        name: str,
        block_size: int,
        batch_size: int,
        source: str = "embedded",
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        filename: str | None = None,
        cache_dir: str | None = None,
        val_fraction: float = 0.1,
        val_batches: int = 20,
        seed: int = 0,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        errors: str = "strict",
        global_batch_tokens: int | None = None,
    ) -> None:
        super().__init__()
        # Tokens of one optimizer step over every device: the Trainer's builder derives the
        # gradient-accumulation steps from it (gptlab/build.py); the loaders serve micro-batches.
        self.global_batch_tokens = global_batch_tokens
        if not 0.0 < val_fraction < 1.0:
            raise DataError(
                f"data.val_fraction={val_fraction} must be between 0 and 1 (exclusive), e.g. 0.1"
            )
        for key, value in (
            ("block_size", block_size),
            ("batch_size", batch_size),
            ("val_batches", val_batches),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(
                    f"data.{key}={value!r} must be a positive whole number (at least 1)"
                )
        check_num_workers(num_workers)
        self.name = check_plain_name("data.name", name, "my_corpus")  # it becomes a cache file name
        self.block_size = block_size
        self.batch_size = batch_size
        self.source = source
        self.path = path
        self.url = url
        self.sha256 = sha256
        self.filename = filename
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.val_fraction = val_fraction
        self.val_batches = val_batches
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.errors = errors
        self.tokenizer: Tokenizer | None = None
        self.train_tokens: np.ndarray | None = None
        self.val_tokens: np.ndarray | None = None
        self.val_bytes_per_token: float | None = None
        self.start_batch = (
            0  # the first training batch to draw; a resumed run sets it (module.on_load_checkpoint)
        )
        self._text: str | None = None

    # -- corpus and tokenizer ---------------------------------------------------------
    def load_text(self) -> str:
        """The whole corpus as one string (read once, then kept)."""
        if self._text is None:
            self._text = self._read()
            if not self._text.strip():
                raise DataError(
                    f"the corpus {self._describe()} is empty; give data.path a file with text in it"
                )
        return self._text

    def _read(self) -> str:
        if self.path:
            return read_local(self.path, errors=self.errors)
        if self.source == "embedded":
            return embedded_text()
        if self.source == "url":
            if not self.url:
                raise DataError("data.source=url needs data.url (and data.sha256 to verify it)")
            dest = self.cache_dir / "corpora" / (self.filename or Path(self.url).name)
            return read_local(download(self.url, dest, self.sha256), errors=self.errors)
        if self.source == "file":
            raise DataError(
                "data.source=file needs data.path=<a text file or a folder of .txt files>"
            )
        raise DataError(f"unknown data.source={self.source!r}; use embedded, url or file")

    def _describe(self) -> str:
        return str(self.path) if self.path else f"{self.name!r} ({self.source})"

    def split_text(self) -> tuple[str, str]:
        text = self.load_text()
        cut = int(len(text) * (1.0 - self.val_fraction))
        return text[:cut], text[cut:]

    def build_tokenizer(self, factory: TokenizerFactory | Tokenizer) -> Tokenizer:
        """Make the run's tokenizer; a factory learns from the training split only.

        A BPE that has seen the validation text compresses it better than unseen text,
        which would flatter ``val/bpb``; a character vocabulary learned from the
        training split names any character that only the validation text has.
        """
        self.tokenizer = (
            factory if isinstance(factory, Tokenizer) else factory(text=self.split_text()[0])
        )
        return self.tokenizer

    def use_saved_tokenizer(self, data: Mapping[str, Any]) -> Tokenizer:
        """Use the tokenizer a run was trained with (``Tokenizer.to_dict()`` data from its checkpoint).

        A resumed run must not fit a new tokenizer: after an edit of the corpus a
        character vocabulary would come out different and silently remap the ids the
        weights were trained on. A corpus with characters the saved character
        vocabulary lacks is refused here, naming them, before anything is tokenized.
        """
        tokenizer = tokenizer_from_dict(dict(data))
        if isinstance(tokenizer, CharTokenizer):
            unknown = tokenizer.unknown_characters(self.load_text())
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:10])
                raise TokenizerError(
                    f"the corpus {self._describe()} now has {len(unknown)} character(s) that the run's saved "
                    f"character tokenizer does not know ({shown}): the corpus changed since the run started; "
                    "resume with the corpus the run was trained on, or start a new run"
                )
        self.tokenizer = tokenizer
        return tokenizer

    # -- Lightning hooks --------------------------------------------------------------
    def prepare_data(self) -> None:
        """Tokenize and cache both splits (Lightning calls this once per node, before setup)."""
        self._tokenize()

    def setup(self, stage: str | None = None) -> None:
        if self.train_tokens is None:
            self._tokenize()

    def _tokenize(self) -> None:
        if self.tokenizer is None:
            raise RuntimeError("call build_tokenizer() before using the data module")
        train_text, val_text = self.split_text()
        key = f"{self.name}-val{self.val_fraction:g}"
        self.train_tokens = cached_tokens(
            train_text, self.tokenizer, self.cache_dir, key + "-train"
        )
        self.val_tokens = cached_tokens(val_text, self.tokenizer, self.cache_dir, key + "-val")
        for split, tokens in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(tokens) < self.block_size + 1:
                raise DataError(
                    f"the {split} split of {self._describe()} has {len(tokens)} tokens, fewer than "
                    f"block_size + 1 = {self.block_size + 1}; use a longer corpus, a smaller "
                    "model.block_size, or a larger data.val_fraction"
                )
        self.val_bytes_per_token = len(val_text.encode("utf-8", errors="surrogatepass")) / len(
            self.val_tokens
        )

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.global_rank if trainer is not None else 0

    def _on_cuda(self) -> bool:
        """Whether the batches go to a CUDA device: the trainer's device once attached, else whether CUDA exists."""
        trainer = getattr(self, "trainer", None)
        strategy = getattr(trainer, "strategy", None) if trainer is not None else None
        if strategy is not None:
            return strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def loader_settings(self) -> tuple[int, bool]:
        """(num_workers, pin_memory) with null resolved for this run's device."""
        on_cuda = self._on_cuda()
        workers = self.num_workers
        if workers is None:
            trainer = getattr(self, "trainer", None)
            devices = getattr(trainer, "num_devices", None) if trainer is not None else None
            workers = auto_num_workers(on_cuda, devices or max(1, torch.cuda.device_count()))
        pin = self.pin_memory if self.pin_memory is not None else on_cuda
        return workers, pin

    def _loader(self, dataset: RandomWindows) -> DataLoader:
        """A loader with its own generator.

        Each new DataLoader iterator draws a seed from a generator; without one of its
        own it takes it from torch's global generator, so every validation would shift
        the dropout randomness of later training steps and a resumed run (which skips
        the validations before it) would draw differently from an uninterrupted one.
        Workers persist between validations (a new set per validation would cost their
        start-up time each time).
        """
        workers, pin = self.loader_settings()
        return DataLoader(
            dataset,
            batch_size=None,  # the dataset already yields whole batches
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(dataset.seed),
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_tokens is not None
        windows = RandomWindows(
            self.train_tokens,
            self.block_size,
            self.batch_size,
            self.seed,
            self._rank(),
            start_batch=self.start_batch,
        )
        return self._loader(windows)

    def val_dataloader(self) -> DataLoader:
        assert self.val_tokens is not None
        windows = RandomWindows(
            self.val_tokens,
            self.block_size,
            self.batch_size,
            self.seed + 1_000_003,
            self._rank(),
            self.val_batches,
        )
        return self._loader(windows)
