"""``model=scaled model.depth=D``: the derivation, the command line winning, bad depths, a real run."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from gptlab.errors import ConfigError
from gptlab.model import GPT, GPTConfig
from gptlab.train import train
from gptlab.training.depth import DepthSettings, apply_depth, derive, matrix_params
from tests.conftest import TINY_OVERRIDES, compose_train

MODEL = {"block_size": 128, "mlp": "gelu_exact"}
# A depth-1 model 16 wide trains a handful of steps (tokens_per_param=1: T = N = 3,072).
TINY_SCALED = [
    *[o for o in TINY_OVERRIDES if not o.startswith(("model", "trainer.max_steps", "data.batch"))],
    "model=scaled",
    "model.depth=1",
    "model.aspect_ratio=16",
    "model.head_dim=16",
    "model.block_size=32",
    "model.tokens_per_param=1",
    "model.ref_batch_tokens=512",
]


def test_width_heads_tokens_batch_lr_and_wd_follow_nanochat():
    s = DepthSettings(depth=8, aspect_ratio=64, head_dim=64, ref_depth=4, ref_batch_tokens=8192)
    d = derive(s, MODEL, batch_size=64)
    assert (d.n_layer, d.n_embd, d.n_head) == (8, 512, 8)
    assert d.params == 8 * 12 * 512**2  # attention 4 d^2 + MLP 8 d^2 a layer
    assert d.tokens == 20 * d.params and d.ref_tokens == 20 * 4 * 12 * 256**2
    predicted = 8192 * (d.tokens / d.ref_tokens) ** 0.383  # T is 8x the reference's
    assert d.batch_tokens == 2 ** round(math.log2(predicted)) == 16384
    assert d.lr_scale == pytest.approx(math.sqrt(2))
    assert d.weight_decay_scale == pytest.approx(math.sqrt(2) / 8)
    assert d.max_steps == d.tokens // 16384 and d.batch_size == 64


def test_the_reference_depth_keeps_the_presets_values():
    d = derive(DepthSettings(depth=4), MODEL, batch_size=12)
    assert d.batch_tokens == 8192 and d.lr_scale == 1 and d.weight_decay_scale == 1
    assert d.batch_size == 8  # the largest power of two <= 12 rows that divides B / block_size


def test_a_flops_budget_sets_the_tokens_to_c_over_6n():
    d = derive(DepthSettings(depth=2, flops_budget=1e13), MODEL, batch_size=8)
    assert d.tokens == int(1e13 / (6 * d.params))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"mlp": "swiglu", "bias": True},
        {"attention": {"n_kv_head": 1}, "position": "rope", "norm": "rmsnorm"},
    ],
)
def test_n_counts_the_built_models_block_matrices(options):
    config = GPTConfig.from_dict(
        {"n_layer": 2, "n_embd": 128, "n_head": 4, "vocab_size": 65, "block_size": 64, **options}
    )
    with torch.device("meta"):
        model = GPT(config)
    blocks = model.transformer.h  # type: ignore[union-attr]
    assert matrix_params(config) == sum(p.numel() for p in blocks.parameters() if p.dim() == 2)


def test_compose_and_derive_through_the_real_config(tmp_path):
    overrides = ["model=scaled", "model.depth=2"]
    cfg = compose_train(overrides, tmp_path / "run")
    lr, wd = cfg.optimizer.lr, cfg.optimizer.weight_decay
    d = apply_depth(cfg, overrides)
    assert d is not None and (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head) == (2, 128, 2)
    assert "depth" not in cfg.model  # the model's config holds its shape only
    GPTConfig.from_dict({**cfg.model, "vocab_size": 65})
    assert cfg.optimizer.lr == pytest.approx(lr * d.lr_scale)
    assert cfg.optimizer.weight_decay == pytest.approx(wd * d.weight_decay_scale)
    assert cfg.trainer.max_steps == d.max_steps and cfg.scheduler.total_steps == d.max_steps
    assert cfg.data.global_batch_tokens == d.batch_tokens
    assert cfg.scaled.depth == 2 and cfg.scaled.params == d.params


def test_command_line_values_win_and_the_rest_follow_them(tmp_path):
    overrides = [
        "model=scaled",
        "model.depth=2",
        "model.n_embd=192",
        "optimizer.lr=0.01",
        "trainer.max_steps=7",
    ]
    cfg = compose_train(overrides, tmp_path / "run")
    d = apply_depth(cfg, overrides)
    assert d is not None and cfg.model.n_embd == 192 and cfg.model.n_head == 3  # 192 / 64
    assert d.params == 2 * 12 * 192**2
    assert cfg.optimizer.lr == 0.01 and cfg.trainer.max_steps == 7
    assert cfg.optimizer.weight_decay != 0.1  # not given: still derived


def test_other_presets_are_untouched(tmp_path):
    cfg = compose_train(["model=nano"], tmp_path / "run")
    assert apply_depth(cfg, ["model=nano"]) is None and "scaled" not in cfg


def test_under_mup_the_proxy_has_heads_of_the_same_size(tmp_path):
    """Every size has heads of head_dim, so µP's proxy must too (or its 1/d scale is off)."""
    overrides = ["model=scaled", "model.depth=4", "model.parametrization=mup"]
    cfg = compose_train([*overrides, "model.mup.base_width=128"], tmp_path / "run")
    apply_depth(cfg, overrides)
    assert (cfg.model.n_embd, cfg.model.n_head, cfg.model.mup.base_n_head) == (256, 4, 2)
    config = GPTConfig.from_dict({**cfg.model, "vocab_size": 65})
    scaled = GPT(config)(torch.zeros(1, 8, dtype=torch.long))  # builds under µP's checks
    assert scaled.shape == (1, 8, 65)
    given = [*overrides, "model.mup.base_width=128", "model.mup.base_n_head=1"]
    cfg = compose_train(given, tmp_path / "run2")
    apply_depth(cfg, given)
    assert cfg.model.mup.base_n_head == 1  # the command line wins
    bad = [*overrides, "model.mup.base_width=96"]
    cfg = compose_train(bad, tmp_path / "run3")
    with pytest.raises(ConfigError, match=r"base_width=96 is not a multiple of 64"):
        apply_depth(cfg, bad)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["model.depth=3", "model.head_dim=128"],
            r"width 192, which model.head_dim=128 does not divide",
        ),
        (["model.depth=0"], r"model.depth=0 must be a whole number of layers, at least 1"),
        (["model.flops_budget=1000"], r"less than one batch"),
    ],
)
def test_bad_depths_are_refused_in_one_sentence(tmp_path, overrides, match):
    cfg = compose_train(["model=scaled", *overrides], tmp_path / "run")
    with pytest.raises(ConfigError, match=match):
        train(cfg, ["model=scaled", *overrides])
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_scaled_run_prints_and_saves_every_derived_value(tmp_path, capsys, one_thread):
    cfg = compose_train(TINY_SCALED, tmp_path / "run")
    metrics = train(cfg, TINY_SCALED)
    printed = capsys.readouterr().out
    assert "model=scaled derived 1 layers x 16 wide, 1 heads; N=3,072" in printed
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    steps = saved["scaled"]["max_steps"]
    assert saved["scaled"]["tokens"] == 3072 and steps == 3072 // saved["scaled"]["batch_tokens"]
    assert saved["trainer"]["max_steps"] == steps and saved["model"]["n_embd"] == 16
    assert "depth" not in saved["model"] and math.isfinite(metrics["train/loss"])
