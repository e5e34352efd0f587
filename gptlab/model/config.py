"""The model's configuration: one dataclass, its derived sizes, and its validation.

Everything that decides the *shape* of a GPT lives here, so a checkpoint can store it as
a plain dict (``to_dict``) and rebuild the model later without Hydra (``from_dict``).
Presets are small YAML files in ``gptlab/conf/model/`` whose keys are exactly these fields.

Variants (norm, MLP, position scheme, attention backend) are chosen *by name*; the names
allowed here are the keys of the registries in ``layers.py`` / ``attention.py``. We list
them again below as plain tuples so that this file stays import-free and a bad name is
refused at configuration time with one sentence, long before any tensor exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gptlab.errors import GptlabError

ATTENTION_BACKENDS = ("sdpa", "manual")
POSITIONS = ("learned", "rope", "none")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_exact", "relu2", "swiglu")


class ModelConfigError(GptlabError, ValueError):
    """A model configuration that cannot build a model; the message names the fix."""


@dataclass
class AttentionConfig:
    """How a block's self-attention works.

    backend: ``"sdpa"`` (PyTorch's fused ``scaled_dot_product_attention``, fast) or
        ``"manual"`` (every step written out, for reading and for options sdpa lacks).
    n_kv_head: number of key/value heads; ``None`` means ``n_head`` (plain multi-head
        attention). ``1`` is multi-query attention, anything in between grouped-query.
    qk_norm: normalise queries and keys per head before the dot product (stabilises
        training at high learning rates; used by OLMo-2, Gemma 3).
    logit_softcap: squash attention scores with ``cap * tanh(s / cap)`` (Gemma 2).
        Only the manual backend can do this.
    window: sliding-window attention: a query sees at most the last ``window`` positions
        (itself included). ``None`` means the full causal context.
    """

    backend: str = "sdpa"
    n_kv_head: int | None = None
    qk_norm: bool = False
    logit_softcap: float | None = None
    window: int | None = None


# Keys older checkpoints carry that are no longer the model's: ``compile`` is now trainer.compile.
RETIRED_KEYS = ("compile",)


@dataclass
class GPTConfig:
    """All hyper-parameters that define a GPT; defaults are GPT-2 small (124M).

    Derived sizes (``head_size``, ``n_kv_head``, ``padded_vocab_size``,
    ``mlp_hidden_size``) are properties, so they can never disagree with the fields.
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    attention: AttentionConfig = field(default_factory=AttentionConfig)
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

    def __post_init__(self) -> None:
        if isinstance(self.attention, Mapping):
            self.attention = _build(AttentionConfig, self.attention, "model.attention")
        self.validate()

    # ----------------------------------------------------------------- derived sizes
    @property
    def head_size(self) -> int:
        """Width of one attention head: ``n_embd // n_head``."""
        return self.n_embd // self.n_head

    @property
    def n_kv_head(self) -> int:
        """Key/value heads: ``attention.n_kv_head``, or ``n_head`` when unset (MHA)."""
        n = self.attention.n_kv_head
        return self.n_head if n is None else n

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to ``pad_vocab_multiple``.

        The embedding table gets this many rows so its shape is friendly to matrix
        kernels (nanoGPT's 50257 -> 50304); the extra rows are never produced as logits.
        """
        m = self.pad_vocab_multiple
        return self.vocab_size if m <= 1 else m * math.ceil(self.vocab_size / m)

    @property
    def mlp_hidden_size(self) -> int:
        """Width of the MLP's hidden layer.

        GELU and ReLU² use ``mlp_ratio * n_embd`` (3072 for GPT-2 small). SwiGLU has
        three matrices instead of two, so, like Llama, it takes 2/3 of that width to keep
        the parameter count about equal, rounded *up* to a multiple of 64 for speed
        (``n_embd=128, mlp_ratio=4`` gives 384).
        """
        hidden = int(self.mlp_ratio * self.n_embd)
        if self.mlp == "swiglu":
            hidden = 64 * math.ceil(2 * hidden / 3 / 64)
        return hidden

    # ------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Refuse configurations that cannot build a working model, one clear sentence each."""
        a = self.attention
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if value is None:
                raise ModelConfigError(
                    f"model.{name} is not set; set it in the model config "
                    "(vocab_size is normally filled in from the tokenizer)"
                )
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"model.{name}={value!r} must be a positive integer")
        _choice("model.attention.backend", a.backend, ATTENTION_BACKENDS)
        _choice("model.position", self.position, POSITIONS)
        _choice("model.norm", self.norm, NORMS)
        _choice("model.mlp", self.mlp, MLPS)
        if self.n_embd % self.n_head:
            raise ModelConfigError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}; "
                "choose n_embd as a multiple of n_head"
            )
        n_kv = self.n_kv_head
        if not isinstance(n_kv, int) or n_kv < 1 or self.n_head % n_kv:
            raise ModelConfigError(
                f"model.n_head={self.n_head} is not divisible by "
                f"model.attention.n_kv_head={n_kv}; choose n_kv_head as a divisor of n_head "
                "(1 = multi-query, n_head = multi-head)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        if self.position == "rope" and self.head_size % 2:
            raise ModelConfigError(
                f"model.position=rope needs an even head size, but n_embd/n_head="
                f"{self.head_size}; change n_embd or n_head"
            )
        if self.rope_theta <= 0:
            raise ModelConfigError(f"model.rope_theta={self.rope_theta} must be positive")
        if self.norm_eps <= 0:
            raise ModelConfigError(f"model.norm_eps={self.norm_eps} must be positive")
        if self.mlp_ratio <= 0:
            raise ModelConfigError(f"model.mlp_ratio={self.mlp_ratio} must be positive")
        for name, cap in (
            ("model.logit_softcap", self.logit_softcap),
            ("model.attention.logit_softcap", a.logit_softcap),
        ):
            if cap is not None and cap <= 0:
                raise ModelConfigError(f"{name}={cap} must be positive, or null to turn it off")
        if a.logit_softcap is not None and a.backend != "manual":
            raise ModelConfigError(
                "model.attention.logit_softcap needs model.attention.backend=manual, because "
                "sdpa cannot soft-cap the scores; set backend=manual or logit_softcap=null"
            )
        if a.window is not None and (not isinstance(a.window, int) or a.window < 1):
            raise ModelConfigError(
                f"model.attention.window={a.window!r} must be a positive integer, or null "
                "for full causal attention"
            )
        if not isinstance(self.pad_vocab_multiple, int) or self.pad_vocab_multiple < 1:
            raise ModelConfigError(
                f"model.pad_vocab_multiple={self.pad_vocab_multiple!r} must be a positive "
                "integer (1 turns padding off)"
            )

    # ------------------------------------------------------------------ (de)serialise
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPTConfig:
        """Build from a plain mapping (YAML, OmegaConf, a checkpoint); unknown keys are refused."""
        return _build(cls, {k: v for k, v in d.items() if k not in RETIRED_KEYS}, "model")

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict; ``GPTConfig.from_dict(cfg.to_dict()) == cfg``."""
        return dataclasses.asdict(self)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ModelConfigError(
            f"{name}={value!r} is not a known option; choose one of {', '.join(options)}"
        )


def _build(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``d``, naming any unknown key and the valid ones."""
    if isinstance(d, cls):
        return d
    if not isinstance(d, Mapping):
        raise ModelConfigError(f"{prefix} must be a mapping of options, got {type(d).__name__}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [str(k) for k in d if k not in valid]
    if unknown:
        raise ModelConfigError(
            f"unknown key {prefix}.{unknown[0]}; valid keys are: {', '.join(valid)}"
        )
    kwargs = dict(d.items())
    if cls is GPTConfig and "attention" in kwargs and kwargs["attention"] is not None:
        kwargs["attention"] = _build(AttentionConfig, kwargs["attention"], "model.attention")
    elif "attention" in kwargs and kwargs["attention"] is None:
        kwargs.pop("attention")
    return cls(**kwargs)
