"""Step time of each speed-record switch (and µP), alone, against the model with every switch off.

    python benchmarks/switch_overhead.py --rounds 5                 # this checkout
    python benchmarks/switch_overhead.py --rounds 5 --ref 9d3ea77   # + the code before the switches

The model is the shakespeare_char recipe's (4 layers, 128 wide, context 64, batch 12,
exact GELU, AdamW). Each variant trains in its own subprocess (``--threads`` threads),
the variants alternate round by round so a drifting machine slows them alike, and the
table gives each one's median ms per step (forward, backward, optimizer) and its ratio
to ``off``. With ``--ref`` the same switches-off model is also timed at that git
revision, checked out into a temporary worktree: "every switch off costs nothing".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

BASE = dict(
    vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False, mlp="gelu_exact"
)

VARIANTS: dict[str, tuple[dict, dict]] = {  # name: (model overrides, optimizer overrides)
    "off": ({}, {}),
    "value_embeds": ({"value_embeds": "alternate", "value_embed_gate": True}, {}),
    "x0_shortcut": ({"x0_shortcut": True}, {}),
    "zero_init_proj": ({"zero_init_proj": True}, {}),
    "unet_skips": ({"unet_skips": True}, {}),
    "window_SSSL": ({"attention": {"window": 16, "window_pattern": "SSSL"}}, {}),
    "document_mask": ({"attention": {"document_mask": True}}, {}),
    "cautious_wd": ({}, {"cautious_wd": True}),
    "muon": ({}, {"name": "muon"}),
    "muon_bf16_ns": ({}, {"name": "muon", "ns_dtype": "bfloat16"}),  # torch.optim.Muon
    "muon+normuon": ({}, {"name": "muon", "normuon": True}),
    # µP at twice its base width (every multiplier active; at m = 1 it is sp's code path)
    "mup": ({"parametrization": "mup", "mup": {"base_width": 64}}, {}),
}

TIMER = r"""
import json, sys, time, torch
from gptlab.model import GPT, GPTConfig
from gptlab.training import optim
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
model = GPT(GPTConfig.from_dict(spec["model"])).train()
opt_kw = dict(spec["optimizer"]); name = opt_kw.pop("name", "adamw")
opt = getattr(optim, name)(model, **opt_kw)
x = torch.randint(0, 65, (12, 64)); y = torch.randint(0, 65, (12, 64))
docs = torch.arange(64).div(20, rounding_mode="floor").expand(12, 64) if spec["docs"] else None
def step():
    kw = {} if docs is None else {"document_ids": docs}
    loss = torch.nn.functional.cross_entropy(model(x, **kw).flatten(0, 1), y.flatten())
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(spec["warmup"]): step()
times = []
for _ in range(spec["steps"]):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def time_variant(
    src: Path, model: dict, optimizer: dict, steps: int, threads: int, docs: bool
) -> list[float]:
    spec = dict(model=model, optimizer=optimizer, steps=steps, warmup=5, docs=docs)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", TIMER, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # import gptlab from src, not from the working directory
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def merged(overrides: dict) -> dict:
    model = {**BASE, **overrides}
    if "attention" in overrides:
        model["attention"] = dict(overrides["attention"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ref", help="also time the switches-off model at this git revision")
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    runs: dict[str, tuple[Path, dict, dict, bool]] = {
        n: (HERE, merged(VARIANTS[n][0]), VARIANTS[n][1], n == "document_mask") for n in names
    }
    worktree = None
    if args.ref:
        worktree = Path(tempfile.mkdtemp()) / "ref"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", str(worktree), args.ref],
            check=True,
            capture_output=True,
        )
        runs[f"off @ {args.ref}"] = (worktree, dict(BASE), {}, False)
    times: dict[str, list[float]] = {n: [] for n in runs}
    try:
        for _ in range(args.rounds):
            for name, (src, model, optimizer, docs) in runs.items():
                times[name] += time_variant(src, model, optimizer, args.steps, args.threads, docs)
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
    base = statistics.median(times["off"]) if "off" in times else None
    print(f"{'variant':<22} {'ms/step':>8} {'vs off':>7}")
    for name, ts in times.items():
        ms = statistics.median(ts) * 1e3
        ratio = f"{ms / (base * 1e3):.3f}" if base else "-"
        print(f"{name:<22} {ms:8.1f} {ratio:>7}")


if __name__ == "__main__":
    main()
