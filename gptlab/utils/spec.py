"""Build an object from a plain ``{"_target_": "module.name", **kwargs}`` dict.

Hydra's ``instantiate`` does this for the entry points. The training module must not
depend on Hydra (it is rebuilt from a checkpoint in notebooks and scripts), yet it
stores its optimizer and scheduler choices as plain data; this is the small piece
that turns that data back into objects.
"""

from __future__ import annotations

import importlib
from typing import Any


def locate(target: str) -> Any:
    """Import ``"package.module.attr"`` (the attribute may be nested: ``module.Class.method``)."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            break
        return obj
    raise ValueError(f"cannot import {target!r}; check the _target_ in your config")


def build(spec: dict[str, Any], *args: Any, **extra: Any) -> Any:
    """Call ``spec["_target_"]`` with ``*args``, the spec's other keys and ``extra``."""
    if "_target_" not in spec:
        raise ValueError(f"the config {spec} has no _target_ naming what to build")
    kwargs = {k: v for k, v in spec.items() if not k.startswith("_")}
    kwargs.update(extra)
    return locate(spec["_target_"])(*args, **kwargs)
