"""Runs read from the wandb API instead of run folders (``compare source=wandb project=...``).

gptlab's wandb logger stores the flattened resolved config, the job's ``overrides`` and
``model/params``, and logs the same metrics as ``metrics.csv`` with Lightning's
``trainer/global_step``; so a wandb run maps onto the same ``Run`` as a folder does and
everything downstream (table, groups, plot) is shared.
"""

from __future__ import annotations

from typing import Any

from gptlab.analysis import CompareError
from gptlab.analysis.runs import Run, parse_overrides

STEP_KEY = "trainer/global_step"
_FAILED_STATES = ("failed", "crashed", "killed")


def load_wandb_runs(
    project: str | None, entity: str | None = None, group: str | None = None, api: Any = None
) -> list[Run]:
    """Every run of ``entity/project`` (optionally one ``group``, e.g. one sweep)."""
    if not project:
        raise CompareError(
            "source=wandb needs the project to read: add project=<name> (and entity=<user or team> if it "
            "is not your default), e.g. python -m gptlab.compare source=wandb project=gptlab"
        )
    path = f"{entity}/{project}" if entity else project
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=60)
        remote = list(api.runs(path, filters={"group": group} if group else None))
    except CompareError:
        raise
    except Exception as e:  # no key, no network, no such project: wandb's reasons vary by version
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CompareError(
            f"could not read wandb project {path!r} ({reason}); check the project and entity names, "
            "WANDB_API_KEY (or `wandb login`) and the network"
        ) from None
    if not remote:
        where = f" in group {group!r}" if group else ""
        raise CompareError(f"wandb project {path!r} has no runs{where}")
    return [wandb_run(r) for r in remote]


def wandb_run(remote: Any) -> Run:
    """One wandb API run as a ``Run``: history rows keyed by steps done, like ``metrics.csv``."""
    config = {k: v for k, v in dict(remote.config).items() if not str(k).startswith("_")}
    overrides = config.pop("overrides", None) or []
    if isinstance(overrides, str):
        overrides = overrides.split()
    rows = []
    for item in remote.scan_history():
        row = {
            k: float(v)
            for k, v in item.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if STEP_KEY in row:
            row["step"] = row.pop(STEP_KEY) + 1
            rows.append(row)
    summary_src = dict(remote.summary)
    state = getattr(remote, "state", "")
    summary = {
        "params": summary_src.get("model/params") or config.get("model/params"),
        "wall_time": summary_src.get("_runtime"),
        "status": "failed" if state in _FAILED_STATES else state,
    }
    return Run(
        name=getattr(remote, "name", None) or remote.id,
        overrides=parse_overrides(list(overrides)),
        config=config,
        rows=rows,
        summary=summary,
        error=f"wandb state {state}" if state in _FAILED_STATES else None,
    )
