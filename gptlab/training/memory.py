"""How much memory a run surely needs on the CPU, and how much this machine has.

Used by the preflight checks (``gptlab/training/preflight.py``): a CPU run whose sure
minimum is larger than the machine's memory is refused in one sentence before any work,
instead of dying inside torch's allocator (``DefaultCPUAllocator: can't allocate
memory``) or being killed by the kernel. The estimate is a floor, never a guess
upwards: it counts only what the model certainly allocates (its causal-mask buffer,
weights and gradients, the residual stream and the logits of one batch), so a config
that fits is never refused. Torch-free, so it can run before torch is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from gptlab.model.config import GPTConfig

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes() -> int | None:
    """Physical memory, or the container's (cgroup) limit when that is lower; None if unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system (Windows)
        return None
    for limit_file in _CGROUP_LIMITS:
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def parameter_count(config: GPTConfig) -> int:
    """The model's parameters, from its shape alone (biases and norms left out: a floor)."""
    c, head = config.n_embd, config.head_size
    attention = c * (config.n_head + 2 * config.n_kv_head) * head + c * c
    mlp = (3 if config.mlp == "swiglu" else 2) * c * config.mlp_hidden_size
    embeddings = config.padded_vocab_size * c * (1 if config.tie_embeddings else 2)
    positions = config.block_size * c if config.position == "learned" else 0
    return embeddings + positions + config.n_layer * (attention + mlp)


def cpu_memory_floor(
    config: GPTConfig, batch_size: int, block_size: int, bytes_per_value: int = 4
) -> int:
    """Bytes a training step of ``config`` on ``batch_size`` windows of ``block_size`` surely needs.

    The model keeps a ``block_size x block_size`` boolean mask (built from a second one
    of the same size), fp32 weights and their gradients, each layer's input for the
    backward pass and one batch of logits; the manual attention backend also forms
    every head's ``T x T`` scores of a layer.
    """
    n = config.block_size
    mask = 2 * n * n
    weights_and_grads = 2 * bytes_per_value * parameter_count(config)
    tokens = batch_size * block_size
    residual = config.n_layer * tokens * config.n_embd * bytes_per_value
    logits = tokens * config.padded_vocab_size * bytes_per_value
    scores = 0
    if config.attention.backend == "manual":
        scores = batch_size * config.n_head * block_size * block_size * bytes_per_value
    return mask + weights_and_grads + residual + logits + scores
