"""Loader throughput of the batch orders (random, sequential, packed) against a training step's.

    python benchmarks/data_loader.py                          # ~200M tokens in 4 shards, B=12 and 8, T=1024
    python benchmarks/data_loader.py --tokens 50_000_000 --batches 100 --rounds 3

Writes a token store of ``--tokens`` random ids (uint16) in ``--shards`` llm.c shards to a
temporary folder, cut into documents of lognormal lengths that each start with GPT-2's
end-of-text, and opens it as one ``TokenView`` (memory-mapped; nothing is loaded). For each
order and batch shape it iterates ``RankBatches`` (what the DataLoader iterates, here in
the process itself: ``num_workers=0``) and reports batches/s and tokens/s (the median of
``--rounds`` rounds of ``--batches`` batches after a warm-up). ``packed, rank 0 of 8``
serves one rank of eight: it packs every row but gathers an eighth of them, the case
where packing costs most per served token.

The reference is one training step's tokens/s: a few bare fwd+bwd+AdamW steps of the
default CPU model (``gptlab/conf/model/nano.yaml`` at its own block size, float32), and the
GPU figure for GPT-2 124M from benchmarks/RESULTS.md (359,237 tokens/s through Lightning).
The goal (issue 16): every order serves at least 10x the step's tokens/s.

Also printed: the packed order's crop (ids dropped / ids in the epoch) against a greedy
sequential packer on the same documents, and how long resuming far ahead takes (packing
every group before the position).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import random_batches, run_bare  # noqa: E402

from gptlab.data.orders import (  # noqa: E402
    PackedOrder,
    RandomOrder,
    RankBatches,
    SequentialOrder,
    greedy_cropped_fraction,
)
from gptlab.data.shards import open_shard, write_shard  # noqa: E402
from gptlab.data.token_view import TokenView  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EOT, VOCAB = 50256, 50257
GPU_STEP_TOKENS_PER_S = 359_237  # GPT-2 124M, 16 x 1024, bf16, compiled, one H200 (RESULTS.md)


def write_store(
    folder: Path, n_tokens: int, n_shards: int, mean_doc: float, seed: int
) -> TokenView:
    """Random ids in documents of lognormal lengths, written as shards; documents may cross shards."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(
        2, rng.lognormal(np.log(mean_doc), 1.0, size=4 * n_tokens // int(mean_doc))
    )
    lengths = lengths.astype(np.int64)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_tokens) + 1]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_tokens = int(lengths.sum())
    cuts = np.linspace(0, n_tokens, n_shards + 1).astype(np.int64)
    shards, doc_starts = [], []
    for k in range(n_shards):
        a, b = int(cuts[k]), int(cuts[k + 1])
        ids = rng.integers(0, EOT, size=b - a, dtype=np.uint16)
        mine = starts[(starts >= a) & (starts < b)] - a
        ids[mine] = EOT
        write_shard(folder / f"train_{k:06d}.bin", ids, VOCAB)
        shards.append(open_shard(folder / f"train_{k:06d}.bin"))
        doc_starts.append(mine)
    return TokenView(shards, doc_starts)


def time_loader(batches: RankBatches, n: int, rounds: int, warmup: int = 5) -> float:
    """Median batches/s of ``rounds`` rounds of ``n`` batches from one iterator."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            next(it)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def step_tokens_per_s(steps: int, vocab: int) -> tuple[float, dict]:
    """A bare training step's tokens/s for the nano model (float32, CPU, data.batch_size=12)."""
    from gptlab.model import GPT, GPTConfig

    m = OmegaConf.to_container(OmegaConf.load(REPO / "gptlab/conf/model/nano.yaml"))
    assert isinstance(m, dict)
    m.pop("defaults", None)
    m["vocab_size"] = vocab
    case = dict(model=m, batch_size=12, lr=1e-3, betas=(0.9, 0.99))
    batches = random_batches(vocab, 12, m["block_size"], steps + 2)
    round_ = run_bare(GPT(GPTConfig(**m)).train(), case, batches, "32-true", "cpu")
    times = round_(steps + 2)[2:]  # the first two steps warm up
    return 12 * m["block_size"] / statistics.median(times), m


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=200_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--mean-doc", type=float, default=400.0, help="lognormal median document length"
    )
    parser.add_argument("--batches", type=int, default=200, help="timed batches a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--buffer-docs", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        view = write_store(Path(tmp), args.tokens, args.shards, args.mean_doc, seed=0)
        n_docs = len(view.doc_starts)
        print(
            f"store: {len(view):,} tokens in {args.shards} shards, {n_docs:,} documents "
            f"(lognormal, median {args.mean_doc:g}), written in {time.perf_counter() - t0:.1f} s"
        )
        step_small, m = step_tokens_per_s(args.steps, vocab=96)
        step_gpt2, _ = step_tokens_per_s(args.steps, vocab=VOCAB)
        step = max(step_small, step_gpt2)
        print(
            f"training step, nano model ({m['n_layer']}x{m['n_embd']}, block {m['block_size']}), batch 12, "
            f"fp32, {torch.get_num_threads()} CPU threads: {step_small:,.0f} tokens/s (vocab 96), "
            f"{step_gpt2:,.0f} tokens/s (vocab {VOCAB}); GPU target (124M, RESULTS.md): {GPU_STEP_TOKENS_PER_S:,}"
        )
        print()
        print(
            "| order | B x T | batches/s | tokens/s | / CPU step (the faster) | / GPU step (359k) |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for B in (12, 8):
            T = 1024
            cases = [
                ("random", RandomOrder(view, T, B, seed=0), 1),
                ("sequential", SequentialOrder(view, T, B, seed=0), 1),
                ("packed", PackedOrder(view, T, B, seed=0, buffer_docs=args.buffer_docs), 1),
                (
                    "packed, rank 0 of 8",
                    PackedOrder(view, T, B, seed=0, buffer_docs=args.buffer_docs),
                    8,
                ),
            ]
            for name, order, world in cases:
                rate = time_loader(RankBatches(order, 0, world), args.batches, args.rounds)
                tokens = rate * B * T
                print(
                    f"| {name} | {B} x {T} | {rate:,.0f} | {tokens:,.0f} | {tokens / step:,.0f}x | "
                    f"{tokens / GPU_STEP_TOKENS_PER_S:.1f}x |"
                )
        print()
        order = PackedOrder(view, 1024, 12, seed=0, buffer_docs=args.buffer_docs)
        t0 = time.perf_counter()
        crop = order.epoch_cropped_fraction(0)
        seek = time.perf_counter() - t0
        _, lengths = view.document_bounds()
        greedy = greedy_cropped_fraction(lengths, 1024)
        print(
            f"crop at T=1024 over one epoch: best-fit (buffer {args.buffer_docs} documents) {crop:.1%}, "
            f"greedy sequential {greedy:.1%}"
        )
        print(
            f"resume seek: packing the whole epoch ({n_docs:,} documents) took {seek:.1f} s "
            f"= {seek / n_docs * 1e6:.2f} s per million documents"
        )


if __name__ == "__main__":
    main()
