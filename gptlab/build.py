"""Build a training run's objects from its config: the module, the Trainer and what plugs into it.

Kept apart from ``train.py`` so that the entry point reads as compose, check, build,
fit. Everything is built with ``hydra.utils.instantiate`` (``_target_``), so a new
callback, logger or optimizer is a YAML entry, not a change here.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from gptlab.errors import ConfigError
from gptlab.training.trainer import GPTLAB_TRAINER_KEYS

log = logging.getLogger("gptlab.train")


def build_datamodule(cfg: DictConfig) -> Any:
    return hydra.utils.instantiate(cfg.data)


def build_module(cfg: DictConfig, model_config: dict[str, Any], tokenizer: Any) -> Any:
    from gptlab.training.module import GPTLightningModule

    return GPTLightningModule(
        model_config=model_config,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler) if cfg.get("scheduler") else None,
        curriculum=plain(cfg.curriculum) if cfg.get("curriculum") else None,
        tokenizer=tokenizer.to_dict(),
        run_config=plain(cfg),
        compile=bool(cfg.trainer.get("compile", False)),
    )


def build_trainer(cfg: DictConfig, first_callbacks: list[Any]) -> Any:
    """The Trainer with the config's callbacks and loggers, the atomic checkpoint writer and
    ``metrics.csv`` beside any other logger (the run folder's own record of the metrics)."""
    from lightning.fabric.plugins import CheckpointIO

    from gptlab.training.checkpoint_io import AtomicCheckpointIO
    from gptlab.training.metrics_csv import MetricsCSV
    from gptlab.training.precision import slow_precision_warning

    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    for key in GPTLAB_TRAINER_KEYS:
        kwargs.pop(key, None)
    plugins = kwargs.pop("plugins", None) or []
    plugins = [
        hydra.utils.instantiate(p) for p in (plugins if isinstance(plugins, list) else [plugins])
    ]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    loggers = _build_all(cfg.get("logger"))
    if loggers and not any(isinstance(lg, MetricsCSV) for lg in loggers):
        loggers.insert(0, MetricsCSV(cfg.paths.output_dir))
    callbacks = [*first_callbacks, *_build_all(cfg.get("callbacks"))]
    trainer = hydra.utils.instantiate(
        kwargs, callbacks=callbacks, logger=loggers or False, plugins=plugins
    )
    _derive_accumulation(cfg, trainer)
    _validate_every_n_steps(trainer)
    slow = slow_precision_warning(trainer.precision, trainer.strategy.root_device)
    if slow and trainer.is_global_zero:
        log.warning(slow)  # on the console and in the run's train.log
    return trainer


def _build_all(group: DictConfig | None) -> list[Any]:
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c is not None]


def _validate_every_n_steps(trainer: Any) -> None:
    """``trainer.val_check_interval`` counts optimizer steps in gptlab (Lightning counts batches).

    With ``A`` accumulated batches a step is ``A`` of Lightning's batches, so the interval
    is scaled: validation (and the checkpoint that follows it) lands on the same
    optimizer steps whatever the number of devices and the accumulation it implies.
    """
    interval = trainer.val_check_interval
    if isinstance(interval, int) and not isinstance(interval, bool):
        trainer.val_check_interval = interval * int(trainer.accumulate_grad_batches)


def _derive_accumulation(cfg: DictConfig, trainer: Any) -> None:
    """``data.global_batch_tokens``: the tokens of one optimizer step, over every device.

    Divided by the micro-batch (``data.batch_size`` x ``data.block_size``) and the
    world size it gives the gradient-accumulation steps; a value that does not divide
    exactly is refused rather than rounded.
    """
    total = cfg.data.get("global_batch_tokens")
    if total is None:
        return
    micro = int(cfg.data.batch_size) * int(cfg.data.block_size) * int(trainer.world_size)
    given = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    if not isinstance(total, int) or total < 1 or total % micro:
        raise ConfigError(
            f"data.global_batch_tokens={total} is not a multiple of data.batch_size x data.block_size x devices "
            f"= {cfg.data.batch_size} x {cfg.data.block_size} x {trainer.world_size} = {micro}; "
            f"use a multiple such as {max(1, round(total / micro)) * micro}"
        )
    if given != 1 and given != total // micro:
        raise ConfigError(
            f"data.global_batch_tokens={total} asks for {total // micro} accumulation steps, but "
            f"trainer.accumulate_grad_batches={given}; set only one of them"
        )
    trainer.accumulate_grad_batches = total // micro


def plain(cfg: Any) -> dict[str, Any]:
    """A resolved config (or one group of it) as plain data: what config.yaml and the checkpoint keep."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def final_metrics(trainer: Any) -> dict[str, float]:
    """The last value of every scalar metric the run logged."""
    import torch

    metrics = trainer.callback_metrics.items()
    return {k: float(v) for k, v in metrics if torch.is_tensor(v) and v.numel() == 1}


def describe(cfg: DictConfig, module: Any, tokenizer: Any, trainer: Any, folder: Any) -> str:
    """The line printed at the start: what is trained, on what, in which batches, and where."""
    c = module.config
    return (
        f"gptlab: {module.model.num_parameters():,} parameters ({c.n_layer} layers, "
        f"{c.n_head} heads, {c.n_embd} wide, context {c.block_size}); tokenizer {tokenizer.kind} "
        f"with {tokenizer.vocab_size:,} ids; {batch_line(cfg, trainer)}; run folder {folder}"
    )


def batch_line(cfg: DictConfig, trainer: Any) -> str:
    """The batch arithmetic of one optimizer step, as printed at the start."""
    acc, world = int(trainer.accumulate_grad_batches), int(trainer.world_size)
    b, t = int(cfg.data.batch_size), int(cfg.data.block_size)
    return f"{b} sequences x {t} tokens x {world} devices x {acc} accumulated = {b * t * world * acc:,} tokens per step"
