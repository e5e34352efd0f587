"""Mean, standard deviation and Welch's t-test, in plain Python (SciPy is a dev extra only).

Speed-record tables accept a change only when it beats the baseline over several seeds
with a one-sided Welch t-test: the seed-to-seed spread of a final loss (a few
thousandths) is larger than many ablations' effect. Welch's test does not assume the
two groups have the same variance. The Student-t tail comes from the regularised
incomplete beta function (continued fraction, Numerical Recipes 6.4), accurate to
~1e-12, and is checked against ``scipy.stats.ttest_ind(equal_var=False)`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class TTest:
    t: float
    df: float
    p: float


def welch_t_test(a: Sequence[float], b: Sequence[float], alternative: str = "less") -> TTest:
    """Welch's t-test of mean(a) against mean(b).

    ``alternative="less"``: the p-value of seeing a t this low if a were not lower than b
    (for a loss: a beats b); ``"greater"`` the mirror image; ``"two-sided"`` either way.
    Needs two values in each group; returns NaN where the test is undefined (too few
    values, or no spread at all in either group).
    """
    if alternative not in ("less", "greater", "two-sided"):
        raise ValueError(f"alternative={alternative!r}; use less, greater or two-sided")
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return TTest(math.nan, math.nan, math.nan)
    va, vb = std(a) ** 2 / na, std(b) ** 2 / nb
    se2 = va + vb
    if se2 == 0:
        return TTest(math.nan, math.nan, math.nan)
    t = (mean(a) - mean(b)) / math.sqrt(se2)
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    if alternative == "less":
        p = student_t_cdf(t, df)
    elif alternative == "greater":
        p = student_t_cdf(-t, df)
    else:
        p = 2 * student_t_cdf(-abs(t), df)
    return TTest(t, df, min(p, 1.0))


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (``df`` need not be whole)."""
    x = df / (df + t * t)
    tail = 0.5 * regularized_incomplete_beta(df / 2, 0.5, x)  # P(T <= -|t|)
    return tail if t < 0 else 1.0 - tail


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by the continued fraction on whichever side converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def _beta_continued_fraction(
    a: float, b: float, x: float, max_iter: int = 500, eps: float = 1e-15
) -> float:
    """Lentz's method for the continued fraction of I_x(a, b)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
