"""``python -m gptlab.lm_eval``: lm-evaluation-harness's own command line, with gptlab models.

    python -m gptlab.lm_eval --model gptlab --model_args ckpt=outputs/.../checkpoints/last.ckpt \\
        --tasks hellaswag,arc_easy --batch_size 32 --device cuda
    python -m gptlab.lm_eval --model gptlab --model_args ckpt=<export folder>,max_gen_toks=64 \\
        --tasks my_task --include_path my_tasks/ --limit 100 --output_path results/

Every argument is lm-eval's (``lm-eval run --help``); this module only imports
``gptlab.evaluation.lm_eval_model``, which registers the ``gptlab`` model type, and then
hands the arguments to lm-eval's CLI (``lm_eval.__main__.cli_evaluate``).

Why not plain ``lm_eval --model gptlab``: lm-eval 0.4.13 finds models only in its own
registry, which its ``lm_eval.models`` package fills from a fixed table; its registry can
hold ``importlib.metadata`` entry points, but nothing ever reads an entry-point group from
installed packages, so no plugin package can add a model to the ``lm_eval`` command.
The model must be registered in the same process first, which is what this wrapper does.
From Python the same holds: ``import gptlab.evaluation.lm_eval_model`` and then
``lm_eval.simple_evaluate(model="gptlab", model_args="ckpt=...", tasks=[...])``.

A gptlab error (a missing checkpoint, a bad model argument, lm_eval not installed) is one
``error:`` line and exit status 1, as in every ``python -m gptlab.<command>``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gptlab.cli import entry_point


@entry_point(return_code=True)
def main(argv: Sequence[str] | None = None) -> int:
    """Run lm-eval's CLI on ``argv`` (default ``sys.argv[1:]``) with the gptlab model registered."""
    from lm_eval.__main__ import cli_evaluate

    import gptlab.evaluation.lm_eval_model  # noqa: F401  (registers --model gptlab)

    args = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ["lm-eval", *args]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as e:  # argparse's --help and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
