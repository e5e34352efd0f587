"""A checksum of a set of named tensors: the same weights give the same hex digest.

Checkpoints (``gptlab.checkpoint.add_checksum``) and exports carry it, so a flipped
bit in stored weights is caught on load instead of silently changing the model. It
hashes each tensor's raw bytes in place (no copy for a contiguous CPU tensor) with its
name, dtype and shape, in sorted name order: 124M float32 parameters hash in about a
second. Plain torch, so ``gptlab.model`` can use it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch


def tensors_sha256(tensors: Mapping[str, Any]) -> str:
    """The sha256 over ``tensors`` (name -> tensor) in sorted name order; non-tensors are skipped."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        digest.update(f"{name}|{str(tensor.dtype)}|{tuple(tensor.shape)}\n".encode())
        # Raw bytes whatever the dtype (numpy has no bfloat16): view the data as uint8.
        raw = tensor.contiguous().reshape(-1).view(torch.uint8)
        if raw.numel():
            digest.update(memoryview(raw.numpy()))  # type: ignore[arg-type]  # numpy arrays are buffers
    return digest.hexdigest()
