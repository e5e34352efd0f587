"""Summary of a speedrun timing: is gptlab's speedrun at most half nanoGPT's time, and
is its mean whole-validation loss at most the target, over the seeds?

Reads the per-seed table `benchmarks/vs_nanogpt.sh` writes (MODE=speedrun), one line a
seed: ``seed nanogpt_seconds nanogpt_loss gptlab_seconds gptlab_loss``. Both claims are
one-sided one-sample t-tests over the seeds, so a lucky seed cannot carry them:

    python benchmarks/speedrun_stats.py table.tsv --target 1.90 --max-ratio 0.5
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gptlab.analysis.stats import mean, std, student_t_cdf


@dataclass(frozen=True)
class OneSample:
    mean: float
    se: float
    t: float
    p: float


def one_sample_below(values: Sequence[float], bound: float) -> OneSample:
    """One-sided t-test that the mean of ``values`` is below ``bound``.

    p is the chance of a mean this low if the true mean were ``bound`` or more. NaN
    where undefined (fewer than two values, or no spread).
    """
    n = len(values)
    if n < 2:
        return OneSample(mean(values) if n else math.nan, math.nan, math.nan, math.nan)
    m = mean(values)
    se = std(values) / math.sqrt(n)
    if se == 0:
        return OneSample(m, 0.0, math.nan, math.nan)
    t = (m - bound) / se
    return OneSample(m, se, t, student_t_cdf(t, n - 1))


def read_table(path: str) -> list[tuple[int, float, float, float, float]]:
    """The per-seed rows; a line that does not hold five numbers is refused by name."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            try:
                seed, ns, nl, gs, gl = parts
                rows.append((int(seed), float(ns), float(nl), float(gs), float(gl)))
            except ValueError:
                raise ValueError(
                    f"{path}:{lineno}: expected 'seed nanogpt_s nanogpt_loss gptlab_s "
                    f"gptlab_loss', got {line.strip()!r}; rerun benchmarks/vs_nanogpt.sh"
                ) from None
    return rows


def report(rows, target: float, max_ratio: float) -> str:
    """The table and the two tests as text."""
    out = [f"{'seed':>6} {'nanoGPT s':>10} {'nanoGPT val':>12} {'gptlab s':>10} {'gptlab val':>11}"]
    for seed, ns, nl, gs, gl in rows:
        out.append(f"{seed:>6} {ns:>10.1f} {nl:>12.4f} {gs:>10.1f} {gl:>11.4f}")
    ratios = [gs / ns for _, ns, _, gs, _ in rows]
    loss = one_sample_below([r[4] for r in rows], target)
    nano = one_sample_below([r[2] for r in rows], target)
    ratio = one_sample_below(ratios, max_ratio)
    out.append(
        f"time ratio gptlab/nanoGPT: {ratio.mean:.3f} ± {ratio.se:.3f} (p[ratio <= {max_ratio}] = {ratio.p:.2g})"
    )
    out.append(
        f"gptlab whole-val loss: {loss.mean:.4f} ± {loss.se:.4f} (p[mean <= {target}] = {loss.p:.2g})"
    )
    out.append(f"nanoGPT whole-val loss: {nano.mean:.4f} ± {nano.se:.4f}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--target", type=float, default=1.90)
    parser.add_argument("--max-ratio", type=float, default=0.5)
    args = parser.parse_args()
    print(report(read_table(args.table), args.target, args.max_ratio))


if __name__ == "__main__":
    main()
