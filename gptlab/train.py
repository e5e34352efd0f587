"""``python -m gptlab.train``: compose the config, build every object from it, train.

    python -m gptlab.train                                  # offline default, CPU, minutes
    python -m gptlab.train experiment=shakespeare_char      # nanoGPT's CPU recipe
    python -m gptlab.train model=gpt124m tokenizer=gpt2 trainer.devices=2
    python -m gptlab.train --multirun model.n_layer=2,4 optimizer.lr=1e-3,3e-3

    python -m gptlab.train resume=outputs/<date>/<time>         # continue that run exactly

``train(cfg)`` is a plain function (tests and notebooks call it with a config from
``hydra.compose``); ``main`` is the thin Hydra wrapper that turns user errors into one
line and returns ``cfg.optimized_metric`` to sweepers.

Reliability (see ``gptlab/training/checkpointing.py``, ``guards.py``, ``interrupt.py``):
the config is validated before any work; checkpoints are written atomically and read
``weights_only``; ``resume=<run folder>`` (or ``ckpt_path=last``) continues a run with
the same weights, optimizer, schedule, RNG states and data position; Ctrl-C or SIGTERM
saves at the next step boundary and exits with status 128 + signal; a non-finite step
stops the run (or is skipped with ``trainer.skip_nonfinite=true``); running out of
accelerator memory names the settings that use less.

``trainer.skip_nonfinite`` is read by gptlab, not by Lightning: the trainer group's
``_target_`` (``gptlab.training.trainer.lightning_trainer``) and ``train`` both remove
it, and any other key in ``GPTLAB_TRAINER_KEYS``, before Lightning sees the arguments.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.checkpoint import read_checkpoint, safe_torch_load
from gptlab.errors import ConfigError, user_errors
from gptlab.training.precision import slow_precision_warning
from gptlab.training.trainer import GPTLAB_TRAINER_KEYS
from gptlab.utils.io import atomic_write_text, remove_stale_temp_files
from gptlab.validate import validate_run_config

log = logging.getLogger("gptlab.train")  # not __name__: that is "__main__" under python -m
_RUN_DIR_ENV = "GPTLAB_RUN_DIR"
# Lightning 2.6 with torch >= 2.10 warns about its own use of a deprecated torch API.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
# gptlab/conf/hydra/launcher/*.yaml share the launcher plugins' names (hydra/launcher=joblib), so
# Hydra warns on every job that they are checked against the plugins' schemas.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema", category=UserWarning)
# Lightning advises more DataLoader workers whenever a loader has fewer than 2; on a CPU our
# batches (a gather from a memory-mapped array) are faster without any (data.num_workers=null).
warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck")


class _WithoutLitLoggerTip(logging.Filter):
    """Lightning 2.6 advertises its cloud logger at the start of every run that does not use one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_WithoutLitLoggerTip())

# Model settings that do not change the weights: a resume may differ in these.
_RESUME_FREE_MODEL_KEYS = ("compile", "activation_checkpointing")
SHARDED_META = "meta.pt"  # what Lightning's FSDP writes beside the shards of a sharded checkpoint


def _is_ddp_child() -> bool:
    """Lightning's DDP launcher re-runs this command for ranks 1..N-1 with LOCAL_RANK set."""
    return os.environ.get("LOCAL_RANK", "0") != "0" and _RUN_DIR_ENV in os.environ


def _pin_ddp_children(cfg: DictConfig) -> None:
    """Make DDP child processes run this job, in this job's folder.

    Lightning starts ranks 1..N-1 by re-running ``sys.argv``. Under ``--multirun`` that
    would start the whole sweep again in every child, and Hydra would give each child
    a fresh timestamped folder. So the parent rewrites ``sys.argv`` to this job's own
    overrides and passes its run folder down through the environment.
    """
    if _is_ddp_child():
        with open_dict(cfg):
            cfg.paths.output_dir = os.environ[_RUN_DIR_ENV]
        return
    os.environ[_RUN_DIR_ENV] = str(cfg.paths.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        OmegaConf.set_readonly(hydra_cfg, False)
        with open_dict(hydra_cfg):
            hydra_cfg.run.dir = str(cfg.paths.output_dir)


def _resolve_vocab(cfg: DictConfig, vocab_size: int) -> dict[str, Any]:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if model_cfg.get("vocab_size") is None:
        model_cfg["vocab_size"] = vocab_size
    elif model_cfg["vocab_size"] < vocab_size:
        raise ConfigError(
            f"model.vocab_size={model_cfg['vocab_size']} is smaller than the tokenizer's {vocab_size} ids; "
            "set model.vocab_size=null to take it from the tokenizer"
        )
    return model_cfg


def _apply_resume(cfg: DictConfig) -> None:
    """``resume=<run folder>``: write into that folder and continue from its ``last.ckpt``."""
    folder = cfg.get("resume")
    if not folder:
        return
    if cfg.get("ckpt_path") not in (None, "", "last"):
        raise ConfigError("give either resume=<run folder> or ckpt_path=<checkpoint file>, not both")
    folder = Path(str(folder)).expanduser().absolute()
    last = folder / "checkpoints" / "last.ckpt"
    if not folder.is_dir():
        raise ConfigError(f"resume={cfg.resume}: there is no such run folder; pass a run folder such as outputs/<date>/<time>")
    if not last.exists():
        raise ConfigError(f"resume={cfg.resume}: {last} does not exist, so there is nothing to resume; start a new run instead")
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        cfg.ckpt_path = "last"


def _resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, ""):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not (path.is_file() or (path / SHARDED_META).is_file()):
        raise ConfigError(f"ckpt_path={ckpt} does not point to a checkpoint file ({path} is missing)")
    return str(path)


def _saved_model_config(path: str | None) -> dict[str, Any] | None:
    """Read a checkpoint to resume from safely (tensors memory-mapped, not loaded): fail before any work.

    This read is also what keeps code out of Lightning's own loaders that do not take
    ``weights_only`` (FSDP's lazy loader for full checkpoints). A sharded FSDP checkpoint
    is a folder; only its ``meta.pt`` can be checked this way, so use only your own.
    """
    if not path:
        return None
    if Path(path).is_dir():
        meta = safe_torch_load(Path(path) / SHARDED_META)
        config = (meta.get("hyper_parameters") or {}).get("model_config") if isinstance(meta, dict) else None
        return dict(config) if isinstance(config, dict) else None
    return dict(read_checkpoint(path, mmap=True)["hyper_parameters"]["model_config"])


def _check_resume_fits(path: str, saved: dict[str, Any], model_config: dict[str, Any]) -> None:
    """A checkpoint only continues the model it was trained for."""
    differ = sorted(
        k for k in set(saved) & set(model_config)
        if k not in _RESUME_FREE_MODEL_KEYS and saved[k] != model_config[k]
    )
    if differ:
        was = ", ".join(f"model.{k}={saved[k]}" for k in differ)
        now = ", ".join(f"model.{k}={model_config[k]}" for k in differ)
        raise ConfigError(
            f"the checkpoint {path} was trained with {was}, but this run asks for {now}; "
            "resume with the run's own settings (resume=<run folder> reuses them)"
        )


def _trainer_kwargs(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``cfg.trainer`` into Lightning's arguments and gptlab's own keys."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    ours = {k: kwargs.pop(k) for k in GPTLAB_TRAINER_KEYS if k in kwargs}
    return kwargs, ours


def _plugins(kwargs: dict[str, Any]) -> list:
    """The user's plugins plus the atomic checkpoint writer (unless they brought their own)."""
    from lightning.fabric.plugins import CheckpointIO

    from gptlab.training.checkpointing import AtomicCheckpointIO

    plugins = kwargs.pop("plugins", None) or []
    plugins = [hydra.utils.instantiate(p) for p in (plugins if isinstance(plugins, list) else [plugins])]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def _build_all(group: DictConfig | None) -> list:
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c is not None]


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one model as ``cfg`` describes; return the final logged metrics."""
    _apply_resume(cfg)
    validate_run_config(cfg)
    _pin_ddp_children(cfg)
    output_dir = Path(cfg.paths.output_dir).absolute()
    ckpt_path = _resolve_ckpt_path(cfg, output_dir)
    saved_model_config = _saved_model_config(ckpt_path)
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "high"))
    # Lightning is imported only now: a config mistake above is reported in seconds,
    # without the ~5-10 s that importing Lightning (torchmetrics, torch._dynamo) takes.
    import lightning as L

    from gptlab.training.guards import OutOfMemory, TrainingGuard, is_out_of_memory
    from gptlab.training.interrupt import StopOnSignal
    from gptlab.training.module import GPTLightningModule

    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = hydra.utils.instantiate(cfg.data)
    tokenizer = datamodule.build_tokenizer(hydra.utils.instantiate(cfg.tokenizer))
    datamodule.prepare_data()  # tokenize (cached) before the model: too-small corpora fail fast
    model_config = _resolve_vocab(cfg, tokenizer.vocab_size)
    if ckpt_path and saved_model_config is not None:
        _check_resume_fits(ckpt_path, saved_model_config, model_config)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    module = GPTLightningModule(
        model_config=model_config,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        tokenizer=tokenizer.to_dict(),
        run_config=run_config,
    )
    _announce(cfg, module, tokenizer, output_dir, run_config)

    kwargs, ours = _trainer_kwargs(cfg)
    callbacks = [*_build_all(cfg.get("callbacks")), TrainingGuard(ours.get("skip_nonfinite", False)), StopOnSignal()]
    plugins = _plugins(kwargs)
    trainer = hydra.utils.instantiate(kwargs, callbacks=callbacks, logger=_build_all(cfg.get("logger")) or False, plugins=plugins)
    if trainer.is_global_zero:
        remove_stale_temp_files(output_dir / "checkpoints")  # left by a run killed mid-write
        slow = slow_precision_warning(trainer.precision, trainer.strategy.root_device)
        if slow:
            log.warning(slow)  # on the console and in the run's train.log
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except Exception as e:
        if is_out_of_memory(e):
            raise OutOfMemory.explain(cfg, str(trainer.strategy.root_device)) from None
        raise
    finally:
        _finish_wandb()
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}


def _announce(cfg: DictConfig, module, tokenizer, output_dir: Path, run_config: dict) -> None:
    """Print what is being trained and keep the resolved config and tokenizer in the run folder (rank 0)."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(run_config)))
    tokenizer.save(output_dir / "tokenizer.json")
    n_params = module.model.num_parameters()
    c = module.config
    print(
        f"gptlab: {n_params:,} parameters ({c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, "
        f"context {c.block_size}); tokenizer {tokenizer.kind} with {tokenizer.vocab_size:,} ids; "
        f"run folder {output_dir}",
        flush=True,
    )


def _finish_wandb() -> None:
    """Close the wandb run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def optimized_value(metrics: dict[str, float], name: str | None, required: bool = True) -> float | None:
    """The metric a sweeper optimises; a clear error when the run never logged it.

    Outside a sweep nobody reads the value, so a run that simply ended between two
    validations (a resumed run often does) is not an error then: ``required=False``.
    """
    if not name:
        return None
    if name not in metrics:
        if not required:
            return None
        raise ConfigError(f"optimized_metric={name!r} was never logged; logged metrics are {sorted(metrics)}")
    return metrics[name]


OVERRIDES_FILE = "overrides.yaml"


def merge_overrides(base: list[str], new: list[str]) -> list[str]:
    """Command-line overrides ``base`` then ``new``, one per key, the later winning.

    Hydra refuses the same key twice, so a resumed run's own overrides cannot simply
    be followed by today's. Adding a key and then deleting it cancels both.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    merged: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides([*base, *new]):
        previous = merged.pop(override.key_or_group, None)
        if override.is_delete() and previous is not None and (previous.is_add() or previous.is_force_add()):
            continue
        merged[override.key_or_group] = override
    return [o.input_line for o in merged.values()]


def _recorded_overrides(folder: Path) -> list[str]:
    """The overrides a run folder was composed with (ours, else Hydra's record of the first launch)."""
    for name in (OVERRIDES_FILE, ".hydra/overrides.yaml"):
        if (folder / name).is_file():
            recorded = [str(o) for o in OmegaConf.load(folder / name)]
            return [o for o in recorded if o.split("=", 1)[0].lstrip("+~") not in ("resume", "ckpt_path")]
    return []


def _compose_run(cfg: DictConfig) -> tuple[DictConfig, list[str], Path]:
    """The config to run, the overrides that compose it, and the run folder that records them.

    ``resume=<run folder>`` recomposes the config from that run's recorded overrides
    followed by today's, so ``python -m gptlab.train resume=<folder>`` needs nothing
    else and ``resume=<folder> trainer.max_steps=5000`` extends a run.
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    given = [str(o) for o in HydraConfig.get().overrides.task]
    if not cfg.get("resume"):
        return cfg, given, Path(cfg.paths.output_dir)
    folder = Path(str(cfg.resume)).expanduser().absolute()
    today = [o for o in given if o.split("=", 1)[0].lstrip("+~") != "resume"]
    overrides = merge_overrides(_recorded_overrides(folder), today)
    return compose(config_name="train", overrides=[*overrides, f"resume={folder}"]), overrides, folder


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gptlab.errors import TrainingInterrupted

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        cfg, overrides, folder = _compose_run(cfg)
        if not _is_ddp_child() and (folder.is_dir() or not cfg.get("resume")):
            atomic_write_text(folder / OVERRIDES_FILE, OmegaConf.to_yaml(OmegaConf.create(overrides)))
        return optimized_value(train(cfg), cfg.get("optimized_metric"), required=multirun)
    except TrainingInterrupted as e:
        # Not a failure: the checkpoint is saved. Stop (a sweep too) with the shell's status for a signal.
        print(f"gptlab: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except user_errors() as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        failure = f"error: {e}"
    except Exception:
        if not multirun:
            raise
        failure = traceback.format_exc()
    # In a sweep one failed job must not end the others: record why and report the fail value.
    print(f"job failed: {failure.strip().splitlines()[-1]}", file=sys.stderr)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "error.txt", failure)
    return float(cfg.get("fail_value", math.inf))


if __name__ == "__main__":
    main()
