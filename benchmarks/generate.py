"""Decoding speed: gptlab's ``generate`` (with and without KV cache) vs transformers.

    python benchmarks/generate.py                     # 1 and 8 prompts x 256 new tokens
    python benchmarks/generate.py --quick             # a smoke run: 32 tokens, batch 1
    python benchmarks/generate.py --new-tokens 64 --dtypes bfloat16 --batch-sizes 1

A GPT-2 124M-shaped model with random weights is built once in transformers
(``GPT2LMHeadModel``) and loaded into gptlab with ``GPT.from_hf``, so both run the very
same weights. Both decode greedily for exactly ``--new-tokens`` tokens (no end-of-text
stop). The contenders run in alternation, ``--rounds`` times each, and the best round
counts: on a shared machine, the fastest run is the one least disturbed by others.

Why a bandwidth fraction: at batch 1 every new token reads every weight once, so
tokens/s can never exceed (memory bandwidth / weight bytes). The benchmark measures
the copy bandwidth of this machine (a large tensor copy: read + write) and prints how
close each decoder gets: weight bytes x forward steps/s / bandwidth.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Best bytes/s of ``dst.copy_(src)`` over a buffer much larger than the caches."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best  # every byte is read once and written once


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameters (a tied matrix counts once)."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    return sum(seen.values())


def build_models(quiet: bool = False):
    """The same random GPT-2 124M in transformers and in gptlab."""
    import transformers

    from gptlab.model import GPT

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = GPT.from_hf(tmp).eval()
    if not quiet:
        print(
            f"model: GPT-2 124M shape, {ours.num_parameters():,} parameters, random weights",
            flush=True,
        )
    return hf, ours


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES)
    )
    parser.add_argument(
        "--uncached-batch-sizes",
        type=int,
        nargs="*",
        default=[1],
        help="batch sizes that also run without the cache (slow: a full forward per token)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best counts")
    parser.add_argument(
        "--uncached-rounds", type=int, default=1, help="rounds for the slow uncached decoder"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers")
    parser.add_argument(
        "--layouts",
        action="store_true",
        help="also time gptlab with nn.Linear's row-major weights (before gptlab.sampling.to_decode_layout)",
    )
    parser.add_argument("--quick", action="store_true", help="32 tokens, batch 1, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.batch_sizes, args.rounds = min(args.new_tokens, 32), [1], 1
    if args.threads:
        torch.set_num_threads(args.threads)

    from gptlab.sampling import SamplerConfig, generate, to_decode_layout

    hf, ours = build_models()
    bandwidth = copy_bandwidth()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
        f"{args.new_tokens} new tokens after a {args.prompt_len}-token prompt, greedy; best of {args.rounds} round(s)",
        flush=True,
    )
    sampler = SamplerConfig(temperature=0.0, max_new_tokens=args.new_tokens, stop_at_eot=False)
    n = args.new_tokens
    rows = []
    header = f"{'dtype':9} {'batch':>5} {'decoder':24} {'tokens/s':>9} {'ms/step':>8} {'vs HF':>6} {'of BW limit':>11}"
    print(header)
    print("-" * len(header), flush=True)
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        hf.to(dtype)
        ours.to(dtype)
        if dtype == torch.float32:
            to_decode_layout(ours)  # as python -m gptlab.generate does on CPU in float32
        else:  # back to nn.Linear's row-major order (.to() keeps the strides it is given)
            for p in ours.parameters():
                p.data = p.data.contiguous()
        row_major = None
        if (
            args.layouts and dtype == torch.float32
        ):  # the same weights in nn.Linear's own row-major order
            row_major = copy.deepcopy(ours)
            for p in row_major.parameters():
                p.data = p.data.contiguous()
        wbytes = weight_bytes(ours)
        for batch in args.batch_sizes:
            g = torch.Generator().manual_seed(batch)
            prompts = torch.randint(
                0, ours.config.vocab_size, (batch, args.prompt_len), generator=g
            )
            mask = torch.ones_like(prompts)

            def run_hf(k: int = n, prompts=prompts, mask=mask) -> object:
                with torch.inference_mode():
                    return hf.generate(
                        input_ids=prompts,
                        attention_mask=mask,
                        max_new_tokens=k,
                        min_new_tokens=k,
                        do_sample=False,
                        pad_token_id=0,
                    )

            def run_ours(k: int = n, cache: bool = True, prompts=prompts) -> object:
                return generate(ours, prompts, sampler.replace(max_new_tokens=k), use_cache=cache)

            contenders: dict[str, Callable[[], object]] = {"gptlab cached": run_ours}
            if row_major is not None:

                def run_row_major(prompts=prompts, row_major=row_major) -> object:
                    return generate(row_major, prompts, sampler, use_cache=True)

                contenders["gptlab cached row-major"] = run_row_major
            if not args.no_hf:
                contenders["transformers generate"] = run_hf
            if batch in args.uncached_batch_sizes:
                contenders["gptlab uncached"] = lambda run_ours=run_ours: run_ours(cache=False)
            # warm up (first calls allocate and pick kernels), then check the outputs agree
            ours_ids = run_ours(8)
            if not args.no_hf:
                hf_ids = run_hf(8)[:, args.prompt_len :].tolist()
                agree = (
                    "same greedy tokens"
                    if hf_ids == ours_ids
                    else "greedy tokens DIFFER (expected in bf16)"
                )
                print(f"  [{dname} batch {batch}: warm-up, {agree}]", flush=True)
            best = {name: float("inf") for name in contenders}
            for r in range(args.rounds):
                for name, fn in contenders.items():
                    if name == "gptlab uncached" and r >= args.uncached_rounds:
                        continue  # minutes per run: its noise matters less than its cost
                    best[name] = min(best[name], timed(fn))
            hf_rate = batch * n / best["transformers generate"] if not args.no_hf else None
            for name, seconds in best.items():
                rate = batch * n / seconds
                vs = f"{rate / hf_rate:5.2f}x" if hf_rate else "   -"
                frac = wbytes * (n / seconds) / bandwidth
                print(
                    f"{dname:9} {batch:5d} {name:24} {rate:9.1f} {1000 * seconds / n:8.1f} {vs:>6} {frac:10.0%}",
                    flush=True,
                )
                rows.append((dname, batch, name, rate))
            if "gptlab uncached" in best:
                print(
                    f"  [{dname} batch {batch}: cached is {best['gptlab uncached'] / best['gptlab cached']:.1f}x "
                    f"uncached at {n} tokens]",
                    flush=True,
                )
    print(
        "ms/step: wall time / new tokens (one forward for the whole batch); of BW limit: weight bytes x steps/s "
        "over the copy bandwidth (batch 1: 100% = memory-bound ideal)"
    )


if __name__ == "__main__":
    sys.exit(main())
