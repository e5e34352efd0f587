"""Training throughput: gptlab through Lightning vs a bare PyTorch loop (vs HF GPT-2).

    python benchmarks/train_throughput.py --full --hf              # shakespeare_char recipe
    python benchmarks/train_throughput.py --case gpt124m --steps 4 --hf
    python benchmarks/train_throughput.py --precision bf16-mixed --compile
    python benchmarks/train_throughput.py --case gpt124m_gpu --device cuda --precision bf16-mixed --compile --hf

Every variant trains the same model shape on the same random batches with the same
AdamW settings, in one process, in alternating rounds (so a busy machine slows all of
them alike). A step is timed from one batch's start to the next, so it includes
data loading, forward, backward, gradient clipping and the optimizer. Reported: the
median ms/step, tokens/s, MFU against ``--peak-gflops`` (default: this machine's
measured fp32 or bf16 matmul peak), and the ratio of each variant to the first.
Peak memory is measured per variant in a fresh subprocess (``--memory``), because a
process's high-water mark cannot be split between variants that share it; on a GPU it
is the CUDA allocator's high-water mark, reset before each variant's rounds.
On a GPU every step ends with a device sync, so a step's time is its real duration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from peak_rss import peak_rss_mb  # benchmarks/peak_rss.py, beside this script

CASES = {
    # nanoGPT's CPU recipe for Tiny Shakespeare at the character level (exact GELU, as nanoGPT).
    "shakespeare_char": dict(
        model=dict(
            vocab_size=65,
            block_size=64,
            n_layer=4,
            n_head=4,
            n_embd=128,
            bias=False,
            dropout=0.0,
            mlp="gelu_exact",
        ),
        batch_size=12,
        lr=1e-3,
        betas=(0.9, 0.99),
    ),
    # GPT-2 small's shape at a CPU-sized batch (4 x 256).
    "gpt124m": dict(
        model=dict(
            vocab_size=50257,
            block_size=256,
            n_layer=12,
            n_head=12,
            n_embd=768,
            bias=True,
            dropout=0.0,
        ),
        batch_size=4,
        lr=6e-4,
        betas=(0.9, 0.95),
    ),
    # GPT-2 small at nanoGPT's GPU shape (16 x 1024 tokens a micro-batch): the MFU goal.
    "gpt124m_gpu": dict(
        model=dict(
            vocab_size=50257,
            block_size=1024,
            n_layer=12,
            n_head=12,
            n_embd=768,
            bias=True,
            dropout=0.0,
        ),
        batch_size=16,
        lr=6e-4,
        betas=(0.9, 0.95),
    ),
}


def sync(device: str) -> None:
    """Wait for the device's queued work, so wall-clock time measures it."""
    if device == "cuda":
        torch.cuda.synchronize()


def random_batches(
    vocab: int, batch: int, block: int, n: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-made (x, y) batches, so that every variant sees exactly the same data."""
    from gptlab.data.orders import RandomOrder
    from gptlab.data.token_view import TokenView

    tokens = (
        np.random.default_rng(seed)
        .integers(0, vocab, size=200_000, dtype=np.int64)
        .astype(np.uint32)
    )
    order = RandomOrder(TokenView([tokens]), block, batch, seed=seed)
    rows = [torch.from_numpy(order.chunk(i)) for i in range(n)]
    return [(r[:, :-1], r[:, 1:]) for r in rows]


def gptlab_module(case: dict, compile_model: bool):
    from gptlab.training.module import GPTLightningModule

    optimizer = {
        "_target_": "gptlab.training.optim.adamw",
        "lr": case["lr"],
        "betas": list(case["betas"]),
        "weight_decay": 0.1,
    }
    return GPTLightningModule(dict(case["model"]), optimizer, scheduler=None, compile=compile_model)


class StepTimer:
    """A Lightning callback that records the time between consecutive batch starts."""

    def __init__(self, device: str = "cpu") -> None:
        import lightning as L

        timer = self

        class _Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                sync(device)
                now = time.perf_counter()
                if timer.last is not None:
                    timer.times.append(now - timer.last)
                timer.last = now

            def on_train_end(self, trainer, pl_module):
                sync(device)
                timer.times.append(time.perf_counter() - timer.last)

        self.callback = _Callback()
        self.times: list[float] = []
        self.last: float | None = None


def train_callbacks(log_dir: str) -> tuple[list, object]:
    """The per-step callbacks and the logger that ``python -m gptlab.train`` runs with by default."""
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from gptlab.training.callbacks import Throughput
    from gptlab.training.guards import TrainingGuard

    callbacks = [
        TrainingGuard(),
        Throughput(log_every_n_steps=10),
        TQDMProgressBar(refresh_rate=10),
    ]
    return callbacks, CSVLogger(log_dir, name="", version="")


def run_lightning(
    case: dict, batches, precision: str, compile_model: bool, device: str, full: bool = False
) -> Callable[[int], list[float]]:
    """One Trainer.fit per round on the same module: times the real gptlab training path.

    ``full`` adds what a ``gptlab.train`` run has on every step besides the module: the
    training guard (one sync and the gradient norm), throughput metrics, a progress bar
    refreshed every 10 steps and the CSV logger writing every 10 steps.
    """
    import tempfile

    import lightning as L
    from torch.utils.data import DataLoader

    module = gptlab_module(case, compile_model)
    log_dir = tempfile.mkdtemp(prefix="gptlab-bench-")

    def round_(steps: int) -> list[float]:
        timer = StepTimer(device)
        callbacks, logger = train_callbacks(log_dir) if full else ([], False)
        trainer = L.Trainer(
            max_steps=steps,
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            precision=precision,
            logger=logger,
            log_every_n_steps=10,
            enable_checkpointing=False,
            enable_progress_bar=full,
            enable_model_summary=False,
            gradient_clip_val=1.0,
            callbacks=[timer.callback, *callbacks],
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, DataLoader(batches[:steps], batch_size=None))
        return timer.times

    return round_


def run_bare(
    model: torch.nn.Module,
    case: dict,
    batches,
    precision: str,
    device: str,
    hf: bool = False,
    compile_model: bool = False,
) -> Callable[[int], list[float]]:
    """The same step written as a plain loop: the floor that Lightning's overhead is measured against."""
    from gptlab.training.optim import adamw

    model = model.to(device)
    optimizer = adamw(model, lr=case["lr"], betas=case["betas"], weight_decay=0.1)
    if compile_model:
        model.compile()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def round_(steps: int) -> list[float]:
        times = []
        for x, y in batches[:steps]:
            sync(device)
            t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                logits = model(x).logits if hf else model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            times.append(time.perf_counter() - t0)
        return times

    return round_


def hf_model(case: dict) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    from gptlab.model.hf import HF_ACTIVATION_OF_MLP

    m = case["model"]
    config = GPT2Config(
        vocab_size=m["vocab_size"],
        n_positions=m["block_size"],
        n_embd=m["n_embd"],
        n_layer=m["n_layer"],
        n_head=m["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function=HF_ACTIVATION_OF_MLP[m.get("mlp", "gelu")],
    )  # the same GELU as ours
    return GPT2LMHeadModel(config).train()


def measure_memory(args: argparse.Namespace, variant: str) -> float:
    """Peak resident memory (MB) of a fresh process that runs only ``variant``."""
    cmd = [
        sys.executable,
        __file__,
        "--case",
        args.case,
        "--steps",
        str(args.steps),
        "--rounds",
        "1",
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--only",
        variant,
        "--json",
    ]
    if args.compile:
        cmd.append("--compile")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["max_rss_mb"]


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=sorted(CASES), default="shakespeare_char")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the gptlab model (both gptlab variants)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="also time Lightning with gptlab.train's per-step callbacks and CSV logger",
    )
    parser.add_argument("--hf", action="store_true", help="also time transformers' GPT2LMHeadModel")
    parser.add_argument("--peak-gflops", type=float, default=None)
    parser.add_argument(
        "--memory", action="store_true", help="peak RSS per variant, each in its own process"
    )
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    torch.set_float32_matmul_precision(
        "high"
    )  # as gptlab.train does: TF32 on GPUs, no effect on this CPU
    case = CASES[args.case]
    m = case["model"]
    warmup = 3
    batches = random_batches(
        m["vocab_size"], case["batch_size"], m["block_size"], args.steps + warmup
    )
    tokens_per_step = case["batch_size"] * m["block_size"]

    from gptlab.model import GPT, GPTConfig

    variants: dict[str, Callable[[int], list[float]]] = {}
    if args.only in (None, "gptlab+lightning"):
        variants["gptlab+lightning"] = run_lightning(
            case, batches, args.precision, args.compile, args.device
        )
    if args.full and args.only is None or args.only == "gptlab+L+callbacks":
        variants["gptlab+L+callbacks"] = run_lightning(
            case, batches, args.precision, args.compile, args.device, full=True
        )
    if args.only in (None, "gptlab bare loop"):
        variants["gptlab bare loop"] = run_bare(
            GPT(GPTConfig(**m)).train(),
            case,
            batches,
            args.precision,
            args.device,
            compile_model=args.compile,
        )
    if args.hf and args.only is None or args.only == "transformers GPT2":
        variants["transformers GPT2"] = run_bare(
            hf_model(case), case, batches, args.precision, args.device, hf=True
        )

    times: dict[str, list[float]] = {name: [] for name in variants}
    cuda_peak_mb: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, round_ in variants.items():
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times[name].extend(round_(args.steps + warmup)[warmup:])
            if args.device == "cuda":
                cuda_peak_mb[name] = max(
                    cuda_peak_mb.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20
                )

    if args.json:
        print(json.dumps({"max_rss_mb": peak_rss_mb()}))
        return

    from gptlab.bench_peak import measure_peak_flops

    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else torch.float32
    peak = (
        args.peak_gflops * 1e9
        if args.peak_gflops
        else measure_peak_flops(dtype=dtype, device=args.device)
    )
    flops_per_token = GPT(GPTConfig(**m)).flops_per_token(m["block_size"])
    print(
        f"case {args.case}: batch {case['batch_size']} x {m['block_size']} tokens, precision {args.precision}, "
        f"{args.rounds} rounds x {args.steps} steps, compile {args.compile}, peak {peak / 1e9:.0f} GFLOP/s, "
        f"device {device_name(args.device)}, torch {torch.__version__}"
    )
    header = f"{'variant':<20} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'vs first':>9}"
    if args.memory or cuda_peak_mb:
        header += f" {'peak MB':>9}"
    print(header)
    first = None
    for name, ts in times.items():
        ms = statistics.median(ts) * 1e3
        tps = tokens_per_step / (ms / 1e3)
        first = first or tps
        line = f"{name:<20} {ms:9.1f} {tps:10.0f} {tps * flops_per_token / peak:6.1%} {tps / first:8.2f}x"
        if cuda_peak_mb:
            line += f" {cuda_peak_mb[name]:9.0f}"
        elif args.memory:
            line += f" {measure_memory(args, name):9.0f}"
        print(line)


if __name__ == "__main__":
    main()
