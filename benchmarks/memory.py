"""Peak memory of a training step with and without activation checkpointing.

    python benchmarks/memory.py                              # gpt124m shape at 4 x 256, CPU
    python benchmarks/memory.py --case shakespeare_char
    python benchmarks/memory.py --case gpt124m_gpu --device cuda --precision bf16-mixed

A training step here is the one of ``train_throughput.py``'s bare loop: forward, next-token
loss, backward, gradient clipping and AdamW, on the same random batches. The two variants
(``model.activation_checkpointing`` false / true: each block's activations are recomputed
in backward instead of kept from forward) each run in a fresh subprocess, because a
process's memory high-water mark cannot be split between variants that share it.

Reported per variant, over the steps after one warm-up step (which creates AdamW's state):

* ``ms/step``: the median step time;
* ``peak MB``: the process's peak resident memory (``ru_maxrss``; on a GPU the CUDA
  allocator's high-water mark, ``torch.cuda.max_memory_allocated``), imports included;
* ``fwd+bwd MB`` and ``step MB``: the peak above the memory held just before the step
  (imports, the weights, AdamW's moments, the batches) during forward + backward, and
  during the whole step (clipping and AdamW's update add their temporaries). On a CPU the
  peak comes from the kernel's ``VmHWM``, reset before each step through
  ``/proc/self/clear_refs``, and the subprocesses run with a fixed ``malloc`` mmap threshold,
  so freed tensors go back to the system and resident memory follows the live tensors;
* ``saved MB``: the tensors autograd keeps for backward (distinct storages), counted with
  ``torch.autograd.graph.saved_tensors_hooks``: the activation memory itself, which
  checkpointing cuts to one input per block (kept by the checkpoint) plus the layers
  outside the blocks (embeddings, the final norm, the logits and the loss).

The ratios are each variant's ``fwd+bwd MB`` and ``ms/step`` over the first variant's.
``ms/step`` is timed in the same process as the memory (the fixed mmap threshold made
gpt124m's CPU step ~5% slower here); compare speeds with ``train_throughput.py``.

The measured table is in benchmarks/RESULTS.md ("Data path and activation memory"). At a small
batch the gradients are most of what is left; activations grow with batch x block while
gradients do not, so the saving grows with the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import peak_rss_mb, proc_status_mb  # noqa: E402
from train_throughput import CASES, device_name, random_batches, sync  # noqa: E402

VARIANTS = {"no checkpointing": False, "activation ckpt": True}


class Meter:
    """Memory now and the peak since ``reset``: the CUDA allocator's, else the kernel's RSS counters."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.can_reset = self.cuda or proc_status_mb("VmHWM") is not None

    def reset(self) -> float:
        """Start a new peak; return the memory in use now (MB)."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated() / 2**20
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # Linux: reset VmHWM (the peak RSS) to the current RSS
        except OSError:
            self.can_reset = False
        return proc_status_mb("VmRSS") or 0.0

    def peak(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mb()  # VmHWM (reset above), or ru_maxrss where there is no /proc


class SavedTensors:
    """Bytes of the distinct storages autograd saves for backward while this is active."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def measure(
    case_name: str, checkpointing: bool, steps: int, precision: str, device: str
) -> dict[str, float]:
    """Run one variant in this process: ms/step and memory (MB)."""
    from gptlab.model import GPT, GPTConfig
    from gptlab.training.optim import adamw

    torch.manual_seed(0)
    case = CASES[case_name]
    m = case["model"]
    batches = random_batches(m["vocab_size"], case["batch_size"], m["block_size"], steps + 1)
    model = GPT(GPTConfig(**m, activation_checkpointing=checkpointing)).train().to(device)
    optimizer = adamw(model, lr=case["lr"], betas=case["betas"], weight_decay=0.1)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    meter = Meter(device)
    times, fwd_bwd, whole, saved, absolute = [], [], [], [], []
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)
        before = meter.reset()
        sync(device)
        t0 = time.perf_counter()
        counter = SavedTensors()
        with autocast, counter.hooks():
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        del logits
        loss.backward()
        sync(device)
        fwd_bwd_peak = meter.peak()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if i > 0:  # the first step is the warm-up: AdamW creates its moments there
            times.append(time.perf_counter() - t0)
            fwd_bwd.append(fwd_bwd_peak - before)
            absolute.append(meter.peak())
            whole.append(absolute[-1] - before)
            saved.append(counter.mb)
    peak = (
        max(absolute)
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "ms": statistics.median(times) * 1e3,
        "peak_mb": peak,
        "fwd_bwd_mb": max(fwd_bwd),
        "step_mb": max(whole),
        "saved_mb": max(saved),
    }


def in_subprocess(args: argparse.Namespace, variant: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        args.case,
        "--steps",
        str(args.steps),
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--only",
        variant,
        "--json",
    ]
    # A fixed mmap threshold: every freed tensor of 128 KiB or more goes back to the system at once.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"error: the {variant!r} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=sorted(CASES), default="gpt124m")
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)"
    )
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--only", choices=sorted(VARIANTS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    torch.set_float32_matmul_precision(
        "high"
    )  # as gptlab.train does: TF32 on GPUs, no effect on a CPU
    if args.only:
        print(
            json.dumps(
                measure(args.case, VARIANTS[args.only], args.steps, args.precision, args.device)
            )
        )
        return

    case = CASES[args.case]
    m = case["model"]
    from gptlab.model import GPT, GPTConfig

    n_params = GPT(GPTConfig(**m)).num_parameters()
    kind = "the CUDA allocator's" if args.device == "cuda" else "resident (VmHWM / ru_maxrss)"
    print(
        f"case {args.case}: {n_params:,} parameters, batch {case['batch_size']} x {m['block_size']} tokens, "
        f"precision {args.precision}, {args.steps} steps after 1 warm-up, device {device_name(args.device)}, "
        f"torch {torch.__version__}; memory: {kind}, each variant in a fresh process"
    )
    print(
        f"{'variant':<18} {'ms/step':>9} {'peak MB':>9} {'fwd+bwd MB':>11} {'step MB':>9} {'saved MB':>9} "
        f"{'fwd+bwd vs first':>17} {'time vs first':>14}"
    )
    first = None
    for name in VARIANTS:
        r = in_subprocess(args, name)
        first = first or r
        print(
            f"{name:<18} {r['ms']:9.1f} {r['peak_mb']:9.0f} {r['fwd_bwd_mb']:11.0f} {r['step_mb']:9.0f} "
            f"{r['saved_mb']:9.0f} {r['fwd_bwd_mb'] / first['fwd_bwd_mb']:16.2f}x {r['ms'] / first['ms']:13.2f}x"
        )


if __name__ == "__main__":
    main()
