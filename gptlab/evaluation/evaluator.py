"""Score a model on tasks and suites: prompts to requests, requests to scores, scores to numbers.

``evaluate_tasks(model, tokenizer, ["hellaswag", "core"])`` returns a ``results`` dict
(the format ``gptlab.evaluation.results`` writes and ``gptlab.compare`` reads): per task
its accuracies with standard errors, bits per byte, the centred score, how many
requests were truncated, and per item whether each rule got it right (what a paired
test between two models needs). A suite (``core``) adds the mean of its members'
centred scores. ``limit`` scores a fixed subset: the first ``limit`` items after the
task's own seeded shuffle, so every evaluation of a run sees the same items. ``rank``
and ``world_size`` give each process every ``world_size``-th item; the caller gathers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gptlab.errors import GptlabError
from gptlab.evaluation.metrics import judge, summarize
from gptlab.evaluation.scorer import Request, Scorer, encode_pair
from gptlab.evaluation.tasks import Item, Task, TaskError, load_task, suite_members, task_config
from gptlab.model.gpt import GPT


@dataclass
class Selection:
    """Which items of a task to score: a prefix of ``limit`` items, split across ranks."""

    limit: int | None = None
    rank: int = 0
    world_size: int = 1

    def pick(self, items: list[Item]) -> list[Item]:
        items = items[: self.limit] if self.limit else items
        return items[self.rank :: self.world_size]


def task_requests(task: Task, items: Sequence[Item], tokenizer) -> list[list[Request]]:
    """One list of requests per item (its choices), encoded with the model's tokenizer."""
    prefix = getattr(tokenizer, "eot_id", None)
    out = []
    for item in items:
        try:
            out.append(
                [
                    encode_pair(tokenizer, c, k, prefix, task.config.prepend_bos)
                    for c, k in item.pairs
                ]
            )
        except GptlabError as e:
            if isinstance(e, TaskError):
                raise
            raise TaskError(
                f"the model's tokenizer cannot encode item {item.index} of task {task.name} ({e}); "
                "evaluate a model whose tokenizer covers the task's text (a byte-level BPE such as gpt2)"
            ) from None
    return out


TOO_LONG = ("skip", "error")


def scorable_items(
    task: Task, tokenizer, limit: int | None, block_size: int
) -> tuple[list[Item], list[int]]:
    """The first ``limit`` items whose every answer fits ``block_size``, and the indices passed over.

    Every item is encoded here, once (the requests are kept in ``task.encoded`` for
    scoring), so a tokenizer that cannot encode the task fails before any scoring
    (``TaskError``). An answer longer than the context cannot be
    scored at all (a context is cut on the left, an answer cannot be); such items are
    passed over and the next ones take their places, so ``limit`` items are still
    scored, the same ones every time.
    """
    kept: list[Item] = []
    skipped: list[int] = []
    for item in task.items:
        if limit is not None and len(kept) >= limit:
            break
        (requests,) = task_requests(task, [item], tokenizer)
        if max(len(r.continuation) for r in requests) > block_size:
            skipped.append(item.index)
        else:
            kept.append(item)
            task.encoded[item.index] = requests
    return kept, skipped


def select_scorable(
    tasks: Sequence[Task], tokenizer, limit: int | None, block_size: int, too_long: str = "skip"
) -> tuple[list[Task], dict[str, list[int]]]:
    """Each task cut to the items that will be scored, and per task the items passed over.

    ``too_long``: ``skip`` passes over items whose answer exceeds the block size (they
    are listed in the result's ``skipped``), ``error`` refuses the task instead.
    """
    if too_long not in TOO_LONG:
        raise TaskError(
            f"too_long={too_long!r}; use skip (leave out items whose answer is longer than the "
            "model's context) or error (refuse them)"
        )
    out, skipped = [], {}
    for task in tasks:
        kept, passed = scorable_items(task, tokenizer, limit, block_size)
        if passed and too_long == "error":
            raise TaskError(
                f"item {passed[0]} of task {task.name} has an answer longer than the model's "
                f"block_size={block_size} tokens; use a longer-context model, or too_long=skip "
                "to leave such items out"
            )
        if not kept:
            raise TaskError(
                f"no item of task {task.name} has answers that fit the model's block_size="
                f"{block_size} tokens; use a longer-context model or leave the task out"
            )
        if passed:
            skipped[task.name] = passed
        out.append(Task(task.config, kept, {i.index: task.encoded[i.index] for i in kept}))
    return out, skipped


def score_task(
    task: Task,
    scorer: Scorer,
    tokenizer,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """The numbers for one task and the per-item outcomes (for this rank's share of items)."""
    selection = selection or Selection()
    items = selection.pick(task.items)
    if not items:  # a rank's share of a task smaller than the world: nothing to add
        return {
            "n": 0,
            "items": {"index": []},
            "truncated": 0,
            "requests": 0,
            "tokens": 0,
            "seconds": 0.0,
        }
    start = time.perf_counter()
    if all(it.index in task.encoded for it in items):
        per_item = [task.encoded[it.index] for it in items]
    else:
        per_item = task_requests(task, items, tokenizer)
    flat = [r for reqs in per_item for r in reqs]
    scores = scorer.score(flat)
    outcomes, at = [], 0
    for item, reqs in zip(items, per_item):
        outcomes.append(judge(item, scores[at : at + len(reqs)], task.config.kind))
        at += len(reqs)
    result = summarize(outcomes, task.config.random_baseline, task.config.primary_metric)
    result.update(
        kind=task.config.kind,
        num_fewshot=task.config.num_fewshot,
        truncated=sum(s.truncated for s in scores),
        requests=len(flat),
        tokens=sum(len(r.context) + len(r.continuation) for r in flat),
        seconds=round(time.perf_counter() - start, 3),
        items={
            "index": [it.index for it in items],
            **{k: [o[k] for o in outcomes] for k in outcomes[0] if k not in ("nats", "bytes")},
            "nats": [o["nats"] for o in outcomes],
            "bytes": [o["bytes"] for o in outcomes],
        },
    )
    return result


def load_tasks(
    specs: Sequence[Any], cache_dir: str | None = None, **overrides: Any
) -> tuple[list[Task], dict[str, list[str]]]:
    """The tasks to score (suites replaced by their members) and each suite's member names.

    ``overrides`` (e.g. ``path=`` a local copy of the data) apply to a single task only.
    """
    flat: list[Any] = []
    suites: dict[str, list[str]] = {}
    for spec in specs:
        members = suite_members(spec)
        if members is None:
            flat.append(spec)
        else:
            suites[str(task_config(spec)["name"])] = [m["name"] for m in members]
            flat.extend(members)
    if overrides and len(flat) > 1:
        raise TaskError(
            f"settings {', '.join(overrides)} apply to one task, but {len(flat)} tasks were asked for; "
            "give them in each task's YAML instead"
        )
    return [load_task(spec, cache_dir, **overrides) for spec in flat], suites


def evaluate_loaded(
    model: GPT,
    tokenizer,
    tasks: Sequence[Task],
    suites: dict[str, list[str]] | None = None,
    batch_size: int = 32,
    selection: Selection | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on tasks already loaded (the in-loop callback loads them once)."""
    scorer = Scorer(model, batch_size=batch_size, progress=progress)
    results: dict[str, Any] = {
        "tasks": {t.name: score_task(t, scorer, tokenizer, selection) for t in tasks}
    }
    results["suites"] = {
        name: suite_score(results["tasks"], members) for name, members in (suites or {}).items()
    }
    return results


def evaluate_tasks(
    model: GPT,
    tokenizer,
    tasks: Sequence[Any],
    batch_size: int = 32,
    limit: int | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Score ``model`` on every task (names, YAML paths or settings; suites expand)."""
    loaded, suites = load_tasks(tasks, cache_dir, **overrides)
    return evaluate_loaded(model, tokenizer, loaded, suites, batch_size, Selection(limit), progress)


def combine(parts: Sequence[dict[str, Any]], tasks: Sequence[Task]) -> dict[str, Any]:
    """One result from each rank's share of the items (the per-item outcomes are merged)."""
    out = dict(parts[0])
    by_task = {}
    for task in tasks:
        shares = [p["tasks"][task.name] for p in parts]
        columns = next(s["items"] for s in shares if s["n"])
        items = {k: [v for s in shares if s["n"] for v in s["items"][k]] for k in columns}
        order = sorted(range(len(items["index"])), key=items["index"].__getitem__)
        items = {k: [v[i] for i in order] for k, v in items.items()}
        keys = [k for k in items if k != "index"]
        outcomes = [{k: items[k][i] for k in keys} for i in range(len(order))]
        merged = summarize(outcomes, task.config.random_baseline, task.config.primary_metric)
        merged.update({k: next(s for s in shares if s["n"])[k] for k in ("kind", "num_fewshot")})
        for k in ("truncated", "requests", "tokens"):
            merged[k] = sum(s[k] for s in shares)
        merged["seconds"] = max(s["seconds"] for s in shares)
        merged["items"] = items
        by_task[task.name] = merged
    out["tasks"] = by_task
    out["suites"] = {
        name: suite_score(by_task, suite["tasks"])
        for name, suite in parts[0].get("suites", {}).items()
    }
    return out


def suite_score(task_results: dict[str, Any], members: Sequence[str]) -> dict[str, Any]:
    """A suite's score: the mean of its members' centred scores (and its standard error)."""
    centered = [task_results[m]["centered"] for m in members]
    ses = [task_results[m]["centered_se"] for m in members]
    return {
        "score": sum(centered) / len(centered),
        "se": (sum(se * se for se in ses) ** 0.5) / len(ses),
        "tasks": list(members),
    }
