"""The model: a GPT written out by hand in plain PyTorch (no Lightning, no Hydra here).

Read in this order: ``config.py`` (what can be configured), ``layers.py`` (norms, MLPs,
rotary positions), ``attention.py``, ``kv_cache.py``, ``gpt.py``, then ``hf.py`` for
Hugging Face GPT-2 weights.
"""

from gptlab.model.attention import CausalSelfAttention, SelfAttention
from gptlab.model.config import AttentionConfig, GPTConfig, ModelConfigError
from gptlab.model.gpt import GPT, Block
from gptlab.model.kv_cache import KVCache

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
