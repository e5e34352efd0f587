"""Typed schema of the ``model`` config group, registered with Hydra's ConfigStore.

Every preset in ``gptlab/conf/model/`` starts from this schema (``defaults: [schema, _self_]``),
which gives two things a YAML file alone cannot:

* every architecture option exists on every preset, so ``model.position=rope`` works on
  ``nano`` even though its file does not mention it;
* Hydra checks types while composing, so ``--multirun model.n_layer=two`` fails with
  Hydra's own message before any job of the sweep starts.

The schema is derived from ``gptlab.model.GPTConfig``'s own dataclass fields (names,
types, defaults), so a new model option needs no second edit here. The one difference:
``vocab_size`` may be null, because the training code fills it in from the tokenizer.
``gptlab/model/config.py`` imports nothing heavy, so registering stays torch-free.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from gptlab.model.config import AttentionConfig, GPTConfig, MupConfig
from gptlab.training.depth import DepthSettings


def _schema_of(
    source: type, name: str, nested: dict[str, type], overrides: dict[str, tuple[Any, Any]]
) -> type:
    """A plain dataclass with ``source``'s fields, types and defaults (``nested`` swaps field types)."""
    hints = typing.get_type_hints(source)
    fields = []
    for f in dataclasses.fields(source):
        if f.name in overrides:
            kind, default = overrides[f.name]
            fields.append((f.name, kind, dataclasses.field(default=default)))
        elif f.name in nested:
            fields.append(
                (f.name, nested[f.name], dataclasses.field(default_factory=nested[f.name]))
            )
        elif f.default is not dataclasses.MISSING:
            fields.append((f.name, hints[f.name], dataclasses.field(default=f.default)))
        else:
            fields.append(
                (f.name, hints[f.name], dataclasses.field(default_factory=f.default_factory))
            )
    return dataclasses.make_dataclass(name, fields, namespace={"__module__": __name__})


AttentionSchema = _schema_of(AttentionConfig, "AttentionSchema", {}, {})
MupSchema = _schema_of(MupConfig, "MupSchema", {}, {})
ModelSchema = _schema_of(
    GPTConfig,
    "ModelSchema",
    {"attention": AttentionSchema, "mup": MupSchema},
    {"vocab_size": (int | None, None)},
)

# model=scaled: the model's fields plus the depth knobs (gptlab/training/depth.py), which
# apply_depth takes out of model.* again before the model's config is built.
ScaledSchema = dataclasses.make_dataclass(
    "ScaledSchema",
    [
        (f.name, typing.get_type_hints(DepthSettings)[f.name], dataclasses.field(default=f.default))
        for f in dataclasses.fields(DepthSettings)
    ],
    bases=(ModelSchema,),
    namespace={"__module__": __name__},
)


def register_schemas() -> None:
    """Make ``model/schema`` available to every Hydra composition in this process."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name="schema", node=ModelSchema)
    ConfigStore.instance().store(group="model", name="scaled_schema", node=ScaledSchema)
