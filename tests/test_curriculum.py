"""curriculum=...: batch-size, sequence-length and window warm-ups, and document masks in training."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from gptlab.errors import ConfigError
from gptlab.train import train
from gptlab.training.curriculum import Curriculum
from tests.conftest import compose_train

WARMUP = {
    "batch_size": {"start": 4, "steps": 8},
    "seq_len": {"start": 8, "steps": 8},
    "window": {"start": 4, "steps": 10},
}


def test_ramps_by_hand():
    c = Curriculum(WARMUP)
    # batch 4 + (12 - 4) * step / 8; seq: the largest 8 * 2^k <= 8 + 56 * step / 8 dividing 64
    assert c.sizes(0, 12, 64) == {"batch_size": 4, "seq_len": 8, "window": 4}
    assert c.sizes(2, 12, 64) == {"batch_size": 6, "seq_len": 16, "window": 16}  # 22 -> 16
    assert c.sizes(5, 12, 64) == {"batch_size": 9, "seq_len": 32, "window": 34}  # 43 -> 32
    assert c.sizes(8, 12, 64) == {"batch_size": 12, "seq_len": 64, "window": 52}
    assert c.window_cap(10, 64) is None and c.window_cap(9, 64) == 58
    assert not Curriculum(None).active and not Curriculum({}).active


def test_apply_crops_rows_then_cuts_them_shorter_keeping_order():
    x = torch.arange(4 * 8).view(4, 8)
    y, docs = x + 100, x // 3
    c = Curriculum({"batch_size": {"start": 2, "steps": 4}, "seq_len": {"start": 2, "steps": 4}})
    bx, by, bd = c.apply((x, y, docs), step=0)  # 2 rows, length 2
    assert bx.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]
    assert torch.equal(by, bx + 100) and torch.equal(bd, bx // 3)
    full = c.apply((x, y, docs), step=4)
    assert all(torch.equal(a, b) for a, b in zip(full, (x, y, docs), strict=True))


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"batch": {"start": 1, "steps": 2}}, "curriculum.batch is not a warm-up"),
        ({"seq_len": {"start": 0, "steps": 2}}, "seq_len.start=0 must be a positive integer"),
        ({"window": {"start": 4, "steps": -1}}, "window.steps=-1 must be an integer >= 0"),
        ({"window": 4}, "curriculum.window must be {start"),
    ],
)
def test_bad_specs_are_one_sentence(spec, message):
    with pytest.raises(ConfigError, match=message):
        Curriculum(spec)


def test_sizes_the_run_cannot_hold_are_refused(tmp_path):
    with pytest.raises(
        ConfigError, match="batch_size.start=20 is larger than the size it grows to"
    ):
        Curriculum({"batch_size": {"start": 20, "steps": 5}}).check(12, 64)
    with pytest.raises(ConfigError, match="seq_len.start=24 does not divide the block size 64"):
        Curriculum({"seq_len": {"start": 24, "steps": 5}}).check(12, 64)
    cfg = compose_train(
        ["experiment=shakespeare_char", "curriculum=warmup", "data.batch_size=2"], tmp_path
    )
    with pytest.raises(ConfigError, match="curriculum.batch_size.start=4 is larger"):
        train(cfg)


def short_run(tmp_path, name: str, *overrides: str) -> list[dict]:
    out = tmp_path / name
    cfg = compose_train(
        [
            "experiment=shakespeare_char",
            "trainer.max_steps=6",
            "trainer.val_check_interval=6",
            "trainer.log_every_n_steps=1",
            "data.val_batches=2",
            "callbacks.sample_text=null",
            "callbacks.progress_bar.refresh_rate=0",
            *overrides,
        ],
        out,
    )
    train(cfg)
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def test_warmup_grows_what_each_step_sees_in_a_real_run(tmp_path):
    rows = short_run(
        tmp_path,
        "warm",
        "curriculum=warmup",
        "curriculum.batch_size.steps=4",
        "curriculum.seq_len.steps=4",
        "curriculum.window.steps=8",
        "model.attention.window=32",
    )
    assert column(rows, "train/batch_size") == [4, 6, 8, 10, 12, 12]
    assert column(rows, "train/seq_len") == [16, 16, 32, 32, 64, 64]  # rows cut 4x, 2x, then whole
    assert column(rows, "train/window") == [16, 22, 28, 34, 40, 46]
    assert column(rows, "val/loss")  # validated (with no cap) at the end


def test_curriculum_none_trains_exactly_as_before(tmp_path):
    plain = column(short_run(tmp_path, "a"), "train/loss")
    none = column(short_run(tmp_path, "b", "curriculum=none"), "train/loss")
    assert plain == none and len(plain) == 6
    ramped = column(
        short_run(tmp_path, "c", "curriculum=warmup", "~curriculum.window"), "train/loss"
    )
    assert ramped != plain


def test_document_mask_trains_with_the_loaders_document_ids(tmp_path):
    rows = short_run(
        tmp_path,
        "docs",
        "data=pydoc",
        "data.document_ids=true",
        "model.attention.document_mask=true",
    )
    assert column(rows, "val/loss")


def test_document_mask_without_document_ids_is_refused(tmp_path):
    cfg = compose_train(["model.attention.document_mask=true"], tmp_path)
    with pytest.raises(ConfigError, match="document_mask=true needs .* data.document_ids=true"):
        train(cfg)
