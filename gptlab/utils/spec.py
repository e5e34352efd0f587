"""Build an object from a plain ``{"_target_": "module.name", **kwargs}`` dict, from an allow-list.

Hydra's ``instantiate`` does this for the entry points. The training module must not
depend on Hydra (it is rebuilt from a checkpoint in notebooks and scripts), yet it
stores its optimizer and scheduler choices as plain data; this is the small piece
that turns that data back into objects.

That data comes from the command line, from a run folder's ``overrides.yaml`` and
from checkpoints, so it must not be able to call just anything:
``{"_target_": "os.system", ...}`` or ``builtins.eval`` would run code. Only callables
*defined* under ``ALLOWED_TARGETS`` (gptlab's optimizers and schedules, and
``torch.optim``) are built; code (never config) may add a package of its own
optimizers with ``allow_targets("mylab.optim.")``.
"""

from __future__ import annotations

import importlib
from typing import Any

from gptlab.errors import ConfigError

ALLOWED_TARGETS: list[str] = [
    "gptlab.training.optim.",
    "gptlab.training.schedules.",
    "torch.optim.",
]


def allow_targets(*prefixes: str) -> None:
    """Let ``build`` call callables defined under these module prefixes (e.g. ``"mylab.optim."``)."""
    for prefix in prefixes:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        if prefix not in ALLOWED_TARGETS:
            ALLOWED_TARGETS.append(prefix)


def _allowed(dotted: str) -> bool:
    return any(dotted.startswith(prefix) for prefix in ALLOWED_TARGETS)


def _refuse(target: str, what: str) -> ConfigError:
    allowed = ", ".join(p.rstrip(".") for p in ALLOWED_TARGETS)
    return ConfigError(
        f"{what} _target_={target!r} is not something gptlab builds; use an optimizer or schedule under "
        f"{allowed} (see gptlab/conf/optimizer and gptlab/conf/scheduler)"
    )


def locate(target: str, what: str = "the") -> Any:
    """Import ``"package.module.attr"`` (the attribute may be nested: ``module.Class.method``).

    Both the name and the object it reaches must lie under ``ALLOWED_TARGETS``: the
    object's own module is checked too, so ``torch.optim.optimizer.torch.load`` (a
    walk from an allowed module into another one) is refused like ``os.system``.
    """
    if not isinstance(target, str) or not _allowed(target):
        raise _refuse(str(target), what)
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
        home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if not callable(obj) or not _allowed(home):
            raise _refuse(target, what)
        return obj
    raise ConfigError(
        f"cannot import {what} _target_={target!r}; check the _target_ in your config"
    )


def check_target(spec: Any, what: str) -> None:
    """Refuse ``spec`` unless it is a mapping whose ``_target_`` ``build`` may call (for preflight checks)."""
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ConfigError(
            f"the {what} config has no _target_ naming what to build; pick one from gptlab/conf/{what}"
        )
    locate(spec["_target_"], what)


def build(spec: dict[str, Any], *args: Any, **extra: Any) -> Any:
    """Call ``spec["_target_"]`` with ``*args``, the spec's other keys and ``extra``."""
    if "_target_" not in spec:
        raise ConfigError(f"the config {spec} has no _target_ naming what to build")
    kwargs = {k: v for k, v in spec.items() if not k.startswith("_")}
    kwargs.update(extra)
    return locate(spec["_target_"])(*args, **kwargs)
