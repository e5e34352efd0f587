"""Nested config dicts as the dotted keys a user types (``model.n_layer``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"model": {"n_layer": 4}}`` -> ``{"model.n_layer": 4}``; lists and empty dicts stay values.

    The dotted keys are the ones a user types on the command line (``model.n_layer=4``),
    so a wandb column or a comparison table reads exactly like the override that made it.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat
