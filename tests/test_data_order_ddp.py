"""The batch order you can trust: the same global batches at 1, 2 or 4 processes, and exact resume.

Issue 16, section 3. Real ``python -m gptlab.train`` subprocesses (two of them real
2-process DDP runs on CPU over gloo) train a micro model on a small jsonl corpus of
Shakespeare paragraphs, once per ``data.sampling``. ``data.global_batch_tokens`` is
fixed at two micro-batches, so a step accumulates 2 micro-batches on one process and
takes 1 on each of two. ``RecordBatches``, a callback given on the command line, writes
what each rank trained on (a hash per row) and the loss of every micro-batch, so the
tests compare what the runs actually received, not what the order says they should.

Per sampling, five runs (shared by the tests through a module-scoped fixture):

    w1      one process, steps 0..7 without a stop
    w2      two processes, steps 0..3
    half    one process, an 8-step run SIGKILLed right after its step-4 checkpoint;
            two copies of its folder are resumed:
    again   ... on one process, to step 8   (exact resume)
    wider   ... on two processes, to step 8 (resume at another world size)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pytest
import torch

from gptlab.data.orders import RankBatches
from gptlab.data.sources import DataError
from tests.conftest import SHAKESPEARE, compose_train, needs_shakespeare
from tests.test_resume import cli, finish, train_losses, weights

SAMPLINGS = ("random", "sequential", "packed")
BLOCK, BATCH = 32, 2
GLOBAL_TOKENS = 2 * BATCH * BLOCK  # two micro-batches a step: A=2 at W=1, A=1 at W=2
HALF, FULL = 4, 8
RECORD = "+callbacks.record={_target_: tests.test_data_order_ddp.RecordBatches}"
DDP = ["trainer.devices=2", "trainer.strategy=ddp"]


class RecordBatches(L.Callback):
    """Appends one JSON line per training micro-batch to ``batches-rank<r>.jsonl`` in the run folder.

    Each line: the optimizer step it belongs to, the rank, a hash of every (x, y) row
    and the micro-batch's loss. Appending (and flushing) line by line keeps what a run
    recorded before it stopped, so a resumed run adds its steps to the same file.
    """

    def __init__(self) -> None:
        self._step = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        x, y = batch[0], batch[1]
        line = {
            "step": self._step,  # the optimizer step this micro-batch is accumulated into
            "rank": trainer.global_rank,
            "rows": [row_hash(x[i], y[i]) for i in range(x.shape[0])],
            "loss": float(pl_module.last_train_loss),
        }
        path = Path(trainer.default_root_dir) / f"batches-rank{trainer.global_rank}.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # global_step counts finished steps; read it here, before this batch's optimizer step
        self._step = trainer.global_step


def row_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of one training row: its inputs and its targets."""
    data = x.to(torch.int64).numpy().tobytes() + b"|" + y.to(torch.int64).numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:20]


def recorded(run: Path) -> list[dict[str, Any]]:
    """Every micro-batch line the run's ranks wrote."""
    lines = []
    for path in sorted(run.glob("batches-rank*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def global_batches(run: Path) -> dict[int, list[str]]:
    """Per optimizer step, the multiset (sorted list) of row hashes over all ranks and micro-batches."""
    steps: dict[int, list[str]] = defaultdict(list)
    for line in recorded(run):
        steps[line["step"]] += line["rows"]
    return {step: sorted(rows) for step, rows in steps.items()}


def column(run: Path, name: str) -> dict[int, float]:
    """One metrics.csv column, by step (the rows that have it)."""
    with open(run / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r[name]) for r in csv.DictReader(f) if r.get(name)}


def micro_losses(run: Path) -> dict[tuple[str, ...], float]:
    """The loss of each micro-batch, keyed by its rows."""
    return {tuple(line["rows"]): line["loss"] for line in recorded(run)}


def assert_same_micro_losses(a: Path, b: Path, count: int, tolerance: float = 1e-5) -> None:
    """Every micro-batch of run ``b`` is one of run ``a``'s ``count`` times, with the same loss."""
    la, lb = micro_losses(a), micro_losses(b)
    shared = set(la) & set(lb)
    assert len(shared) == count, f"{len(shared)} micro-batches in common, not {count}"
    worst = max(abs(la[k] - lb[k]) for k in shared)
    assert worst <= tolerance, f"micro-batch losses differ by up to {worst}"


# -- the corpus and the runs ---------------------------------------------------------------


def write_corpus(path: Path, paragraphs: int = 300) -> Path:
    """A jsonl file of Shakespeare paragraphs: documents, so packed rows have starts to use."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    docs = [p.strip() for p in text.split("\n\n") if p.strip()][:paragraphs]
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"text": doc}) + "\n")
    return path


def overrides(corpus: Path, sampling: str, steps: int) -> list[str]:
    """A micro model on the jsonl corpus, checkpointed at ``HALF`` steps, logging every step."""
    return [
        "model=micro",
        f"model.block_size={BLOCK}",
        "tokenizer=char",
        "data=local",
        f"data.path={corpus}",
        "data.name=order_test",
        f"data.batch_size={BATCH}",
        f"data.global_batch_tokens={GLOBAL_TOKENS}",
        f"data.sampling={sampling}",
        "data.val_batches=2",
        "data.buffer_docs=64",  # packed: several groups, so resuming crosses a group boundary
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={HALF}",
        "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu",
        f"checkpoint.every_n_steps={HALF}",
        "checkpoint.keep_last=null",
        "scheduler.warmup_steps=2",
        f"scheduler.total_steps={FULL}",  # one schedule for every run, however far it goes
        "callbacks.progress_bar.refresh_rate=0",
        "~callbacks.sample_text",
        RECORD,
    ]


def train_cli(args: list[str], timeout: float = 400) -> None:
    code, log = finish(cli(args), timeout=timeout)
    assert code == 0, log[-4000:]


def train_and_kill(args: list[str], run: Path, step: int, timeout: float = 300) -> None:
    """Train, hold the run right after its step-``step`` checkpoint, and SIGKILL it there."""
    hold = f"+callbacks.hold={{_target_: tests.test_resume.HoldAfterStep, step: {step}}}"
    proc = cli([*args, hold, f"hydra.run.dir={run}"])
    deadline = time.monotonic() + timeout
    while not (run / "held").exists():
        assert proc.poll() is None, finish(proc)[1][-4000:]
        assert time.monotonic() < deadline, "the run never reached the hold point"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: a crash
    proc.wait()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "plays.jsonl")


@pytest.fixture(scope="module")
def runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """``runs(sampling)``: the five run folders of one sampling, trained once per module."""
    made: dict[str, dict[str, Path]] = {}

    def get(sampling: str) -> dict[str, Path]:
        if sampling in made:
            return made[sampling]
        root = tmp_path_factory.mktemp(f"runs-{sampling}")
        f = {name: root / name for name in ("w1", "w2", "half", "again", "wider")}
        # One process first: it prepares the token store the others then open.
        train_cli([*overrides(corpus, sampling, FULL), f"hydra.run.dir={f['w1']}"])
        train_cli([*overrides(corpus, sampling, HALF), *DDP, f"hydra.run.dir={f['w2']}"])
        train_and_kill(overrides(corpus, sampling, FULL), f["half"], HALF)
        shutil.copytree(f["half"], f["again"])
        shutil.copytree(f["half"], f["wider"])
        # Today's command line names the recorder again (a resume never builds a tests.* target
        # from a run folder's own record) and drops the hold, as tests/test_resume.py does.
        train_cli([f"resume={f['again']}", "++callbacks.hold=null", RECORD])
        train_cli([f"resume={f['wider']}", "++callbacks.hold=null", *DDP, RECORD])
        made[sampling] = f
        return f

    return get


# -- 1. the same global batches at 1, 2 and 4 processes ------------------------------------


@needs_shakespeare
@pytest.mark.slow
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_two_processes_train_on_the_global_batches_of_one(runs, sampling):
    f = runs(sampling)
    one, two = global_batches(f["w1"]), global_batches(f["w2"])
    assert sorted(two) == list(range(HALF))
    for step in range(HALF):
        assert len(one[step]) == 2 * BATCH, "a step at W=1 is two micro-batches"
        assert one[step] == two[step], f"step {step}: W=2 trained on other rows than W=1"
    ranks = {line["rank"] for line in recorded(f["w2"])}
    assert ranks == {0, 1}, "both ranks trained and recorded"
    assert len(set(sum(one.values(), []))) > BATCH, "the steps differ from each other"

    # Same rows, same gradients (DDP averages what one process accumulates): every micro-batch's
    # loss agrees up to float summation order, and so do the weights after the last step.
    assert_same_micro_losses(f["w1"], f["w2"], count=2 * HALF)
    # Validation scores the same chunks, spread over the ranks: the same val/loss after step 4.
    one_val, two_val = column(f["w1"], "val/loss"), column(f["w2"], "val/loss")
    assert abs(one_val[HALF - 1] - two_val[HALF - 1]) <= 1e-5, (one_val, two_val)
    tokens = column(f["w2"], "train/tokens")
    assert tokens == {s: v for s, v in column(f["w1"], "train/tokens").items() if s < HALF}
    assert tokens[HALF - 1] == HALF * GLOBAL_TOKENS
    w1 = weights(f["half"] / "checkpoints" / "last.ckpt")
    w2 = weights(f["w2"] / "checkpoints" / "last.ckpt")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=0) for k in w1)


@needs_shakespeare
@pytest.mark.slow
def test_logged_train_loss_is_the_same_at_one_and_two_processes(runs):
    f = runs("random")
    one, two = train_losses(f["w1"]), train_losses(f["w2"])
    for step in range(HALF):
        assert abs(one[step] - two[step]) <= 1e-5, (step, one[step], two[step])


@needs_shakespeare
@pytest.mark.slow
def test_validation_comes_at_the_same_steps_at_one_and_two_processes(runs):
    f = runs("random")
    every = {HALF - 1, FULL - 1}  # metrics.csv's step of a validation after steps 4 and 8
    assert set(column(f["w2"], "val/loss")) == {HALF - 1}
    assert set(column(f["w1"], "val/loss")) == every, sorted(column(f["w1"], "val/loss"))


def datamodule_for(corpus: Path, sampling: str, tmp_path: Path) -> Any:
    """The run's TextDataModule, built in-process from the same config, its store opened."""
    cfg = compose_train(overrides(corpus, sampling, FULL), tmp_path / "unused")
    dm = hydra.utils.instantiate(cfg.data)
    dm.build_tokenizer(hydra.utils.instantiate(cfg.tokenizer))
    dm.prepare_data()
    return dm


def rows_of(batches: RankBatches, count: int) -> list[list[str]]:
    """The row hashes of the first ``count`` micro-batches a RankBatches yields."""
    out = []
    for _, (x, y) in zip(range(count), batches):
        out.append([row_hash(x[i], y[i]) for i in range(x.shape[0])])
    return out


@needs_shakespeare
@pytest.mark.slow
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_four_ranks_share_the_global_batches_of_one(runs, corpus, sampling, tmp_path):
    """No 4-process run: the four ranks' shares, computed from the order, make the W=1 batches.

    At W=4 with one micro-batch each, step ``s`` is chunks ``4s .. 4s + 3``: the W=1 run's
    steps ``2s`` and ``2s + 1`` (A=2), and one process's step ``s`` at A=4.
    """
    order = datamodule_for(corpus, sampling, tmp_path).order("train")
    steps = FULL // 2
    ranks = [rows_of(RankBatches(order, r, 4), steps) for r in range(4)]
    alone = rows_of(RankBatches(order, 0, 1), 4 * steps)
    real = global_batches(runs(sampling)["w1"])
    for s in range(steps):
        at_four = sorted(sum((ranks[r][s] for r in range(4)), []))
        at_one = sorted(sum(alone[4 * s : 4 * s + 4], []))
        assert at_four == at_one, f"step {s}"
        assert at_four == sorted(real[2 * s] + real[2 * s + 1]), f"step {s} of the real W=1 run"


# -- 2. exact resume -----------------------------------------------------------------------


@needs_shakespeare
@pytest.mark.slow
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_a_stopped_and_resumed_run_matches_the_uninterrupted_one(runs, sampling):
    f = runs(sampling)
    straight, resumed = train_losses(f["w1"]), train_losses(f["again"])
    assert len(straight) == FULL
    assert set(resumed) == set(straight)
    assert max(abs(straight[s] - resumed[s]) for s in straight) == 0.0
    assert global_batches(f["again"]) == global_batches(f["w1"])
    a = weights(f["w1"] / "checkpoints" / "last.ckpt")
    b = weights(f["again"] / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- 3. resuming at another world size -----------------------------------------------------


@needs_shakespeare
@pytest.mark.slow
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_resuming_on_two_processes_continues_the_same_global_order(runs, sampling):
    f = runs(sampling)
    straight, wider = global_batches(f["w1"]), global_batches(f["wider"])
    assert sorted(wider) == list(range(FULL))
    for step in range(FULL):
        assert wider[step] == straight[step], f"step {step}"
    assert {line["rank"] for line in recorded(f["wider"]) if line["step"] >= HALF} == {0, 1}
    assert_same_micro_losses(f["w1"], f["wider"], count=2 * FULL)
    # The weights follow the same path (up to DDP's float summation order).
    a = weights(f["w1"] / "checkpoints" / "last.ckpt")
    b = weights(f["wider"] / "checkpoints" / "last.ckpt")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)


@needs_shakespeare
def test_a_position_that_the_world_size_does_not_divide_is_refused(corpus, tmp_path):
    dm = datamodule_for(corpus, "random", tmp_path)
    state = {**dm.position(0), "chunks": 6}
    dm.trainer = L.Trainer(accelerator="cpu", devices=4, strategy="ddp", logger=False)
    assert dm.trainer.world_size == 4
    with pytest.raises(DataError, match="cannot share evenly") as caught:
        dm.resume_at(state, micro_batches=6)
    assert str(caught.value).count(". ") == 0 and "divides 6" in str(caught.value)
    dm.resume_at({**state, "chunks": 8}, micro_batches=8)
    assert dm.start_chunk == 8
    first = next(iter(dm.train_dataloader()))
    order = dm.order("train")
    assert torch.equal(first[0], torch.from_numpy(order.chunk(8))[:, :-1]), (
        "rank 0 resumes at chunk 8"
    )


# -- 4. a changed store is refused ---------------------------------------------------------


@pytest.fixture(scope="module")
def changed_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train 3 steps on a corpus, append a document to it, resume: what the resume said and left."""
    root = tmp_path_factory.mktemp("changed")
    corpus = write_corpus(root / "mine.jsonl", paragraphs=120)
    run = root / "run"
    args = [a for a in overrides(corpus, "sequential", 3) if a != RECORD]
    train_cli([*args, "data.name=changing", "checkpoint.every_n_steps=3", f"hydra.run.dir={run}"])
    stores = Path(os.environ["GPTLAB_DATA_DIR"]) / "stores"
    before = sorted(stores.glob("changing-*"))
    with open(corpus, "a", encoding="utf-8") as f:  # one more document, in characters it knew
        f.write(json.dumps({"text": "To be, or not to be: that is the question."}) + "\n")
    code, log = finish(cli([f"resume={run}", "trainer.max_steps=6"]))
    after = sorted(stores.glob("changing-*"))
    return {
        "corpus": corpus,
        "run": run,
        "code": code,
        "log": log,
        "before": before,
        "after": after,
    }


@needs_shakespeare
@pytest.mark.slow
def test_resuming_after_the_corpus_changed_is_refused_in_one_sentence(changed_corpus):
    code, log = changed_corpus["code"], changed_corpus["log"]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert code == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert len(errors) == 1, log[-3000:]
    assert (
        f"the text of {changed_corpus['corpus']} changed since the run was trained" in errors[0]
    ), errors[0]
    last = torch.load(changed_corpus["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3, "the refused resume trained nothing"


@needs_shakespeare
@pytest.mark.slow
def test_a_refused_resume_prepares_no_store_for_the_changed_corpus(changed_corpus):
    assert len(changed_corpus["before"]) == 1
    assert changed_corpus["after"] == changed_corpus["before"]
