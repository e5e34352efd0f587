"""``python -m gptlab.train``: compose the config, check it, build every object from it, train.

    python -m gptlab.train                                  # offline default, CPU, minutes
    python -m gptlab.train experiment=shakespeare_char      # nanoGPT's CPU recipe
    python -m gptlab.train model=gpt124m trainer.devices=2  # GPT-2 small (GPT-2's tokenizer), DDP
    python -m gptlab.train --multirun model.n_layer=2,4 optimizer.lr=1e-3,3e-3
    python -m gptlab.train resume=outputs/<date>/<time>     # continue that run exactly
    python -m gptlab.train resume=auto hydra.run.dir=<dir>  # continue if there is a checkpoint (requeued jobs)

``train(cfg)`` is a plain function (tests and notebooks call it with a config from
``hydra.compose``); ``main`` is the thin Hydra wrapper. What a run folder holds and how a
run continues is ``gptlab/training/run.py``; how objects are built, ``gptlab/build.py``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from gptlab import build
from gptlab.cli import check_output_folder, entry_point
from gptlab.compose import compose_run, optimized_value
from gptlab.training import run as runs
from gptlab.training.depth import apply_depth
from gptlab.training.preflight import check_vocab, validate_run_config
from gptlab.utils import ddp_children, warning_filters

warning_filters.install()


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, float]:
    """Train one model as ``cfg`` describes; return the final logged metrics.

    ``overrides`` (the command line that composed ``cfg``) is recorded in the run folder
    once the run has passed every check, so that ``resume=`` can compose it again.
    Under ``model=scaled`` the depth's derived values are written in first (the keys
    ``overrides`` sets keep their values; ``gptlab/training/depth.py``).
    """
    derived = apply_depth(cfg, overrides)
    if derived is not None and ddp_children.is_rank_zero():
        print(derived.describe(), flush=True)
        if cfg.scaled.get("branch_of"):
            print(
                f"gptlab: a WSD branch, using its stable run's {dict(cfg.scaled.branch_of)}",
                flush=True,
            )
    target = runs.resume_target(cfg.get("resume"), cfg.get("ckpt_path"), cfg.paths.output_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(target.folder)
    validate_run_config(cfg)
    ddp_children.pin(cfg)
    folder = runs.RunFolder(cfg.paths.output_dir)
    owner = ddp_children.is_rank_zero()
    with runs.owned(folder.path) if owner else contextlib.nullcontext():
        return _train(cfg, folder, target.checkpoint, overrides if owner else None)


def _train(
    cfg: DictConfig, folder: runs.RunFolder, checkpoint: Path | None, overrides: list[str] | None
) -> dict[str, float]:
    import torch

    from gptlab.checkpoint import read_checkpoint

    saved = read_checkpoint(checkpoint, mmap=True) if checkpoint and checkpoint.is_file() else None
    torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "high"))
    # Lightning is imported only now: a config mistake above is reported in seconds.
    import lightning as L

    from gptlab.training.guards import TrainingGuard, out_of_memory_explained
    from gptlab.training.interrupt import StopOnSignal
    from gptlab.training.loggers import finish_wandb

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build.build_datamodule(cfg)
    saved_tokenizer = (saved or {}).get("hyper_parameters", {}).get("tokenizer")
    if saved_tokenizer:  # a resumed run keeps the tokenizer it was trained with
        tokenizer = datamodule.use_saved_tokenizer(saved_tokenizer)
    else:
        tokenizer = datamodule.build_tokenizer(hydra.utils.instantiate(cfg.tokenizer))
    datamodule.check_same_data(
        (saved or {}).get("gptlab", {}).get("data")
    )  # before preparing anything
    datamodule.prepare_data()  # tokenize (once, into a store) before the model: too-small corpora fail fast
    model_config = check_vocab(tokenizer.vocab_size, cfg.model)
    if saved is not None and checkpoint is not None:
        runs.check_resume(checkpoint, saved, model_config, int(cfg.trainer.max_steps))
    with out_of_memory_explained(cfg, "cpu"):  # the model (and its block_size^2 mask) is built here
        module = build.build_module(cfg, model_config, tokenizer)
    guard = TrainingGuard(bool(cfg.trainer.get("skip_nonfinite", False)))
    trainer = build.build_trainer(cfg, first_callbacks=[StopOnSignal(), guard])
    if trainer.is_global_zero:  # every check has passed: record the launch
        folder.start_launch(build.plain(cfg), tokenizer, overrides, trainer, saved)
        print(build.describe(cfg, module, tokenizer, trainer, folder.path), flush=True)
        if datamodule.sampling != "random":  # the default needs no line; packed says what it crops
            print(f"gptlab: {datamodule.describe_order()}", flush=True)
    try:
        with out_of_memory_explained(cfg, str(trainer.strategy.root_device)):
            ckpt_path = str(checkpoint) if checkpoint else None
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        finish_wandb()
    return build.final_metrics(trainer)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@entry_point
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    cfg, overrides = compose_run(cfg, [str(o) for o in hydra_cfg.overrides.task])
    metrics = train(cfg, overrides)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    return optimized_value(metrics, cfg.get("optimized_metric"), required=sweeping)


if __name__ == "__main__":
    check_output_folder(sys.argv)
    main()
