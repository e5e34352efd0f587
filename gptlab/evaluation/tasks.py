"""A benchmark is a YAML file plus a data file: how to read one and turn its items into prompts.

Three kinds of task cover the standard zero- and few-shot benchmarks (the same three the
DCLM/CORE suite and llm-foundry's ICL tasks use):

    multiple_choice    one context, several continuations (HellaSwag, PIQA, ARC):
                       "A man is sitting on a roof. He" + " starts pulling up roofing."
    schema             several contexts, one continuation (Winogrande, Winograd):
                       "The trophy didn't fit in the suitcase because the trophy" + " was too big."
    language_modeling  one context, the gold continuation scored for an exact greedy match
                       and for its bits per byte (LAMBADA, and OLMo's small-compute style)

A task YAML (``gptlab/conf/task/<name>.yaml``) names the data (``url`` with its
``sha256`` or git blob id, or a local ``path``), and how an item's fields make the
prompt: ``context`` and ``continuation`` are ``str.format`` templates over the item's
fields, ``choices`` / ``context_options`` name list fields, ``gold`` the field holding
the right index. Few-shot examples are drawn per item from the other items with a fixed
seed (``random.Random(fewshot_seed + index)``, as nanochat does), each rendered as its
context, the delimiter and its gold answer, joined by ``fewshot_delimiter``.

Nothing here imports torch: tasks are read and rendered without a model.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gptlab.errors import GptlabError

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"
KINDS = ("multiple_choice", "schema", "language_modeling")


class TaskError(GptlabError, ValueError):
    """A task file or its data cannot be used; the message says what to fix."""


# -- text clean-ups a task may name (``preprocess: <name>``) -------------------------------


def _hellaswag_lm_eval(item: dict[str, Any]) -> dict[str, Any]:
    """lm-evaluation-harness's HellaSwag prompt: activity label, capitalised ctx_b, no [tags]."""

    def clean(text: str) -> str:
        text = text.strip().replace(" [title]", ". ")
        return re.sub(r"\[.*?\]", "", text).replace("  ", " ")

    ctx = item["ctx_a"] + " " + item["ctx_b"].capitalize()
    return {
        **item,
        "query": clean(item["activity_label"] + ": " + ctx),
        "endings": [clean(e) for e in item["endings"]],
    }


PREPROCESS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "hellaswag_lm_eval": _hellaswag_lm_eval,
}


@dataclass
class TaskConfig:
    """One benchmark as its YAML file describes it (every key documented in hellaswag.yaml)."""

    name: str
    kind: str
    url: str | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    path: str | None = None
    context: str = "{context}"
    continuation: str = "{continuation}"
    choices: str = "choices"
    context_options: str = "context_options"
    gold: str = "gold"
    target_delimiter: str = " "
    preprocess: str | None = None
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    fewshot_delimiter: str = "\n\n"
    shuffle_seed: int | None = None
    prepend_bos: bool = False
    random_baseline: float = 0.0
    primary_metric: str = "acc_norm"
    description: str = ""

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise TaskError(f"task {self.name}: kind={self.kind!r}; use one of {', '.join(KINDS)}")
        if self.preprocess is not None and self.preprocess not in PREPROCESS:
            raise TaskError(
                f"task {self.name}: preprocess={self.preprocess!r} is not known; "
                f"use one of {', '.join(PREPROCESS)} or null"
            )
        if self.num_fewshot < 0:
            raise TaskError(f"task {self.name}: num_fewshot={self.num_fewshot} must be 0 or more")
        if not 0.0 <= self.random_baseline < 1.0:
            raise TaskError(
                f"task {self.name}: random_baseline={self.random_baseline} must be a fraction in [0, 1)"
            )


@dataclass(frozen=True)
class Item:
    """One scored question: ``contexts[i] + continuations[j]`` pairs, and the gold index.

    multiple_choice: one context, one continuation per choice (gold indexes continuations);
    schema: one context per option, one continuation (gold indexes contexts);
    language_modeling: one context, one continuation (gold 0).
    """

    index: int
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    choice_texts: tuple[str, ...]  # the texts whose characters lm-eval's acc_norm counts

    @property
    def pairs(self) -> list[tuple[str, str]]:
        if len(self.contexts) == 1:
            return [(self.contexts[0], c) for c in self.continuations]
        return [(c, self.continuations[0]) for c in self.contexts]


@dataclass
class Task:
    config: TaskConfig
    items: list[Item]
    # Each item's encoded requests by item index, kept by ``evaluator.select_scorable`` (which
    # has to encode every item to see whether it fits), so scoring does not encode again.
    encoded: dict[int, list[Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name


# -- finding and reading task files -----------------------------------------------------------


def known_tasks() -> list[str]:
    """Names of the task YAML files shipped with gptlab."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def task_config(spec: str | dict[str, Any] | Any, **overrides: Any) -> dict[str, Any]:
    """The raw settings of a task: a shipped name, a path to a YAML file, or a dict/DictConfig."""
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not (spec.endswith((".yaml", ".yml")) and path.is_file()):
            path = TASK_DIR / f"{spec}.yaml"
            if not path.is_file():
                raise TaskError(
                    f"unknown task {spec!r}; the known tasks are {', '.join(known_tasks())}, "
                    "or give the path of your own task YAML"
                )
        raw = _read_yaml(path)
    else:
        from omegaconf import DictConfig, OmegaConf

        raw = (
            OmegaConf.to_container(spec, resolve=True)  # type: ignore[assignment]
            if isinstance(spec, DictConfig)
            else dict(spec)
        )
    if not isinstance(raw, dict):
        raise TaskError(f"task {spec!r} is not a mapping of settings")
    return {**raw, **{k: v for k, v in overrides.items() if v is not None}}


def _read_yaml(path: Path) -> dict[str, Any]:
    """A task YAML, with a Hydra-style ``defaults: [other_task, _self_]`` list merged in."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig):
        raise TaskError(f"{path} is not a mapping of task settings")
    bases = [d for d in node.pop("defaults", []) if d != "_self_"]
    # A base is looked up beside the file first, then among the shipped tasks.
    files = [path.with_name(f"{b}.yaml") for b in bases]
    files = [f if f.is_file() else TASK_DIR / f.name for f in files]
    for base, f in zip(bases, files):
        if not f.is_file():
            raise TaskError(
                f"{path}: defaults names {base!r}, which is neither beside it nor a shipped task "
                f"({', '.join(known_tasks())}); fix the name"
            )
    merged = OmegaConf.merge(*(_read_yaml(f) for f in files), node)
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def parse_config(raw: dict[str, Any]) -> TaskConfig:
    """A ``TaskConfig`` from settings, refusing unknown keys by name."""
    known = {f.name for f in fields(TaskConfig)}
    unknown = sorted(set(raw) - known - {"tasks", "suite", "exclude"})
    name = raw.get("name", "?")
    if unknown:
        raise TaskError(
            f"task {name}: unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}"
        )
    for key in ("name", "kind"):
        if not raw.get(key):
            raise TaskError(f"task {name}: the setting {key!r} is required")
    config = TaskConfig(**{k: v for k, v in raw.items() if k in known})
    config.validate()
    return config


def data_file(config: TaskConfig, cache_dir: str | Path | None = None) -> Path:
    """The task's data file: ``path`` if given, else the download (checked, cached once)."""
    if config.path:
        path = Path(config.path).expanduser()
        if not path.is_file():
            raise TaskError(
                f"task {config.name}: the data file {path} does not exist; check task.path"
            )
        return path
    if not config.url:
        raise TaskError(
            f"task {config.name} has neither a url nor a path; give path=<the data file>"
        )
    from gptlab.data.sources import default_cache_dir, download

    name = config.url.rstrip("/").rsplit("/", 1)[-1]
    # One folder per file content (or address), so tasks that share a file share its download.
    key = (config.git_sha1 or config.sha256 or hashlib.sha256(config.url.encode()).hexdigest())[:16]
    dest = Path(cache_dir or default_cache_dir()) / "tasks" / key / name
    return download(
        config.url, dest, sha256=config.sha256, git_sha1=config.git_sha1, setting="task.path"
    )


def read_records(path: Path, task: str) -> list[dict[str, Any]]:
    """The items of a ``.jsonl`` file (one JSON object a line) or a ``.json`` list."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        records = json.loads(text)
        if isinstance(records, dict):  # {"data": [...]} style
            records = next((v for v in records.values() if isinstance(v, list)), None)
        if not isinstance(records, list):
            raise TaskError(f"task {task}: {path} holds no list of items")
        return records
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TaskError(
                    f"task {task}: line {n} of {path} is not JSON ({e.msg}); fix the file"
                ) from None
    return out


# -- items -> prompts ---------------------------------------------------------------------


def _fill(template: str, record: dict[str, Any], where: str) -> str:
    try:
        return template.format_map(record)
    except KeyError as e:
        raise TaskError(
            f"{where} has no field {e.args[0]!r}, which the template {template!r} needs; "
            f"its fields are {', '.join(sorted(record))}"
        ) from None


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise TaskError(f"{where} has no field {key!r}; its fields are {', '.join(sorted(record))}")
    return record[key]


def _gold(record: dict[str, Any], config: TaskConfig, n: int, where: str) -> int:
    value = _field(record, config.gold, where)
    try:
        gold = int(value)
    except (TypeError, ValueError):
        raise TaskError(
            f"{where}: the gold field {config.gold!r} is {value!r}, not an index"
        ) from None
    if not 0 <= gold < n:
        raise TaskError(f"{where}: the gold index {gold} is out of range for its {n} choices")
    return gold


def _parts(record: dict[str, Any], config: TaskConfig, where: str):
    """(contexts, continuations, gold, choice_texts) of one record, without few-shot examples."""
    d = config.target_delimiter
    if config.kind == "multiple_choice":
        choices = _field(record, config.choices, where)
        if not isinstance(choices, list) or not choices:
            raise TaskError(f"{where}: the choice list {config.choices!r} is empty or not a list")
        choices = [str(c) for c in choices]
        return (
            [_fill(config.context, record, where)],
            [d + c for c in choices],
            _gold(record, config, len(choices), where),
            choices,
        )
    if config.kind == "schema":
        options = _field(record, config.context_options, where)
        if not isinstance(options, list) or not options:
            raise TaskError(
                f"{where}: the option list {config.context_options!r} is empty or not a list"
            )
        cont = _fill(config.continuation, record, where)
        return (
            [str(o) for o in options],
            [d + cont],
            _gold(record, config, len(options), where),
            [cont],
        )
    cont = _fill(config.continuation, record, where)
    return [_fill(config.context, record, where).strip()], [d + cont], 0, [cont]


def _shot(record: dict[str, Any], config: TaskConfig, where: str) -> str:
    """A solved example: the context and its gold answer."""
    contexts, conts, gold, _ = _parts(record, config, where)
    if config.kind == "schema":
        return contexts[gold] + conts[0]
    return contexts[0] + conts[gold if config.kind == "multiple_choice" else 0]


def build_items(records: list[dict[str, Any]], config: TaskConfig, source: str = "") -> list[Item]:
    """Every record as an ``Item``, few-shot examples prepended to its contexts."""
    if config.preprocess:
        records = [PREPROCESS[config.preprocess](r) for r in records]
    if config.shuffle_seed is not None:
        records = list(records)
        random.Random(config.shuffle_seed).shuffle(records)
    if not records:
        raise TaskError(f"task {config.name}: {source or 'its data'} holds no items")
    if config.num_fewshot >= len(records):
        raise TaskError(
            f"task {config.name}: num_fewshot={config.num_fewshot} needs more than {len(records)} items"
        )
    where = [f"item {i} of task {config.name}" for i in range(len(records))]
    shots = [_shot(r, config, w) for r, w in zip(records, where)] if config.num_fewshot else []
    items = []
    for i, record in enumerate(records):
        contexts, conts, gold, texts = _parts(record, config, where[i])
        if config.num_fewshot:
            rng = random.Random(config.fewshot_seed + i)
            others = rng.sample([j for j in range(len(records)) if j != i], config.num_fewshot)
            prefix = "".join(shots[j] + config.fewshot_delimiter for j in others)
            contexts = [prefix + c for c in contexts]
        items.append(Item(i, tuple(contexts), tuple(conts), gold, tuple(texts)))
    return items


def load_task(
    spec: str | dict[str, Any] | Any,
    cache_dir: str | Path | None = None,
    **overrides: Any,
) -> Task:
    """Read a task (a shipped name, a YAML path or settings) and its data, ready to score."""
    config = parse_config(task_config(spec, **overrides))
    path = data_file(config, cache_dir)
    return Task(config, build_items(read_records(path, config.name), config, str(path)))


def suite_members(spec: str | dict[str, Any] | Any) -> list[dict[str, Any]] | None:
    """The member tasks' settings when ``spec`` is a suite (``tasks:`` list, e.g. core), else None."""
    raw = task_config(spec)
    members = raw.get("tasks")
    if not members:
        return None
    exclude = set(raw.get("exclude") or [])
    unknown = exclude - {m["name"] for m in members}
    if unknown:
        raise TaskError(
            f"suite {raw['name']}: exclude names {', '.join(sorted(unknown))}, which are not among "
            f"its tasks ({', '.join(m['name'] for m in members)})"
        )
    shared = {
        k: v
        for k, v in raw.items()
        if k not in ("tasks", "name", "suite", "description", "exclude")
    }
    return [
        {**shared, **m, "name": f"{raw['name']}/{m['name']}"}
        for m in members
        if m["name"] not in exclude
    ]
