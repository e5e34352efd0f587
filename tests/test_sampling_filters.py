"""The logit filters on their own: exact sets kept, ties, edge values, composition order."""

from __future__ import annotations

import math

import pytest
import torch

from gptlab.sampling import (
    SamplerConfig,
    apply_penalties,
    apply_temperature,
    filter_logits,
    min_p_filter,
    sample_next,
    top_k_filter,
    top_p_filter,
)

INF = float("inf")


def kept(logits: torch.Tensor) -> list[list[int]]:
    """Token ids with a finite logit, per row."""
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


def test_filters_do_not_modify_their_input():
    logits = torch.randn(3, 10)
    before = logits.clone()
    for out in (
        top_k_filter(logits, 2),
        top_p_filter(logits, 0.5),
        min_p_filter(logits, 0.3),
        apply_temperature(logits, 0.0),
        apply_temperature(logits, 0.5),
        apply_penalties(logits, torch.ones(3, 10), 1.3, 0.5, 0.2),
    ):
        assert out.shape == logits.shape
    assert torch.equal(logits, before)


# --- top-k ---------------------------------------------------------------------------


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    assert kept(top_k_filter(logits, 2)) == [[1, 3]]
    assert torch.equal(top_k_filter(logits, 2)[0, [1, 3]], logits[0, [1, 3]])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_top_k_ties_at_the_kth_value_keep_exactly_k_lowest_ids_first(k):
    # 1.0 is tied four times; whatever k, exactly k tokens survive, the tied ones by id.
    logits = torch.tensor([[1.0, 5.0, 1.0, 1.0, -2.0, 1.0]])
    expected = sorted([1, 0, 2, 3, 5][:k])
    assert kept(top_k_filter(logits, k)) == [expected]


def test_top_k_all_equal_logits():
    assert kept(top_k_filter(torch.zeros(2, 6), 3)) == [[0, 1, 2], [0, 1, 2]]


def test_top_k_per_row_and_k_at_least_vocab_is_a_no_op():
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert kept(top_k_filter(logits, 1)) == [[2], [0]]
    assert torch.equal(top_k_filter(logits, 3), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)


def test_top_k_with_fewer_finite_logits_than_k_keeps_no_mass_on_minus_inf():
    logits = torch.tensor([[0.0, -INF, 1.0, -INF]])
    probs = torch.softmax(top_k_filter(logits, 3), -1)
    assert probs[0, 1] == 0 and probs[0, 3] == 0


@pytest.mark.parametrize("k", [0, -1])
def test_top_k_below_one_raises(k):
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(1, 4), k)


# --- top-p ---------------------------------------------------------------------------


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.49, [0]),  # 0.5 alone already reaches it
        (0.51, [0, 1]),  # needs the second token
        (0.79, [0, 1]),  # 0.5 + 0.3
        (0.81, [0, 1, 2]),
        (0.94, [0, 1, 2]),  # 0.95
        (0.96, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3]),
        (1e-9, [0]),  # always at least one token
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    probs = [0.5, 0.3, 0.15, 0.05]
    assert kept(top_p_filter(logits_of(probs), p)) == [expected]


def test_top_p_is_order_independent_and_ties_go_to_lower_ids():
    # 0.3 tied for tokens 1 and 3: reaching p=0.6 needs one of them, the lower id wins.
    logits = logits_of([0.1, 0.3, 0.3, 0.3])
    assert kept(top_p_filter(logits, 0.6)) == [[1, 2]]
    shuffled = logits_of([0.15, 0.05, 0.5, 0.3])
    assert kept(top_p_filter(shuffled, 0.8)) == [[2, 3]]


def test_top_p_keeps_one_token_on_a_peaked_row():
    logits = torch.tensor([[0.0, 50.0, 0.0], [1.0, 1.0, 1.0]])
    assert kept(top_p_filter(logits, 0.9)) == [[1], [0, 1, 2]]


@pytest.mark.parametrize("p", [0.0, -0.1, 1.01, 2.0])
def test_top_p_outside_0_1_raises(p):
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(torch.zeros(1, 4), p)


# --- min-p ---------------------------------------------------------------------------


def test_min_p_keeps_tokens_above_a_fraction_of_the_best():
    probs = [0.4, 0.25, 0.15, 0.2]
    assert kept(min_p_filter(logits_of(probs), 0.45)) == [[0, 1, 3]]  # threshold 0.18
    assert kept(min_p_filter(logits_of(probs), 1.0)) == [[0]]
    assert torch.equal(min_p_filter(logits_of(probs), 0.0), logits_of(probs))


def test_min_p_scales_with_confidence():
    peaked = logits_of([0.9, 0.05, 0.05])
    flat = logits_of([0.34, 0.33, 0.33])
    assert kept(min_p_filter(peaked, 0.1)) == [[0]]
    assert kept(min_p_filter(flat, 0.1)) == [[0, 1, 2]]


@pytest.mark.parametrize("m", [-0.01, 1.5])
def test_min_p_outside_0_1_raises(m):
    with pytest.raises(ValueError, match="min_p"):
        min_p_filter(torch.zeros(1, 4), m)


# --- temperature ---------------------------------------------------------------------


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.allclose(apply_temperature(logits, 2.0), logits / 2)
    assert torch.equal(apply_temperature(logits, 1.0), logits)


def test_temperature_zero_keeps_only_the_argmax_lowest_id_on_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert kept(apply_temperature(logits, 0.0)) == [[1]]


def test_small_temperature_approaches_argmax():
    logits = torch.randn(4, 50)
    probs = torch.softmax(apply_temperature(logits, 1e-3), -1)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))
    assert torch.all(probs.max(-1).values > 0.999)


def test_negative_temperature_raises():
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(1, 3), -0.5)


# --- penalties -----------------------------------------------------------------------


def test_repetition_penalty_lowers_seen_tokens_whatever_their_sign():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    counts = torch.tensor([[1.0, 3.0, 0.0, 0.0]])
    out = apply_penalties(logits, counts, repetition_penalty=2.0)
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_presence_and_frequency_penalties():
    logits = torch.zeros(1, 4)
    counts = torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    assert apply_penalties(logits, counts, presence_penalty=0.5).tolist() == [
        [0.0, -0.5, -0.5, 0.0]
    ]
    assert apply_penalties(logits, counts, frequency_penalty=0.5).tolist() == [
        [0.0, -0.5, -1.5, 0.0]
    ]


def test_penalties_at_defaults_are_a_no_op():
    logits = torch.randn(2, 5)
    assert apply_penalties(logits, torch.ones(2, 5)) is logits


# --- composition ---------------------------------------------------------------------


def test_temperature_zero_is_greedy_whatever_top_k_top_p_min_p_say():
    logits = torch.randn(8, 40)
    sampler = SamplerConfig(temperature=0.0, top_k=5, top_p=0.3, min_p=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert torch.equal(sample_next(logits, sampler, generator=g), logits.argmax(-1))
    assert kept(filter_logits(logits, sampler)) == [[i] for i in logits.argmax(-1).tolist()]


def test_filters_compose_in_the_documented_order():
    # penalties -> temperature -> top-k -> top-p -> min-p, checked against hand application.
    torch.manual_seed(0)
    logits = torch.randn(3, 30) * 2
    counts = torch.randint(0, 3, (3, 30)).float()
    s = SamplerConfig(
        temperature=0.7,
        top_k=12,
        top_p=0.8,
        min_p=0.05,
        repetition_penalty=1.3,
        presence_penalty=0.2,
        frequency_penalty=0.1,
    )
    by_hand = apply_penalties(logits, counts, 1.3, 0.2, 0.1)
    by_hand = min_p_filter(top_p_filter(top_k_filter(by_hand / 0.7, 12), 0.8), 0.05)
    assert torch.allclose(filter_logits(logits, s, counts), by_hand, equal_nan=False)


def test_top_p_is_computed_after_temperature():
    # At T=1 the best token alone has p=0.5 < 0.6; at T=0.5 it has 0.5^2/(0.5^2+..) > 0.6.
    logits = logits_of([0.5, 0.25, 0.25])
    assert kept(filter_logits(logits, SamplerConfig(top_p=0.6))) == [[0, 1]]
    sharp = SamplerConfig(temperature=0.5, top_p=0.6)
    assert kept(filter_logits(logits, sharp)) == [[0]]
    assert math.isclose(0.25 / (0.25 + 2 * 0.0625), 2 / 3)


def test_top_k_then_top_p_renormalises_over_the_top_k():
    # After top-2, probs are 0.625/0.375: top_p=0.6 keeps one token, not both.
    logits = logits_of([0.5, 0.3, 0.2])
    assert kept(filter_logits(logits, SamplerConfig(top_k=2, top_p=0.6))) == [[0]]
    assert kept(filter_logits(logits, SamplerConfig(top_p=0.6))) == [[0, 1]]
