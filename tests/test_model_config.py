"""GPTConfig: validation messages, (de)serialisation, and every preset in gptlab/conf/model/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gptlab.model import GPT, GPTConfig, ModelConfigError

PRESETS = sorted((Path(__file__).parents[1] / "gptlab" / "conf" / "model").glob("*.yaml"))
GPT2_COUNTS = {
    "gpt124m": 124_439_808,
    "gpt350m": 354_823_168,
    "gpt774m": 774_030_080,
    "gpt1558m": 1_557_611_200,
}


def load_preset(path: Path, vocab_size: int) -> GPTConfig:
    """The preset as Hydra composes it (its file on top of the typed model schema)."""
    from gptlab.training.depth import apply_depth
    from tests.conftest import compose_train

    cfg = compose_train([f"model={path.stem}"], Path("/tmp/unused"))
    apply_depth(cfg)  # model=scaled derives its shape from model.depth, as train() does
    d = OmegaConf.to_container(cfg.model, resolve=True)
    assert d["vocab_size"] is None, "presets leave vocab_size to the tokenizer"
    d["vocab_size"] = vocab_size
    return GPTConfig.from_dict(d)


def test_presets_exist():
    names = {p.stem for p in PRESETS}
    expected = set(GPT2_COUNTS) | {"nano", "micro", "shakespeare_char", "modern_small"}
    assert expected <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_builds(path: Path):
    assert path.read_text().startswith("# "), (
        "each preset starts with a comment saying what it is for"
    )
    assert "_target_" not in path.read_text()
    cfg = load_preset(path, 50257)
    with torch.device("meta"):
        model = GPT(cfg)
    if path.stem in GPT2_COUNTS:
        assert model.num_parameters() == GPT2_COUNTS[path.stem]
    else:  # small presets really run
        cfg = load_preset(path, 65)
        model = GPT(cfg)
        logits = model(torch.randint(0, 65, (2, 8)))
        assert logits.shape == (2, 8, 65)


def test_modern_small_is_modern():
    cfg = load_preset(Path(PRESETS[0]).parent / "modern_small.yaml", 65)
    assert (cfg.position, cfg.norm, cfg.bias, cfg.tie_embeddings) == (
        "rope",
        "rmsnorm",
        False,
        False,
    )
    assert cfg.mlp in ("swiglu", "relu2") and cfg.attention.qk_norm


def test_gpt124m_derived_sizes():
    cfg = GPTConfig()
    assert (cfg.head_size, cfg.n_kv_head, cfg.padded_vocab_size, cfg.mlp_hidden_size) == (
        64,
        12,
        50304,
        3072,
    )
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_parameters(exclude_position_embeddings=True) == 124_439_808 - 1024 * 768


def test_swiglu_hidden_size_rounds_up_to_64():
    cfg = GPTConfig(vocab_size=65, n_embd=128, n_head=4, mlp="swiglu")
    assert cfg.mlp_hidden_size == 384  # 2/3 * 512 = 341.3 -> 384
    assert GPTConfig(mlp="swiglu").mlp_hidden_size == 2048  # 2/3 * 3072, already a multiple


def test_round_trip_through_dict_and_json():
    cfg = GPTConfig(
        vocab_size=65,
        n_layer=2,
        attention={"backend": "manual", "n_kv_head": 4, "logit_softcap": 30.0, "window": 16},
        position="rope",
        mlp="relu2",
    )
    d = json.loads(json.dumps(cfg.to_dict()))
    assert isinstance(d["attention"], dict)
    assert GPTConfig.from_dict(d) == cfg


def test_from_dict_accepts_omegaconf():
    d = OmegaConf.create({"vocab_size": 65, "n_layer": 2, "attention": {"n_kv_head": 3}})
    assert GPTConfig.from_dict(d).n_kv_head == 3


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (dict(n_embd=100, n_head=3), "model.n_embd=100 is not divisible by model.n_head=3"),
        (
            dict(attention={"n_kv_head": 5}),
            "model.n_head=12 is not divisible by model.attention.n_kv_head=5",
        ),
        (
            dict(norm="batchnorm"),
            "model.norm='batchnorm' is not a known option; choose one of layernorm, rmsnorm",
        ),
        (dict(mlp="geglu"), "model.mlp='geglu' is not a known option"),
        (dict(position="alibi"), "model.position='alibi' is not a known option"),
        (dict(attention={"backend": "flash"}), "model.attention.backend='flash'"),
        (dict(attention={"logit_softcap": 50.0}), "needs model.attention.backend=manual"),
        (dict(n_embd=12 * 3, position="rope"), "needs an even head size"),
        (dict(vocab_size=None), "model.vocab_size is not set"),
        (dict(n_lyer=3), "unknown key model.n_lyer; valid keys are: vocab_size, block_size"),
        (
            dict(attention={"heads": 3}),
            "unknown key model.attention.heads; valid keys are: backend",
        ),
        (dict(dropout=1.5), "model.dropout=1.5"),
        (dict(attention={"window": 0}), "model.attention.window=0"),
    ],
)
def test_validation_messages(overrides, fragment):
    with pytest.raises(ModelConfigError) as info:
        GPTConfig.from_dict(overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
