"""Every config group composes through real Hydra and builds its object."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from gptlab.model import GPT, GPTConfig
from tests.conftest import CONF_DIR, TINY_OVERRIDES, compose_train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    (group, p.stem)
    for group in (
        "optimizer",
        "scheduler",
        "curriculum",
        "sampler",
        "trainer",
        "logger",
        "data",
        "tokenizer",
        "debug",
    )
    for p in sorted((CONF_DIR / group).glob("*.yaml"))
]


def test_root_config_lists_every_group_in_precedence_order():
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml"))["defaults"]
    names = [next(iter(d)).replace("optional ", "") if isinstance(d, dict) else d for d in defaults]
    assert names[0] == "_self_"
    for group in (
        "data",
        "tokenizer",
        "model",
        "optimizer",
        "scheduler",
        "sampler",
        "trainer",
        "callbacks",
        "logger",
        "paths",
        "experiment",
        "hparams_search",
        "debug",
    ):
        assert group in names


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose_and_build_their_model(tmp_path, experiment):
    cfg = compose_train([f"experiment={experiment}"], tmp_path / "run")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = model_cfg.get("vocab_size") or 65
    with torch.device("meta"):
        GPT(GPTConfig.from_dict(model_cfg))


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_group_options_compose(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "local":
        overrides.append("data.path=/some/file.txt")
    cfg = compose_train(overrides, tmp_path / "run")
    if group == "debug":  # an overlay: it patches other groups instead of adding its own key
        assert cfg.trainer.max_steps < 1000
    else:
        assert group in cfg


def test_recipe_applies_to_its_model_and_optimizer_pair_only(tmp_path):
    """gptlab/conf/recipe/nano_adamw.yaml raises the default run's lr; other pairs and the command line are untouched."""
    recipe = OmegaConf.load(CONF_DIR / "recipe" / "nano_adamw.yaml")
    adamw = OmegaConf.load(CONF_DIR / "optimizer" / "adamw.yaml")
    assert recipe.optimizer.lr != adamw.lr
    assert compose_train([], tmp_path / "a").optimizer.lr == recipe.optimizer.lr
    assert compose_train(["model=gpt124m"], tmp_path / "b").optimizer.lr == adamw.lr
    assert (
        compose_train(["optimizer=sgd"], tmp_path / "c").optimizer.lr
        == OmegaConf.load(CONF_DIR / "optimizer" / "sgd.yaml").lr
    )
    assert compose_train(["optimizer.lr=5e-4"], tmp_path / "d").optimizer.lr == 5e-4
    assert (
        compose_train(["experiment=shakespeare_char", "model=nano"], tmp_path / "e").optimizer.lr
        == 1e-3
    )
    for path in (CONF_DIR / "recipe").glob(
        "*.yaml"
    ):  # every recipe names a real model_optimizer pair
        model, optimizer = path.stem.rsplit("_", 1)
        assert (CONF_DIR / "model" / f"{model}.yaml").is_file() and (
            CONF_DIR / "optimizer" / f"{optimizer}.yaml"
        ).is_file()


def test_command_line_values_reach_the_objects(tmp_path):
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "model.n_layer=3",
            "optimizer.lr=1e-3",
            "trainer.precision=bf16-mixed",
            "trainer.max_steps=500",
        ],
        tmp_path / "run",
    )
    assert cfg.model.n_layer == 3 and cfg.scheduler.total_steps == 500
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    assert trainer.max_steps == 500 and str(trainer.precision) == "bf16-mixed"
    opt = hydra.utils.instantiate(
        cfg.optimizer, GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))
    )
    assert opt.param_groups[0]["lr"] == 1e-3


def test_gpt124m_preset_has_gpt2_parameter_count(tmp_path):
    cfg = compose_train(["model=gpt124m", "tokenizer=gpt2"], tmp_path / "run")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["vocab_size"] = model_cfg.get("vocab_size") or 50257
    with torch.device("meta"):
        model = GPT(GPTConfig.from_dict(model_cfg))
    assert model.num_parameters() == 124_439_808


def test_model_schema_mirrors_gptconfig():
    """The typed schema of the model group must offer exactly GPTConfig's fields and defaults."""
    import dataclasses

    from gptlab.model.config import AttentionConfig
    from gptlab.schema import AttentionSchema, ModelSchema

    def defaults(cls) -> dict:
        out = {}
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out

    schema, real = defaults(ModelSchema), defaults(GPTConfig)
    assert schema.pop("vocab_size") is None and real.pop("vocab_size") == 50257
    assert schema == real
    assert defaults(AttentionSchema) == defaults(AttentionConfig)


def test_every_architecture_option_is_overridable_on_every_preset(tmp_path):
    for preset in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        cfg = compose_train(
            [
                f"model={preset}",
                "model.position=rope",
                "model.attention.n_kv_head=1",
                "model.norm=rmsnorm",
            ],
            tmp_path / "run",
        )
        assert cfg.model.position == "rope" and cfg.model.attention.n_kv_head == 1


def test_wrong_type_is_refused_while_composing(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="n_layer"):
        compose_train(["model.n_layer=two"], tmp_path / "run")


def test_registering_the_model_schema_does_not_import_torch():
    """The schema is derived from GPTConfig, and ``import gptlab`` registers it: that must stay light."""
    import subprocess
    import sys

    code = (
        "import sys, gptlab; from gptlab.schema import ModelSchema; from gptlab.model import GPTConfig; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(sorted(ModelSchema.__dataclass_fields__) == "
        "sorted(GPTConfig.__dataclass_fields__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
