"""``to_decode_layout``: store a model's linear weights column-major, for CPU decoding.

Decoding one token is a vector-matrix product per weight that reads the whole weight
once. For the wide output head (50,257 x 768 for GPT-2) CPU BLAS streams a weight held
as ``(in, out)`` in memory much faster than ``nn.Linear``'s ``(out, in)`` (~2x measured
here, ``benchmarks/RESULTS.md``); transformers' ``Conv1D`` stores GPT-2's block weights
that way. Training and the model itself do not care about the memory order, so this is
a decoding step kept beside the decoder rather than a model method.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


@torch.no_grad()
def to_decode_layout(model: M) -> M:
    """Make every ``nn.Linear`` weight the transpose view of a contiguous ``(in, out)`` matrix.

    The same values, module tree and ``state_dict``; only the memory order changes. A
    weight shared by several modules (tied embeddings) stays shared: every place that
    used the old parameter gets the new one. Meant for models used only to generate
    (``python -m gptlab.generate`` calls it on CPU in float32); returns ``model``.
    """
    # id -> (old, new); holding ``old`` keeps its id from being reused while we look it up
    converted: dict[int, tuple[torch.Tensor, nn.Parameter]] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in converted:
            w = module.weight
            column_major = w.detach().t().contiguous().t()
            converted[id(w)] = (w, nn.Parameter(column_major, requires_grad=w.requires_grad))
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) in converted:
                setattr(module, name, converted[id(p)][1])
    return model
