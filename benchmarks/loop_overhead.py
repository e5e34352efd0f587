"""The training loop's own cost per step, in milliseconds, with the model's compute removed.

    python benchmarks/loop_overhead.py                 # a 1-layer, 16-wide model: the loop's cost only
    python benchmarks/loop_overhead.py --case shakespeare_char

On a real model the difference between Lightning and a bare loop is a few percent of a
step, below the noise of a shared 2-core machine. On a model so small that its compute
takes ~2 ms, what remains is the loops' Python, which is the overhead itself. Variants,
run in alternating rounds:

* ``bare``           the plain PyTorch step (train_throughput.py's bare loop);
* ``lightning``      the real GPTLightningModule + Trainer, logging every 10 steps;
* ``lightning+cb``   plus gptlab.train's per-step callbacks and CSV logger;
* ``lightning-nolog`` with ``self.log`` turned into a no-op: the price of logging.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import CASES, random_batches, run_bare, run_lightning  # noqa: E402

TINY = dict(
    model=dict(
        vocab_size=65, block_size=8, n_layer=1, n_head=1, n_embd=16, bias=False, dropout=0.0
    ),
    batch_size=2,
    lr=1e-3,
    betas=(0.9, 0.99),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=["tiny", *sorted(CASES)], default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from gptlab.model import GPT, GPTConfig
    from gptlab.training.module import GPTLightningModule

    case = TINY if args.case == "tiny" else CASES[args.case]
    m = case["model"]
    batches = random_batches(m["vocab_size"], case["batch_size"], m["block_size"], args.steps)
    without_log = run_lightning(case, batches, "32-true", False, "cpu")

    def lightning_nolog(steps: int) -> list[float]:
        log = GPTLightningModule.log
        GPTLightningModule.log = lambda self, *a, **k: None
        try:
            return without_log(steps)
        finally:
            GPTLightningModule.log = log

    variants = {
        "bare": run_bare(GPT(GPTConfig(**m)).train(), case, batches, "32-true", "cpu"),
        "lightning": run_lightning(case, batches, "32-true", False, "cpu"),
        "lightning+cb": run_lightning(case, batches, "32-true", False, "cpu", full=True),
        "lightning-nolog": lightning_nolog,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, round_ in variants.items():
            times[name].extend(round_(args.steps)[10:])
    bare = statistics.median(times["bare"])
    print(f"case {args.case}: {args.rounds} rounds x {args.steps} steps, median ms per step")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"{name:<16} {ms * 1e3:8.3f} ms   +{(ms - bare) * 1e3:6.3f} ms over bare")


if __name__ == "__main__":
    main()
