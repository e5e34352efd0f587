"""Refuse impossible run configs before any work: one sentence naming the key and the fix.

Without these checks each mistake surfaces late and deep: a model whose heads do not
divide its width fails when the first block is built, a ``data.block_size`` longer
than the model's context fails inside the position embedding at the first step, a
GPU count the machine lacks fails inside Lightning's device parser with a traceback,
and fp16 AMP on a CPU is silently swapped for bf16 by Lightning. ``validate_run_config``
runs first thing in ``train()``, before the corpus is read or tokenized.

The vocabulary check (``model.vocab_size`` smaller than the tokenizer's) needs the
tokenizer, so it stays in ``train()`` right after the tokenizer is built.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gptlab.data.loader_settings import check_num_workers
from gptlab.errors import ConfigError
from gptlab.model import GPTConfig

# Lightning's precision names (and their short aliases), and the ones each accelerator can run.
PRECISIONS = {
    "64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed",
    "64-true": "64-true", "32-true": "32-true", "16-true": "16-true", "16-mixed": "16-mixed",
    "bf16-true": "bf16-true", "bf16-mixed": "bf16-mixed",
    "transformer-engine": "transformer-engine", "transformer-engine-float16": "transformer-engine-float16",
}
CPU_PRECISIONS = ("64-true", "32-true", "bf16-mixed", "bf16-true", "16-true")


def validate_run_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` (or ``ModelConfigError``) for the first impossible setting in ``cfg``."""
    model = _model_config(cfg)
    _check_data(cfg, model)
    _check_optimizer(cfg)
    _check_checkpoint(cfg)
    _check_trainer(cfg)


def _model_config(cfg: DictConfig) -> GPTConfig:
    """Build the model config once, with a stand-in vocabulary when the tokenizer will set it."""
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    if model_cfg.get("vocab_size") is None:
        model_cfg["vocab_size"] = 1
    return GPTConfig.from_dict(model_cfg)  # raises ModelConfigError: n_embd % n_head, n_head % n_kv_head, ...


def _check_data(cfg: DictConfig, model: GPTConfig) -> None:
    data = cfg.get("data")
    check_num_workers(data.get("num_workers") if data is not None else None, error=ConfigError)
    block = data.get("block_size") if data is not None else None
    if block is not None and block > model.block_size:
        raise ConfigError(
            f"data.block_size={block} is longer than the model's context model.block_size={model.block_size}; "
            "lower data.block_size or raise model.block_size"
        )


def _check_optimizer(cfg: DictConfig) -> None:
    lr = (cfg.get("optimizer") or {}).get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0):
        raise ConfigError(f"optimizer.lr={lr} must be a positive number, e.g. optimizer.lr=6e-4")


def _check_checkpoint(cfg: DictConfig) -> None:
    for key in ("every_n_steps", "keep_last"):
        value = (cfg.get("checkpoint") or {}).get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"checkpoint.{key}={value!r} must be a positive integer (or null)")


def _check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer")
    if trainer is None:
        return
    skip = trainer.get("skip_nonfinite", False)
    if not isinstance(skip, bool):
        raise ConfigError(f"trainer.skip_nonfinite={skip!r} must be true or false")
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate!r} must be a positive integer")
    accelerator = resolve_accelerator(str(trainer.get("accelerator", "auto")))
    _check_precision(str(trainer.get("precision", "32-true")), accelerator)
    _check_devices(trainer.get("devices", "auto"), accelerator)


def resolve_accelerator(name: str) -> str:
    """What Lightning's ``accelerator`` setting means on this machine: cuda, mps, cpu or the name itself."""
    name = name.lower()
    if name == "gpu":
        return "cuda" if torch.cuda.is_available() else ("mps" if _mps_available() else "cuda")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else ("mps" if _mps_available() else "cpu")
    return name


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def _check_precision(precision: str, accelerator: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision} is not a precision Lightning knows; use one of 32-true, "
            "bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true"
        )
    precision = PRECISIONS[precision]
    if accelerator == "cpu" and precision not in CPU_PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU, and this run uses the CPU; use "
            "trainer.precision=bf16-mixed (or 32-true) on CPU"
        )
    if accelerator == "cuda" and precision.startswith("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision={precision}: this GPU ({torch.cuda.get_device_name()}) has no bfloat16 support; "
            "use trainer.precision=16-mixed"
        )


def _check_devices(devices: Any, accelerator: str) -> None:
    """Count what the run asks for against what this machine has (``auto`` and ``-1`` take all)."""
    if devices in ("auto", -1, "-1", None):
        return
    wanted, highest = _requested_devices(devices)
    if accelerator == "cuda":
        available, what = torch.cuda.device_count(), "GPU"
    elif accelerator == "mps":
        available, what = (1 if _mps_available() else 0), "MPS device"
    else:
        # CPU "devices" are processes, which may outnumber the cores (e.g. to test DDP on a laptop);
        # tpu and friends are checked by Lightning itself.
        if wanted < 1:
            raise ConfigError(f"trainer.devices={devices} must be at least 1 (or auto)")
        return
    if wanted < 1 or max(wanted, highest + 1) > available:
        fix = "trainer.devices=auto to use what there is" if available else "trainer.accelerator=cpu"
        raise ConfigError(
            f"trainer.devices={devices} asks for {max(wanted, highest + 1)} {what}(s) but this machine has "
            f"{available}; use {fix}"
        )


def _requested_devices(devices: Any) -> tuple[int, int]:
    """(how many devices, highest explicit index or -1) for an int, a list or a "0,1" string."""
    if isinstance(devices, bool):
        raise ConfigError(f"trainer.devices={devices} must be a count, a list of indices or auto")
    if isinstance(devices, int):
        return devices, -1
    if isinstance(devices, str):
        parts = [p for p in devices.split(",") if p.strip()]
        try:
            if len(parts) == 1 and not devices.strip().endswith(","):
                return int(parts[0]), -1
            indices = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"trainer.devices={devices!r} must be a count, a list of indices or auto") from None
        return len(indices), max(indices, default=-1)
    indices = [int(i) for i in devices]
    return len(indices), max(indices, default=-1)
