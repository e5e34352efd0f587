"""SamplerConfig validation, the gptlab/conf/sampler presets, and the statistics of sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.stats import chisquare

from gptlab.sampling import SamplerConfig, filter_logits, sample_next

CONF = Path(__file__).resolve().parents[1] / "gptlab" / "conf"
PRESETS = sorted(p.stem for p in (CONF / "sampler").glob("*.yaml"))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_p", -0.2),
        ("top_k", 0),
        ("top_k", -3),
        ("top_k", 2.5),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("max_new_tokens", 0),
        ("max_new_tokens", -5),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("penalty_window", 0),
    ],
)
def test_out_of_range_values_raise_naming_the_option(option, value):
    with pytest.raises(ValueError, match=f"sampler option {option}="):
        SamplerConfig(**{option: value})


def test_edge_values_are_accepted():
    SamplerConfig(top_p=1.0, top_k=1, temperature=0.0, min_p=0.0, max_new_tokens=1)
    SamplerConfig(min_p=1.0, top_p=1e-6)


def test_stop_accepts_a_single_string_and_rejects_empty_ones():
    assert SamplerConfig(stop="\n\n").stop == ["\n\n"]
    with pytest.raises(ValueError, match="stop"):
        SamplerConfig(stop=["ok", ""])


def test_from_mapping_rejects_unknown_keys():
    cfg = SamplerConfig.from_mapping({"_target_": "x", "temperature": 0.5, "stop": ("a",)})
    assert cfg.temperature == 0.5 and cfg.stop == ["a"]
    with pytest.raises(ValueError, match="unknown sampler option.*topk"):
        SamplerConfig.from_mapping({"topk": 5})


def test_there_are_the_documented_presets():
    assert set(PRESETS) >= {"default", "greedy", "top_k", "top_p", "min_p", "creative", "precise"}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_and_builds(name):
    first = (CONF / "sampler" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, "first line must say what the preset is for"
    with initialize_config_dir(config_dir=str(CONF / "sampler"), version_base="1.3"):
        cfg = compose(config_name=name)
    sampler = instantiate(cfg)
    assert isinstance(sampler, SamplerConfig)
    assert SamplerConfig.from_mapping(cfg) == sampler
    if name == "greedy":
        assert sampler.greedy
    if name == "default":
        assert sampler == SamplerConfig()


# --- statistics ----------------------------------------------------------------------

TOY_LOGITS = torch.tensor([2.0, 1.5, 1.2, 1.0, 0.3, 0.0, -0.5, -1.0, -2.0, -3.0])


@pytest.mark.parametrize(
    "sampler",
    [
        SamplerConfig(),
        SamplerConfig(temperature=0.7),
        SamplerConfig(temperature=1.5, top_k=4),
        SamplerConfig(top_p=0.8),
        SamplerConfig(min_p=0.2, temperature=1.3),
        SamplerConfig(temperature=0.9, top_k=6, top_p=0.9, min_p=0.1),
    ],
    ids=["plain", "t0.7", "t1.5-k4", "p0.8", "minp0.2", "all"],
)
def test_sampling_matches_the_filtered_distribution(sampler):
    """Chi-square goodness of fit of 20,000 seeded draws against softmax(filtered logits)."""
    n = 20_000
    expected = torch.softmax(filter_logits(TOY_LOGITS[None].double(), sampler), -1)[0]
    g = torch.Generator().manual_seed(1234)
    draws = sample_next(TOY_LOGITS.expand(n, -1), sampler, generator=g)
    observed = torch.bincount(draws, minlength=len(TOY_LOGITS)).double()
    allowed = expected > 0
    assert observed[~allowed].sum() == 0, "a filtered-out token was drawn"
    stat = chisquare(observed[allowed].numpy(), (expected[allowed] * n).numpy())
    assert stat.pvalue > 1e-3, f"draws do not follow the filtered distribution: {stat}"


def test_a_seeded_generator_reproduces_the_draws():
    logits = torch.randn(4, 100)
    s = SamplerConfig(temperature=0.9, top_p=0.9)
    a = [sample_next(logits, s, generator=g) for g in [torch.Generator().manual_seed(7)] * 3]
    b = [sample_next(logits, s, generator=g) for g in [torch.Generator().manual_seed(7)] * 3]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
