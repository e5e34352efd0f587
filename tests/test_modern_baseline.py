"""experiment=modern_baseline: the preset composes at both sizes, is built only from the
switches, each switch can be taken out on the command line, and it trains."""

from __future__ import annotations

import json

import pytest

from gptlab.model import GPT, GPTConfig
from gptlab.train import train
from tests.conftest import compose_train

SWITCHES_ON = {
    "value_embeds": "alternate",
    "value_embed_gate": True,
    "x0_shortcut": True,
    "zero_init_proj": True,
    "position": "rope",
    "norm": "rmsnorm",
    "mlp": "relu2",
    "tie_embeddings": False,
    "logit_softcap": 15.0,
}


def model_config(cfg) -> GPTConfig:
    d = dict(cfg.model)
    d["vocab_size"] = 65
    return GPTConfig.from_dict(d)


@pytest.mark.parametrize(
    "size, width, depth, head", [("modern_nano", 128, 4, 32), ("modern_6x384", 384, 6, 64)]
)
def test_both_sizes_compose_with_the_switches_on(tmp_path, size, width, depth, head):
    cfg = compose_train(["experiment=modern_baseline", f"model={size}"], tmp_path)
    config = model_config(cfg)
    assert (config.n_embd, config.n_layer, config.head_size) == (width, depth, head)
    for key, value in SWITCHES_ON.items():
        assert getattr(config, key) == value, key
    assert config.attention.qk_norm and config.attention.window_pattern == "SSSL"
    assert config.layer_windows[-1] is None and config.layer_windows[0] == config.attention.window
    assert cfg.optimizer._target_.endswith(".muon") and cfg.data.batch_size == 12
    GPT(config)  # builds


def test_each_switch_comes_out_on_the_command_line(tmp_path):
    off = [
        "model.value_embeds=null",
        "model.value_embed_gate=false",
        "model.x0_shortcut=false",
        "model.zero_init_proj=false",
        "model.attention.window_pattern=null",
        "model.attention.window=null",
    ]
    config = model_config(compose_train(["experiment=modern_baseline", *off], tmp_path))
    assert config.value_embed_layers == [] and config.layer_windows == [None] * 4
    names = [n for n, _ in GPT(config).named_parameters()]
    assert not [n for n in names if "value_embeds" in n or "lambdas" in n]


def test_modern_baseline_trains_and_validates(tmp_path):
    """A few real steps of the preset (Shakespeare text from the seeded cache)."""
    out = tmp_path / "run"
    cfg = compose_train(
        [
            "experiment=modern_baseline",
            "trainer.max_steps=6",
            "trainer.val_check_interval=6",
            "data.val_batches=2",
            "callbacks.sample_text=null",
            "callbacks.progress_bar.refresh_rate=0",
            "optimizer.normuon=true",
            "optimizer.cautious_wd=true",
            "optimizer.weight_decay=0.1",
        ],
        out,
    )
    train(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 6
    assert summary["metrics"]["val/loss"] < 4.2  # ln(65) = 4.17 at the start
