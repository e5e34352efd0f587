"""Data-path throughput: tokens/s the real training DataLoader serves, against a training step's.

    python benchmarks/data_throughput.py                                  # shakespeare_char and gpt2 (4 x 256)
    python benchmarks/data_throughput.py --case gpt2_gpu --step-tokens-per-s 359237
    python benchmarks/data_throughput.py --workers 0 2 4 --batches 2000 --rounds 5

Each case builds ``gptlab.data.TextDataModule`` from the real config (``gptlab/conf/train.yaml``
composed by Hydra with the case's overrides, Tiny Shakespeare read from a local file,
GPT-2's ranks from a local tiktoken cache: nothing is downloaded), prepares a fresh token
store, and iterates ``train_dataloader()`` — the DataLoader Lightning receives —
alone: ``--warmup`` batches, then ``--rounds`` x ``--batches`` timed batches (the median
round is reported). ``start s`` is the time from creating the iterator to its first batch
(what workers cost to start). The ratio is to a training step's tokens/s: measured here by
a few bare steps of the matching model (``train_throughput.py``'s bare loop, fp32, not
compiled), or given with ``--step-tokens-per-s``. The goal (issue 9) is a data path that
serves at least 10x the step's tokens/s, so that loading never shows in a step's time.

What the data path does, checked in the code and by this script:

* a store's shards are read-only ``np.memmap``s of the ids (``gptlab/data/store.py``;
  printed below as ``memory-mapped``): the corpus is not loaded into the process;
* a batch gathers only its ``batch * (block + 1)`` ids with one fancy index and casts just
  those to int64 (``gptlab/data/orders.py``): no per-batch copy of the corpus;
* a worker process shares the mapping (fork) or reopens it by file name (spawn,
  forkserver): the dataset pickles to a few hundred bytes (``pickled``), not the corpus.

The measured tables are in benchmarks/RESULTS.md ("Data path and activation memory"). On a CPU, worker processes
deliver fewer batches than the training process makes itself, because every batch crosses a
process boundary through shared memory; hence ``data.num_workers=null`` means 0 workers there.

Cases: ``shakespeare_char`` is nanoGPT's CPU recipe (batch 12 x 64, character tokenizer);
``gpt2`` is GPT-2's tokenizer and gpt124m at a CPU-sized batch (4 x 256); ``gpt2_gpu`` the
same at nanoGPT's GPU batch (16 x 1024; its step is slow to measure on a CPU, so give
``--step-tokens-per-s`` from ``train_throughput.py --case gpt124m_gpu`` there).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import CASES as STEP_CASES  # noqa: E402
from train_throughput import device_name, random_batches, run_bare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = "tinyshakespeare.txt"
R50K = "r50k_base.tiktoken"
R50K_CACHE_NAME = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"  # tiktoken's cache name for r50k_base (sha1 of its URL)

# name: (Hydra overrides on top of gptlab/conf/train.yaml, train_throughput case of the matching step, needs GPT-2's ranks)
CASES = {
    "shakespeare_char": (["experiment=shakespeare_char"], "shakespeare_char", False),
    "gpt2": (
        [
            "data=shakespeare",
            "tokenizer=gpt2",
            "model=gpt124m",
            "model.block_size=256",
            "data.batch_size=4",
        ],
        "gpt124m",
        True,
    ),
    "gpt2_gpu": (
        [
            "data=shakespeare",
            "tokenizer=gpt2",
            "model=gpt124m",
            "model.block_size=1024",
            "data.batch_size=16",
        ],
        "gpt124m_gpu",
        True,
    ),
}
GOAL = 10.0  # the data path should serve at least this many times the step's tokens/s


def check_shared_data(folder: Path, cases: list[str]) -> None:
    """Refuse, in one sentence, when the local corpus or GPT-2's ranks are missing."""
    needed = [SHAKESPEARE] + ([R50K] if any(CASES[c][2] for c in cases) else [])
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        sys.exit(
            f"error: {', '.join(str(folder / m) for m in missing)} not found; this benchmark never downloads, "
            "so pass --shared-data <folder holding tinyshakespeare.txt and r50k_base.tiktoken>"
        )


def build_datamodule(case: str, shared: Path, cache_dir: Path):
    """The real TextDataModule of ``case``, composed from gptlab/conf/ as ``python -m gptlab.train`` would."""
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [
        *CASES[case][0],
        f"data.path={shared / SHAKESPEARE}",
        f"paths.data_dir={cache_dir}",
        f"paths.output_dir={cache_dir / 'run'}",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "gptlab" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    dm = hydra.utils.instantiate(cfg.data)
    dm.build_tokenizer(hydra.utils.instantiate(cfg.tokenizer))
    return dm


def time_loader(dm, workers: int, warmup: int, batches: int, rounds: int) -> tuple[float, float]:
    """(seconds to the first batch, median seconds per batch) of the train DataLoader with ``workers``."""
    dm.num_workers = workers
    t0 = time.perf_counter()
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    start = time.perf_counter() - t0
    for _ in range(warmup):
        next(it)
    per_batch = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        per_batch.append((time.perf_counter() - t0) / batches)
    del it, loader  # stops the workers
    return start, statistics.median(per_batch)


def step_tokens_per_s(case: str, steps: int, device: str) -> float:
    """tokens/s of bare training steps (forward, backward, clipping, AdamW) of the case's model."""
    from gptlab.model import GPT, GPTConfig

    step_case = STEP_CASES[CASES[case][1]]
    m = step_case["model"]
    warmup = 2
    batches = random_batches(
        m["vocab_size"], step_case["batch_size"], m["block_size"], steps + warmup
    )
    torch.manual_seed(0)
    round_ = run_bare(GPT(GPTConfig(**m)).train(), step_case, batches, "32-true", device)
    seconds = statistics.median(round_(steps + warmup)[warmup:])
    return step_case["batch_size"] * m["block_size"] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--case",
        nargs="+",
        choices=sorted(CASES),
        default=None,
        help="default: shakespeare_char and gpt2 (gpt2_gpu instead of gpt2 on a GPU)",
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to time"
    )
    parser.add_argument("--batches", type=int, default=500, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--step-tokens-per-s",
        type=float,
        default=None,
        help="a training step's tokens/s to compare with (default: measure bare steps here)",
    )
    parser.add_argument(
        "--step-steps", type=int, default=5, help="timed bare steps when measuring the step"
    )
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("GPTLAB_SHARED_DATA") or REPO.parent / "shared" / "data"),
        help="folder with tinyshakespeare.txt and r50k_base.tiktoken "
        "(default: $GPTLAB_SHARED_DATA, else ../shared/data beside the repository)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="token cache folder (default: a fresh temporary one)",
    )
    args = parser.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = args.case or ["shakespeare_char", "gpt2_gpu" if device == "cuda" else "gpt2"]
    shared = args.shared_data.expanduser().resolve()
    check_shared_data(shared, cases)

    tmp = Path(tempfile.mkdtemp(prefix="gptlab-data-bench-"))
    try:
        tiktoken_dir = tmp / "tiktoken"
        tiktoken_dir.mkdir()
        if (shared / R50K).is_file():
            shutil.copy(shared / R50K, tiktoken_dir / R50K_CACHE_NAME)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(
            tiktoken_dir
        )  # tiktoken finds the ranks there: no download
        cache_dir = args.cache_dir.expanduser().resolve() if args.cache_dir else tmp / "cache"
        run(args, cases, shared, cache_dir, device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(
    args: argparse.Namespace, cases: list[str], shared: Path, cache_dir: Path, device: str
) -> None:
    from gptlab.data.orders import RandomOrder, RankBatches

    rows = []
    print(
        f"data path alone, device {device_name('cpu')} (step measured on {device_name(device)}), torch "
        f"{torch.__version__}, {args.rounds} rounds x {args.batches} batches after {args.warmup} warm-up"
    )
    for case in cases:
        dm = build_datamodule(case, shared, cache_dir)
        t0 = time.perf_counter()
        dm.prepare_data()
        built = time.perf_counter() - t0
        again = build_datamodule(case, shared, cache_dir)
        t0 = time.perf_counter()
        again.prepare_data()  # the store exists: open, check sizes, headers and (small) checksums, map
        opened = time.perf_counter() - t0
        dm.setup("fit")
        train = dm.view("train")
        windows = RankBatches(RandomOrder(train, dm.block_size, dm.batch_size), 0, 1)
        mapped = all(isinstance(s, np.memmap) for s in train.shards)
        print(
            f"{case}: {len(train):,} training tokens ({train.dtype}), tokenizer "
            f"{dm.tokenizer.kind} ({dm.tokenizer.vocab_size:,} ids); token store built in {built:.2f} s, "
            f"reopened in {opened:.3f} s; memory-mapped: {mapped}; "
            f"pickled dataset {len(pickle.dumps(windows))} bytes (corpus {len(train) * train.dtype.itemsize:,} bytes); "
            f"pin_memory {dm.loader_settings()[1]}"
        )
        if args.step_tokens_per_s:
            step_tps, how = args.step_tokens_per_s, "given"
        else:
            step_tps, how = (
                step_tokens_per_s(case, args.step_steps, device),
                f"bare fp32 step on {device}",
            )
        print(f"{case}: training step {step_tps:,.0f} tokens/s ({how})")
        tokens = dm.batch_size * dm.block_size
        for workers in args.workers:
            start, seconds = time_loader(dm, workers, args.warmup, args.batches, args.rounds)
            rows.append(
                (
                    case,
                    f"{dm.batch_size} x {dm.block_size}",
                    workers,
                    start,
                    1 / seconds,
                    tokens / seconds,
                    step_tps,
                )
            )

    print()
    print(
        f"{'case':<17} {'batch':>9} {'workers':>7} {'start s':>8} {'batches/s':>10} {'tokens/s':>12} "
        f"{'step tokens/s':>14} {'data/step':>10}  goal >= {GOAL:g}x"
    )
    for case, shape, workers, start, bps, tps, step_tps in rows:
        ratio = tps / step_tps
        print(
            f"{case:<17} {shape:>9} {workers:>7} {start:8.3f} {bps:10.0f} {tps:12,.0f} {step_tps:14,.0f} "
            f"{ratio:9.0f}x  {'met' if ratio >= GOAL else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
