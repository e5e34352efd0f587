"""Shared fixtures: an offline environment, the seeded data caches, and a tiny train config.

No test touches the network. Tiny Shakespeare and GPT-2's BPE ranks come from the
``shared/data`` folder beside the repository (as CI lays it out) and are copied into
temporary caches exactly where the real download code would have put them.
"""

from __future__ import annotations

import json
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


def seed_caches(root: Path) -> dict[str, str]:
    """Offline caches under ``root`` seeded from the shared data; the env vars pointing at them.

    The test session uses them (``offline_environment``), and so does
    ``python -m tests.notebooks_regen``, so regenerated notebooks see what their test sees.
    """
    data_dir = root / "gptlab"
    (data_dir / "corpora").mkdir(parents=True, exist_ok=True)
    if SHAKESPEARE.is_file():
        shutil.copy(SHAKESPEARE, data_dir / "corpora" / "tinyshakespeare.txt")
    tiktoken_dir = root / "tiktoken"
    tiktoken_dir.mkdir(exist_ok=True)
    if R50K.is_file():
        shutil.copy(R50K, tiktoken_dir / R50K_CACHE_NAME)
    return {
        "GPTLAB_DATA_DIR": str(data_dir),
        "TIKTOKEN_CACHE_DIR": str(tiktoken_dir),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point every cache at a session folder seeded from shared/data; keep wandb offline."""
    env = seed_caches(tmp_path_factory.mktemp("caches"))
    os.environ.update(env)
    return Path(env["GPTLAB_DATA_DIR"])


def compose_train(overrides: list[str], output_dir: Path):
    """Compose ``gptlab/conf/train.yaml`` the way the CLI does, with the run folder set explicitly."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def compose_evaluate(overrides: list[str]):
    """Compose ``gptlab/conf/evaluate.yaml`` the way ``python -m gptlab.evaluate`` does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def write_jsonl_records(path: Path, records: list[dict]) -> Path:
    """A task or corpus file: one JSON object a line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared CPU run fastest on one thread (opt in per module)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """A train config that runs in seconds: micro model, 6 steps, pydoc corpus."""
    return compose_train(TINY_OVERRIDES, tmp_path / "run")
