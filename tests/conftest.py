"""Shared fixtures: an offline environment, the seeded data caches, and a tiny train config.

No test touches the network. Tiny Shakespeare and GPT-2's BPE ranks come from the
``shared/data`` folder beside the repository (as CI lays it out) and are copied into
temporary caches exactly where the real download code would have put them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "gptlab" / "conf"
# ../shared/data beside the checkout; GPTLAB_SHARED_DATA points elsewhere (a GPU machine gets a copy).
SHARED_DATA = Path(os.environ.get("GPTLAB_SHARED_DATA") or REPO.parent / "shared" / "data")
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt"
R50K = SHARED_DATA / "r50k_base.tiktoken"
# tiktoken caches a download under the sha1 of its address; this is r50k_base's.
R50K_CACHE_NAME = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"

needs_shakespeare = pytest.mark.skipif(
    not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} is not there"
)
needs_r50k = pytest.mark.skipif(not R50K.is_file(), reason=f"{R50K} is not there")

TINY_OVERRIDES = [
    "model=micro",
    "model.block_size=32",
    "data.batch_size=4",
    "data.val_batches=2",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "scheduler.warmup_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point every cache at a session folder seeded from shared/data; keep wandb offline."""
    root = tmp_path_factory.mktemp("caches")
    data_dir = root / "gptlab"
    (data_dir / "corpora").mkdir(parents=True)
    if SHAKESPEARE.is_file():
        shutil.copy(SHAKESPEARE, data_dir / "corpora" / "tinyshakespeare.txt")
    tiktoken_dir = root / "tiktoken"
    tiktoken_dir.mkdir()
    if R50K.is_file():
        shutil.copy(R50K, tiktoken_dir / R50K_CACHE_NAME)
    env = {
        "GPTLAB_DATA_DIR": str(data_dir),
        "TIKTOKEN_CACHE_DIR": str(tiktoken_dir),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    os.environ.update(env)
    return data_dir


def compose_train(overrides: list[str], output_dir: Path):
    """Compose ``gptlab/conf/train.yaml`` the way the CLI does, with the run folder set explicitly."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """A train config that runs in seconds: micro model, 6 steps, pydoc corpus."""
    return compose_train(TINY_OVERRIDES, tmp_path / "run")
