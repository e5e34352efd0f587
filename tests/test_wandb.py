"""``logger=wandb`` offline: what lands in the run's offline wandb folder.

wandb 0.2x+ keeps an offline run in one binary ``run-<id>.wandb`` file (a LevelDB-style
log of protobuf records) that ``wandb sync`` uploads later. ``read_records`` below reads
it with wandb's own protobuf classes, so the test sees exactly what would be uploaded.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
import yaml

from gptlab.train import train
from gptlab.training.loggers import flatten, sweep_group, wandb_hparams, wandb_logger
from tests.conftest import TINY_OVERRIDES, compose_train

BLOCK = 32 * 1024  # LevelDB log block size, as wandb writes it
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    """Every complete protobuf ``Record`` of an offline ``.wandb`` file, in order (a record still being written is left out)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    records, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):  # wandb's service is still writing this record
            break
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        parts = payload if kind in (FULL, FIRST) else parts + payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def offline_run(run_dir: Path) -> dict:
    """Config, history rows, artifacts and run settings of the one offline run in ``run_dir``."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = read_records(log)
    deadline = time.monotonic() + 60
    # wandb.finish() can return before wandb's service process has written the log: wait for its end.
    while (
        not any(r.WhichOneof("record_type") == "exit" for r in records)
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
        records = read_records(log)
    out: dict = {
        "config": {},
        "history": [],
        "artifacts": [],
        "summary": {},
        "run": None,
        "file": log,
    }
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "config":
            out["config"].update(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.config.update
                }
            )
        elif kind == "history":
            out["history"].append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "summary":
            out["summary"].update(
                {
                    item.key or "/".join(item.nested_key): item.value_json
                    for item in record.summary.update
                }
            )
        elif kind == "artifact":
            out["artifacts"].append((record.artifact.type, record.artifact.name))
        elif kind == "run":
            out["run"] = record.run
    return out


@pytest.fixture
def wandb_dirs(tmp_path, monkeypatch):
    """Keep wandb's staging and cache folders (checkpoint artifacts) out of the home folder."""
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a micro model on a shared CPU: one thread is fastest
    yield tmp_path
    torch.set_num_threads(threads)


def test_offline_run_holds_flat_config_metrics_params_samples_and_checkpoint(wandb_dirs):
    cfg = compose_train(
        [*TINY_OVERRIDES, "logger=many", "logger.wandb.log_model=true", "optimizer.lr=2e-3"],
        wandb_dirs / "run",
    )
    train(cfg)
    run = offline_run(wandb_dirs / "run")
    config = run["config"]
    assert (
        config["optimizer.lr"] == 0.002
        and config["model.n_layer"] == 2
        and config["model.vocab_size"] > 0
    )
    assert config["trainer.max_steps"] == 6 and config["tokenizer.kind"] == "char"
    assert not any(
        k.startswith(("run_config", "tokenizer.chars")) for k in config
    )  # flat, no tokenizer state
    params = json.loads((wandb_dirs / "run" / "summary.json").read_text())["params"]
    assert config["model/params"] == params > 0 and run["summary"]["model/params"] == str(params)

    rows = run["history"]
    val_steps = [r["trainer/global_step"] for r in rows if "val/loss" in r]
    assert len(val_steps) == 2 and all(r["val/bpb"] > 0 for r in rows if "val/loss" in r)
    train_rows = [r for r in rows if "train/loss" in r]
    perf_rows = [
        r for r in rows if "perf/tokens_per_sec" in r
    ]  # written by the throughput callback
    assert len(train_rows) == 6 and {
        "train/tokens",
        "train/flops",
        "train/wall_time",
        "train/lr",
    } <= set(perf_rows[-1])
    assert [r["trainer/global_step"] for r in perf_rows] == [
        r["trainer/global_step"] for r in train_rows
    ]
    assert any(k.startswith("samples") for r in rows for k in r)  # the samples Table
    assert ("run_table", f"run-{run['run'].run_id}-samples") in run["artifacts"]
    assert ("model", f"model-{run['run'].run_id}") in run["artifacts"]  # log_model=true
    assert run["run"].run_id == (wandb_dirs / "run" / "wandb_run_id.txt").read_text().strip()
    assert run["run"].run_group == ""  # a single run belongs to no sweep


def test_consecutive_runs_in_one_process_are_separate_wandb_runs(wandb_dirs):
    ids = []
    for name in ("a", "b"):
        train(
            compose_train(
                [
                    *TINY_OVERRIDES,
                    "logger=wandb",
                    "~callbacks.sample_text",
                    "trainer.max_steps=3",
                    "trainer.val_check_interval=3",
                ],
                wandb_dirs / name,
            )
        )
        run = offline_run(wandb_dirs / name)
        assert len([r for r in run["history"] if "train/loss" in r]) == 3  # only its own steps
        ids.append(run["run"].run_id)
    assert ids[0] != ids[1]


def test_jobs_of_one_sweep_share_a_group_named_after_the_sweep_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "multirun" / "2025-01-31" / "12-00-00-000001"
    (sweep / "3").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    assert sweep_group(sweep / "3") == "2025-01-31/12-00-00-000001"
    assert sweep_group(tmp_path / "single") is None
    logger = wandb_logger(project="gptlab", save_dir=str(sweep / "3"))
    assert logger._wandb_init["group"] == "2025-01-31/12-00-00-000001"
    assert (
        wandb_logger(project="gptlab", save_dir=str(sweep / "3"), group="mine")._wandb_init["group"]
        == "mine"
    )


def test_resumed_run_reuses_its_wandb_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = wandb_logger(project="gptlab", save_dir=str(tmp_path))
    again = wandb_logger(project="gptlab", save_dir=str(tmp_path))
    assert first._wandb_init["id"] == again._wandb_init["id"] and len(first._wandb_init["id"]) == 8


def test_hparams_sent_to_wandb_are_the_flat_resolved_config_with_overrides(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["optimizer.lr=0.003", "model=micro"])
    )
    hparams = {
        "model_config": {"vocab_size": 65, "n_layer": 2},
        "optimizer": {"lr": 0.003},
        "tokenizer": {"kind": "char", "chars": "abc"},
        "run_config": {
            "model": {"vocab_size": None, "n_layer": 2},
            "optimizer": {"lr": 0.003, "betas": [0.9, 0.95]},
            "seed": 1,
        },
    }
    assert wandb_hparams(hparams) == {
        "model.vocab_size": 65,
        "model.n_layer": 2,
        "optimizer.lr": 0.003,
        "optimizer.betas": [0.9, 0.95],
        "seed": 1,
        "tokenizer.kind": "char",
    }
    assert flatten({"a": {"b": {}, "c": {"d": 1}}}) == {"a.b": {}, "a.c.d": 1}
    sent: dict = {}
    monkeypatch.setattr(WandbLogger, "log_hyperparams", lambda self, params: sent.update(params))
    wandb_logger(project="gptlab", save_dir=str(tmp_path), offline=True).log_hyperparams(hparams)
    assert (
        sent["overrides"] == ["optimizer.lr=0.003", "model=micro"] and sent["optimizer.lr"] == 0.003
    )
