"""The isoFLOP fits on synthetic ladders drawn from known laws: exponents, intervals, prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gptlab.analysis import CompareError
from gptlab.analysis.scaling_laws import Point, check_holdout, fit_ladder, optimum

BUDGETS = [1e12, 4e12, 1.6e13, 6.4e13]
TRUE_A, K = 0.5, 0.02  # N_opt = K C^a


def synthetic(rng, budgets=BUDGETS, seeds=3, noise=0.01, width=0.08):
    """Per budget, losses on a parabola in log N around N_opt = K C^a, floor 1.2 C^-0.05."""
    points = []
    for c in budgets:
        centre = math.log(K * c**TRUE_A)
        for step in (-1.5, -0.75, 0.0, 0.75, 1.5):
            n = math.exp(centre + step)
            for seed in range(seeds):
                loss = 6.0 * c**-0.05 + width * step**2 + rng.normal(0, noise)
                points.append(Point(budget=c, params=n, loss=loss, seed=seed))
    return points


def test_noise_free_ladder_recovers_the_exponents_and_the_held_out_loss():
    points = synthetic(np.random.default_rng(0), budgets=[*BUDGETS, 2.56e14], noise=0.0)
    fit = fit_ladder(points, holdout=2.56e14, samples=50)
    assert fit.a.value == pytest.approx(TRUE_A, abs=1e-6)
    assert fit.b.value == pytest.approx(1 - TRUE_A, abs=1e-6)
    assert fit.g.value == pytest.approx(-0.05, abs=1e-6)
    assert fit.prediction.value == pytest.approx(6.0 * 2.56e14**-0.05, rel=1e-6)
    assert check_holdout(fit, points) == pytest.approx(fit.prediction.value, rel=1e-6)


def test_chinchilla_form_losses_give_beta_over_alpha_plus_beta():
    """L = E + A/N^alpha + B/D^beta with D = C/6N: N_opt grows as C^(beta/(alpha+beta))."""
    alpha, beta = 0.34, 0.28
    points = []
    for c in BUDGETS:
        n_star = (alpha * 406.4 / (beta * 410.7 * (c / 6) ** -beta)) ** (1 / (alpha + beta))
        for step in np.linspace(-1, 1, 9):
            n = n_star * math.exp(step)
            points.append(Point(c, n, 1.69 + 406.4 / n**alpha + 410.7 / (c / (6 * n)) ** beta))
    fit = fit_ladder(points, samples=20)
    assert fit.a.value == pytest.approx(beta / (alpha + beta), abs=0.02)


def test_the_90_percent_interval_covers_the_true_exponent_in_most_draws():
    rng = np.random.default_rng(1)
    covered = [fit_ladder(synthetic(rng), samples=200, seed=i).a.covers(TRUE_A) for i in range(50)]
    assert sum(covered) >= 38, sum(
        covered
    )  # 90% nominal; 38/50 allows for the bootstrap's own error


def test_fewer_than_three_sizes_fall_back_to_the_best_one_measured():
    points = [Point(1e12, 1e4, 3.0), Point(1e12, 2e4, 2.9), Point(1e12, 2e4, 2.95)]
    n, loss, _, sizes = optimum(points)
    assert (n, loss, sizes) == (pytest.approx(2e4), pytest.approx(2.925), 2)


def test_a_single_budget_below_the_holdout_is_refused():
    points = synthetic(np.random.default_rng(0), budgets=BUDGETS[:2])
    with pytest.raises(CompareError, match="at least two budgets"):
        fit_ladder(points, holdout=BUDGETS[1])


def test_the_held_out_prediction_interval_covers_the_true_loss_in_most_draws():
    rng, held = np.random.default_rng(2), 2.56e14
    truth = 6.0 * held**-0.05
    fits = [
        fit_ladder(synthetic(rng, budgets=[*BUDGETS, held]), held, samples=200, seed=i)
        for i in range(50)
    ]
    assert sum(f.prediction.covers(truth) for f in fits) >= 38  # 45 of 50 when written
