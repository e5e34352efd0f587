"""Downstream scores while a model trains: HellaSwag, PIQA, CORE ... every ``every_n_steps`` steps.

    python -m gptlab.train tokenizer=gpt2 callbacks=downstream \\
        callbacks.downstream.tasks=[hellaswag,piqa] callbacks.downstream.every_n_steps=500 \\
        callbacks.downstream.limit=1000
    # or beside any other callbacks preset, the entry added whole:
    python -m gptlab.train tokenizer=gpt2 \\
        '+callbacks.downstream={_target_: gptlab.evaluation.callback.DownstreamEval, tasks: [piqa]}'

``callbacks=downstream`` (``gptlab/conf/callbacks/downstream.yaml``) is the default callbacks
plus this one; its keys are overridden without a ``+`` (Hydra refuses ``+`` on a key that
is there; ``++`` works either way).

What a run gets, at every step ``N`` that is a multiple of ``every_n_steps`` and at the
last step (``at_end``):

- ``<run>/downstream/step-<N>.json``: the whole result (``gptlab.evaluation.results``):
  per task the accuracies with their standard errors, bits per byte, the centred score,
  and per item whether each rule got it right (a paired test between two checkpoints
  of the same items needs those);
- in ``metrics.csv`` and every logger: ``eval/<task>/<rule>`` and ``eval/<task>/<rule>_se``
  for each rule (acc, acc_norm, acc_char), ``eval/<task>/bpb``, ``eval/<task>/centered``,
  ``eval/<suite>`` and ``eval/<suite>_se`` for a suite (``eval/core``), ``eval/seconds``.
  They land in the row of step ``N - 1``, beside that step's ``train/loss`` and
  ``val/loss`` (gptlab counts metric rows from 0, as Lightning does).

The items are a fixed subset: the first ``limit`` of each task (after the task's own
seeded shuffle), the same at every evaluation, so a curve moves with the model and not
with the sample. Tasks are read once, when training sets up, and every selected item is
encoded then: a tokenizer that cannot encode a task (the character tokenizer meeting a
character its corpus never had) stops the run before its first step, in one sentence.
An item whose answer is longer than the model's context cannot be scored at all (PIQA
has a dozen over 128 GPT-2 tokens); it is passed over and the next item takes its
place, which the start-up says and each step file records (``skipped``), or with
``too_long: error`` the run stops at set-up.

Under DDP the items are shared out (``shard``): rank ``r`` of ``W`` scores every
``W``-th item, the per-item outcomes are gathered and combined into the numbers one
process would get. With ``shard: false`` rank zero scores them all while the others
wait. FSDP is refused: its ranks must run every forward together.

Training does not notice: the model is scored in eval mode without gradients (and put
back), the random generators' states are restored afterwards, so a run's loss curve
is the same with and without this callback. A resumed run evaluates the steps after
its checkpoint: an evaluation is done before the checkpoint of its step is written, so
none is lost or repeated except those of steps the resumed run itself redoes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from gptlab.errors import ConfigError
from gptlab.evaluation.evaluator import select_scorable
from gptlab.evaluation.tasks import Task

# The strategies whose ranks must run every forward together (parameters are sharded).
_LOCKSTEP_STRATEGIES = ("FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy")


class DownstreamEval(L.Callback):
    """Score ``tasks`` on a fixed subset of ``limit`` items every ``every_n_steps`` steps.

    ``tasks``: shipped task names (``gptlab/conf/task``), YAML paths or settings dicts;
    a suite (``core``) stands for its members. ``every_n_steps``: null evaluates only at
    the end. ``limit``: items per task (null: all). ``at_end``: also at the last step.
    ``shard``: share the items between DDP ranks. ``run_dir``: where ``downstream/``
    goes (default: the trainer's root dir, the run folder). ``cache_dir``: where task
    data is downloaded (default: ``GPTLAB_DATA_DIR`` or ``~/.cache/gptlab``).
    ``too_long``: ``skip`` or ``error`` for an item whose answer exceeds the context.
    """

    def __init__(
        self,
        tasks: Sequence[Any] = ("hellaswag", "piqa"),
        every_n_steps: int | None = 1000,
        limit: int | None = 500,
        at_end: bool = True,
        batch_size: int = 32,
        shard: bool = True,
        run_dir: str | None = None,
        cache_dir: str | None = None,
        verbose: bool = True,
        too_long: str = "skip",
    ) -> None:
        if isinstance(tasks, (str, dict)) or not hasattr(tasks, "__iter__"):
            tasks = [tasks]
        self.specs = list(tasks)
        if not self.specs:
            raise ConfigError(
                "callbacks.downstream.tasks is empty; name at least one task, e.g. tasks=[hellaswag]"
            )
        for name, value in (
            ("every_n_steps", every_n_steps),
            ("limit", limit),
            ("batch_size", batch_size),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(
                    f"callbacks.downstream.{name}={value!r} must be a positive integer"
                    + (" (or null)" if name != "batch_size" else "")
                )
        self.every_n_steps = every_n_steps
        self.limit = limit
        self.at_end = bool(at_end)
        self.batch_size = batch_size
        self.shard = bool(shard)
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.too_long = too_long
        self.skipped: dict[str, list[int]] = {}  # task -> indices of the items passed over
        self.tasks: list[Task] = []
        self.suites: dict[str, list[str]] = {}
        self.tokenizer: Any = None
        self.evaluated: list[int] = []  # the steps this launch evaluated
        self._done = -1  # the newest step evaluated (or started from)

    # -- set-up: read the tasks once, and check the tokenizer can encode them -------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        name = type(trainer.strategy).__name__
        if name in _LOCKSTEP_STRATEGIES:
            raise ConfigError(
                f"callbacks.downstream cannot score under {name}: its ranks must run every forward "
                "together; train with trainer.strategy=ddp, or score checkpoints with "
                "python -m gptlab.evaluate task=..."
            )
        if self.run_dir is None:
            self.run_dir = str(trainer.default_root_dir)
        loaded, self.suites = _load_rank_zero_first(trainer, self.specs, self.cache_dir)
        self.tokenizer = _tokenizer_of(trainer, pl_module)
        model: Any = pl_module.model  # the GPT itself
        block_size = int(model.config.block_size)
        self.tasks, self.skipped = select_scorable(
            loaded, self.tokenizer, self.limit, block_size, self.too_long
        )
        if self.skipped and trainer.is_global_zero and self.verbose:
            for name, passed in self.skipped.items():
                print(
                    f"gptlab: downstream {name}: {len(passed)} item(s) whose answer is longer "
                    f"than model.block_size={block_size} tokens are left out (the first "
                    f"{passed[0]}); the next items take their places",
                    flush=True,
                )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run's checkpoint was written after its step's evaluation (if one was due).
        self._done = trainer.global_step

    # -- when ------------------------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step <= self._done:  # inside an accumulation window, or this step is done
            return
        due = bool(self.every_n_steps) and step % self.every_n_steps == 0  # type: ignore[operator]
        last = self.at_end and 0 < trainer.max_steps <= step
        if due or last:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A run that ended before ``max_steps`` (max_epochs, max_time, early stopping)."""
        if self.at_end and trainer.global_step > self._done:
            self.evaluate(trainer, pl_module)

    # -- what ------------------------------------------------------------------------------
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Score the model now, log the numbers, write the step's file; return the results."""
        from gptlab.training.rng_state import capture_rng_state, restore_rng_state

        step = trainer.global_step
        self._done = step
        model: Any = pl_module.model  # the GPT, not the DDP wrapper: no gradient sync
        rng = capture_rng_state()
        start = time.perf_counter()
        try:
            with trainer.precision_plugin.forward_context(), _eager():
                results, shards = self._score(trainer, model)
        finally:
            restore_rng_state(rng)
        seconds = time.perf_counter() - start
        body = {
            "model": str(self.run_dir),
            "step": step,
            "limit": self.limit,
            "world_size": trainer.world_size,
            "shards": shards,  # processes the items were shared between
            "skipped": self.skipped,  # per task, items whose answer is longer than the context
            **results,
            "seconds": round(seconds, 3),
        }
        if trainer.is_global_zero:
            from gptlab.evaluation import results as result_file

            assert self.run_dir is not None
            result_file.write(result_file.step_file(self.run_dir, step), body)
            if self.verbose:
                from tqdm import tqdm

                tqdm.write(summary_line(body))
        from gptlab.training.callbacks import log_straight

        log_straight(trainer, metrics_of(results, seconds))
        self.evaluated.append(step)
        return body

    def _score(self, trainer: L.Trainer, model: Any) -> tuple[dict[str, Any], int]:
        """The results (the same on every rank) and how many ranks shared the items."""
        from gptlab.evaluation.evaluator import Selection, combine, evaluate_loaded

        world, rank = trainer.world_size, trainer.global_rank

        def run(selection: Selection) -> dict[str, Any]:
            return evaluate_loaded(
                model, self.tokenizer, self.tasks, self.suites, self.batch_size, selection
            )

        if world == 1:
            return run(Selection(self.limit)), 1
        # Every rank needs an item of each task to score (a share may not be empty).
        smallest = min(len(Selection(self.limit).pick(t.items)) for t in self.tasks)
        if self.shard and smallest >= world:
            part = run(Selection(self.limit, rank, world))
            parts: list[Any] = [None] * world
            torch.distributed.all_gather_object(parts, part)
            return combine(parts, self.tasks), world
        whole = run(Selection(self.limit)) if trainer.is_global_zero else {}
        return trainer.strategy.broadcast(whole, src=0), 1


def metrics_of(results: dict[str, Any], seconds: float | None = None) -> dict[str, float]:
    """The logged numbers: ``eval/<task>/<metric>``, ``eval/<task>/centered``, ``eval/<suite>(_se)``."""
    out: dict[str, float] = {}
    for name, r in results["tasks"].items():
        for key, value in r["metrics"].items():
            out[f"eval/{name}/{key}"] = float(value)
        out[f"eval/{name}/centered"] = float(r["centered"])
    for name, s in results.get("suites", {}).items():
        out[f"eval/{name}"] = float(s["score"])
        out[f"eval/{name}_se"] = float(s["se"])
    if seconds is not None:
        out["eval/seconds"] = float(seconds)
    return out


def summary_line(body: dict[str, Any]) -> str:
    """One printed line per evaluation: each task's primary score with its error, each suite's."""
    parts = []
    for name, r in body["tasks"].items():
        m, primary = r["metrics"], r["primary"]
        parts.append(f"{name} {primary} {m[primary]:.4f} ± {m[primary + '_se']:.4f}")
    for name, s in body.get("suites", {}).items():
        parts.append(f"{name} {s['score']:.4f} ± {s['se']:.4f}")
    n = max((r["n"] for r in body["tasks"].values()), default=0)
    return (
        f"downstream step {body['step']} ({n:,} items a task, {body['seconds']:.1f}s): "
        + " | ".join(parts)
    )


def _load_rank_zero_first(
    trainer: L.Trainer, specs: list[Any], cache_dir: str | None
) -> tuple[list[Task], dict[str, list[str]]]:
    """Read the tasks; under DDP rank zero first (it downloads), then the others from its cache.

    Rank zero's error is raised only after the barrier, so the other ranks are not left
    waiting for it (they meet the same error reading the same tasks).
    """
    from gptlab.evaluation.evaluator import load_tasks

    if trainer.world_size == 1:
        return load_tasks(specs, cache_dir)
    loaded, error = None, None
    if trainer.is_global_zero:
        try:
            loaded = load_tasks(specs, cache_dir)
        except Exception as e:  # raised below, once the others are released
            error = e
    trainer.strategy.barrier("gptlab-downstream-tasks")
    if error is not None:
        raise error
    return loaded if loaded is not None else load_tasks(specs, cache_dir)


def _tokenizer_of(trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
    """The run's tokenizer: the DataModule's object, else rebuilt from the module's saved dict."""
    tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    state = pl_module.hparams.get("tokenizer")
    if not state:
        raise ConfigError(
            "callbacks.downstream needs the run's tokenizer, but neither the DataModule nor the "
            "module carries one; train with gptlab's TextDataModule"
        )
    from gptlab.tokenizer import tokenizer_from_dict

    return tokenizer_from_dict(dict(state))


def _eager():
    """Score without ``torch.compile`` (trainer.compile): eval shapes would recompile it each time."""
    import contextlib

    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else contextlib.nullcontext()
