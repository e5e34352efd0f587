"""``device=`` of the inference entry points (generate, evaluate): one picker, one set of rules.

``auto`` takes the GPU when there is one; a named device must exist on this machine and
hold data (``meta`` builds tensors without storage, so a model there cannot compute
anything). Every refusal is one ``ConfigError`` sentence naming what to pass instead.
"""

from __future__ import annotations

import torch

from gptlab.errors import ConfigError

CHOICES = "auto, cpu, cuda, cuda:<index> or mps"


def pick_device(name: str | None) -> torch.device:
    """The ``torch.device`` for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    name = str(name or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={name!r} is not a device; use {CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name} was asked for but this machine has no usable CUDA GPU; use device=cpu or device=auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device={name} does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(
                f"device={name} was asked for but this machine has no usable Apple GPU; use device=cpu or device=auto"
            )
        return device
    if device.type == "meta":
        raise ConfigError(
            f"device={name} holds no data, so a model there cannot compute anything; use {CHOICES}"
        )
    raise ConfigError(
        f"device={name} is not supported by gptlab's inference commands; use {CHOICES}"
    )
