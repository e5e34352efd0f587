"""Refuse impossible run configs before any work: one sentence naming the key and the fix.

Without these checks each mistake surfaces late and deep: a model whose heads do not
divide its width fails when the first block is built, a ``data.block_size`` longer
than the model's context fails inside the position embedding at the first step, a
GPU count the machine lacks fails inside Lightning's device parser with a traceback,
fp16 AMP on a CPU is silently swapped for bf16 by Lightning, a negative
``trainer.gradient_clip_val`` trains by gradient ascent, and ``trainer.max_steps=0``
fails only after the corpus was tokenized. ``validate_run_config`` runs first thing in
``train()``, before the corpus is read or tokenized.

``check_vocab`` needs the built tokenizer, so ``train()`` calls it right after the
tokenizer is built and before the model is: it fills in ``model.vocab_size`` and
refuses a vocabulary whose embedding alone would not fit in this machine's memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gptlab.data.loader_settings import check_num_workers
from gptlab.data.names import check_plain_name, is_hub_name
from gptlab.errors import ConfigError
from gptlab.model.config import GPTConfig
from gptlab.training.memory import cpu_memory_floor, machine_memory_bytes
from gptlab.utils.spec import check_target

# Lightning's precision names (and their short aliases), and the ones each accelerator can run.
PRECISIONS = {
    "64": "64-true",
    "32": "32-true",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
    "64-true": "64-true",
    "32-true": "32-true",
    "16-true": "16-true",
    "16-mixed": "16-mixed",
    "bf16-true": "bf16-true",
    "bf16-mixed": "bf16-mixed",
    "transformer-engine": "transformer-engine",
    "transformer-engine-float16": "transformer-engine-float16",
}
CPU_PRECISIONS = ("64-true", "32-true", "bf16-mixed", "bf16-true", "16-true")
# Lightning's seed_everything (and NumPy's legacy seeding under it) take 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1


def validate_run_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` (or ``ModelConfigError``) for the first impossible setting in ``cfg``."""
    model = _model_config(cfg)
    _check_seed(cfg)
    _check_data(cfg, model)
    _check_optimizer(cfg)
    _check_targets(cfg)
    _check_trainer(
        cfg
    )  # before the checkpoint keys: checkpoint.every_n_steps follows val_check_interval
    _check_checkpoint(cfg)
    _check_checkpoint_filename(cfg)
    _check_cpu_memory(cfg, model)
    _check_switches(cfg, model)


def check_vocab(
    tokenizer_vocab_size: int, model_cfg: Mapping[str, Any] | DictConfig
) -> dict[str, Any]:
    """The model config as a plain dict with ``vocab_size`` taken from the tokenizer.

    Refuses a ``model.vocab_size`` smaller than the tokenizer's (ids past the table
    would index out of range at the first step) and a vocabulary whose embedding table
    alone is larger than this machine's memory (a tokenizer file with a special token
    at id 3,000,000,000 asks for hundreds of GB; the model is built in host memory).
    """
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)  # type: ignore[assignment]
    resolved: dict[str, Any] = dict(model_cfg)
    if resolved.get("vocab_size") is None:
        resolved["vocab_size"] = tokenizer_vocab_size
    elif resolved["vocab_size"] < tokenizer_vocab_size:
        raise ConfigError(
            f"model.vocab_size={resolved['vocab_size']} is smaller than the tokenizer's {tokenizer_vocab_size} ids; "
            "set model.vocab_size=null to take it from the tokenizer"
        )
    config = GPTConfig.from_dict(resolved)
    table = (
        config.padded_vocab_size * config.n_embd * 4
    )  # one fp32 table (tied with the output layer)
    memory = machine_memory_bytes()
    if memory is not None and table > memory:
        raise ConfigError(
            f"a vocabulary of {config.vocab_size:,} ids needs a {table / 2**30:,.0f} GiB embedding table, more than "
            f"this machine's {memory / 2**30:,.0f} GiB; the tokenizer's largest id is far beyond its ordinary "
            "tokens (check its special_tokens ids) or model.vocab_size is too large"
        )
    return resolved


def _model_config(cfg: DictConfig) -> GPTConfig:
    """Build the model config once, with a stand-in vocabulary when the tokenizer will set it."""
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    if model_cfg.get("vocab_size") is None:
        model_cfg["vocab_size"] = 1
    return GPTConfig.from_dict(
        model_cfg
    )  # raises ModelConfigError: n_embd % n_head, n_head % n_kv_head, ...


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or(value: Any, default: int) -> int:
    return value if _is_int(value) else default


def _check_positive_int(key: str, value: Any, example: str, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive whole number, e.g. {example}")


def _check_seed(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if seed is None:
        return
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"seed={seed!r} must be a whole number from 0 to {MAX_SEED:,} (2**32 - 1), e.g. seed=1337"
        )


def _check_switches(cfg: DictConfig, model: GPTConfig) -> None:
    """Training switches that need something from another group."""
    data = cfg.get("data") or {}
    if model.attention.document_mask and not data.get("document_ids", False):
        raise ConfigError(
            "model.attention.document_mask=true needs each token's document id from the "
            "loader, but data.document_ids is false; set data.document_ids=true"
        )
    curriculum = cfg.get("curriculum")
    if curriculum:
        from gptlab.training.curriculum import Curriculum

        block = int(data.get("block_size") or model.block_size)
        Curriculum(OmegaConf.to_container(curriculum, resolve=True)).check(  # type: ignore[arg-type]
            int(data.get("batch_size", 1)), block
        )


def _check_data(cfg: DictConfig, model: GPTConfig) -> None:
    data = cfg.get("data")
    if data is None:
        return
    check_num_workers(data.get("num_workers"), error=ConfigError)
    name = data.get("name")  # a hub name (owner/dataset) is allowed: its '/' never reaches a path
    if name is not None and not is_hub_name(name):
        check_plain_name("data.name", name, "my_corpus", error=ConfigError)
    for key, example in (
        ("batch_size", "data.batch_size=12"),
        ("val_batches", "data.val_batches=20"),
    ):
        if key in data:
            _check_positive_int(f"data.{key}", data.get(key), example)
    block = data.get("block_size")
    if block is not None:
        _check_positive_int("data.block_size", block, f"data.block_size={model.block_size}")
        if block > model.block_size:
            raise ConfigError(
                f"data.block_size={block} is longer than the model's context model.block_size={model.block_size}; "
                "lower data.block_size or raise model.block_size"
            )


def _check_optimizer(cfg: DictConfig) -> None:
    lr = (cfg.get("optimizer") or {}).get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0):
        raise ConfigError(f"optimizer.lr={lr} must be a positive number, e.g. optimizer.lr=6e-4")


def _check_targets(cfg: DictConfig) -> None:
    """The optimizer and scheduler are built from config data by ``gptlab.utils.spec``: only allowed targets."""
    for group in ("optimizer", "scheduler"):
        if cfg.get(group) is not None:
            check_target(OmegaConf.to_container(cfg[group], resolve=True), group)


def _check_checkpoint(cfg: DictConfig) -> None:
    for key in ("every_n_steps", "keep_last"):
        value = (cfg.get("checkpoint") or {}).get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise ConfigError(f"checkpoint.{key}={value!r} must be a positive integer (or null)")


def _check_checkpoint_filename(cfg: DictConfig) -> None:
    """``callbacks.model_checkpoint.filename`` names a file in the run's checkpoint folder, not a path."""
    callback = (cfg.get("callbacks") or {}).get("model_checkpoint")
    filename = callback.get("filename") if isinstance(callback, Mapping) else None
    if filename is not None:
        check_plain_name(
            "callbacks.model_checkpoint.filename", filename, "step{step:06d}", error=ConfigError
        )


def _check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer")
    if trainer is None:
        return
    skip = trainer.get("skip_nonfinite", False)
    if not isinstance(skip, bool):
        raise ConfigError(f"trainer.skip_nonfinite={skip!r} must be true or false")
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if not _is_int(accumulate) or accumulate < 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate!r} must be a positive integer"
        )
    if "max_steps" in trainer:
        # The training stream is endless, so max_steps is what ends a run (-1, Lightning's "no limit", never would).
        _check_positive_int("trainer.max_steps", trainer.get("max_steps"), "trainer.max_steps=1000")
    if "val_check_interval" in trainer:
        interval = trainer.get("val_check_interval")
        if interval is not None and (not _is_int(interval) or interval < 1):
            raise ConfigError(
                f"trainer.val_check_interval={interval!r} must be a positive whole number of steps "
                "(the training stream has no epochs), e.g. trainer.val_check_interval=250"
            )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (
        isinstance(clip, bool)
        or not isinstance(clip, (int, float))
        or not math.isfinite(clip)
        or clip < 0
    ):
        raise ConfigError(
            f"trainer.gradient_clip_val={clip!r} must be a number >= 0 (0 or null turns clipping off); "
            "a negative value would reverse every gradient"
        )
    accelerator = resolve_accelerator(str(trainer.get("accelerator", "auto")))
    _check_precision(str(trainer.get("precision", "32-true")), accelerator)
    _check_devices(trainer.get("devices", "auto"), accelerator)


def _check_cpu_memory(cfg: DictConfig, model: GPTConfig) -> None:
    """On a CPU run, refuse a model whose sure minimum of memory exceeds the machine's."""
    trainer = cfg.get("trainer") or {}
    if resolve_accelerator(str(trainer.get("accelerator", "auto"))) != "cpu":
        return
    memory = machine_memory_bytes()
    data = cfg.get("data") or {}
    batch = _int_or(data.get("batch_size"), 1)
    block = _int_or(data.get("block_size"), model.block_size)
    processes = max(1, _int_or(trainer.get("devices"), 1))  # CPU DDP: one model per process
    need = processes * cpu_memory_floor(model, batch, block)
    if memory is not None and need > memory:
        raise ConfigError(
            f"this model needs at least {need / 2**30:,.1f} GiB of memory on the CPU (model.block_size="
            f"{model.block_size}, data.batch_size={batch}, {processes} process(es)), more than this machine's "
            f"{memory / 2**30:,.1f} GiB; lower model.block_size or data.batch_size"
        )


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
    if (
        accelerator == "cuda"
        and precision.startswith("bf16")
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported()
    ):
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
        fix = (
            "trainer.devices=auto to use what there is" if available else "trainer.accelerator=cpu"
        )
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
            raise ConfigError(
                f"trainer.devices={devices!r} must be a count, a list of indices or auto"
            ) from None
        return len(indices), max(indices, default=-1)
    try:
        indices = [int(i) for i in devices]
    except (TypeError, ValueError):
        raise ConfigError(
            f"trainer.devices={devices!r} must be a count, a list of indices or auto"
        ) from None
    return len(indices), max(indices, default=-1)
