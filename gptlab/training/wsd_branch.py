"""Warm-up/stable/decay branches: several budgets of one depth from one stable run.

Under WSD the lr is flat until the decay starts, so a run to budget ``C`` is, up to its
decay start ``k_C``, the same run as one to a larger budget with the same batch, lr and
weight decay. The ladder's ``wsd=true`` therefore trains, per depth and seed, one run at
the largest budget that also keeps its checkpoint at every smaller budget's ``k_C``
(``model.wsd_branches``), and then, per smaller budget, only the decay: a run that starts
from that checkpoint (``model.wsd_from``) and decays to its own ``s_C = T_C // B`` steps.

What it costs: every branch of a depth shares the stable run's batch, lr and weight
decay (those of the largest budget), where separate runs would each take their own
(``gptlab/training/depth.py``); a stable run cannot change its batch half-way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptlab.errors import ConfigError

# What a branch takes from its stable run, so that it continues the same run.
SHARED_KEYS = (
    "data.global_batch_tokens",
    "data.batch_size",
    "optimizer.lr",
    "optimizer.adam_lr",
    "optimizer.head_lr",
    "optimizer.embedding_lr",
    "optimizer.weight_decay",
)


def decay_start(steps: int, warmup_steps: int, decay_fraction: float) -> int:
    """The step WSD's decay starts at (``WarmupStableDecay.decay_start``'s rule, torch-free)."""
    return max(warmup_steps, int(steps * (1.0 - decay_fraction)))


def steps_at(budget: float, params: int, batch_tokens: int) -> int:
    """Optimizer steps of a budget ``C`` at ``N`` parameters and a batch of ``B`` tokens."""
    return int(budget / (6 * params)) // batch_tokens


def branch_points(cfg: Any, budgets: list[float], params: int, batch_tokens: int) -> list[int]:
    """The steps the stable run keeps a checkpoint at: each branch budget's decay start."""
    schedule = _wsd(cfg)
    points = []
    for c in budgets:
        steps = steps_at(c, params, batch_tokens)
        if steps < 1:
            raise ConfigError(
                f"model.wsd_branches: budget {c:.3g} gives {steps} steps of {batch_tokens:,} tokens at "
                f"N={params:,}; drop it or raise it"
            )
        points.append(decay_start(steps, *schedule))
    return sorted(set(points))


def stable_values(cfg: Any, folder: str, depth: int) -> tuple[Path, dict[str, Any]]:
    """The stable run of this depth and seed under ``folder``, and the values a branch shares with it."""
    import yaml

    from gptlab.utils.trees import flatten

    root = Path(folder).expanduser().absolute()
    for config_file in sorted(root.glob("**/config.yaml")):
        config = flatten(yaml.safe_load(config_file.read_text()) or {})
        if config.get("scaled.depth") == depth and config.get("seed") == cfg.seed:
            return config_file.parent, {
                k: config[k] for k in SHARED_KEYS if config.get(k) is not None
            }
    raise ConfigError(
        f"model.wsd_from={folder} holds no stable run of depth {depth} and seed {cfg.seed}; "
        "run the stable phase first (python -m gptlab.ladder wsd=true does both)"
    )


def branch_start(cfg: Any, run: Path, steps: int) -> str:
    """The stable run's checkpoint at this branch's decay start (refused when it was not kept)."""
    step = decay_start(steps, *_wsd(cfg))
    filename = str(cfg.callbacks.model_checkpoint.filename).format(step=step) + ".ckpt"
    path = run / "checkpoints" / filename
    if not path.is_file():
        raise ConfigError(
            f"the stable run {run} has no checkpoint at step {step} ({path}); run it with this "
            "budget in model.wsd_branches"
        )
    return str(path)


def branch_values(cfg: Any, settings: Any, derived: Any) -> dict[str, Any]:
    """The config values a stable run (``wsd_branches``) or a branch (``wsd_from``) adds."""
    values: dict[str, Any] = {}
    if settings.wsd_branches:
        if cfg.get("callbacks", {}).get("model_checkpoint") is None:
            raise ConfigError(
                "model.wsd_branches needs callbacks.model_checkpoint, which saves the branch points"
            )
        values["callbacks.model_checkpoint.at_steps"] = branch_points(
            cfg, list(settings.wsd_branches), derived.params, derived.batch_tokens
        )
    if settings.wsd_from:
        run, shared = stable_values(cfg, settings.wsd_from, settings.depth)
        values.update(shared)
        # A branch that already has checkpoints of its own continues from them instead
        # (resume=<its folder>, or resume=auto in a requeued job), like any run.
        resume = cfg.get("resume")
        own = Path(str(cfg.paths.output_dir)) / "checkpoints" / "last.ckpt"
        if not resume or (resume == "auto" and not own.is_file()):
            values["ckpt_path"] = branch_start(cfg, run, derived.max_steps)
            values["resume"] = None
    return values


def _wsd(cfg: Any) -> tuple[int, float]:
    scheduler: Any = cfg.get("scheduler") or {}
    if scheduler.get("name") != "wsd":
        raise ConfigError(
            "model.wsd_branches and model.wsd_from need scheduler=wsd (a flat lr before the decay "
            f"is what lets budgets share a run), not scheduler.name={scheduler.get('name')}"
        )
    return int(scheduler.warmup_steps), float(scheduler.decay_fraction)
