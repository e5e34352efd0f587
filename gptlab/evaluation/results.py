"""The file a downstream evaluation writes, and reads back: one JSON, summary and per-item outcomes.

    {"format": "gptlab-downstream/1", "model": "<ckpt or folder>", "step": 500,
     "tasks": {"hellaswag": {"n": 10042, "primary": "acc_norm",
                             "metrics": {"acc": .., "acc_se": .., "acc_norm": .., "bpb": ..},
                             "centered": .., "truncated": 0, ...,
                             "items": {"index": [...], "acc": [1, 0, ...], ...}}},
     "suites": {"core": {"score": .., "se": .., "tasks": ["core/piqa", ...]}}}

``items`` keeps, per task, which items each rule got right, in item order: what a paired
test between two models scored on the same items needs (``gptlab.compare``'s McNemar).
The command line writes it beside the checkpoint; the in-loop callback writes
``<run>/downstream/step-<N>.json``. No torch here: ``gptlab.analysis`` reads these files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gptlab.errors import GptlabError

FORMAT = "gptlab-downstream/1"
RUN_FOLDER = "downstream"  # inside a run folder: one file per evaluated step


def step_file(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / RUN_FOLDER / f"step-{step:08d}.json"


def write(path: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results`` atomically (NaN as null, so any JSON reader takes the file)."""
    from gptlab.utils.io import atomic_write_text

    path = Path(path)
    if path.is_dir():
        raise GptlabError(
            f"output={path} is a folder; give a file path, e.g. output={path}/eval.json"
        )
    body = {"format": FORMAT, **results}
    atomic_write_text(path, json.dumps(_finite(body), indent=1) + "\n")
    return path


def read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GptlabError(f"{path} is not a gptlab downstream evaluation file (format {FORMAT})")
    return data


def latest_in_run(run_dir: str | Path) -> Path | None:
    """The newest step's file a run's in-loop evaluation wrote, if any."""
    files = sorted((Path(run_dir) / RUN_FOLDER).glob("step-*.json"))
    return files[-1] if files else None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
