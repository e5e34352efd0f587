"""The batch orders: pure functions of (seed, chunk), the same global batches at any world size."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gptlab.data.orders import (
    FirstTokensOrder,
    MixtureOrder,
    PackedOrder,
    RandomOrder,
    RankBatches,
    SequentialOrder,
    greedy_cropped_fraction,
    interleave_pattern,
    pack_best_fit,
    shares,
    start_micro,
)
from gptlab.data.shards import open_shard, write_shard
from gptlab.data.sources import DataError
from gptlab.data.token_view import TokenView

EOT = 50256
T, B = 16, 4


def make_documents(n_docs: int, mean: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ids of ``n_docs`` documents of lognormal lengths, each starting with EOT, and their starts."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(2, rng.lognormal(np.log(mean), 1.0, size=n_docs).astype(np.int64))
    ids = rng.integers(0, EOT, size=int(lengths.sum()), dtype=np.int64).astype(np.uint16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ids[starts] = EOT
    return ids, starts


def sharded_view(tmp_path, ids: np.ndarray, starts: np.ndarray, cuts: list[int]) -> TokenView:
    """The same ids written as real shards, cut at ``cuts`` (documents and windows cross them)."""
    bounds = [0, *cuts, len(ids)]
    shards, doc_starts = [], []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = tmp_path / f"shard_{k:03d}.bin"
        write_shard(path, ids[a:b], vocab_size=EOT + 1)
        shards.append(open_shard(path))
        doc_starts.append(starts[(starts >= a) & (starts < b)] - a)
    return TokenView(shards, doc_starts)


@pytest.fixture(scope="module")
def docs() -> tuple[np.ndarray, np.ndarray]:
    return make_documents(400, mean=12.0)


@pytest.fixture
def view(tmp_path, docs) -> TokenView:
    ids, starts = docs
    return sharded_view(tmp_path, ids, starts, [len(ids) // 3 + 5, 2 * len(ids) // 3 + 7])


def build(kind: str, view: TokenView) -> object:
    if kind == "random":
        return RandomOrder(view, T, B, seed=3)
    if kind == "sequential":
        return SequentialOrder(view, T, B, seed=3)
    if kind == "packed":
        return PackedOrder(view, T, B, seed=3, buffer_docs=50)
    if kind == "first_tokens":
        return FirstTokensOrder(view, T, B)
    sources = [SequentialOrder(view, T, 3, seed=1), RandomOrder(view, T, 2, seed=2)]
    return MixtureOrder(sources, [0.7, 0.3], B, period=10)


KINDS = ["random", "sequential", "packed", "first_tokens", "mixture"]


# -- the reference: the random windows gptlab drew before orders existed ------------------


def reference_batch(tokens: np.ndarray, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``RandomWindows(tokens, T, B, seed, rank=0).batch(c)`` as it was written (windows.py, 8157219)."""
    rng = np.random.default_rng((seed, 0, c))
    offsets = rng.integers(0, len(tokens) - T, size=B)
    windows = torch.from_numpy(tokens[offsets[:, None] + np.arange(T + 1)].astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


def test_random_order_is_random_windows_bit_for_bit(tmp_path) -> None:
    ids = np.random.default_rng(0).integers(0, 65, size=5000).astype(np.uint16)
    write_shard(tmp_path / "train.bin", ids, vocab_size=65)
    tokens = open_shard(tmp_path / "train.bin")
    order = RandomOrder(TokenView([tokens]), T, B, seed=7)
    for c in range(6):
        x, y = reference_batch(tokens, c, seed=7)
        rows = order.chunk(c)
        assert rows.dtype == np.int64 and rows.shape == (B, T + 1)
        assert torch.equal(torch.from_numpy(rows[:, :-1]), x)
        assert torch.equal(torch.from_numpy(rows[:, 1:]), y)
    stream = list(RankBatches(order, 0, 1, num_batches=4))
    assert all(
        torch.equal(a, b)
        for (a, _), (b, _) in zip(stream, [reference_batch(tokens, i, seed=7) for i in range(4)])
    )


# -- world size and resume ---------------------------------------------------------------


def rank_stream(order, rank: int, world: int, start: int, count: int) -> list[torch.Tensor]:
    batches = iter(RankBatches(order, rank, world, start_micro=start))
    return [torch.cat([x, y[:, -1:]], dim=1) for x, y, *_ in (next(batches) for _ in range(count))]


@pytest.mark.parametrize("kind", KINDS)
def test_global_steps_are_the_same_at_1_2_and_4_processes(kind, view) -> None:
    steps, per_step = 3, 4  # A * W = 4 chunks an optimizer step
    by_world = {}
    for world in (1, 2, 4):
        accumulate = per_step // world
        order = build(kind, view)  # built cold for each world size
        streams = [rank_stream(order, r, world, 0, steps * accumulate) for r in range(world)]
        chunks = {
            m * world + r: streams[r][m] for r in range(world) for m in range(steps * accumulate)
        }
        by_world[world] = [
            [chunks[c] for c in range(s * per_step, (s + 1) * per_step)] for s in range(steps)
        ]
    for world in (2, 4):
        for step_1, step_w in zip(by_world[1], by_world[world]):
            assert all(torch.equal(a, b) for a, b in zip(step_1, step_w))


@pytest.mark.parametrize("kind", KINDS)
def test_resume_reproduces_the_tail_even_at_another_world_size(kind, view) -> None:
    whole = rank_stream(build(kind, view), 0, 1, 0, 12)
    assert torch.equal(whole[5], torch.from_numpy(build(kind, view).chunk(5)))
    position = 8  # chunks consumed globally, e.g. two steps at A * W = 4
    for world in (1, 2, 4):
        order = build(kind, view)
        first = start_micro(position, world)
        for r in range(world):
            for m, rows in enumerate(rank_stream(order, r, world, first, 4 // world)):
                assert torch.equal(rows, whole[(first + m) * world + r])
    with pytest.raises(DataError, match="multiple"):
        start_micro(6, 4)


def test_shares_are_what_each_rank_iterates(view) -> None:
    order = build("sequential", view)
    got = shares(order, 2, 3)
    for r in range(2):
        assert all(
            torch.equal(torch.from_numpy(a), b)
            for a, b in zip(got[r], rank_stream(order, r, 2, 0, 3))
        )


def test_orders_are_pure_functions_of_the_chunk(view) -> None:
    for kind in KINDS:
        warm = build(kind, view)
        for c in range(30):
            warm.chunk(c)
        cold = build(kind, view)
        assert np.array_equal(cold.chunk(17), warm.chunk(17)), kind
        assert np.array_equal(pickle.loads(pickle.dumps(warm)).chunk(3), cold.chunk(3)), kind
        assert np.array_equal(warm.chunk(2), build(kind, view).chunk(2)), kind


# -- sequential ------------------------------------------------------------------------


def test_sequential_covers_every_window_once_per_epoch(view, docs) -> None:
    ids = docs[0].astype(np.int64)
    order = SequentialOrder(view, T, B, seed=0)
    n = order.n_windows
    assert n == (len(ids) - 1) // T
    epoch0, epoch1 = order.window_index(0, n), order.window_index(n, n)
    assert np.array_equal(np.sort(epoch0), np.arange(n))
    assert np.array_equal(np.sort(epoch1), np.arange(n))
    assert not np.array_equal(epoch0, epoch1)
    rows = order.rows(0, n)  # windows cross the shard boundaries
    for row, k in zip(rows, epoch0):
        assert np.array_equal(row, ids[k * T : k * T + T + 1])
    across = np.concatenate([order.rows(n - 2, 2), order.rows(n, 2)])
    assert np.array_equal(order.rows(n - 2, 4), across)  # a chunk may span the epoch boundary
    assert order.epoch_of_row(n - 1) == 0 and order.epoch_of_row(n) == 1


# -- packed ------------------------------------------------------------------------------


def test_pack_best_fit_by_hand() -> None:
    piece_doc, piece_len, row_ptr, dropped = pack_best_fit([5, 3, 2, 7], 8)
    # row 0: the 7 fits, then nothing fits the 1 left: the shortest (2) is cropped to 1
    # row 1: the 5, then the 3
    assert piece_doc.tolist() == [3, 2, 0, 1] and piece_len.tolist() == [7, 1, 5, 3]
    assert row_ptr.tolist() == [0, 2, 4] and dropped == 1
    _, piece_len, _, dropped = pack_best_fit([20], 8)  # too long: cropped to the row
    assert piece_len.tolist() == [8] and dropped == 12
    _, piece_len, _, dropped = pack_best_fit([20, 3, 4], 8)  # 4 + 3, then 1 of the 20
    assert piece_len.tolist() == [4, 3, 1] and dropped == 19
    _, _, row_ptr, dropped = pack_best_fit([3, 2], 8)  # too few ids for a row: dropped
    assert row_ptr.tolist() == [0] and dropped == 5
    assert greedy_cropped_fraction([5, 3, 2, 7], 7) == pytest.approx(
        1 / 17
    )  # rows of 8: 5+3 | 2+6(drop 1)


def test_packed_rows_start_at_documents_and_are_document_prefixes(view, docs) -> None:
    ids, starts = docs
    ids = ids.astype(np.int64)
    bounds = dict(zip(starts.tolist(), np.diff(np.append(starts, len(ids))).tolist()))
    order = PackedOrder(view, T, B, seed=1, buffer_docs=50)
    rows = order.rows(0, 60)
    documents = order.row_documents(0, 60)
    for j, row in enumerate(rows):
        pieces = order.row_pieces(j)
        assert sum(n for _, n in pieces) == T + 1  # full rows, no padding
        assert all(s in bounds and n <= bounds[s] for s, n in pieces)  # prefixes of documents
        assert np.array_equal(row, np.concatenate([ids[s : s + n] for s, n in pieces]))
        assert row[0] == EOT
        expected = np.repeat(np.arange(len(pieces)), [n for _, n in pieces])
        assert np.array_equal(documents[j], expected)
    # every id of an epoch is either in a row or counted as cropped
    crop = order.epoch_cropped_fraction(0)
    rows_in_epoch = order._cum_rows[order.groups_per_epoch]
    assert rows_in_epoch * (T + 1) == round((1 - crop) * len(ids))
    assert order.epoch_of_row(rows_in_epoch - 1) == 0 and order.epoch_of_row(rows_in_epoch) == 1
    assert not np.array_equal(order.rows(0, 4), order.rows(rows_in_epoch, 4))


def test_best_fit_crops_no_more_than_greedy_at_1024() -> None:
    ids, starts = make_documents(6000, mean=400.0, seed=5)
    view = TokenView([ids], [starts])
    order = PackedOrder(view, 1024, 8, seed=0, buffer_docs=1000)
    lengths = np.diff(np.append(starts, len(ids)))
    packed, greedy = order.epoch_cropped_fraction(0), greedy_cropped_fraction(lengths, 1024)
    assert 0 < packed < greedy
    assert order.cropped_fraction == pytest.approx(packed)


def test_packed_needs_documents() -> None:
    with pytest.raises(DataError, match="document boundaries"):
        PackedOrder(TokenView([np.zeros(100, dtype=np.uint16)]), T, B)


# -- document numbers, mixtures, validation ----------------------------------------------


def test_doc_ids_count_documents_within_each_row(view) -> None:
    for kind in ("random", "sequential", "packed"):
        x, y, doc = next(iter(RankBatches(build(kind, view), 0, 1, doc_ids=True)))
        assert x.shape == y.shape == doc.shape == (B, T) and doc.dtype == torch.int64
        assert torch.all(doc[:, 0] == 0)
        # a new document begins exactly where x holds an end-of-text id (past the row's start)
        starts_here = (x[:, 1:] == EOT).long()
        assert torch.equal(doc[:, 1:] - doc[:, :-1], starts_here), kind


def test_mixture_follows_its_weights_deterministically(view) -> None:
    pattern = interleave_pattern([0.5, 0.3, 0.2], 10)
    assert np.bincount(pattern).tolist() == [5, 3, 2]
    assert interleave_pattern([0.5, 0.3, 0.2], 10).tolist() == pattern.tolist()
    a, b = SequentialOrder(view, T, 3, seed=1), RandomOrder(view, T, 2, seed=2)
    mix = MixtureOrder([a, b], [0.75, 0.25], B, period=8)
    source, k = mix.source_rows(0, 80)
    assert np.bincount(source).tolist() == [60, 20]
    assert k[source == 0].tolist() == list(range(60)) and k[source == 1].tolist() == list(range(20))
    rows = mix.rows(0, 80)
    assert np.array_equal(rows[source == 0], a.rows(0, 60))
    assert np.array_equal(rows[source == 1], b.rows(0, 20))
    other = MixtureOrder(
        [SequentialOrder(view, T, 3, seed=1), RandomOrder(view, T, 2, seed=2)],
        [0.75, 0.25],
        B,
        period=8,
    )
    assert np.array_equal(other.chunk(9), mix.chunk(9))


def test_validation_is_the_same_set_at_any_world_size(view) -> None:
    val_batches = 5  # not a multiple of 2 or 4: ranks get unequal shares
    order = RandomOrder(view, T, B, seed=1_000_003)
    seen = {}
    for world in (1, 2, 4):
        got = {}
        for r in range(world):
            batches = RankBatches(order, r, world, num_batches=val_batches)
            xs = [x for x, _ in batches]
            assert len(xs) == len(batches)
            got.update({m * world + r: x for m, x in enumerate(xs)})
        seen[world] = got
        assert sorted(got) == list(range(val_batches))
        assert all(torch.equal(got[c], seen[1][c]) for c in got)


def test_first_tokens_order_is_a_fixed_slice(view, docs) -> None:
    ids = docs[0].astype(np.int64)
    order = FirstTokensOrder(view, T, B, num_tokens=10 * T * B + 1)
    assert order.num_chunks == 10
    rows = np.concatenate([x.numpy() for x, _ in RankBatches(order, 0, 1)])
    assert np.array_equal(rows.reshape(-1), ids[: 10 * T * B])
    halves = [list(RankBatches(order, r, 2)) for r in range(2)]
    assert len(halves[0]) == len(halves[1]) == 5
    with pytest.raises(DataError, match="no batch"):
        FirstTokensOrder(view, T, B, num_tokens=T)


def test_loader_workers_give_the_same_stream(view) -> None:
    batches = RankBatches(build("packed", view), 1, 2, start_micro=3, num_batches=40, doc_ids=True)
    alone = list(batches)
    with_workers = list(DataLoader(batches, batch_size=None, num_workers=2))
    assert len(alone) == len(with_workers) == len(batches) == 17
    for a, b in zip(alone, with_workers):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
