"""The LightningDataModule: a corpus in, batches of token windows out, in an order you can trust.

Steps, in order: build the tokenizer (a learned one from the training split only),
open the corpus's token store, preparing it first if it does not exist
(``gptlab/data/corpus.py``), and serve batches from its memory-mapped shards in the
order ``data.sampling`` names (``gptlab/data/orders.py``):

    random      random windows, with replacement (the default; nanoGPT's get_batch)
    sequential  every window once per epoch, in a shuffled order
    packed      rows that start at a document start, filled best-fit from a buffer

The order is one global sequence of chunks of ``batch_size`` rows; rank ``r`` of ``W``
takes chunk ``m W + r`` as its ``m``-th micro-batch, so the global batches are the same
at any number of devices, and a checkpoint records how many chunks were consumed so a
resumed run (at the same or another world size) continues exactly there. Validation
always scores the same chunks (``val_batches`` of them, spread over the ranks), or with
``data.val_tokens`` the first that many tokens of the validation split, in order.

Loading: ``num_workers`` and ``pin_memory`` default to null, which means "decide from
the device the batches go to": on a CUDA device a few worker processes
(``AUTO_WORKERS_PER_GPU`` at most, never more than the CPUs per device) and pinned
memory; on a CPU neither (a batch is a gather from a memory map, tens of microseconds,
and workers would only add their start-up time). Workers never change the batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from gptlab.data.corpus import Corpus, build_tokenizer, mixture_parts, training_corpora
from gptlab.data.loader_settings import check_num_workers
from gptlab.data.parallel_encode import cpus_available
from gptlab.data.sources import DataError
from gptlab.data.store import TokenStore
from gptlab.data.token_view import TokenView
from gptlab.tokenizer import CharTokenizer, Tokenizer, TokenizerError, tokenizer_from_dict

TokenizerFactory = Callable[..., Tokenizer]
AUTO_WORKERS_PER_GPU = (
    4  # what num_workers=null gives each CUDA device (fewer if the CPUs are fewer)
)
SAMPLING = ("random", "sequential", "packed")
VAL_SEED_OFFSET = 1_000_003  # validation draws from its own stream


def auto_num_workers(on_cuda: bool, devices: int = 1) -> int:
    """``data.num_workers=null``: none on a CPU, up to ``AUTO_WORKERS_PER_GPU`` per CUDA device."""
    if not on_cuda:
        return 0
    return min(AUTO_WORKERS_PER_GPU, max(1, cpus_available() // max(1, devices)))


class TextDataModule(L.LightningDataModule):
    """Serve (x, y) batches of ``block_size`` tokens from one corpus (or a weighted mixture).

    Every ``data.*`` key not listed here describes the corpus and goes to ``Corpus``;
    ``mixture`` is a list of such settings, each with a ``weight``, interleaved
    deterministically.
    """

    def __init__(
        self,
        name: str,
        block_size: int,
        batch_size: int,
        val_batches: int = 20,
        seed: int = 0,
        sampling: str = "random",
        buffer_docs: int = 1000,
        val_tokens: int | None = None,
        document_ids: bool = False,
        mixture: list[Mapping[str, Any]] | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        global_batch_tokens: int | None = None,
        progress: bool = True,
        **corpus: Any,
    ) -> None:
        super().__init__()
        for key, value in (
            ("block_size", block_size),
            ("batch_size", batch_size),
            ("val_batches", val_batches),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(
                    f"data.{key}={value!r} must be a positive whole number (at least 1)"
                )
        if sampling not in SAMPLING:
            raise DataError(f"data.sampling={sampling!r}; use one of {', '.join(SAMPLING)}")
        check_num_workers(num_workers)
        # Tokens of one optimizer step over every device: the Trainer's builder derives the
        # gradient-accumulation steps from it (gptlab/build.py); the loaders serve micro-batches.
        self.global_batch_tokens = global_batch_tokens
        self.name = name
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_batches = val_batches
        self.seed = seed
        self.sampling = sampling
        self.buffer_docs = buffer_docs
        self.val_tokens = val_tokens
        self.document_ids = document_ids
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.progress = progress
        self.corpus = Corpus(name, **corpus)
        self.mixture = mixture_parts(name, corpus, mixture)
        self.tokenizer: Tokenizer | None = None
        self.stores: list[TokenStore] = []
        self.val_bytes_per_token: float | None = None
        self.start_chunk = 0  # the first chunk of the global order to draw; a resumed run sets it

    def corpora(self) -> list[Corpus]:
        return training_corpora(self.corpus, self.mixture)

    # -- corpus and tokenizer ---------------------------------------------------------
    @property
    def cache_dir(self):
        return self.corpus.cache_dir

    def load_text(self) -> str:
        """The whole corpus as one string (small corpora: learning a tokenizer, checking one)."""
        return self.corpus.full_text()

    def split_text(self) -> tuple[str, str]:
        return self.corpus.split_text()

    def build_tokenizer(self, factory: TokenizerFactory | Tokenizer) -> Tokenizer:
        """Make the run's tokenizer (``corpus.build_tokenizer``: learned from the training split only)."""
        self.tokenizer = build_tokenizer(factory, self.corpus)
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
                    f"the corpus {self.corpus.describe()} now has {len(unknown)} character(s) that the run's saved "
                    f"character tokenizer does not know ({shown}): the corpus changed since the run started; "
                    "resume with the corpus the run was trained on, or start a new run"
                )
        self.tokenizer = tokenizer
        return tokenizer

    # -- the token stores -------------------------------------------------------------
    def prepare_data(self) -> None:
        """Open every corpus's store, preparing what is missing (once per node; others wait)."""
        if self.stores:
            return
        if self.tokenizer is None:
            raise RuntimeError("call build_tokenizer() before using the data module")
        self.stores = [c.open(self.tokenizer, progress=self.progress) for c in self.corpora()]
        for corpus, store in zip(self.corpora(), self.stores):
            for split, view in store.splits.items():
                if len(view) < self.block_size + 1:
                    raise DataError(
                        f"the {'training' if split == 'train' else 'validation'} split of "
                        f"{corpus.describe()} has {len(view)} tokens, fewer than block_size + 1 = "
                        f"{self.block_size + 1}; use a longer corpus, a smaller model.block_size, or a "
                        "larger data.val_fraction"
                    )
        self.val_bytes_per_token = self.stores[0].bytes_per_token("val")

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    def view(self, split: str) -> TokenView:
        """The first corpus's ``split`` as one id sequence (what evaluation scores)."""
        self.prepare_data()
        return self.stores[0].split(split)

    @property
    def identity(self) -> list[str]:
        """The stores' identities, recorded in checkpoints: a resumed run refuses changed data."""
        return [s.identity for s in self.stores]

    # -- orders -----------------------------------------------------------------------
    def order(self, split: str) -> Any:
        from gptlab.data import orders

        views = [s.split(split) for s in self.stores]
        seed = self.seed if split == "train" else self.seed + VAL_SEED_OFFSET
        mode = self.sampling if split == "train" else "random"

        def one(view: TokenView) -> Any:
            if split == "val" and self.val_tokens:
                return orders.FirstTokensOrder(
                    view, self.block_size, self.batch_size, self.val_tokens
                )
            if mode == "sequential":
                return orders.SequentialOrder(view, self.block_size, self.batch_size, seed)
            if mode == "packed":
                return orders.PackedOrder(
                    view, self.block_size, self.batch_size, seed, buffer_docs=self.buffer_docs
                )
            return orders.RandomOrder(view, self.block_size, self.batch_size, seed)

        if len(views) == 1:
            return one(views[0])
        weights = [w for _, w in self.mixture]
        return orders.MixtureOrder([one(v) for v in views], weights, self.batch_size, seed=seed)

    def describe_order(self) -> str:
        """One line about the training order (for packed rows: what share of the tokens is cropped)."""
        line = f"batches: data.sampling={self.sampling}"
        if self.sampling == "packed":
            order = self.order("train")
            parts = order.sources if hasattr(order, "sources") else [order]
            for part in parts:
                part.rows(0, 1)  # packs the first group of documents
            cropped = sum(p.cropped_fraction for p in parts) / len(parts)
            docs = min(parts[0].buffer_docs, parts[0].n_docs)
            line += f", {cropped:.1%} of the tokens cropped (best-fit over {docs:,} documents)"
        return line

    # -- the position in the order (exact resume) -------------------------------------
    def position(self, micro_batches: int) -> dict[str, Any]:
        """What a checkpoint stores: the chunks of the global order consumed so far.

        ``micro_batches`` is how many this rank drew since this launch started; every
        rank draws as many, so the order advanced by that times the world size.
        """
        assert self.tokenizer is not None
        return {
            "chunks": self.start_chunk + micro_batches * self._world_size(),
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "sampling": self.sampling,
            "stores": self.identity,
            "corpora": [c.identity(self.tokenizer) for c in self.corpora()],
        }

    def check_same_data(self, state: Mapping[str, Any] | None) -> None:
        """Before any store is prepared: refuse to resume on data other than the run's, naming what changed.

        Checked from the cheap identities (source fingerprint, tokenizer, split), so a
        changed corpus is refused at once, not after hours of preparing a store for it.
        """
        if not state or not state.get("corpora") or self.tokenizer is None:
            return
        for corpus, before in zip(self.corpora(), state["corpora"]):
            now = corpus.identity(self.tokenizer)
            if before is None or now is None or now == before:
                continue
            changed = [
                what
                for key, what in (
                    ("source", f"the text of {corpus.describe()}"),
                    ("tokenizer", "the tokenizer"),
                    ("split", "the train/validation split (data.val_*)"),
                )
                if now.get(key) != before.get(key)
            ]
            raise DataError(
                f"{' and '.join(changed)} changed since the run was trained, so its token data would "
                "not be the same; resume with the data the run was trained on, or start a new run"
            )

    def resume_at(self, state: Mapping[str, Any] | None, micro_batches: int) -> None:
        """Continue the order where a checkpoint stopped, refusing what would change the batches."""
        world = self._world_size()
        if not state:  # a checkpoint from before positions were recorded: per-rank batches drawn
            self.start_chunk = micro_batches * world
            return
        for key, now in (
            ("sampling", self.sampling),
            ("batch_size", self.batch_size),
            ("block_size", self.block_size),
        ):
            if state.get(key) != now:
                raise DataError(
                    f"the run was trained with data.{key}={state.get(key)} and is resumed with {now}; "
                    f"the batch order would change: resume with data.{key}={state.get(key)}"
                )
        if state.get("stores") and self.identity and list(state["stores"]) != self.identity:
            raise DataError(
                f"the token data of {self.corpus.describe()} changed since the run was trained (its store "
                "identity differs: other text, tokenizer or split); resume with the data the run was "
                "trained on, or start a new run"
            )
        chunks = int(state["chunks"])
        if chunks % world:
            raise DataError(
                f"the run stopped after {chunks} micro-batches of its global order, which {world} devices "
                f"cannot share evenly; resume on a number of devices that divides {chunks}"
            )
        self.start_chunk = chunks

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.world_size) if trainer is not None else 1

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.global_rank if trainer is not None else 0

    # -- loaders ----------------------------------------------------------------------
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

    def _loader(self, dataset: Any, seed: int) -> DataLoader:
        """A loader with its own generator.

        Each new DataLoader iterator draws a seed from a generator; without one of its
        own it takes it from torch's global generator, so every validation would shift
        the dropout randomness of later training steps and a resumed run (which skips
        the validations before it) would draw differently from an uninterrupted one.
        Workers persist between validations.
        """
        workers, pin = self.loader_settings()
        return DataLoader(
            dataset,
            batch_size=None,  # the dataset already yields whole batches
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> DataLoader:
        from gptlab.data.orders import RankBatches

        world = self._world_size()
        batches = RankBatches(
            self.order("train"),
            self._rank(),
            world,
            start_micro=self.start_chunk // world,
            doc_ids=self.document_ids,
        )
        return self._loader(self._checked(batches), self.seed)

    def _checked(self, batches: Any) -> Any:
        assert self.tokenizer is not None
        return IdsWithinVocabulary(batches, self.tokenizer.vocab_size, self.corpus.describe())

    def val_dataloader(self) -> DataLoader:
        from gptlab.data.orders import RankBatches

        order = self.order("val")
        count = self.val_batches
        if self.val_tokens:
            count = order.num_chunks
        batches = RankBatches(
            order, self._rank(), self._world_size(), num_batches=count, doc_ids=self.document_ids
        )
        return self._loader(self._checked(batches), self.seed + VAL_SEED_OFFSET)


class IdsWithinVocabulary(IterableDataset):
    """Refuse a batch holding an id past the vocabulary, in one sentence, before the model sees it.

    Stores gptlab prepared were checked while they were written; shards from other
    tools carry no tokenizer, and an id past the embedding would fail deep inside it
    (a device-side assert on CUDA). Checking a batch's largest id costs microseconds;
    checking every id of a multi-gigabyte store at start-up would cost minutes.
    """

    def __init__(self, batches: Any, vocab_size: int, where: str) -> None:
        self.batches, self.vocab_size, self.where = batches, vocab_size, where

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches:
            largest = max(int(batch[0].max()), int(batch[1].max()))
            if largest >= self.vocab_size:
                raise DataError(
                    f"the token data of {self.where} holds id {largest} but the run's tokenizer has only "
                    f"{self.vocab_size:,} ids; train with the tokenizer the shards were made with"
                )
            yield batch
