"""``python -m gptlab.evaluate task=...``: benchmarks from the command line, on a random GPT-2
Hugging Face folder and on a real tiny gptlab checkpoint, and the user's mistakes refused
in one ``error:`` line.

The task data are small jsonl files the tests write (``++task.path=``), and
``paths.data_dir`` points at a temporary folder, so nothing is downloaded or cached at home.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.errors import ConfigError
from gptlab.evaluate import evaluate
from gptlab.evaluation.tasks import TaskError, known_tasks, suite_members
from gptlab.train import train
from tests.conftest import (
    TINY_OVERRIDES,
    compose_evaluate,
    compose_train,
    needs_r50k,
    write_jsonl_records,
)

PIQA = [
    {
        "query": "Question: How do I open a jar?",
        "choices": ["Twist the lid.", "Bite the jar."],
        "gold": 0,
    },
    {
        "query": "Question: How do I dry a wet towel?",
        "choices": ["Put it in a box.", "Hang it in the sun."],
        "gold": 1,
    },
    {
        "query": "Question: How do I cool a hot drink?",
        "choices": ["Add ice to it.", "Heat it more."],
        "gold": 0,
    },
    {
        "query": "Question: How do I boil an egg?",
        "choices": ["Put it in hot water.", "Freeze it."],
        "gold": 0,
    },
]
# Every character the items use (and no 'é'), first: the vocabulary comes from the train split.
CORPUS = (
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,?!'\n" * 10
    + "".join(f"{r['query']}\nAnswer: {c}\n" for r in PIQA for c in r["choices"]) * 30
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A random-weight GPT-2 saved by transformers, as a downloaded one would be."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128)).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def char_checkpoint(tmp_path_factory) -> Path:
    """A real gptlab checkpoint: tokenizer=char trained two steps on a small corpus (block 32)."""
    root = tmp_path_factory.mktemp("charckpt")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "~callbacks.sample_text",
            "tokenizer=char",
            "data=local",
            f"data.path={corpus}",
            "trainer.max_steps=2",
            f"paths.data_dir={root / 'data'}",
        ],
        root / "run",
    )
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gptlab.evaluate", *args, "progress=false"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def assert_one_error_line(out: subprocess.CompletedProcess, match: str) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr[-3000:])
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.count("\n") == 1, out.stderr  # one line
    assert re.search(match, out.stderr), out.stderr
    return out.stderr


LINE = re.compile(
    r"^piqa: 3 items \| acc [01]\.\d{4} ± 0\.\d{4} \| acc_norm [01]\.\d{4} ± 0\.\d{4} \| "
    r"acc_char [01]\.\d{4} ± 0\.\d{4} \| bpb \d+\.\d{4} \| centred -?\d\.\d{4}(?P<rest>.*)$",
    re.M,
)


@needs_r50k
def test_cli_scores_piqa_on_a_hugging_face_folder_and_writes_the_json(tmp_path, hf_folder):
    long_query = "Question: " + "Why is the sky so very blue and wide today? " * 15  # > 128 tokens
    records = [PIQA[0], {**PIQA[1], "query": long_query}, PIQA[2], PIQA[3]]
    data = write_jsonl_records(tmp_path / "piqa.jsonl", records)
    out = run_cli(
        [
            "task=piqa",
            f"++task.path={data}",
            f"hf={hf_folder}",
            "limit=3",
            f"paths.data_dir={tmp_path / 'cache'}",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = LINE.search(out.stdout)
    assert line and line["rest"] == " | truncated 2", out.stdout  # the long item's two choices
    written = re.search(r"^wrote (.+)$", out.stdout, re.M)
    assert written and Path(written[1]) == tmp_path / "eval-tiny-gpt2-piqa.json"
    result = json.loads(Path(written[1]).read_text())
    assert (
        result["format"] == "gptlab-downstream/1"
        and result["kind"] == "hf"
        and result["limit"] == 3
    )
    piqa = result["tasks"]["piqa"]
    assert piqa["n"] == 3 and piqa["requests"] == 6 and piqa["truncated"] == 2
    items = piqa["items"]
    assert items["index"] == [0, 1, 2]
    assert {"acc", "acc_norm", "acc_char", "nats", "bytes"} <= set(items)
    assert all(
        len(v) == 3 and all(x in (0.0, 1.0) for x in v)
        for k, v in items.items()
        if k.startswith("acc")
    )
    assert piqa["metrics"]["acc"] == pytest.approx(sum(items["acc"]) / 3)
    assert items["bytes"] == [
        float(len(("\nAnswer: " + r["choices"][r["gold"]]).encode())) for r in records[:3]
    ]
    assert not (tmp_path / "cache").exists()  # a local path downloads nothing


def test_a_gptlab_checkpoint_is_scored_and_the_json_goes_beside_it(char_checkpoint, tmp_path):
    from gptlab.checkpoint import load_model

    data = write_jsonl_records(tmp_path / "piqa.jsonl", PIQA)
    cfg = compose_evaluate(
        [
            "task=piqa",
            f"++task.path={data}",
            f"ckpt={char_checkpoint}",
            "progress=false",
            f"paths.data_dir={tmp_path / 'cache'}",
            "batch_size=3",
        ]
    )
    result = evaluate(cfg)
    assert Path(result["output"]) == char_checkpoint.with_name("last.eval-piqa.json")
    saved = json.loads(Path(result["output"]).read_text())
    assert saved["format"] == "gptlab-downstream/1" and saved["kind"] == "ckpt"
    piqa = saved["tasks"]["piqa"]
    assert piqa["n"] == 4 and len(piqa["items"]["acc_norm"]) == 4
    # Character ids, block_size 32: every "Question: ...\nAnswer: ..." pair longer than 33 is cut.
    tok = load_model(char_checkpoint).tokenizer
    expected = sum(
        len(tok.encode(r["query"])) + len(tok.encode("\nAnswer: " + c)) > 33
        for r in PIQA
        for c in r["choices"]
    )
    assert piqa["truncated"] == expected == 8


def test_several_tasks_at_once_from_task_yaml_files(char_checkpoint, tmp_path):
    specs = []
    for name, records in (("mine_a", PIQA[:2]), ("mine_b", PIQA[2:])):
        data = write_jsonl_records(tmp_path / f"{name}.jsonl", records)
        yaml = tmp_path / f"{name}.yaml"
        yaml.write_text(
            f"name: {name}\nkind: multiple_choice\npath: {data}\ncontext: '{{query}}'\n"
            "choices: choices\ngold: gold\ntarget_delimiter: ' '\nrandom_baseline: 0.5\n"
        )
        specs.append(str(yaml))
    cfg = compose_evaluate(
        [
            f"tasks=[{specs[0]},{specs[1]}]",
            f"ckpt={char_checkpoint}",
            "progress=false",
            f"output={tmp_path / 'both.json'}",
            f"paths.data_dir={tmp_path / 'cache'}",
        ]
    )
    result = evaluate(cfg)
    saved = json.loads((tmp_path / "both.json").read_text())
    assert list(saved["tasks"]) == ["mine_a", "mine_b"] == list(result["tasks"])
    assert [saved["tasks"][t]["n"] for t in ("mine_a", "mine_b")] == [2, 2]
    assert saved["suites"] == {}


def test_bad_settings_are_refused_before_any_scoring(tmp_path, hf_folder):
    data = write_jsonl_records(tmp_path / "piqa.jsonl", PIQA)
    base = ["task=piqa", f"++task.path={data}", "progress=false", f"paths.data_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=r"give exactly one of ckpt=.* and hf="):
        evaluate(compose_evaluate(base))
    with pytest.raises(ConfigError, match=r"limit=0 must be a positive number"):
        evaluate(compose_evaluate([*base, f"hf={hf_folder}", "limit=0"]))
    with pytest.raises(TaskError, match=r"unknown task 'nope'; the known tasks are arc_challenge"):
        evaluate(compose_evaluate(["tasks=[nope]", f"hf={hf_folder}", "progress=false"]))


def test_cli_refuses_both_ckpt_and_hf_in_one_line(tmp_path, hf_folder, char_checkpoint):
    data = write_jsonl_records(tmp_path / "piqa.jsonl", PIQA)
    out = run_cli(
        ["task=piqa", f"++task.path={data}", f"hf={hf_folder}", f"ckpt={char_checkpoint}"], tmp_path
    )
    assert_one_error_line(out, r"give exactly one of ckpt=.* and hf=")


def test_cli_refuses_text_the_checkpoint_s_tokenizer_cannot_encode(tmp_path, char_checkpoint):
    data = write_jsonl_records(
        tmp_path / "piqa.jsonl",
        [{**PIQA[0], "query": "Question: How do I open a café door?"}, PIQA[1]],
    )
    out = run_cli(
        [
            "task=piqa",
            f"++task.path={data}",
            f"ckpt={char_checkpoint}",
            f"paths.data_dir={tmp_path}",
            f"output={tmp_path / 'e.json'}",
        ],
        tmp_path,
    )
    assert_one_error_line(out, r"cannot encode item 0 of task piqa .*'é'.*byte-level")
    assert not (tmp_path / "e.json").exists()


def test_cli_unknown_task_names_the_known_ones(tmp_path, hf_folder):
    out = run_cli(["tasks=[hellaswagg]", f"hf={hf_folder}"], tmp_path)
    message = assert_one_error_line(out, r"unknown task 'hellaswagg'; the known tasks are")
    assert all(name in message for name in known_tasks())
    out = run_cli(["task=hellaswagg", f"hf={hf_folder}"], tmp_path)  # Hydra's own group lookup
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "Could not find 'task/hellaswagg'" in out.stderr
    assert all(name in out.stderr for name in known_tasks())


@pytest.mark.parametrize("name", [n for n in known_tasks() if suite_members(n) is None])
def test_task_path_overrides_every_single_task(name, tmp_path):
    cfg = compose_evaluate([f"task={name}", f"task.path={tmp_path / 'local.jsonl'}"])
    assert cfg.task.path == str(tmp_path / "local.jsonl")
