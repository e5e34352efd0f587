"""What the in-loop downstream evaluation costs a training run, at its documented default cadence.

    python benchmarks/downstream_overhead.py                      # nano model, GPT-2 tokenizer, CPU
    python benchmarks/downstream_overhead.py --scale 1            # the real cadence (long on a CPU)
    python benchmarks/downstream_overhead.py --tasks /my/hellaswag.yaml,piqa --data-dir /my/cache

Trains the default config's model (``model=nano``, ``tokenizer=gpt2``, the pydoc corpus)
through ``gptlab.train.train``, without and with ``callbacks=downstream``, in
alternating rounds, and prints each run's wall time, the evaluation's own seconds and
the overhead ratio. The cadence and limit are read from
``gptlab/conf/callbacks/downstream.yaml``; ``--scale k`` divides both by ``k`` (a run of
``every_n_steps / k`` steps scoring ``limit / k`` items a task at its last step), which
keeps the ratio of evaluation to training work while fitting a CPU's few minutes.

Two overhead figures: ``wall`` compares the medians of the two runs' wall times (what a
user waits, noisy on a shared machine); ``direct`` divides the evaluations' own seconds
(the step files' ``seconds``) by the median training time without them.

The tasks are downloaded once into ``--data-dir`` (default ``GPTLAB_DATA_DIR``), unless
their YAML names a local ``path``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "gptlab" / "conf"


def compose(overrides: list[str], run_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=[*overrides, f"paths.output_dir={run_dir}"])


def one_run(base: list[str], downstream: list[str] | None, work: Path, name: str) -> dict:
    """Train once; wall seconds of ``train(cfg)`` and the evaluations' own seconds."""
    from gptlab.train import train

    run = work / name
    extra = ["callbacks=downstream", *downstream] if downstream is not None else []
    cfg = compose([*base, *extra], run)
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    files = sorted((run / "downstream").glob("step-*.json"))
    bodies = [json.loads(p.read_text()) for p in files]
    summary = json.loads((run / "summary.json").read_text())
    return {
        "wall": wall,
        "train": float(summary["wall_time"]),  # the loop's own clock: start-up excluded
        "eval": sum(b["seconds"] for b in bodies),
        "evals": len(bodies),
        "items": sum(t["n"] for b in bodies[:1] for t in b["tasks"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=int, default=50, help="divide every_n_steps and limit by this"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", default=None, help="comma-separated (default: the YAML's)")
    parser.add_argument("--model", default="nano")
    parser.add_argument("--batch-size", type=int, default=12, help="data.batch_size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a shared CPU)")
    parser.add_argument(
        "--data-dir", default=None, help="GPTLAB_DATA_DIR: corpora, token stores, tasks"
    )
    parser.add_argument("--device", default="cpu", help="trainer.accelerator")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["GPTLAB_DATA_DIR"] = str(Path(args.data_dir).resolve())
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "gptlab"):
        logging.getLogger(name).setLevel(logging.ERROR)

    import torch
    from omegaconf import OmegaConf

    import gptlab.train  # noqa: F401  (registers the config schemas)

    torch.set_num_threads(args.threads)
    preset = OmegaConf.load(CONF / "callbacks" / "downstream.yaml").downstream
    every = max(1, int(preset.every_n_steps) // args.scale)
    limit = max(1, int(preset.limit) // args.scale)
    tasks = args.tasks.split(",") if args.tasks else list(preset.tasks)
    steps = every  # one evaluation, at the last step: the cost of one cadence period
    base = [
        f"model={args.model}",
        "tokenizer=gpt2",
        f"data.batch_size={args.batch_size}",
        "data.val_batches=2",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"trainer.accelerator={args.device}",
        "scheduler.warmup_steps=1",
        "callbacks.progress_bar.refresh_rate=0",
        "~callbacks.sample_text",
        "logger=csv",
    ]
    downstream = [
        f"callbacks.downstream.tasks=[{','.join(tasks)}]",
        f"callbacks.downstream.every_n_steps={every}",
        f"callbacks.downstream.limit={limit}",
        "callbacks.downstream.verbose=false",
    ]
    print(
        f"default cadence every_n_steps={preset.every_n_steps} limit={preset.limit}, scaled by "
        f"1/{args.scale}: {steps} training steps of {args.batch_size} x block_size tokens, "
        f"one evaluation of {limit} items a task ({', '.join(tasks)}); model={args.model}, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    rows: list[tuple[str, int, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Untimed: the token store of the corpus and the tasks' downloads are made once.
        one_run(
            [*base, "trainer.max_steps=1", "trainer.val_check_interval=1"],
            [*downstream, "callbacks.downstream.limit=1"],
            work,
            "warmup",
        )
        for r in range(args.rounds):
            order = ("without", "with") if r % 2 == 0 else ("with", "without")
            for kind in order:
                result = one_run(base, downstream if kind == "with" else None, work, f"{kind}{r}")
                rows.append((kind, r, result))
                print(
                    f"  round {r} {kind:<7} {result['wall']:7.1f} s"
                    + (f"  (evaluation {result['eval']:.1f} s)" if kind == "with" else ""),
                    flush=True,
                )

    def median(kind: str, key: str) -> float:
        return statistics.median(res[key] for k, _, res in rows if k == kind)

    without, with_ = median("without", "wall"), median("with", "wall")
    evaluation = median("with", "eval")
    loop = median("without", "train")
    print()
    print("| run | rounds | median wall (s) | training loop (s) | evaluation (s) |")
    print("|---|---|---|---|---|")
    print(f"| without callback | {args.rounds} | {without:.1f} | {loop:.1f} | - |")
    print(
        f"| callbacks=downstream | {args.rounds} | {with_:.1f} | {median('with', 'train'):.1f} "
        f"| {evaluation:.1f} |"
    )
    print()
    print(
        f"overhead: wall {with_ / without - 1:+.1%} (median with / median without - 1), "
        f"direct {evaluation / loop:.1%} (evaluation seconds / training-loop seconds); "
        f"per evaluation {evaluation / max(1, limit * len(tasks)) * 1000:.0f} ms an item, "
        f"a training step {loop / steps:.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
