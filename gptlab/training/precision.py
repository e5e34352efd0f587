"""A warning when the chosen precision will be slow on the device it runs on.

bfloat16 pays only where the hardware multiplies it: GPUs from Ampere on, and CPUs
whose oneDNN kernels handle bf16 (x86 with AVX-512 or AMX, Arm with its bf16
extension). On other CPUs (AVX2-only x86, such as many AMD EPYC and desktop parts)
every bf16 matmul takes a slow fallback path, many times slower than float32 (measured
in benchmarks/RESULTS.md, "Goal 2"; ``python benchmarks/profile_step.py --precision
bf16-mixed``). Someone who writes ``trainer.precision=bf16-mixed`` to go faster should
learn that in one sentence at the start, not after a run that takes many times as long.
"""

from __future__ import annotations

import torch


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has real bfloat16 kernels for this CPU (unknown counts as yes: no false alarm)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def slow_precision_warning(precision: str, device: torch.device) -> str | None:
    """One sentence naming the problem and the fix when ``precision`` is slow on ``device``, else None."""
    if device.type == "cpu" and str(precision).startswith("bf16") and not cpu_has_fast_bf16():
        return (
            f"trainer.precision={precision} will be slow here: this CPU lacks the AVX-512/AMX "
            "(or Arm bf16) instructions that bfloat16 matmuls need, so they run on a fallback "
            "path an order of magnitude slower than float32; use trainer.precision=32-true on this machine."
        )
    return None
