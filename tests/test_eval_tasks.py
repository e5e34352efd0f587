"""Task files: the three kinds render the prompts people publish, few-shot draws are seeded,
every shipped task parses, and bad task files or data are refused in one sentence.

Everything here reads real files the tests write (jsonl data, task YAMLs, ``file://``
downloads); nothing needs a model or the network.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from gptlab.data.sources import git_blob_sha1
from gptlab.errors import GptlabError
from gptlab.evaluation.evaluator import Selection, load_tasks
from gptlab.evaluation.tasks import (
    TASK_DIR,
    TaskError,
    known_tasks,
    load_task,
    parse_config,
    suite_members,
    task_config,
)
from tests.conftest import write_jsonl_records

MC = [
    {
        "q": f"Question: what is {i} plus one?",
        "opts": [str(i + 1), str(i + 2), "seven"],
        "ans": i % 2,
    }
    for i in range(8)
]
MC_TASK = {
    "name": "toy_mc",
    "kind": "multiple_choice",
    "context": "{q}",
    "choices": "opts",
    "gold": "ans",
    "target_delimiter": "\nAnswer: ",
}


def mc_task(tmp_path: Path, **settings: Any):
    data = write_jsonl_records(tmp_path / "mc.jsonl", MC)
    return load_task({**MC_TASK, "path": str(data), **settings})


# -- the three kinds ------------------------------------------------------------------------


def test_multiple_choice_renders_one_context_and_a_continuation_per_choice(tmp_path):
    task = mc_task(tmp_path)
    item = task.items[3]
    assert item.contexts == ("Question: what is 3 plus one?",)
    assert item.continuations == ("\nAnswer: 4", "\nAnswer: 5", "\nAnswer: seven")
    assert item.choice_texts == ("4", "5", "seven") and item.gold == 1
    assert item.pairs == [
        ("Question: what is 3 plus one?", "\nAnswer: " + c) for c in ("4", "5", "seven")
    ]
    assert len(task.items) == 8 and [it.index for it in task.items] == list(range(8))


def test_schema_renders_one_context_per_option_and_one_shared_continuation(tmp_path):
    data = write_jsonl_records(
        tmp_path / "wino.jsonl",
        [
            {
                "context_options": [
                    "The trophy didn't fit in the suitcase because the trophy",
                    "The trophy didn't fit in the suitcase because the suitcase",
                ],
                "continuation": "was too big.",
                "gold": 0,
            },
        ],
    )
    task = load_task("winogrande", path=str(data))
    item = task.items[0]
    assert item.contexts == (
        "The trophy didn't fit in the suitcase because the trophy",
        "The trophy didn't fit in the suitcase because the suitcase",
    )
    assert item.continuations == (" was too big.",) and item.choice_texts == ("was too big.",)
    assert item.pairs == [(c, " was too big.") for c in item.contexts] and item.gold == 0


def test_language_modeling_renders_the_stripped_context_and_the_gold_continuation(tmp_path):
    data = write_jsonl_records(
        tmp_path / "lambada.jsonl",
        [{"context": "  He looked at the cat and said hello to the  ", "continuation": "cat"}],
    )
    item = load_task("lambada", path=str(data)).items[0]
    assert item.contexts == ("He looked at the cat and said hello to the",)
    assert item.continuations == (" cat",) and item.gold == 0
    assert item.pairs == [("He looked at the cat and said hello to the", " cat")]


# -- few-shot examples ------------------------------------------------------------------


def expected_prefix(records, i, k, seed, shot, delimiter="\n\n"):
    """nanochat's draw: random.Random(seed + index) samples k of the other items."""
    others = random.Random(seed + i).sample([j for j in range(len(records)) if j != i], k)
    return "".join(shot(records[j]) + delimiter for j in others), others


def mc_shot(r):
    return r["q"] + "\nAnswer: " + r["opts"][r["ans"]]


def test_few_shot_examples_are_seeded_never_the_item_and_joined_by_the_delimiter(tmp_path):
    task = mc_task(tmp_path, num_fewshot=3, fewshot_delimiter="\n###\n")
    again = mc_task(tmp_path, num_fewshot=3, fewshot_delimiter="\n###\n")
    assert task.items == again.items  # the same every time
    for i, item in enumerate(task.items):
        prefix, others = expected_prefix(MC, i, 3, 1234, mc_shot, "\n###\n")
        assert i not in others
        assert item.contexts == (prefix + MC[i]["q"],)
        assert item.continuations == tuple("\nAnswer: " + o for o in MC[i]["opts"])  # no shots here
        assert item.contexts[0].count("\n###\n") == 3
        assert MC[i]["q"] not in prefix  # the item never solves itself
    other_seed = mc_task(tmp_path, num_fewshot=3, fewshot_seed=99)
    assert [it.contexts for it in other_seed.items] != [it.contexts for it in task.items]
    first = expected_prefix(MC, 0, 3, 99, mc_shot)[0]
    assert other_seed.items[0].contexts[0] == first + MC[0]["q"]


def test_few_shot_examples_of_schema_and_language_modeling_tasks(tmp_path):
    schema = [
        {"context_options": [f"A{i}", f"B{i}"], "continuation": f"rest {i}.", "gold": i % 2}
        for i in range(4)
    ]
    task = load_task(
        "winogrande", path=str(write_jsonl_records(tmp_path / "s.jsonl", schema)), num_fewshot=2
    )
    for i, item in enumerate(task.items):
        prefix, _ = expected_prefix(
            schema, i, 2, 1234, lambda r: r["context_options"][r["gold"]] + " " + r["continuation"]
        )
        assert item.contexts == tuple(prefix + o for o in schema[i]["context_options"])
        assert item.continuations == (" " + schema[i]["continuation"],)
    lm = [{"context": f" passage {i} ends with ", "continuation": f"word{i}"} for i in range(4)]
    task = load_task(
        "lambada", path=str(write_jsonl_records(tmp_path / "l.jsonl", lm)), num_fewshot=2
    )
    for i, item in enumerate(task.items):
        prefix, _ = expected_prefix(
            lm, i, 2, 1234, lambda r: r["context"].strip() + " " + r["continuation"]
        )
        assert item.contexts == (prefix + lm[i]["context"].strip(),)


def test_too_many_shots_for_the_items_is_refused(tmp_path):
    with pytest.raises(TaskError, match=r"num_fewshot=8 needs more than 8 items"):
        mc_task(tmp_path, num_fewshot=8)


def test_shuffle_seed_and_limit_pick_the_same_fixed_subset(tmp_path):
    task = mc_task(tmp_path, shuffle_seed=7)
    order = list(range(8))
    random.Random(7).shuffle(order)
    assert [it.contexts[0] for it in task.items] == [MC[j]["q"] for j in order]
    picked = Selection(limit=3).pick(task.items)
    assert [it.contexts[0] for it in picked] == [MC[j]["q"] for j in order[:3]]
    assert Selection(limit=3).pick(mc_task(tmp_path, shuffle_seed=7).items) == picked
    unshuffled = Selection(limit=3).pick(mc_task(tmp_path).items)
    assert [it.contexts[0] for it in unshuffled] == [MC[j]["q"] for j in range(3)]
    shares = [Selection(limit=5, rank=r, world_size=2).pick(task.items) for r in (0, 1)]
    assert sorted(it.index for s in shares for it in s) == [0, 1, 2, 3, 4]


# -- task files -------------------------------------------------------------------------


def test_a_task_yaml_inherits_from_a_sibling_with_defaults(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: base\nkind: multiple_choice\ncontext: '{q}'\nchoices: opts\ngold: ans\n"
        "target_delimiter: ' => '\nrandom_baseline: 0.25\n"
    )
    data = write_jsonl_records(tmp_path / "mc.jsonl", MC)
    child = tmp_path / "child.yaml"
    child.write_text(
        f"defaults:\n  - base\n  - _self_\nname: child\npath: {data}\nnum_fewshot: 1\n"
    )
    task = load_task(str(child))
    assert task.name == "child" and task.config.target_delimiter == " => "
    assert task.config.random_baseline == 0.25 and task.config.num_fewshot == 1
    assert task.items[0].continuations[0] == " => 1"


def test_the_shipped_hellaswag_lm_eval_inherits_from_hellaswag():
    raw = task_config("hellaswag_lm_eval")
    base = task_config("hellaswag")
    assert raw["name"] == "hellaswag_lm_eval" and raw["preprocess"] == "hellaswag_lm_eval"
    assert raw["url"] == base["url"] and raw["git_sha1"] == base["git_sha1"]
    assert raw["choices"] == "endings" and raw["gold"] == "label" and raw["context"] == "{query}"
    assert raw["primary_metric"] == "acc_char" and "defaults" not in raw


def test_a_users_task_yaml_inherits_a_shipped_task(tmp_path):
    data = write_jsonl_records(
        tmp_path / "hs.jsonl", [{"ctx": "A man", "endings": ["a", "b"], "label": 1}]
    )
    mine = tmp_path / "my_hellaswag.yaml"
    mine.write_text(f"defaults:\n  - hellaswag\n  - _self_\nname: my_hellaswag\npath: {data}\n")
    task = load_task(str(mine))
    assert task.config.choices == "endings" and task.items[0].continuations == (" a", " b")
    assert task.config.random_baseline == 0.25 and task.name == "my_hellaswag"


def test_a_defaults_entry_naming_no_task_is_refused_in_one_sentence(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("defaults:\n  - hellaswagg\n  - _self_\nname: mine\n")
    refused(r"hellaswagg", str(mine))


def test_every_shipped_task_parses_and_core_has_its_22_members():
    names = known_tasks()
    assert {
        "hellaswag",
        "hellaswag_lm_eval",
        "piqa",
        "arc_easy",
        "arc_challenge",
        "lambada",
        "winogrande",
        "core",
    } <= set(names)
    for name in names:
        members = suite_members(name)
        for raw in members if members is not None else [task_config(name)]:
            config = parse_config(raw)
            assert config.url or config.path, raw["name"]
            assert config.sha256 or config.git_sha1, f"{raw['name']} downloads an unchecked file"
            assert 0.0 <= config.random_baseline < 1.0
    core = suite_members("core")
    assert len(core) == 22
    members = [m["name"] for m in core]
    assert len(set(members)) == 22 and all(
        m.startswith("core/") and m.count("/") == 1 for m in members
    )
    assert {
        "core/hellaswag_zeroshot",
        "core/piqa",
        "core/winogrande",
        "core/lambada_openai",
        "core/squad",
        "core/boolq",
    } <= set(members)
    assert all(
        m["prepend_bos"] and m["shuffle_seed"] == 1337 and m["fewshot_seed"] == 1234 for m in core
    )
    assert {parse_config(m).kind for m in core} == {
        "multiple_choice",
        "schema",
        "language_modeling",
    }


def test_every_shipped_task_composes_through_hydra_as_the_cli_reads_it():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(TASK_DIR.parent), version_base="1.3"):
        for name in known_tasks():
            cfg = compose("evaluate", overrides=[f"task={name}"])
            members = suite_members(cfg.task)
            for raw in members if members is not None else [task_config(cfg.task)]:
                parse_config(raw)
    GlobalHydra.instance().clear()


def test_hellaswag_lm_eval_preprocessing_gives_lm_eval_s_query(tmp_path):
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    record = {
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to clean a grill [title] Heat the grill.",
        "ctx_b": "then, scrub the grates",
        "ctx": "ignored by lm-eval",
        "endings": [
            "[step] with a wire brush.  Rinse well.",
            " with soap [substeps] and water.",
            "by hand.",
            "[title] Scrape it. [step] Done.",
        ],
        "label": "2",
    }
    data = write_jsonl_records(tmp_path / "hs.jsonl", [record])
    item = load_task("hellaswag_lm_eval", path=str(data)).items[0]
    theirs = process_docs(datasets.Dataset.from_list([record]))[0]
    assert item.contexts == (theirs["query"],)
    assert (
        item.contexts[0]
        == "Home and Garden: How to clean a grill. Heat the grill. Then, scrub the grates"
    )
    assert item.choice_texts == tuple(theirs["choices"])
    assert item.continuations == tuple(" " + c for c in theirs["choices"])
    assert item.gold == theirs["gold"] == 2


# -- bad input: one sentence each --------------------------------------------------------


def refused(match: str, spec: Any, **kw: Any) -> str:
    with pytest.raises(TaskError, match=match) as caught:
        load_task(spec, **kw)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (
            {"opts": ["a", "b"], "ans": 0},
            r"item 0 of task toy_mc has no field 'q', which the template '\{q\}' needs",
        ),
        ({"q": "x", "ans": 0}, r"item 0 of task toy_mc has no field 'opts'; its fields are ans, q"),
        ({"q": "x", "opts": ["a", "b"]}, r"item 0 of task toy_mc has no field 'ans'"),
        (
            {"q": "x", "opts": ["a", "b"], "ans": 2},
            r"item 0 of task toy_mc: the gold index 2 is out of range for its 2 choices",
        ),
        ({"q": "x", "opts": ["a", "b"], "ans": -1}, r"the gold index -1 is out of range"),
        ({"q": "x", "opts": ["a", "b"], "ans": "B"}, r"the gold field 'ans' is 'B', not an index"),
        (
            {"q": "x", "opts": [], "ans": 0},
            r"item 0 of task toy_mc: the choice list 'opts' is empty or not a list",
        ),
        ({"q": "x", "opts": "ab", "ans": 0}, r"the choice list 'opts' is empty or not a list"),
    ],
)
def test_a_bad_item_is_refused_in_one_sentence(tmp_path, record, match):
    data = write_jsonl_records(tmp_path / "bad.jsonl", [record])
    refused(match, {**MC_TASK, "path": str(data)})


def test_bad_schema_items_and_files_are_refused_in_one_sentence(tmp_path):
    empty = write_jsonl_records(
        tmp_path / "e.jsonl", [{"context_options": [], "continuation": "x", "gold": 0}]
    )
    refused(r"the option list 'context_options' is empty", "winogrande", path=str(empty))
    out_of_range = write_jsonl_records(
        tmp_path / "o.jsonl", [{"context_options": ["a"], "continuation": "x", "gold": 1}]
    )
    refused(
        r"the gold index 1 is out of range for its 1 choices", "winogrande", path=str(out_of_range)
    )
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"q": "x"}\n{"q": \n')
    refused(r"line 2 of .*broken.jsonl is not JSON", {**MC_TASK, "path": str(broken)})
    (tmp_path / "none.jsonl").write_text("\n")
    refused(r"holds no items", {**MC_TASK, "path": str(tmp_path / "none.jsonl")})
    refused(
        r"the data file .*missing.jsonl does not exist; check task.path",
        "piqa",
        path=str(tmp_path / "missing.jsonl"),
    )


def test_bad_settings_and_unknown_tasks_are_refused_in_one_sentence(tmp_path):
    message = refused(r"unknown task 'hellaswagg'; the known tasks are ", "hellaswagg")
    assert all(name in message for name in known_tasks())
    data = str(write_jsonl_records(tmp_path / "mc.jsonl", MC))
    refused(r"unknown setting\(s\) choise", {**MC_TASK, "path": data, "choise": "x"})
    refused(
        r"kind='mcq'; use one of multiple_choice, schema, language_modeling",
        {**MC_TASK, "kind": "mcq"},
    )
    refused(r"the setting 'kind' is required", {"name": "x", "path": data})
    refused(r"preprocess='lower' is not known", {**MC_TASK, "preprocess": "lower"})
    refused(r"random_baseline=1.5 must be a fraction", {**MC_TASK, "random_baseline": 1.5})
    refused(r"has neither a url nor a path", dict(MC_TASK))
    with pytest.raises(TaskError, match=r"settings path apply to one task, but 22 tasks"):
        load_tasks(["core"], path=data)


# -- downloads: checked, never kept when wrong, cached once right -------------------------


def test_a_download_with_a_wrong_checksum_is_refused_and_not_kept(tmp_path):
    (tmp_path / "served").mkdir()
    source = write_jsonl_records(
        tmp_path / "served" / "piqa.jsonl", [{"query": "q", "choices": ["a", "b"], "gold": 0}]
    )
    cache = tmp_path / "cache"
    url = source.as_uri()
    wrong = "0" * 64
    for checks in (
        {"sha256": wrong},
        {"git_sha1": "0" * 40},
        {"sha256": wrong, "git_sha1": "1" * 40},
    ):
        spec = {**task_config("piqa"), "url": url, "sha256": None, "git_sha1": None, **checks}
        with pytest.raises(GptlabError, match=r"expected 0+|expected 1+") as caught:
            load_task(spec, cache_dir=cache)
        message = str(caught.value)
        assert "\n" not in message and "it was not kept" in message and "task.path" in message
        assert [p for p in cache.rglob("*") if p.is_file()] == []  # no file, no temporary file
    assert source.is_file()


def test_a_download_with_the_right_checksum_is_cached_and_reused(tmp_path):
    (tmp_path / "served").mkdir()
    records = [{"query": f"Question: q{i}", "choices": ["a", "b"], "gold": i % 2} for i in range(3)]
    source = write_jsonl_records(tmp_path / "served" / "piqa.jsonl", records)
    cache = tmp_path / "cache"
    spec = {
        **task_config("piqa"),
        "url": source.as_uri(),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "git_sha1": git_blob_sha1(source),
    }
    first = load_task(spec, cache_dir=cache)
    cached = [p for p in cache.rglob("*") if p.is_file()]
    assert len(cached) == 1 and cached[0].name == "piqa.jsonl"
    assert (
        cached[0].parent.parent == cache / "tasks" and cached[0].read_bytes() == source.read_bytes()
    )
    source.unlink()  # a second load must not read the address again
    second = load_task(spec, cache_dir=cache)
    assert second.items == first.items and len(second.items) == 3
    assert second.items[1].continuations == ("\nAnswer: a", "\nAnswer: b")
