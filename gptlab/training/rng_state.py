"""Random-number-generator states as plain data, so a resumed run draws what the straight one would.

Lightning's checkpoints carry the model, optimizer, scheduler and loop counters but no
RNG state, so dropout after a resume would differ from the uninterrupted run. These
helpers capture the global torch (CPU and CUDA), NumPy and Python generators as
tensors, ints and tuples only, which ``torch.load(weights_only=True)`` accepts.

Under DDP every rank is seeded alike (``seed_everything``) and draws the same amounts,
so rank 0's state, the one a checkpoint stores, stands for all ranks.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The global generators' states, in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the generators back as ``capture_rng_state`` found them (missing parts are skipped)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_lists(python_state: tuple) -> list:
    version, internal, gauss = python_state
    return [version, list(internal), gauss]
