"""Reading finished runs back and comparing them (used by ``python -m gptlab.compare``).

runs.py         a run folder -> ``Run`` (overrides, config, metric rows, summary)
curves.py       validation curves against steps, tokens, FLOPs or wall time; budgets
stats.py        mean, std, Welch's t-test and McNemar's paired test (no SciPy needed)
downstream.py   a run's benchmark results: per-task accuracy ± se, per-item outcomes
report.py       the comparison table: rows, seed groups, text and CSV
plot.py         the comparison figure
wandb_source.py the same ``Run`` objects from the wandb API
"""

from __future__ import annotations

from gptlab.errors import GptlabError


class CompareError(GptlabError, ValueError):
    """A comparison that cannot be made as asked; the message names the fix."""
