"""Typed schema of the ``model`` config group, registered with Hydra's ConfigStore.

Every preset in ``gptlab/conf/model/`` starts from this schema (``defaults: [schema, _self_]``),
which gives two things a YAML file alone cannot:

* every architecture option exists on every preset, so ``model.position=rope`` or
  ``model.compile=true`` works on ``nano`` even though its file does not mention them;
* Hydra checks types while composing, so ``--multirun model.n_layer=two`` fails with
  Hydra's own message before any job of the sweep starts.

The fields mirror ``gptlab.model.GPTConfig`` (a test keeps them in step); they are
repeated here, torch-free, because registering the schema must not import the model.
``vocab_size`` may be null: the training code fills it in from the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AttentionSchema:
    backend: str = "sdpa"
    n_kv_head: int | None = None
    qk_norm: bool = False
    logit_softcap: float | None = None
    window: int | None = None


@dataclass
class ModelSchema:
    vocab_size: int | None = None
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    attention: AttentionSchema = field(default_factory=AttentionSchema)
    position: str = "learned"
    rope_theta: float = 10000.0
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    mlp_ratio: float = 4.0
    tie_embeddings: bool = True
    logit_softcap: float | None = None
    pad_vocab_multiple: int = 64
    activation_checkpointing: bool = False
    compile: bool = False


def register_schemas() -> None:
    """Make ``model/schema`` available to every Hydra composition in this process."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name="schema", node=ModelSchema)
