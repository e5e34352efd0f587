"""``python -m gptlab.train``: compose the config, build every object from it, train.

    python -m gptlab.train                                  # offline default, CPU, minutes
    python -m gptlab.train experiment=shakespeare_char      # nanoGPT's CPU recipe
    python -m gptlab.train model=gpt124m tokenizer=gpt2 trainer.devices=2
    python -m gptlab.train --multirun model.n_layer=2,4 optimizer.lr=1e-3,3e-3

``train(cfg)`` is a plain function (tests and notebooks call it with a config from
``hydra.compose``); ``main`` is the thin Hydra wrapper that turns user errors into one
line and returns ``cfg.optimized_metric`` to sweepers.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.errors import ConfigError, user_errors
from gptlab.utils.io import atomic_write_text

_RUN_DIR_ENV = "GPTLAB_RUN_DIR"
# Lightning 2.6 with torch >= 2.10 warns about its own use of a deprecated torch API.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


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


def _resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, ""):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt} does not point to a checkpoint file ({path} is missing)")
    return str(path)


def _build_all(group: DictConfig | None) -> list:
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c is not None]


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one model as ``cfg`` describes; return the final logged metrics."""
    from gptlab.training.module import GPTLightningModule

    _pin_ddp_children(cfg)
    output_dir = Path(cfg.paths.output_dir).absolute()
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "high"))
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = hydra.utils.instantiate(cfg.data)
    tokenizer = datamodule.build_tokenizer(hydra.utils.instantiate(cfg.tokenizer))
    datamodule.prepare_data()  # tokenize (cached) before the model: too-small corpora fail fast
    model_config = _resolve_vocab(cfg, tokenizer.vocab_size)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    module = GPTLightningModule(
        model_config=model_config,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        tokenizer=tokenizer.to_dict(),
        run_config=run_config,
    )
    _announce(cfg, module, tokenizer, output_dir, run_config)

    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=_build_all(cfg.get("callbacks")), logger=_build_all(cfg.get("logger")) or False)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=_resolve_ckpt_path(cfg, output_dir))
    finally:
        _finish_wandb()
    return {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}


@rank_zero_only
def _announce(cfg: DictConfig, module, tokenizer, output_dir: Path, run_config: dict) -> None:
    """Print what is being trained and keep the resolved config and tokenizer in the run folder."""
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


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The metric a sweeper optimises; a clear error when the run never logged it."""
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(f"optimized_metric={name!r} was never logged; logged metrics are {sorted(metrics)}")
    return metrics[name]


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return optimized_value(train(cfg), cfg.get("optimized_metric"))
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
