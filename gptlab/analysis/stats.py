"""Mean, standard deviation, Welch's t-test and McNemar's test, in plain Python (SciPy is a dev extra only).

Speed-record tables accept a change only when it beats the baseline over several seeds
with a one-sided Welch t-test: the seed-to-seed spread of a final loss (a few
thousandths) is larger than many ablations' effect. Welch's test does not assume the
two groups have the same variance. The Student-t tail comes from the regularised
incomplete beta function (continued fraction, Numerical Recipes 6.4), accurate to
~1e-12, and is checked against ``scipy.stats.ttest_ind(equal_var=False)`` in the tests.

Two models scored on the *same* benchmark items are compared item by item with
McNemar's test: only the items one got right and the other wrong carry information,
so it sees a one-point accuracy gap on 10,000 items that two independent binomial
error bars (each ±0.005) would call noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MCNEMAR_EXACT_BELOW = 25  # discordant pairs: below this the exact binomial test, else chi-square


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


@dataclass
class McNemar:
    """McNemar's test of two models' per-item correctness on the same items.

    ``b01``: items ``a`` got wrong and ``b`` right; ``b10``: ``a`` right, ``b`` wrong;
    ``n``: paired items. ``method`` is ``"exact"`` (``statistic`` is then ``None``) or
    ``"chi2"`` (``statistic`` is the continuity-corrected chi-square).
    """

    b01: int
    b10: int
    n: int
    p: float
    method: str
    statistic: float | None = None

    @property
    def discordant(self) -> int:
        return self.b01 + self.b10

    @property
    def difference(self) -> float:
        """accuracy(b) - accuracy(a) on the paired items."""
        return (self.b01 - self.b10) / self.n if self.n else math.nan


def mcnemar(a: Sequence[int | bool | float], b: Sequence[int | bool | float]) -> McNemar:
    """Two-sided McNemar test: did ``a`` and ``b`` (1 = right, 0 = wrong, item ``i`` in both at
    position ``i``) get different numbers of items right?

    Under "equally good" each discordant item is a fair coin between ``b01`` and
    ``b10``. With fewer than ``MCNEMAR_EXACT_BELOW`` (25) discordant items the p-value is
    the exact two-sided binomial one, ``min(1, 2 P(X <= min(b01, b10)))`` for
    ``X ~ Binomial(b01 + b10, 1/2)`` (what ``scipy.stats.binomtest`` gives); from 25 on,
    the chi-square with Edwards' continuity correction,
    ``(max(|b01 - b10| - 1, 0))^2 / (b01 + b10)`` on one degree of freedom (the max keeps
    equal counts at p = 1). No discordant items: p = 1.
    """
    if len(a) != len(b):
        raise ValueError(f"mcnemar needs paired outcomes: {len(a)} against {len(b)} items")
    b01 = b10 = 0
    for x, y in zip(a, b):
        if x not in (0, 1) or y not in (0, 1):
            raise ValueError(f"mcnemar takes 0/1 outcomes, got {x!r} and {y!r}")
        if x != y:
            if y:
                b01 += 1
            else:
                b10 += 1
    n, k = b01 + b10, min(b01, b10)
    if n == 0:
        return McNemar(b01, b10, len(a), 1.0, "exact")
    if n < MCNEMAR_EXACT_BELOW:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
        return McNemar(b01, b10, len(a), min(1.0, 2.0 * tail), "exact")
    chi2 = max(abs(b01 - b10) - 1, 0) ** 2 / n
    return McNemar(b01, b10, len(a), math.erfc(math.sqrt(chi2 / 2.0)), "chi2", chi2)
