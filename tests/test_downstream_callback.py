"""The in-loop downstream evaluation (``callbacks=downstream``) through real training runs.

Real ``gptlab.train.train`` runs of a micro model with GPT-2's tokenizer (the offline
tiktoken cache), scoring task files this module writes (PIQA's ``{query, choices, gold}``
format, and a two-member suite), so nothing is downloaded. One 2-process DDP run on CPU
(gloo, a real ``python -m gptlab.train`` subprocess) checks that sharded scoring gives
the numbers of one process.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pytest
from omegaconf import OmegaConf

from gptlab.evaluation import results as result_file
from gptlab.evaluation.callback import DownstreamEval
from gptlab.evaluation.tasks import TaskError
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES, compose_train, needs_r50k, write_jsonl_records

pytestmark = needs_r50k

ITEMS = 8  # items in each task file; LIMIT of them are scored
LIMIT = 5

SUBJECTS = ["a cage", "a bike", "a shelf", "a lamp", "a kite", "a boat", "a tent", "a drum"]


def piqa_items(offset: int = 0) -> list[dict[str, Any]]:
    """PIQA-shaped items: a question and two solutions, the gold one first or second."""
    return [
        {
            "query": f"Question: How do I clean {s}?\n",
            "choices": [
                f"Wipe {s} with a damp cloth and let it dry.",
                f"Throw {s} into the sea and wait for rain.",
            ][:: 1 if (i + offset) % 2 == 0 else -1],
            "gold": (i + offset) % 2,
        }
        for i, s in enumerate(SUBJECTS[:ITEMS])
    ]


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``tiny``: one piqa-format task YAML; ``mini``: a suite of two members (centred scores)."""
    root = tmp_path_factory.mktemp("tasks")
    data = write_jsonl_records(root / "tiny.jsonl", piqa_items())
    other = write_jsonl_records(root / "other.jsonl", piqa_items(offset=1))
    mc = {"kind": "multiple_choice", "context": "{query}", "choices": "choices", "gold": "gold"}
    tiny = {"name": "tiny", **mc, "path": str(data), "random_baseline": 0.5}
    suite = {
        "name": "mini",
        **mc,
        "random_baseline": 0.5,
        "tasks": [{"name": "a", "path": str(data)}, {"name": "b", "path": str(other)}],
    }
    paths = {}
    for name, settings in (("tiny", tiny), ("mini", suite)):
        paths[name] = root / f"{name}.yaml"
        OmegaConf.save(OmegaConf.create(settings), paths[name])
    return paths


def overrides(task_files: dict[str, Path], every: int = 2, steps: int = 5) -> list[str]:
    tasks = ",".join(str(task_files[n]) for n in ("tiny", "mini"))
    return [
        *TINY_OVERRIDES,
        "tokenizer=gpt2",
        "callbacks=downstream",
        f"callbacks.downstream.tasks=[{tasks}]",
        f"callbacks.downstream.every_n_steps={every}",
        f"callbacks.downstream.limit={LIMIT}",
        "callbacks.downstream.verbose=false",
        f"trainer.max_steps={steps}",
        "~callbacks.sample_text",
    ]


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(run: Path, name: str) -> dict[int, float]:
    """One metrics.csv column by row step; each step at most once."""
    out: dict[int, float] = {}
    for row in metric_rows(run):
        if row.get(name):
            step = int(float(row["step"]))
            assert step not in out, f"{name} logged twice for step {step}"
            out[step] = float(row[name])
    return out


def step_files(run: Path) -> dict[int, dict[str, Any]]:
    return {
        int(p.stem.split("-")[1]): result_file.read(p)
        for p in sorted((run / "downstream").glob("step-*.json"))
    }


# -- one process ----------------------------------------------------------------------------


def test_metrics_step_files_and_limit(task_files, tmp_path):
    cfg = compose_train(overrides(task_files, every=2, steps=5), tmp_path / "run")
    final = train(cfg)
    run = Path(cfg.paths.output_dir)

    # Every 2 steps and at the last (5): in the rows of steps N - 1, beside train/val loss.
    files = step_files(run)
    assert sorted(files) == [2, 4, 5]
    for name in ("tiny", "mini/a", "mini/b"):
        for metric in ("acc", "acc_norm", "acc_norm_se", "acc_char", "bpb", "centered"):
            assert sorted(column(run, f"eval/{name}/{metric}")) == [1, 3, 4], (name, metric)
    assert sorted(column(run, "eval/mini")) == [1, 3, 4]
    assert sorted(column(run, "eval/mini_se")) == [1, 3, 4]
    assert "eval/tiny/acc_norm" in final and "eval/mini" in final  # summary.json / sweeps see them

    for step, body in files.items():
        assert body["step"] == step and body["limit"] == LIMIT
        for name in ("tiny", "mini/a", "mini/b"):
            r = body["tasks"][name]
            assert r["n"] == LIMIT and r["items"]["index"] == list(range(LIMIT))  # the first LIMIT
            assert len(r["items"]["acc_norm"]) == LIMIT and set(r["items"]["acc_norm"]) <= {0, 1}
            assert r["metrics"]["acc_norm"] == pytest.approx(sum(r["items"]["acc_norm"]) / LIMIT)
        assert body["suites"]["mini"]["tasks"] == ["mini/a", "mini/b"]
        logged = column(run, "eval/tiny/acc_norm")[step - 1]
        assert logged == pytest.approx(body["tasks"]["tiny"]["metrics"]["acc_norm"])
    summary = json.loads((run / "summary.json").read_text())
    assert "eval/tiny/acc_norm" in summary["metrics"]


def test_train_loss_is_unchanged_by_the_callback(task_files, tmp_path):
    base = [*overrides(task_files, every=1, steps=6), "model.dropout=0.1"]  # dropout: RNG matters
    with_eval = compose_train(base, tmp_path / "with")
    without = compose_train([*base, "~callbacks.downstream"], tmp_path / "without")
    train(with_eval)
    train(without)
    a, b = Path(with_eval.paths.output_dir), Path(without.paths.output_dir)
    assert len(step_files(a)) == 6 and not (b / "downstream").exists()
    for name in ("train/loss", "val/loss"):
        assert column(a, name) == column(b, name), name  # exactly: same batches, same dropout


def test_a_tokenizer_that_cannot_encode_a_task_stops_before_training(tmp_path):
    data = write_jsonl_records(
        tmp_path / "snow.jsonl",
        [{"query": "Question: What is \u2603?\n", "choices": ["snow", "sand"], "gold": 0}],
    )
    task = tmp_path / "snow.yaml"
    OmegaConf.save(
        OmegaConf.create(
            {"name": "snow", "kind": "multiple_choice", "context": "{query}", "path": str(data)}
        ),
        task,
    )
    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "tokenizer=char",  # learned from the pydoc corpus, which has no snowman
            "callbacks=downstream",
            f"callbacks.downstream.tasks=[{task}]",
        ],
        tmp_path / "run",
    )
    with pytest.raises(TaskError, match="cannot encode item 0 of task snow") as info:
        train(cfg)
    assert "\n" not in str(info.value)
    run = Path(cfg.paths.output_dir)
    assert not (run / "checkpoints").exists() and not (run / "downstream").exists()
    if (run / "metrics.csv").exists():
        assert not any(r.get("train/loss") for r in metric_rows(run))


def test_an_item_longer_than_the_context_is_passed_over_or_refused(tmp_path):
    items = piqa_items()
    items[1]["choices"][0] = "Wipe it " + "very " * 40 + "gently."  # > block_size=32 tokens
    data = write_jsonl_records(tmp_path / "long.jsonl", items)
    task = tmp_path / "long.yaml"
    OmegaConf.save(
        OmegaConf.create(
            {"name": "long", "kind": "multiple_choice", "context": "{query}", "path": str(data)}
        ),
        task,
    )
    args = [
        *TINY_OVERRIDES,
        "tokenizer=gpt2",
        "callbacks=downstream",
        f"callbacks.downstream.tasks=[{task}]",
        "callbacks.downstream.limit=3",
        "callbacks.downstream.every_n_steps=null",
        "trainer.max_steps=1",
        "~callbacks.sample_text",
    ]
    refused = compose_train([*args, "callbacks.downstream.too_long=error"], tmp_path / "no")
    with pytest.raises(TaskError, match="item 1 of task long has an answer longer"):
        train(refused)
    assert not (tmp_path / "no" / "checkpoints").exists()
    cfg = compose_train(args, tmp_path / "run")
    train(cfg)
    body = step_files(Path(cfg.paths.output_dir))[1]  # only at the end
    assert body["tasks"]["long"]["items"]["index"] == [0, 2, 3]  # still 3 items, always these
    assert body["skipped"] == {"long": [1]}


def test_the_preset_keeps_the_default_callbacks_and_the_entry_can_be_added_whole(tmp_path):
    default = compose_train(TINY_OVERRIDES, tmp_path / "a").callbacks
    preset = compose_train([*TINY_OVERRIDES, "callbacks=downstream"], tmp_path / "b").callbacks
    assert list(preset) == [*default, "downstream"]
    added = compose_train(
        [
            *TINY_OVERRIDES,
            "+callbacks.downstream={_target_: gptlab.evaluation.callback.DownstreamEval, "
            "tasks: [piqa], limit: 10}",
        ],
        tmp_path / "c",
    ).callbacks
    assert list(added) == [*default, "downstream"]
    callback = hydra.utils.instantiate(added.downstream)
    assert isinstance(callback, DownstreamEval) and callback.limit == 10
    assert callback.specs == ["piqa"] and callback.every_n_steps is not None  # the class defaults
    with pytest.raises(Exception, match="positive integer"):
        DownstreamEval(tasks=["piqa"], every_n_steps=0)


# -- resume ---------------------------------------------------------------------------------


class CrashAt(L.Callback):
    """Raises at the start of step ``step`` (a crash after the step before it finished)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("crash for the test")


def test_a_resumed_run_neither_repeats_nor_loses_evaluations(task_files, tmp_path):
    base = [
        *overrides(task_files, every=2, steps=8),
        "trainer.val_check_interval=4",
        "checkpoint.every_n_steps=4",
        "checkpoint.keep_last=null",
    ]
    straight = compose_train(base, tmp_path / "straight")
    train(straight)
    crashed = compose_train(
        [*base, "+callbacks.crash={_target_: tests.test_downstream_callback.CrashAt, step: 7}"],
        tmp_path / "crashed",
    )
    with pytest.raises(RuntimeError, match="crash for the test"):
        train(crashed)
    run = Path(crashed.paths.output_dir)
    assert sorted(step_files(run)) == [2, 4, 6]  # step 6 was evaluated after the step-4 checkpoint
    train(compose_train([*base, f"resume={run}"], tmp_path / "unused"))

    a, b = Path(straight.paths.output_dir), run
    assert sorted(step_files(b)) == [2, 4, 6, 8]
    expected, got = column(a, "eval/tiny/bpb"), column(b, "eval/tiny/bpb")  # raises if repeated
    assert sorted(got) == [1, 3, 5, 7]
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    for step, body in step_files(a).items():
        assert step_files(b)[step]["tasks"]["tiny"]["items"] == body["tasks"]["tiny"]["items"]


# -- DDP ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_shards_the_items_and_gets_the_numbers_of_one_process(task_files, tmp_path):
    """Two gloo processes score alternate items; gathered, they match one process's result.

    The learning rate is tiny, so both runs score the model they were initialised with
    (the same seed) and the test compares the sharding, not two trainings.
    """
    from tests.test_resume import cli, finish

    args = [
        *overrides(task_files, every=2, steps=2),
        "optimizer.lr=1e-12",
        "trainer.val_check_interval=2",
    ]
    ddp = ["trainer.devices=2", "trainer.strategy=ddp"]
    one, two, zero = tmp_path / "one", tmp_path / "two", tmp_path / "zero"
    procs = [
        cli([*args, f"hydra.run.dir={one}"]),
        cli([*args, *ddp, f"hydra.run.dir={two}"]),
    ]
    for proc in procs:
        code, log = finish(proc, timeout=400)
        assert code == 0, log[-4000:]
    # shard=false: rank zero scores every item and hands the result to the other rank.
    code, log = finish(
        cli([*args, *ddp, "callbacks.downstream.shard=false", f"hydra.run.dir={zero}"]),
        timeout=400,
    )
    assert code == 0, log[-4000:]
    single, sharded = step_files(one)[2], step_files(two)[2]
    assert single["world_size"] == 1 and sharded["world_size"] == 2 and sharded["shards"] == 2
    unshared = step_files(zero)[2]
    assert unshared["world_size"] == 2 and unshared["shards"] == 1
    assert (
        unshared["tasks"]["tiny"]["items"]["acc_norm"]
        == single["tasks"]["tiny"]["items"]["acc_norm"]
    )
    for name, r in single["tasks"].items():
        s = sharded["tasks"][name]
        assert s["n"] == r["n"] == LIMIT and s["requests"] == r["requests"]
        for rule in ("acc", "acc_norm", "acc_char", "index"):
            assert s["items"][rule] == r["items"][rule], (name, rule)
        assert s["items"]["nats"] == pytest.approx(r["items"]["nats"], abs=1e-4)
        for key, value in r["metrics"].items():
            assert s["metrics"][key] == pytest.approx(value, abs=1e-5), (name, key)
    assert sharded["suites"]["mini"]["score"] == pytest.approx(single["suites"]["mini"]["score"])
    logged = column(two, "eval/tiny/acc_norm")
    assert logged[1] == pytest.approx(single["tasks"]["tiny"]["metrics"]["acc_norm"])


def test_a_rank_with_an_empty_share_of_a_task_can_still_score_it(tmp_path):
    from gptlab.evaluation.evaluator import Selection, score_task
    from gptlab.evaluation.scorer import Scorer
    from gptlab.evaluation.tasks import load_task
    from gptlab.model import GPT, GPTConfig
    from gptlab.tokenizer.char import CharTokenizer

    data = write_jsonl_records(
        tmp_path / "one.jsonl", [{"query": "ab", "choices": ["a", "b"], "gold": 0}]
    )
    task = load_task(
        {"name": "one", "kind": "multiple_choice", "context": "{query}", "path": str(data)}
    )
    model = GPT(GPTConfig(vocab_size=3, block_size=16, n_layer=1, n_head=1, n_embd=8))
    share = score_task(
        task, Scorer(model), CharTokenizer("ab "), Selection(None, rank=1, world_size=2)
    )
    assert share["n"] == 0 and share["items"]["index"] == []
    from gptlab.evaluation.evaluator import combine

    scorer, tokenizer = Scorer(model), CharTokenizer("ab ")
    whole = score_task(task, scorer, tokenizer)
    first = score_task(task, scorer, tokenizer, Selection(None, rank=0, world_size=2))
    merged = combine([{"tasks": {"one": first}}, {"tasks": {"one": share}}], [task])
    assert merged["tasks"]["one"]["items"] == whole["items"]
    assert merged["tasks"]["one"]["metrics"] == whole["metrics"]
