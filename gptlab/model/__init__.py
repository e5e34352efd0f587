"""The model: a GPT written out by hand in plain PyTorch (no Lightning, no Hydra here).

Read in this order: ``config.py`` (what can be configured), ``layers.py`` (norms, MLPs,
rotary positions), ``attention.py``, ``kv_cache.py``, ``gpt.py``, then ``hf.py`` for
Hugging Face GPT-2 weights; ``parametrization.py`` holds how init, learning rates and
multipliers scale with width (sp, µP).

``config.py`` is torch-free and imported at once; the modules with tensors are imported
on first use of their names, so that reading a model config (Hydra's ``model`` schema is
derived from ``GPTConfig`` whenever gptlab is imported) does not import torch.
"""

from typing import Any

from gptlab.model.config import AttentionConfig, GPTConfig, ModelConfigError

_LAZY = {
    "CausalSelfAttention": "gptlab.model.attention",
    "SelfAttention": "gptlab.model.attention",
    "GPT": "gptlab.model.gpt",
    "Block": "gptlab.model.gpt",
    "KVCache": "gptlab.model.kv_cache",
}

__all__ = [
    "GPT",
    "AttentionConfig",
    "Block",
    "CausalSelfAttention",
    "GPTConfig",
    "KVCache",
    "ModelConfigError",
    "SelfAttention",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
