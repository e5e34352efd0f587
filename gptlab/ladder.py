"""``python -m gptlab.ladder``: an isoFLOP ladder of ``model=scaled`` runs, and its scaling laws.

    python -m gptlab.ladder budgets=[1e12,3e12,1e13] depths=[1,2,3,4] seeds=[0,1,2] holdout=1e13
    python -m gptlab.ladder budgets=[...] depths=[...] hydra/launcher=joblib   # any launcher
    python -m gptlab.ladder fit=outputs/ladder/<date>/<time>                  # fit only

Every (budget, depth, seed) is one job of a single ``python -m gptlab.train --multirun``
(so the basic, joblib or submitit launcher runs them, and ``gptlab.compare`` reads them
too), with ``model=scaled model.depth=D model.flops_budget=C``: each depth trains on
``C / (6 N)`` tokens, its batch, lr and weight decay derived as for any scaled run. The
whole grid is checked before anything launches: a budget too small for a depth to take
one step is refused. Then ``gptlab.analysis.scaling_laws`` fits the sweep, and the table,
``fit.json`` and ``ladder.png`` land in the sweep folder. Options: gptlab/conf/ladder.yaml.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gptlab.analysis.ladder_report import format_fit, ladder_figure, ladder_points, write_fit
from gptlab.analysis.runs import load_runs
from gptlab.analysis.scaling_laws import LadderFit, check_holdout, fit_ladder
from gptlab.cli import entry_point
from gptlab.errors import ConfigError, GptlabError

CONFIG = Path(__file__).resolve().parent / "conf" / "ladder.yaml"


def parse_argv(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The ladder's options (keys of gptlab/conf/ladder.yaml) and the overrides left for train."""
    defaults = OmegaConf.load(CONFIG)
    mine: list[str] = []
    train: list[str] = []
    for arg in argv:
        (mine if arg.split("=", 1)[0] in defaults else train).append(arg)
    try:
        options = OmegaConf.merge(defaults, OmegaConf.from_dotlist(mine))
    except Exception as e:  # a value YAML cannot read
        raise ConfigError(
            f"cannot read the ladder options {mine}: {e}; write lists as budgets=[1e12,3e12]"
        ) from e
    plain: dict[str, Any] = OmegaConf.to_container(options, resolve=True)  # type: ignore[assignment]
    for key in ("budgets", "depths", "seeds"):
        if not isinstance(plain[key], list) or not plain[key]:
            raise ConfigError(f"{key}={plain[key]} must be a non-empty list, e.g. {key}=[1,2]")
    plain["budgets"] = sorted(float(c) for c in plain["budgets"])
    return plain, train


def train_overrides(options: dict[str, Any], given: list[str]) -> list[str]:
    """What every ladder job gets: the ladder's defaults, then the command line's, one per key."""
    from gptlab.training.run import merge_overrides, override_key

    base = [str(o) for o in options["train"]]
    if not any(override_key(o) == "trainer.val_check_interval" for o in given):
        base.append("trainer.val_check_interval=${trainer.max_steps}")  # validate at the last step
    return merge_overrides(["model=scaled", *base], given)


def plan(options: dict[str, Any], overrides: list[str]) -> tuple[list[str], list[Any]]:
    """One line per (budget, depth) with its N, tokens, batch and steps; refuses a budget too small.

    Each grid point is composed and derived exactly as ``train`` will (``derive_from_config``),
    so the check cannot disagree with the runs. Returns the lines and ``(C, depth, Derived,
    (warmup, decay_fraction) or None)`` per point.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gptlab.training import wsd_branch
    from gptlab.training.depth import check_derived, derive_from_config

    lines, points = [], []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG.parent), version_base="1.3"):
        for c in options["budgets"]:
            for depth in options["depths"]:
                point = [*overrides, f"model.depth={depth}", f"model.flops_budget={c!r}"]
                cfg = compose("train", overrides=[o for o in point if not o.startswith("hydra")])
                _, d, _ = derive_from_config(cfg, point)
                if d.max_steps < 1:
                    raise ConfigError(too_small(c, depth, d.params, d.batch_tokens))
                check_derived(d)
                schedule = wsd_branch._wsd(cfg) if options.get("wsd") else None
                points.append((c, depth, d, schedule))
                lines.append(
                    f"C={c:.3g} depth={depth}: N={d.params:,} D={d.tokens:,} tokens, "
                    f"B={d.batch_tokens:,}, {d.max_steps:,} steps"
                )
    GlobalHydra.instance().clear()
    return lines, points


def too_small(c: float, depth: int, params: int, batch: int) -> str:
    return (
        f"budget {c:.3g} FLOPs is too small for depth {depth} (N={params:,}) to take one "
        f"step of {batch:,} tokens (that needs C >= 6 N B = {6 * params * batch:.3g}); "
        "raise the budget or drop the depth"
    )


def wsd_plan(options: dict[str, Any], points: list[Any]) -> list[str]:
    """WSD mode: each depth's smaller budgets as decays off its largest budget's run; the saving.

    Refuses a smaller budget that takes no step at the largest budget's batch. The saving
    is counted in tokens trained (a step's cost at one depth is the same for every budget).
    """
    from gptlab.training.wsd_branch import decay_start, steps_at

    top = max(options["budgets"])
    full = branched = 0
    lines = []
    for c, depth, d, (warmup, fraction) in points:
        if c != top:
            continue
        full += d.max_steps * d.batch_tokens
        branched += d.max_steps * d.batch_tokens
        for small in options["budgets"]:
            if small == top:
                continue
            steps = steps_at(small, d.params, d.batch_tokens)
            if steps < 1:
                raise ConfigError(too_small(small, depth, d.params, d.batch_tokens))
            start = decay_start(steps, warmup, fraction)
            if start >= steps:
                raise ConfigError(
                    f"budget {small:.3g} FLOPs gives depth {depth} {steps} steps at the largest budget's "
                    f"batch of {d.batch_tokens:,} tokens, no more than the {warmup} warm-up steps, so "
                    "there is nothing to decay; raise the budget or scheduler.warmup_steps lower"
                )
            full += steps * d.batch_tokens
            branched += (steps - start) * d.batch_tokens
            lines.append(
                f"C={small:.3g} depth={depth}: a decay from step {start:,} to {steps:,} (B={d.batch_tokens:,})"
            )
    runs = len(options["depths"]) * len(options["seeds"])
    lines.append(
        f"WSD branching: {runs * len(options['budgets'])} runs become {runs} stable runs and "
        f"{runs * (len(options['budgets']) - 1)} decays, {branched / full:.0%} of the tokens "
        f"(saves {1 - branched / full:.0%})"
    )
    return lines


def launch(
    options: dict[str, Any], overrides: list[str], sweep: Path, budgets: list[float] | None = None
) -> int:
    """One ``python -m gptlab.train --multirun`` over every (budget, depth, seed); its exit status."""
    grid = [
        f"model.depth={','.join(str(d) for d in options['depths'])}",
        f"model.flops_budget={','.join(repr(c) for c in budgets or options['budgets'])}",
        f"seed={','.join(str(s) for s in options['seeds'])}",
        f"hydra.sweep.dir={sweep}",
    ]
    command = [sys.executable, "-m", "gptlab.train", "--multirun", *overrides, *grid]
    print("gptlab: " + " ".join(command), flush=True)
    return subprocess.run(command).returncode


def fit_sweep(options: dict[str, Any], sweep: Path) -> tuple[LadderFit, str]:
    """Fit a finished ladder sweep; write ``fit.json`` and ``ladder.png`` beside its runs."""
    from gptlab.utils.io import atomic_open

    runs, _ = load_runs([str(sweep)])
    points, skipped = ladder_points(runs, options["metric"])
    holdout = float(options["holdout"]) if options.get("holdout") is not None else None
    fit = fit_ladder(points, holdout, int(options["samples"]), float(options["confidence"]))
    measured = check_holdout(fit, points)
    text = format_fit(fit, measured, options["metric"])
    if skipped:
        text += "\n" + "\n".join(f"left out {s}" for s in skipped)
    write_fit(sweep / "fit.json", fit, points, measured)
    with atomic_open(sweep / "ladder.png", "wb") as f:
        ladder_figure(fit, points, options["metric"], measured).savefig(f, format="png", dpi=120)
    return fit, text + f"\nwrote {sweep / 'fit.json'} and {sweep / 'ladder.png'}"


def ladder(argv: list[str]) -> tuple[LadderFit, str]:
    """Plan, launch and fit a ladder (or only fit one, ``fit=<sweep>``); for tests and notebooks."""
    options, given = parse_argv(argv)
    if options.get("fit"):
        return fit_sweep(options, Path(str(options["fit"])).expanduser().absolute())
    overrides = train_overrides(options, given)
    lines, points = plan(options, overrides)
    if options.get("wsd"):
        lines = [line for line in lines if line.startswith(f"C={max(options['budgets']):.3g} ")]
        lines += wsd_plan(options, points)
    print("\n".join(["gptlab: the ladder", *lines]), flush=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")
    sweep = Path(str(options.get("sweep_dir") or f"outputs/ladder/{stamp}")).expanduser().absolute()
    if options.get("wsd"):
        top, rest = options["budgets"][-1], options["budgets"][:-1]
        branches = f"model.wsd_branches=[{','.join(repr(c) for c in rest)}]"
        phases = [
            ([*overrides, branches], sweep / "stable", [top]),
            ([*overrides, f"model.wsd_from={sweep / 'stable'}"], sweep / "branches", rest),
        ]
    else:
        phases = [(overrides, sweep, options["budgets"])]
    for phase_overrides, folder, budgets in phases:
        if launch(options, phase_overrides, folder, budgets) != 0:
            raise GptlabError(
                f"the ladder's multirun failed (see above); fit what finished with fit={sweep}"
            )
    return fit_sweep(options, sweep)


@entry_point(return_code=True)
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nOptions (gptlab/conf/ladder.yaml):\n\n" + CONFIG.read_text())
        return 0
    print(ladder(argv)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
