"""Hugging Face GPT-2 weight interop: ``GPT.from_hf(dir)`` and ``model.save_hf(dir)``.

Loading real GPT-2 weights into our own code and getting the same logits as
``transformers`` is the strongest check that every part of the model is right.

Two layout differences to bridge:

- GPT-2 was written with a ``Conv1D`` layer whose weight is ``(in, out)``; ``nn.Linear``
  stores ``(out, in)``. The four projection matrices are transposed on the way in and out.
- Our embedding has ``padded_vocab_size`` rows; GPT-2 files have exactly ``vocab_size``.

Weights are read with ``safetensors`` or, for ``pytorch_model.bin``, with
``torch.load(weights_only=True)``, which cannot run code hidden in a pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from gptlab.model.config import GPTConfig, ModelConfigError
from gptlab.model.parametrization import sp_state_dict
from gptlab.utils.checksum import tensors_sha256
from gptlab.utils.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from gptlab.model.gpt import GPT

# Conv1D weights in GPT-2 files, stored (in, out): transpose for nn.Linear.
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT-2 ``activation_function`` -> our ``mlp``: the tanh-approximation GELUs are ``gelu``,
# HF's "gelu" is the exact (erf) one. And back, for writing a config.json.
MLP_OF_HF_ACTIVATION = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "gelu": "gelu_exact",
}
HF_ACTIVATION_OF_MLP = {"gelu": "gelu_new", "gelu_exact": "gelu"}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{path} has neither model.safetensors nor pytorch_model.bin; point to a Hugging "
        "Face GPT-2 model directory (a sharded checkpoint must be merged first)"
    )


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> GPTConfig:
    """Translate a GPT-2 ``config.json`` dict into a ``GPTConfig`` (refusing other models)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ModelConfigError(
            f"config.json describes a {hf.get('model_type')!r} model; only GPT-2 checkpoints "
            "can be loaded"
        )
    act = hf.get("activation_function", "gelu_new")
    if act not in MLP_OF_HF_ACTIVATION:
        raise ModelConfigError(
            f"GPT-2 checkpoint uses activation_function={act!r}; gptlab's GELU MLPs load "
            f"{', '.join(MLP_OF_HF_ACTIVATION)}"
        )
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise ModelConfigError(
            "GPT-2 checkpoint uses scale_attn_by_inverse_layer_idx or reorder_and_upcast_attn, "
            "which gptlab's attention does not implement"
        )
    n_embd = hf["n_embd"]
    d: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"],
        block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=n_embd,
        dropout=0.0,
        bias=True,
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp_ratio=(hf.get("n_inner") or 4 * n_embd) / n_embd,
        tie_embeddings=hf.get("tie_word_embeddings", True),
        mlp=MLP_OF_HF_ACTIVATION[act],
    )
    d.update(overrides)
    return GPTConfig.from_dict(d)


def load_hf(cls: type[GPT], path: str | Path, **overrides: Any) -> GPT:
    """Build a ``cls`` model from a Hugging Face GPT-2 directory; keyword args override config.

    ``gptlab.checkpoint.load_model`` reads the same folders with every failure turned into
    one sentence for the user; this is the plain library call.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'} not found; point to a GPT-2 model dir")
    config = config_from_hf(json.loads((path / "config.json").read_text()), **overrides)
    return model_from_hf_weights(cls, config, _read_weights(path), path)


def model_from_hf_weights(
    cls: type[GPT], config: GPTConfig, hf_state: dict[str, torch.Tensor], path: str | Path
) -> GPT:
    """A ``cls`` model holding ``hf_state`` (GPT-2 key names and layout); ``path`` names it in errors."""
    model = cls(config)
    state: dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # old checkpoints' mask buffers
            continue
        if key.endswith(_TRANSPOSED):
            value = value.t()
        state[key if key.startswith("lm_head") else f"transformer.{key}"] = value

    ours = dict(model.named_parameters(remove_duplicate=False))
    V = config.vocab_size
    with torch.no_grad():
        for name, param in ours.items():
            if name == "lm_head.weight" and config.tie_embeddings:
                continue  # the same tensor as transformer.wte.weight
            if name not in state:
                raise KeyError(f"{path} has no weight for {name}; is it a GPT-2 checkpoint?")
            value = state.pop(name)
            target = param[:V] if name in ("transformer.wte.weight", "lm_head.weight") else param
            if tuple(value.shape) != tuple(target.shape):
                raise ModelConfigError(
                    f"{path}: {name} has shape {tuple(value.shape)} but config.json "
                    f"asks for {tuple(target.shape)}; the weights do not belong to this config"
                )
            if name in ("transformer.wte.weight", "lm_head.weight"):
                param.zero_()  # padded rows stay zero; they are never used
                param[:V].copy_(value)
            else:
                param.copy_(value)
    state.pop("lm_head.weight", None)  # tied checkpoints may still store it
    if state:
        raise KeyError(f"{path} has weights gptlab does not know: {', '.join(sorted(state))}")
    return model


def save_hf(model: GPT, path: str | Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``GPT2LMHeadModel`` loads.

    Only GPT-2-shaped models can be written: learned positions, LayerNorm, GELU,
    multi-head attention, no soft-caps, windows, value embeddings, x0 shortcut or U-net
    skips. A model without biases is written with zero biases, which computes the same
    function; ``zero_init_proj`` and ``attention.document_mask`` change training only,
    so they export. A µP model exports with its multipliers folded into the weights
    (``parametrization.sp_state_dict``); a tied one whose embedding and logit
    multipliers differ cannot be folded and is refused.
    """
    cfg = model.config
    a = cfg.attention
    problems = [
        text
        for bad, text in (
            (cfg.position != "learned", f"position={cfg.position}"),
            (cfg.norm != "layernorm", f"norm={cfg.norm}"),
            (cfg.mlp not in HF_ACTIVATION_OF_MLP, f"mlp={cfg.mlp}"),
            (cfg.n_kv_head != cfg.n_head, f"attention.n_kv_head={cfg.n_kv_head}"),
            (a.qk_norm, "attention.qk_norm=true"),
            (a.logit_softcap is not None, "attention.logit_softcap"),
            (a.window is not None, "attention.window"),
            (a.window_pattern is not None, "attention.window_pattern"),
            (cfg.value_embeds is not None, "value_embeds"),
            (cfg.x0_shortcut, "x0_shortcut"),
            (cfg.unet_skips, "unet_skips"),
            (cfg.logit_softcap is not None, "logit_softcap"),
        )
        if bad
    ]
    if problems:
        raise ModelConfigError(
            f"cannot save as Hugging Face GPT-2: the model uses {', '.join(problems)}; "
            "export it in gptlab's own format instead"
        )
    path = Path(path)
    V = cfg.vocab_size
    tensors: dict[str, torch.Tensor] = {}
    for name, param in sp_state_dict(model).items():  # µP's multipliers folded in
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # HF re-ties it from wte
        value = param.detach().to("cpu", torch.float32)
        if name in ("transformer.wte.weight", "lm_head.weight"):
            value = value[:V]
        if name.endswith(_TRANSPOSED):
            value = value.t()
        tensors[name] = value.contiguous()
    if not cfg.bias:  # GPT-2 always has biases; zeros compute the same function
        for name, module in model.named_modules():
            if name != "lm_head" and getattr(module, "bias", 0) is None:
                # norms: (C,); exported projections: (in, out) -> bias of width out
                tensors[f"{name}.bias"] = torch.zeros(tensors[f"{name}.weight"].shape[-1])
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": HF_ACTIVATION_OF_MLP[cfg.mlp],
        "vocab_size": V,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.mlp_hidden_size,
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": V - 1 if V == 50257 else None,
        "eos_token_id": V - 1 if V == 50257 else None,
        "torch_dtype": "float32",
    }
    path.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "gptlab_checksum": tensors_sha256(tensors),
    }  # verified by gptlab.checkpoint.load_model
    atomic_write_bytes(path / "model.safetensors", safetensors_bytes(tensors, metadata))
    atomic_write_text(path / "config.json", json.dumps(hf_config, indent=2) + "\n")
