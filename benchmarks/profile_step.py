"""Where a training step's time goes: ms/step per compile mode, then the top kernels.

    python benchmarks/profile_step.py                                   # shakespeare_char, CPU
    python benchmarks/profile_step.py --case gpt124m_gpu --precision bf16-mixed --modes eager model model+loss

A bare loop (the same step as ``train_throughput.py``'s) runs once per mode:

* ``eager``       no torch.compile;
* ``model``       ``model.compile()``: what ``trainer.compile=true`` does in training;
* ``model+loss``  one compiled function from tokens to loss, so the logits' float cast,
                  log-softmax and their backward fuse into the graph.

Then ``torch.profiler`` records ``--profile-steps`` steps of the last mode and prints the
operators with the most self time on the device (CUDA kernels on a GPU, CPU ops on the
CPU), which says whether matmuls, attention, elementwise work or the optimizer dominate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import CASES, random_batches, sync  # noqa: E402


def make_step(case: dict, mode: str, precision: str, device: str):
    """A closure doing one optimizer step on a batch, compiled as ``mode`` says."""
    from gptlab.model import GPT, GPTConfig
    from gptlab.training.optim import adamw

    model = GPT(GPTConfig(**case["model"])).train().to(device)
    optimizer = adamw(model, lr=case["lr"], betas=case["betas"], weight_decay=0.1)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    if mode == "model":
        model.compile()
    elif mode == "model+loss":
        loss_of = torch.compile(loss_of)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=sorted(CASES), default="shakespeare_char")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--modes", nargs="+", default=["eager"], choices=["eager", "model", "model+loss"]
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--tf32", action="store_true", help="torch.set_float32_matmul_precision('high')"
    )
    args = parser.parse_args()
    if args.tf32:
        torch.set_float32_matmul_precision("high")

    case, m = CASES[args.case], CASES[args.case]["model"]
    warmup = 3
    batches = random_batches(
        m["vocab_size"], case["batch_size"], m["block_size"], args.steps + warmup
    )
    tokens = case["batch_size"] * m["block_size"]
    step = None
    for mode in args.modes:
        torch.manual_seed(0)
        step = make_step(case, mode, args.precision, args.device)
        t0 = time.perf_counter()
        for x, y in batches[:warmup]:
            step(x, y)
        sync(args.device)
        warm_s = time.perf_counter() - t0
        times = []
        for x, y in batches[warmup:]:
            t = time.perf_counter()
            step(x, y)
            sync(args.device)
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        print(
            f"{mode:<11} {ms:8.1f} ms/step {tokens / ms * 1e3:10.0f} tokens/s  (first {warmup} steps: {warm_s:.1f} s)",
            flush=True,
        )

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        for x, y in batches[: args.profile_steps]:
            step(x, y)
        sync(args.device)
    key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(
        f"top operators of the '{args.modes[-1]}' step by self {args.device} time, {args.profile_steps} steps:"
    )
    print(prof.key_averages().table(sort_by=key, row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
