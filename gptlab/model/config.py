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

ATTENTION_BACKENDS = ("sdpa", "manual", "flex")
POSITIONS = ("learned", "rope", "none")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_exact", "relu2", "swiglu")
PARAMETRIZATIONS = ("sp", "mup")


class ModelConfigError(GptlabError, ValueError):
    """A model configuration that cannot build a model; the message names the fix."""


@dataclass
class AttentionConfig:
    """How a block's self-attention works.

    backend: ``"sdpa"`` (PyTorch's fused ``scaled_dot_product_attention``, fast),
        ``"manual"`` (every step written out, for reading and for options sdpa lacks) or
        ``"flex"`` (FlexAttention's block-sparse kernel for windowed and per-document
        masks; CUDA only for training, see ``flex.py``). With ``sdpa`` the windowed and
        per-document masks already take FlexAttention on CUDA when it is available.
    n_kv_head: number of key/value heads; ``None`` means ``n_head`` (plain multi-head
        attention). ``1`` is multi-query attention, anything in between grouped-query.
    qk_norm: normalise queries and keys per head before the dot product (stabilises
        training at high learning rates; used by OLMo-2, Gemma 3).
    logit_softcap: squash attention scores with ``cap * tanh(s / cap)`` (Gemma 2).
        Only the manual backend can do this.
    window: sliding-window attention: a query sees at most the last ``window`` positions
        (itself included). ``None`` means the full causal context.
    window_pattern: per-layer windows as a string of ``S`` (short: ``window`` positions)
        and ``L`` (long: the whole block), tiled over the layers, the last layer always
        long (nanochat's ``"SSSL"``). ``None``: every layer uses ``window``.
    document_mask: a query sees only earlier tokens of its own document, from the data
        loader's document ids (needs ``data.document_ids=true``).
    """

    backend: str = "sdpa"
    n_kv_head: int | None = None
    qk_norm: bool = False
    logit_softcap: float | None = None
    window: int | None = None
    window_pattern: str | None = None
    document_mask: bool = False


@dataclass
class MupConfig:
    """The options of ``parametrization=mup`` (the rules are in ``parametrization.py``).

    base_width: the width (``n_embd``) whose hyper-parameters were tuned, the proxy's;
        ``None`` means the model's own width (width multiplier 1: then µP is the
        standard parametrization, apart from the zero-init options).
    base_n_head: the proxy's number of attention heads; ``None`` means the model's own
        ``n_head`` (heads fixed, head size growing with the width). Set it when the model
        was widened by adding heads of a fixed size (GPT-2's sizes all use head size 64):
        ``base_width=128 base_n_head=4`` for a 4 x 32 proxy of a 1024-wide, 32-head
        model, whose heads did not change size and so keep sp's 1/sqrt(d) scale.
    base_n_kv_head: the proxy's key/value heads (GQA); ``None`` keeps the model's ratio
        of query to key/value heads (``base_n_head * n_kv_head / n_head``), so a
        multi-head model's proxy is multi-head too; set it when the widened model kept
        its key/value heads instead (e.g. ``1`` for multi-query).
    input_mult: multiplies the embedding output (token + learned positions).
    output_mult: multiplies the logits, on top of the 1/width-multiplier µP gives them.
    zero_readout: the head starts at zero (Tensor Programs V's advice; needs untied
        embeddings, or the token embedding would start at zero too).
    zero_query: the query part of every ``c_attn`` starts at zero (so attention starts
        uniform, whatever the width).
    """

    base_width: int | None = None
    base_n_head: int | None = None
    base_n_kv_head: int | None = None
    input_mult: float = 1.0
    output_mult: float = 1.0
    zero_readout: bool = False
    zero_query: bool = False


# Keys older checkpoints carry that are no longer the model's: ``compile`` is now trainer.compile.
RETIRED_KEYS = ("compile",)


@dataclass
class GPTConfig:
    """All hyper-parameters that define a GPT; defaults are GPT-2 small (124M).

    Derived sizes (``head_size``, ``n_kv_head``, ``padded_vocab_size``,
    ``mlp_hidden_size``, ``layer_windows``, ``value_embed_layers``) are properties, so
    they can never disagree with the fields.

    The speed-record switches:

    value_embeds: layers whose attention values get an extra embedding of the input
        tokens added (ResFormer / modded-nanogpt): ``"alternate"`` (every other layer,
        ending at the last, nanochat's choice), ``"all"``, or layer numbers ``"0,1,5"``.
    value_embed_gate: scale each value embedding per head by ``2 sigmoid(W x[:12])``,
        zero-initialised so it starts at exactly 1 (nanochat's gate, rescaled).
    x0_shortcut: block i's input is ``resid_lambda[i] * x + x0_lambda[i] * x0``, with x0
        the token embedding and both lambdas learned (nanochat's initial values).
    zero_init_proj: attention and MLP output projections start at zero, so every block
        starts as the identity (modded-nanogpt, nanochat).
    unet_skips: the outputs of the first ``n_layer // 2`` blocks are added, with learned
        weights starting at 1, to the inputs of their mirrored last blocks (modded-nanogpt).

    parametrization: ``"sp"`` (the standard one, GPT-2's init and one lr for all) or
        ``"mup"`` (µP, Tensor Programs V: init, lr and multipliers scaled with the width
        so a small proxy's tuned settings hold when the model is widened; options in
        ``mup``, rules in ``parametrization.py``).
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
    # Speed-record switches (modded-nanogpt, nanochat), all off by default; see gpt.py.
    value_embeds: str | None = None
    value_embed_gate: bool = False
    x0_shortcut: bool = False
    zero_init_proj: bool = False
    unet_skips: bool = False
    parametrization: str = "sp"
    mup: MupConfig = field(default_factory=MupConfig)

    def __post_init__(self) -> None:
        if isinstance(self.attention, Mapping):
            self.attention = _build(AttentionConfig, self.attention, "model.attention")
        if isinstance(self.mup, Mapping):
            self.mup = _build(MupConfig, self.mup, "model.mup")
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

    @property
    def layer_windows(self) -> list[int | None]:
        """Each layer's sliding window (``None``: the whole block), from window and pattern."""
        a, n = self.attention, self.n_layer
        if a.window_pattern is None:
            return [a.window] * n
        pattern = a.window_pattern.upper()
        windows = [a.window if pattern[i % len(pattern)] == "S" else None for i in range(n)]
        windows[-1] = None  # the last layer sees everything (nanochat)
        return windows

    @property
    def value_embed_layers(self) -> list[int]:
        """The layers that get a value embedding (see ``value_embeds``)."""
        spec, n = self.value_embeds, self.n_layer
        if spec is None:
            return []
        if spec == "alternate":
            return [i for i in range(n) if i % 2 == (n - 1) % 2]
        if spec == "all":
            return list(range(n))
        return sorted({int(part) for part in str(spec).split(",") if part.strip()})

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
        if a.backend == "flex" and self.dropout > 0:
            raise ModelConfigError(
                f"model.attention.backend=flex has no attention dropout but model.dropout="
                f"{self.dropout}; set model.dropout=0 or use backend=sdpa"
            )
        if a.window is not None and (not isinstance(a.window, int) or a.window < 1):
            raise ModelConfigError(
                f"model.attention.window={a.window!r} must be a positive integer, or null "
                "for full causal attention"
            )
        self._validate_windows()
        self._validate_value_embeds()
        _choice("model.parametrization", self.parametrization, PARAMETRIZATIONS)
        from gptlab.model.parametrization import validate_mup  # torch-free, as this file

        validate_mup(self)
        if not isinstance(self.pad_vocab_multiple, int) or self.pad_vocab_multiple < 1:
            raise ModelConfigError(
                f"model.pad_vocab_multiple={self.pad_vocab_multiple!r} must be a positive "
                "integer (1 turns padding off)"
            )

    def _validate_windows(self) -> None:
        a = self.attention
        if a.window is not None and a.window > self.block_size:
            raise ModelConfigError(
                f"model.attention.window={a.window} is larger than model.block_size="
                f"{self.block_size}, so it would change nothing; use a smaller window or null"
            )
        if a.window_pattern is None:
            return
        pattern = str(a.window_pattern).upper()
        if not pattern or set(pattern) - {"S", "L"}:
            raise ModelConfigError(
                f"model.attention.window_pattern={a.window_pattern!r} must be made of S "
                "(short window) and L (long: the whole block), e.g. SSSL"
            )
        if len(pattern) > self.n_layer:
            raise ModelConfigError(
                f"model.attention.window_pattern={a.window_pattern!r} has {len(pattern)} "
                f"letters but the model has {self.n_layer} layers; use at most "
                f"{self.n_layer} letters (the pattern is tiled over the layers)"
            )
        if "S" in pattern and a.window is None:
            raise ModelConfigError(
                f"model.attention.window_pattern={a.window_pattern!r} has short layers but "
                "model.attention.window (their size) is null; set it, e.g. "
                f"model.attention.window={max(1, self.block_size // 4)}"
            )

    def _validate_value_embeds(self) -> None:
        spec = self.value_embeds
        if self.value_embed_gate and spec is None:
            raise ModelConfigError(
                "model.value_embed_gate=true gates value embeddings, but model.value_embeds "
                "is null; set model.value_embeds (e.g. alternate) or turn the gate off"
            )
        if self.unet_skips and self.n_layer < 2:
            raise ModelConfigError(
                f"model.unet_skips=true pairs mirrored layers, but model.n_layer={self.n_layer}; "
                "use at least 2 layers or turn the skips off"
            )
        if spec is None or spec in ("alternate", "all"):
            return
        try:
            layers = [int(part) for part in str(spec).split(",") if part.strip()]
        except ValueError:
            layers = []
        if not layers:
            raise ModelConfigError(
                f"model.value_embeds={spec!r} is not alternate, all, or layer numbers like "
                "'0,2'; choose one of those, or null to turn value embeddings off"
            )
        outside = [i for i in layers if not 0 <= i < self.n_layer]
        if outside:
            raise ModelConfigError(
                f"model.value_embeds={spec!r} names layer {outside[0]}, but the model has "
                f"layers 0..{self.n_layer - 1}; name existing layers"
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
    if cls is GPTConfig and kwargs.get("mup") is not None:
        kwargs["mup"] = _build(MupConfig, kwargs["mup"], "model.mup")
    elif "mup" in kwargs:
        kwargs.pop("mup")
    return cls(**kwargs)
