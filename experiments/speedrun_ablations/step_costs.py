"""The step time of every configuration of the study, measured side by side.

    OMP_NUM_THREADS=1 python experiments/speedrun_ablations/step_costs.py [--sizes nano wide]

The runs' own wall times are only comparable when the machine's load stayed the same
for all of them, which a two-core machine shared with other work does not promise. So
equal wall-clock is judged from this measurement instead: each configuration composed
exactly as ``run.sh`` composes it (Hydra, the same overrides), its model and optimizer
built by gptlab, then forward, backward and optimizer step on a batch of the recipe's
shape, all configurations in one process taking turns step by step. Writes
``step_costs.json`` (median ms per step by ``size/configuration``), which ``table.py``
reads.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gptlab.model import GPT, GPTConfig
from gptlab.utils.spec import build

HERE = Path(__file__).resolve().parent
CONF = HERE.parent.parent / "gptlab" / "conf"
REFERENCES = {"base": "experiment=shakespeare_char", "modern": "experiment=modern_baseline"}
SIZES = {"nano": [], "wide": ["model.n_layer=6", "model.n_embd=192", "model.n_head=6"]}


def configurations() -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in (HERE / "configs.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, ref, overrides = (part.strip() for part in line.split("|", 2))
            rows.append((name, ref, shlex.split(overrides)))
    return rows


def stepper(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model_cfg = dict(cfg.model)
    model_cfg["vocab_size"] = 65  # Tiny Shakespeare's characters
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_dict(model_cfg)).train()
    optimizer = build(dict(cfg.optimizer), model)
    b, t = int(cfg.data.batch_size), int(model_cfg["block_size"])
    x, y = torch.randint(0, 65, (2, b, t))

    def step() -> float:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES))
    # one step of each configuration per round, so a drifting load falls on all alike
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    steppers = {}
    for size in args.sizes:
        for name, ref, overrides in configurations():
            steppers[f"{size}/{name}"] = stepper([REFERENCES[ref], *SIZES[size], *overrides])
    for step in steppers.values():  # warm-up
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {key: [] for key in steppers}
    for _ in range(args.rounds):
        for key, step in steppers.items():
            times[key] += [step() for _ in range(args.steps)]
    costs = {key: round(statistics.median(ts) * 1e3, 2) for key, ts in times.items()}
    (HERE / "step_costs.json").write_text(json.dumps(costs, indent=1) + "\n")
    for key, ms in costs.items():
        print(f"{key:<32} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
