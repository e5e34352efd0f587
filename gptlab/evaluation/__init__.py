"""Downstream evaluation: benchmark tasks (a YAML plus a data file each), the scorer, the
in-loop callback and the lm-evaluation-harness adapter.

Import the pieces from their modules (``gptlab.evaluation.tasks``, ``.scorer``,
``.evaluator``, ``.results``); this package imports nothing, so ``gptlab.analysis`` can
read result files without torch.
"""
