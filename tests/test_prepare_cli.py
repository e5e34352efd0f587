"""``python -m gptlab.prepare`` as a user runs it: one line saying what the store holds, a
second run that only opens it, one ``error:`` sentence for a bad line, and training that
prepares a missing store by itself.

Each case is a real subprocess on a JSON-lines corpus the test writes; every store goes
under the test's own ``paths.data_dir``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptlab.data.shards import HEADER_BYTES, write_shard
from tests.conftest import REPO, SHAKESPEARE, TINY_OVERRIDES, needs_r50k, needs_shakespeare

pytestmark = [needs_r50k, needs_shakespeare]
STORE_LINE = re.compile(
    r"token store (\S+): ([\d,]+) training and ([\d,]+) validation tokens in (\d+) shard\(s\)"
)


def write_jsonl(path: Path, n_docs: int, bad_line: int | None = None) -> Path:
    """``n_docs`` numbered Shakespeare paragraphs, one a line; line ``bad_line`` is not JSON."""
    paragraphs = [p for p in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    lines = [json.dumps({"text": f"{i}. {paragraphs[i]}"}) + "\n" for i in range(n_docs)]
    if bad_line is not None:
        lines.insert(bad_line - 1, '{"text": "an unfinished line\n')
    path.write_text("".join(lines), encoding="utf-8")
    return path


def run(module: str, *overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *overrides, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def prepare(
    jsonl: Path, data_dir: Path, tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess:
    return run(
        "gptlab.prepare",
        "data=local",
        f"data.path={jsonl}",
        "tokenizer=gpt2",
        "data.shard_tokens=4000",
        f"paths.data_dir={data_dir}",
        *extra,
        tmp_path=tmp_path,
    )


def only_store(data_dir: Path) -> Path:
    (folder,) = (data_dir / "stores").iterdir()
    return folder


def test_prepare_prints_the_store_and_a_second_run_only_opens_it(tmp_path):
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", 200)
    first = prepare(jsonl, tmp_path / "data", tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    store = only_store(tmp_path / "data")
    assert store.name.startswith("local-")
    line = STORE_LINE.search(first.stdout)
    assert line and line[1] == str(store), first.stdout
    manifest = json.loads((store / "manifest.json").read_text())
    assert int(line[2].replace(",", "")) == manifest["splits"]["train"]["tokens"]
    assert int(line[3].replace(",", "")) == manifest["splits"]["val"]["tokens"]
    assert int(line[4]) == len(manifest["shards"]) > 2
    assert "preparing" in first.stderr  # the progress bar of the encoding
    files = sorted(p.name for p in store.iterdir())
    written = {p.name: p.stat().st_mtime_ns for p in store.iterdir() if p.name != "prepare.lock"}

    second = prepare(jsonl, tmp_path / "data", tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert STORE_LINE.search(second.stdout)[0] == line[0]
    assert "preparing" not in second.stderr  # no progress bar: nothing was encoded
    assert sorted(p.name for p in store.iterdir()) == files
    assert {n: (store / n).stat().st_mtime_ns for n in written} == written  # `created` too

    checked = prepare(jsonl, tmp_path / "data", tmp_path, "verify=true")
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert STORE_LINE.search(checked.stdout)[0] == line[0]


def test_verify_names_a_shard_whose_ids_changed(tmp_path):
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", 60)
    assert prepare(jsonl, tmp_path / "data", tmp_path).returncode == 0
    store = only_store(tmp_path / "data")
    victim = store / json.loads((store / "manifest.json").read_text())["shards"][0]["file"]
    with open(victim, "r+b") as f:  # same size, same header, other ids
        f.seek(HEADER_BYTES + 20)
        f.write(np.array([11, 22, 33], dtype="<u2").tobytes())
    checked = prepare(jsonl, tmp_path / "data", tmp_path, "verify=true", "data.verify=false")
    assert checked.returncode == 1
    assert checked.stderr.startswith("error: ") and str(victim) in checked.stderr
    assert "Traceback" not in checked.stderr and checked.stderr.count("\n") == 1


def test_a_bad_line_is_one_error_sentence_and_skip_counts_it(tmp_path):
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", 60, bad_line=5)
    failed = prepare(jsonl, tmp_path / "data", tmp_path)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr + failed.stdout
    (error,) = [ln for ln in failed.stderr.splitlines() if ln.startswith("error:")]
    assert f"{jsonl} line 5 is not JSON" in error and "data.on_bad_record=skip" in error
    assert not list((tmp_path / "data").glob("stores/*/manifest.json"))

    skipped = prepare(jsonl, tmp_path / "data", tmp_path, "data.on_bad_record=skip")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "; 1 bad records skipped" in skipped.stdout
    manifest = json.loads((only_store(tmp_path / "data") / "manifest.json").read_text())
    assert manifest["skipped_records"] == 1
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 60


@pytest.mark.slow
def test_training_prepares_a_missing_store_itself(tmp_path):
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", 200)
    assert not (tmp_path / "data" / "stores").exists()
    done = run(
        "gptlab.train",
        *TINY_OVERRIDES,
        "~callbacks.sample_text",
        "data=local",
        f"data.path={jsonl}",
        "tokenizer=gpt2",
        f"paths.data_dir={tmp_path / 'data'}",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = only_store(tmp_path / "data")
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 200
    assert (tmp_path / "hydra" / "metrics.csv").is_file()


def llmc_shards(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        ids = np.concatenate([[50256], rng.integers(0, 50256, 500)]).astype(np.uint16)
        write_shard(folder / name, ids, 50257)
    return folder


def test_prepare_on_existing_shards_only_opens_them(tmp_path):
    folder = llmc_shards(tmp_path / "fineweb10B")
    done = prepare(folder, tmp_path / "data", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        f"token store {folder}: 501 training and 501 validation tokens in 2 shard(s)" in done.stdout
    )
    assert not (tmp_path / "data" / "stores").exists()


def test_verify_true_on_existing_shards_opens_them(tmp_path):
    folder = llmc_shards(tmp_path / "fineweb10B")
    done = prepare(folder, tmp_path / "data", tmp_path, "verify=true")
    assert done.returncode == 0, done.stderr[-3000:]
