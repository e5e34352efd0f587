"""Measure this machine's matrix-multiply throughput, the peak that MFU is measured against.

Model FLOPs utilisation (MFU) = achieved training FLOP/s / peak FLOP/s. Vendor peaks
are rarely reached (and unknown for most CPUs), so gptlab lets you measure the peak
once, in the precision you train in, and put the number in the throughput callback::

    python -m gptlab.bench_peak --dtype bfloat16 --size 4096

It times ``size x size @ size x size`` matrix multiplies (2 * size³ FLOPs each) after a
warm-up and prints the best rate in GFLOP/s.
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def measure_peak_flops(
    dtype: torch.dtype = torch.float32,
    size: int = 2048,
    repeats: int = 10,
    device: str | torch.device | None = None,
) -> float:
    """Best observed FLOP/s of a square matmul of ``size`` in ``dtype`` on ``device``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: thread pools, kernel selection, caches
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--size", type=int, default=2048, help="matrix side (default 2048)")
    parser.add_argument("--repeats", type=int, default=10, help="timed multiplies (best is kept)")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if any)"
    )
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeats < 1:
        parser.error("--size and --repeats must be positive")
    flops = measure_peak_flops(DTYPES[args.dtype], args.size, args.repeats, args.device)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"peak {args.dtype} matmul on {device} ({torch.get_num_threads()} threads, "
        f"size {args.size}): {flops / 1e9:.1f} GFLOP/s"
    )
    print(f"use it as: callbacks.throughput.peak_flops={flops:.3e}")
    return flops


if __name__ == "__main__":
    main()
