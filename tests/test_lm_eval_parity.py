"""lm-evaluation-harness parity: gptlab's evaluator, the ``gptlab`` lm-eval model and lm-eval's HF model agree.

The reference is lm-eval's own ``HFLM`` on a random-weight ``transformers`` GPT-2 (small
enough to run in seconds), with a GPT-2 tokenizer built offline from tiktoken's r50k
ranks. The same weights, loaded into gptlab from the Hugging Face folder, must give the
same log-likelihood for every request (within 1e-4 nats) through gptlab's evaluator and
through the adapter, and the same accuracies when lm-eval itself runs a HellaSwag-format
task from a local YAML. Then the adapter's three request types run on gptlab-only
architectures (rotary positions, RMSNorm, SwiGLU, grouped- and multi-query attention,
sliding window, QK-norm, soft-capping), checked against the model's own forward pass.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import add_checksum, load_model
from gptlab.errors import ConfigError
from gptlab.evaluation.evaluator import Selection, score_task, task_requests
from gptlab.evaluation.scorer import Scorer
from gptlab.evaluation.tasks import load_task
from gptlab.export import export_safetensors
from gptlab.model import GPT, GPTConfig
from gptlab.sampling import SamplerConfig, completion_text, generate
from gptlab.tokenizer import CharTokenizer, GPT2Tokenizer
from tests.conftest import R50K_CACHE_NAME, REPO, needs_r50k

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

from lm_eval.api.instance import Instance  # noqa: E402

from gptlab.evaluation.lm_eval_model import GptlabLM, sampler_from_gen_kwargs  # noqa: E402

pytestmark = needs_r50k
TASK = "hellaswag_tiny"

# HellaSwag's format (fields as in rowanz/hellaswag's jsonl), invented items: a [title] tag
# and [step] markers for lm-eval's clean-up, endings of unequal length for acc vs acc_norm,
# and one context far past the model's 128 positions so left truncation is exercised.
HELLASWAG = [
    (
        "Roof shingle removal",
        "A man is sitting on a roof.",
        "he",
        [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        3,
    ),
    (
        "Making a cake",
        "[header] How to bake a sponge cake [title] Preheat the oven. [step] Grease two tins.",
        "then",
        [
            "whisk the eggs and the sugar until pale.",
            "paint the fence.",
            "the dog barks at the mailman.",
            "sing loudly.",
        ],
        0,
    ),
    (
        "Playing guitar",
        "A woman sits on a stool holding an acoustic guitar. She tunes the strings one by one.",
        "she",
        [
            "strums a few chords and smiles.",
            "throws the guitar into the lake.",
            "eats a sandwich with the guitar.",
            "is the guitar.",
        ],
        0,
    ),
    (
        "Washing a car",
        "Two boys spray a red car with a hose in a driveway.",
        "they",
        [
            "scrub the doors with big yellow sponges.",
            "fly away.",
            "read a newspaper under water while the car drives itself to the moon.",
            "x.",
        ],
        0,
    ),
    (
        "Long jump",
        " ".join(
            f"Athlete number {i} runs down the track, counts {i * 7 % 13} steps and leaps."
            for i in range(20)
        ),
        "the crowd",
        ["cheers as the results appear.", "is a sandwich.", "sleeps.", "jumps into the pit."],
        0,
    ),
    (
        "Sharpening a knife",
        "A chef holds a knife over a whetstone. [step] He wets the stone.",
        "he",
        [
            "slides the blade across it at a steady angle.",
            "drinks the water.",
            "puts the stone in the oven.",
            "hands the knife to a cat.",
        ],
        0,
    ),
]


def hellaswag_records() -> list[dict]:
    return [
        {
            "ind": i,
            "activity_label": label,
            "ctx_a": ctx_a,
            "ctx_b": ctx_b,
            "ctx": f"{ctx_a} {ctx_b}",
            "endings": endings,
            "label": gold,
            "split": "val",
            "split_type": "indomain",
            "source_id": f"tiny-{i}",
        }
        for i, (label, ctx_a, ctx_b, endings, gold) in enumerate(HELLASWAG)
    ]


# -- fixtures: the reference model, its tokenizer, the task ----------------------------


@pytest.fixture(scope="module")
def hf_tokenizer(offline_environment):
    """``transformers.GPT2Tokenizer`` (tokenizers-backed) from tiktoken's r50k ranks, offline.

    r50k lists tokens by rank, not merges; gptlab's ``merges_from_vocab`` recovers the
    merge behind each token, which with GPT-2's printable byte alphabet are exactly the
    ``vocab.json`` / ``merges.txt`` Hugging Face ships for ``gpt2``.
    """
    from gptlab.tokenizer.bpe_format import merges_from_vocab, read_tiktoken_file
    from gptlab.tokenizer.bpe_patterns import render_bytes

    ranks = Path(os.environ["TIKTOKEN_CACHE_DIR"]) / R50K_CACHE_NAME
    vocab = read_tiktoken_file(ranks)
    ids = {render_bytes(t): i for i, t in enumerate(vocab)}
    ids["<|endoftext|>"] = len(vocab)
    merges = [(render_bytes(vocab[a]), render_bytes(vocab[b])) for a, b in merges_from_vocab(vocab)]
    return transformers.GPT2Tokenizer(vocab=ids, merges=merges)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A random GPT-2 with weights 10x GPT-2's init scale, so choices really differ in score."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=64, n_positions=128, initializer_range=0.2
    )
    model = transformers.GPT2LMHeadModel(config)
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hflm(hf_folder, hf_tokenizer):
    pytest.importorskip(
        "accelerate", reason="lm-eval's HF model imports accelerate (pip install 'lm-eval[hf]')"
    )
    from lm_eval.models.huggingface import HFLM

    torch.set_num_threads(1)
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_folder).eval()
    return HFLM(pretrained=model, tokenizer=hf_tokenizer, batch_size=8)


@pytest.fixture(scope="module")
def adapter(hf_folder) -> GptlabLM:
    return GptlabLM(ckpt=str(hf_folder), kind="hf", device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """A local lm-eval task: lm-eval's HellaSwag YAML with ``dataset_path: json``.

    ``process_docs`` is lm-eval's own HellaSwag clean-up, copied from the installed package.
    """
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    data = folder / "hellaswag_tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hellaswag_records()))
    shutil.copy(Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "utils.py", folder)
    (folder / f"{TASK}.yaml").write_text(
        f"""task: {TASK}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    validation: {data}
  cache_dir: {folder / "datasets_cache"}
output_type: multiple_choice
validation_split: validation
process_docs: !function utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
    )
    return folder


@pytest.fixture(scope="module")
def gptlab_task(task_dir):
    """The same file as gptlab's ``hellaswag_lm_eval`` task (lm-eval's prompt)."""
    return load_task("hellaswag_lm_eval", path=str(task_dir / "hellaswag_tiny.jsonl"))


def instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def evaluate_task(model, task_dir: Path, **kwargs) -> dict:
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=model,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
        **kwargs,
    )


def request_args(sample: dict) -> list[tuple[str, str]]:
    """A logged sample's (context, continuation) pairs, in either of lm-eval's layouts."""
    out = []
    for a in sample["arguments"]:
        if isinstance(a, dict):  # older lm-eval: {"gen_args_0": {"arg_0": ..., "arg_1": ...}}
            a = tuple(a.values())[0]
            a = (a["arg_0"], a["arg_1"])
        out.append(tuple(a))
    return out


# -- the tokenizer the reference uses ---------------------------------------------------


def test_hf_tokenizer_from_the_ranks_encodes_like_tiktoken(hf_tokenizer, gptlab_task):
    tiktoken_gpt2 = GPT2Tokenizer()
    texts = [t for item in gptlab_task.items for pair in item.pairs for t in pair]
    texts += ["naïve café 🤗 don't 12345 \n\n  tabs\tand  spaces  ", "<|endoftext|> is text here"]
    for text in texts:
        assert hf_tokenizer.encode(text.replace("<|endoftext|>", "")) == (
            tiktoken_gpt2.encode_ordinary(text.replace("<|endoftext|>", ""))
        )
    assert hf_tokenizer.eos_token_id == hf_tokenizer.bos_token_id == tiktoken_gpt2.eot_id == 50256


# -- per-request log-likelihoods ----------------------------------------------------------


def test_gptlab_evaluator_scores_every_request_as_lm_eval_hf_model(hflm, hf_folder, gptlab_task):
    loaded = load_model(hf_folder, kind="hf")
    per_item = task_requests(gptlab_task, gptlab_task.items, loaded.tokenizer)
    scores = Scorer(loaded.model, batch_size=8).score([r for reqs in per_item for r in reqs])
    pairs = [p for item in gptlab_task.items for p in item.pairs]
    reference = hflm.loglikelihood(instances("loglikelihood", pairs), disable_tqdm=True)
    assert len(scores) == len(reference) == 24
    for score, (logprob, greedy) in zip(scores, reference):
        assert score.logprob == pytest.approx(logprob, abs=1e-4)
        assert score.greedy == greedy
    assert any(s.truncated for s in scores), "the long item should have been cut on the left"
    assert len({round(s.logprob, 2) for s in scores}) == len(scores)  # not all alike


def test_adapter_scores_every_request_as_lm_eval_hf_model(hflm, adapter, gptlab_task):
    pairs = [p for item in gptlab_task.items for p in item.pairs]
    pairs += [
        ("", "An empty context starts from end-of-text."),
        ("Trailing spaces of the context   ", "move to the continuation."),
        ("One token", "."),
        ("Café", " naïve 🤗"),
    ]
    reqs = instances("loglikelihood", pairs)
    ours = adapter.loglikelihood(reqs, disable_tqdm=True)
    reference = hflm.loglikelihood(reqs, disable_tqdm=True)
    worst = max(abs(a[0] - b[0]) for a, b in zip(ours, reference))
    assert worst < 1e-4
    assert [g for _, g in ours] == [g for _, g in reference]
    assert adapter.loglikelihood(instances("loglikelihood", [("Nothing to score", "")])) == [
        (0.0, True)
    ]


def test_rolling_log_likelihood_equals_lm_eval_hf_model_past_the_block_size(hflm, adapter):
    rng = random.Random(0)
    words = [
        "the",
        "a",
        "river",
        "stone",
        "light",
        "seven",
        "over",
        "under",
        "quickly",
        "green",
        "market",
        "song",
    ]
    long_text = " ".join(rng.choice(words) for _ in range(400)) + "."
    texts = ["A short text, one window.", long_text, "x"]
    assert len(GPT2Tokenizer().encode_ordinary(long_text)) > 3 * 128
    ours = adapter.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in texts]))
    reference = hflm.loglikelihood_rolling(
        instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True
    )
    for a, b in zip(ours, reference):
        assert a == pytest.approx(b, abs=1e-3, rel=1e-6)


def _lm_eval_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(x) for x in version("lm_eval").split(".")[:3] if x.isdigit())


@pytest.mark.xfail(
    # Known in the versions checked; a later lm-eval that fixes it makes this an ordinary test.
    condition=_lm_eval_version() <= (0, 4, 13),
    strict=True,
    reason="lm-eval 0.4.13 HFLM bug: with logits_cache=True (its default), requests whose "
    "context + continuation[:-1] are the same tokens but whose continuations have different "
    "lengths (two rolling windows of a repetitive text) share one logits slice, and the "
    "shorter one is gathered from the first positions of the longer one's slice instead of "
    "the last; gptlab's numbers equal HFLM(logits_cache=False) and the model's own forward",
)
def test_lm_eval_hf_model_rolling_on_repetitive_text(hflm, adapter):
    text = "word " * 300  # windows 2 and 3 both see 128 copies of " word"
    ours = adapter.loglikelihood_rolling(instances("loglikelihood_rolling", [(text,)]))
    reference = hflm.loglikelihood_rolling(
        instances("loglikelihood_rolling", [(text,)]), disable_tqdm=True
    )
    assert ours[0] == pytest.approx(reference[0], abs=1e-3)


# -- lm-eval running the task itself -------------------------------------------------------


def test_simple_evaluate_with_the_gptlab_model_gives_the_hf_models_accuracy(
    hflm, hf_folder, task_dir, gptlab_task
):
    ours = evaluate_task(
        "gptlab", task_dir, model_args=f"ckpt={hf_folder},kind=hf,device=cpu", batch_size=8
    )
    reference = evaluate_task(hflm, task_dir)
    a, b = ours["results"][TASK], reference["results"][TASK]
    assert a["acc,none"] == b["acc,none"] and a["acc_norm,none"] == b["acc_norm,none"]
    assert a["acc,none"] != a["acc_norm,none"]  # the two rules disagree on some item
    samples = sorted(ours["samples"][TASK], key=lambda s: s["doc_id"])
    ref_samples = sorted(reference["samples"][TASK], key=lambda s: s["doc_id"])
    for s, r in zip(samples, ref_samples):
        for (x,), (y,) in zip(s["resps"], r["resps"]):
            assert x[0] == pytest.approx(y[0], abs=1e-4)
    # lm-eval's own prompts are gptlab's hellaswag_lm_eval prompts, and gptlab's evaluator
    # reaches the same accuracies (lm-eval's acc_norm is gptlab's acc_char).
    assert [request_args(s) for s in samples] == [item.pairs for item in gptlab_task.items]
    loaded = load_model(hf_folder, kind="hf")
    result = score_task(gptlab_task, Scorer(loaded.model), loaded.tokenizer, Selection())
    assert result["metrics"]["acc"] == pytest.approx(a["acc,none"])
    assert result["metrics"]["acc_char"] == pytest.approx(a["acc_norm,none"])
    assert ours["config"]["gptlab_kind"] == "hf"


# -- gptlab-only architectures -------------------------------------------------------------

ARCHITECTURES = {
    # Llama-style: rotary positions, RMSNorm, SwiGLU, 4 query heads sharing 2 key/value heads.
    "rope-rmsnorm-swiglu-gqa": dict(
        position="rope",
        norm="rmsnorm",
        mlp="swiglu",
        attention={"n_kv_head": 2},
        bias=False,
        tie_embeddings=False,
    ),
    # Multi-query, sliding window, QK-norm, soft-capped scores and logits, no positions at all.
    "mqa-window-qknorm-softcap-nope": dict(
        position="none",
        norm="rmsnorm",
        mlp="relu2",
        attention={
            "n_kv_head": 1,
            "window": 12,
            "qk_norm": True,
            "backend": "manual",
            "logit_softcap": 20.0,
        },
        logit_softcap=15.0,
    ),
}
CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer.\n"


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def modern(request, tmp_path_factory) -> tuple[GptlabLM, GPT, object]:
    """The adapter on a model saved the two ways gptlab saves: an export folder, a .ckpt."""
    name = request.param
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp(name)
    if name.startswith("rope"):
        tokenizer = GPT2Tokenizer()
    else:
        tokenizer = CharTokenizer.from_corpus(
            CORPUS + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.?!"
        )
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        block_size=32,
        n_layer=2,
        n_head=4,
        n_embd=64,
        **ARCHITECTURES[name],
    )
    model = GPT(config)
    with torch.no_grad():  # larger weights than the init, so the predictions are not flat
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    if name.startswith("rope"):
        source = export_safetensors(model, tokenizer, folder / "export")
    else:
        data = {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {
                "model_config": config.to_dict(),
                "tokenizer": tokenizer.to_dict(),
                "run_config": {},
            },
        }
        add_checksum(data)
        source = folder / "last.ckpt"
        torch.save(data, source)
    lm = GptlabLM(ckpt=str(source), device="cpu", batch_size=4, max_gen_toks=12)
    return lm, lm.model, tokenizer


def direct_logprob(model: GPT, ids: list[int], n_scored: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) over the last ``n_scored`` tokens, one plain forward pass."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(x[:, :-1]).float(), dim=-1)[0]
    picked = logp.gather(-1, x[0, 1:, None])[:, 0]
    return float(picked[-n_scored:].sum())


def test_modern_loglikelihood_equals_the_models_own_forward(modern):
    lm, model, tokenizer = modern
    pairs = [
        ("To be, or not", " to be"),
        ("Whether 'tis", " nobler in the mind"),
        ("To be,", " or"),
    ]
    got = lm.loglikelihood(instances("loglikelihood", pairs))
    in_memory = GptlabLM(
        model=model, tokenizer=tokenizer, device="cpu"
    )  # no files: a training run's model
    assert in_memory.loglikelihood(instances("loglikelihood", pairs)) == got
    for (context, continuation), (logprob, _) in zip(pairs, got):
        ctx, whole = (
            tokenizer.encode_ordinary(context),
            tokenizer.encode_ordinary(context + continuation),
        )
        assert logprob == pytest.approx(
            direct_logprob(model, whole, len(whole) - len(ctx)), abs=1e-4
        )


def test_modern_rolling_is_every_tokens_log_prob_once(modern):
    lm, model, tokenizer = modern
    start = tokenizer.eot_id if tokenizer.eot_id is not None else tokenizer.encode("\n")[0]
    short = "To be, or not to be"
    ids = tokenizer.encode_ordinary(short)
    assert len(ids) < model.config.block_size
    long = CORPUS * 8
    long_ids = tokenizer.encode_ordinary(long)
    assert len(long_ids) > 3 * model.config.block_size
    got = lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(short,), (long,), ("",)]))
    assert got[0] == pytest.approx(direct_logprob(model, [start, *ids], len(ids)), abs=1e-4)
    # Past the block size: each chunk of block_size tokens predicted once, from a window of
    # at most block_size positions ending at the chunk's last input (lm-eval's rule).
    full, bs = [start, *long_ids], model.config.block_size
    expected = 0.0
    for s in range(0, len(long_ids), bs):
        e = min(s + bs, len(long_ids))
        lo = max(0, e - bs)
        expected += direct_logprob(model, full[lo : e + 1], e - s)
    assert math.isfinite(got[1]) and got[1] < 0
    assert got[1] == pytest.approx(expected, abs=1e-3, rel=1e-6)
    assert got[2] == 0.0


def test_modern_generate_until_is_greedy_and_honours_until_and_max_gen_toks(modern):
    lm, model, tokenizer = modern
    prompt = "To be, or"
    ids = tokenizer.encode(prompt)
    free = generate(
        model, [ids], SamplerConfig(temperature=0, max_new_tokens=12), tokenizer=tokenizer
    )
    free_text = tokenizer.decode(free[0])
    stop = free_text[4:6]
    cut = free_text[: free_text.find(stop)]
    got = lm.generate_until(
        instances(
            "generate_until",
            [
                (prompt, {"until": ["\x00never"], "do_sample": False}),  # max_gen_toks=12 default
                (prompt, {"until": [stop], "max_gen_toks": 12}),
                (prompt, {"until": [], "max_gen_toks": 3}),
                ("Whether", {"until": ["\x00never"], "temperature": 0.0}),
            ],
        )
    )
    assert got[0] == completion_text(tokenizer, free[0]) == free_text
    assert got[1] == cut and stop not in got[1]
    assert got[2] == tokenizer.decode(free[0][:3])
    alone = generate(
        model,
        [tokenizer.encode("Whether")],
        SamplerConfig(temperature=0, max_new_tokens=12),
        tokenizer=tokenizer,
    )
    assert got[3] == tokenizer.decode(alone[0])  # batched with others == alone


def test_modern_sampling_follows_temperature_and_seed(modern):
    lm, _, _ = modern
    args = [("To be", {"do_sample": True, "temperature": 1.5, "seed": 3, "max_gen_toks": 10})] * 2
    a = lm.generate_until(instances("generate_until", args))
    b = lm.generate_until(instances("generate_until", args))
    assert a == b  # the seed makes a run reproducible
    assert a[0] != a[1]  # while the rows of one batch draw their own tokens
    greedy = lm.generate_until(instances("generate_until", [("To be", {"max_gen_toks": 10})]))
    assert a[0] != greedy[0]


# -- settings and errors -------------------------------------------------------------------


def test_gen_kwargs_follow_lm_evals_rules():
    greedy, until = sampler_from_gen_kwargs(
        {"until": "\n\n", "do_sample": False, "temperature": 0.7}
    )
    assert greedy.greedy and until == ["\n\n"] and greedy.max_new_tokens == 256
    hot, _ = sampler_from_gen_kwargs({"temperature": 0.7, "max_new_tokens": 5, "top_p": 0.9})
    assert hot.temperature == 0.7 and hot.top_p == 0.9 and hot.max_new_tokens == 5
    default_t, _ = sampler_from_gen_kwargs({"do_sample": "true", "until": ["", "Q:"]}, 9)
    assert (
        default_t.temperature == 1.0 and default_t.stop == ["Q:"] and default_t.max_new_tokens == 9
    )
    with pytest.raises(ConfigError, match="top_p"):
        sampler_from_gen_kwargs({"do_sample": True, "top_p": 1.5})


def test_registered_beside_lm_evals_own_models():
    from lm_eval.api.registry import get_model, model_registry

    assert get_model("gptlab") is GptlabLM
    assert "hf" in model_registry  # registering gptlab first must not hide lm-eval's models


def test_bad_model_args_are_one_sentence(hf_folder):
    with pytest.raises(ConfigError, match="needs a checkpoint; give --model_args ckpt="):
        GptlabLM()
    with pytest.raises(ConfigError, match="unknown gptlab model_args pretrained"):
        GptlabLM(ckpt=str(hf_folder), pretrained="gpt2")
    with pytest.raises(ConfigError, match="batch_size='many' must be a positive integer"):
        GptlabLM(ckpt=str(hf_folder), batch_size="many")
    assert GptlabLM(ckpt=str(hf_folder), batch_size="auto", max_gen_toks="7").max_gen_toks == 7


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_gptlab_never_imports_lm_eval_and_says_how_to_install_it():
    quiet = run_python(
        "import sys, gptlab, gptlab.evaluation.evaluator, gptlab.checkpoint, gptlab.evaluate\n"
        "assert 'lm_eval' not in sys.modules, 'lm_eval was imported'"
    )
    assert quiet.returncode == 0, quiet.stderr
    missing = run_python(
        "import sys\n"
        "sys.modules['lm_eval'] = None  # as if it were not installed\n"
        "try:\n"
        "    import gptlab.evaluation.lm_eval_model\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    assert missing.returncode == 0, missing.stderr
    line = missing.stdout.strip()
    assert line.startswith("LmEvalNotInstalled ") and "\n" not in line
    assert 'pip install "gptlab[eval]"' in line


# -- the command line ------------------------------------------------------------------------


@pytest.mark.slow
def test_python_m_gptlab_lm_eval_runs_lm_evals_cli(hf_folder, task_dir, tmp_path, adapter):
    """The documented command, end to end (slow: lm-eval's CLI indexes all its own tasks)."""
    base = [sys.executable, "-m", "gptlab.lm_eval", "--model", "gptlab", "--tasks", TASK]
    base += ["--include_path", str(task_dir), "--device", "cpu"]
    done = subprocess.run(
        [*base, "--model_args", f"ckpt={hf_folder},kind=hf", "--batch_size", "8",
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "out").rglob("results_*.json")
    acc = json.loads(written.read_text())["results"][TASK]["acc,none"]
    expected = evaluate_task(adapter, task_dir)["results"][TASK]["acc,none"]
    assert acc == expected
    bad = subprocess.run(
        [*base, "--model_args", f"ckpt={tmp_path / 'missing.ckpt'}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "missing.ckpt does not exist" in last
    assert "Traceback" not in bad.stderr
