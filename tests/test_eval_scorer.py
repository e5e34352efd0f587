"""The scorer and the scoring rules, checked against brute force and against llm.c / lm-eval.

Brute force is what llm.c's ``dev/data/hellaswag.py`` does: one full forward pass over
``context + continuation`` per request, the continuation's log-probabilities read off
the shifted logits. The scorer's shortcuts (a shared context run once through the KV
cache, length-sorted right-padded batches, left truncation) must give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptlab.evaluation.evaluator import evaluate_tasks, task_requests
from gptlab.evaluation.metrics import judge
from gptlab.evaluation.scorer import Request, Score, Scorer, encode_pair
from gptlab.evaluation.tasks import Item, TaskError, load_task
from gptlab.model import GPT, GPTConfig
from tests.conftest import needs_r50k


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


def tiny_model(seed: int = 0, block_size: int = 16, vocab: int = 50, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=4, n_embd=32, **kw)
    )


def brute_force(model: torch.nn.Module, context: tuple[int, ...], continuation: tuple[int, ...]):
    """llm.c's way: one full forward pass per request, no cache, no padding."""
    was = model.training
    model.eval()
    ids = torch.tensor([*context, *continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None, :-1])[0].float(), dim=-1)
    model.train(was)
    n = len(context)
    rows = logp[n - 1 : n - 1 + len(continuation)]
    target = torch.tensor(continuation)
    picked = rows.gather(1, target[:, None]).squeeze(1)
    return float(picked.sum()), bool((rows.argmax(-1) == target).all())


# Shared contexts (the first three, as one item's choices), distinct contexts of
# different lengths, a one-token context and one-token continuations, a 17-token request
# that exactly fills block_size + 1.
REQUESTS = [
    Request((1, 2, 3, 4, 5, 6, 7), (8, 9, 10)),
    Request((1, 2, 3, 4, 5, 6, 7), (11,)),
    Request((1, 2, 3, 4, 5, 6, 7), (12, 13, 14, 15, 16)),
    Request((4, 5), (6, 7, 8, 9)),
    Request((3,), (1, 2)),
    Request((9, 9, 9, 9), (9,)),
    Request(tuple(range(20, 34)), (40, 41, 42)),  # 14 + 3 = 17 = block_size + 1
    Request((4, 5), (6,)),
    Request((7, 6, 5, 4, 3, 2, 1, 0, 1, 2), (3, 4)),
]

MODELS = {
    "learned": {},
    "rope": {"position": "rope"},
    "gqa-rope": {"position": "rope", "attention": {"n_kv_head": 2}},
    "mqa-manual": {"attention": {"n_kv_head": 1, "backend": "manual"}},
    "rmsnorm-swiglu": {"norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False},
}


def check_against_brute_force(model, requests, batch_size):
    scores = Scorer(model, batch_size=batch_size).score(requests)
    assert len(scores) == len(requests)
    for r, s in zip(requests, scores):
        logprob, greedy = brute_force(model, r.context, r.continuation)
        assert s.logprob == pytest.approx(logprob, abs=1e-4), r
        assert s.greedy == greedy and s.n_tokens == len(r.continuation) and not s.truncated


@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize("variant", list(MODELS))
def test_scorer_equals_a_full_forward_per_request(variant, batch_size):
    check_against_brute_force(tiny_model(**MODELS[variant]), REQUESTS, batch_size)


def test_greedy_is_true_when_the_continuation_is_the_argmax_chain():
    model = tiny_model(3)
    context = (5, 6, 7)
    ids = list(context)
    with torch.no_grad():
        for _ in range(4):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    greedy_cont = tuple(ids[3:])
    other = (*greedy_cont[:-1], (greedy_cont[-1] + 1) % 50)
    scores = Scorer(model, batch_size=8).score(
        [Request(context, greedy_cont), Request(context, other)]
    )
    assert scores[0].greedy and not scores[1].greedy


@pytest.mark.parametrize("variant", ["rope", "learned"])
def test_sliding_window_scored_one_context_at_a_time_equals_brute_force(variant):
    kw = {"position": "rope"} if variant == "rope" else {}
    model = tiny_model(**kw, attention={"window": 4, "backend": "manual"})
    check_against_brute_force(model, REQUESTS, batch_size=1)


@pytest.mark.parametrize("batch_size", [3, 64])
def test_sliding_window_in_mixed_length_batches_equals_brute_force(batch_size):
    model = tiny_model(position="rope", attention={"window": 4})
    check_against_brute_force(model, REQUESTS, batch_size)


def test_a_request_longer_than_the_block_is_cut_on_the_left_and_counted():
    model = tiny_model(1, position="rope")
    long_ctx = tuple(range(1, 21))  # 20 + 3 = 23 > 17: 6 tokens are cut (4 for a 1-token ending)
    cont = (30, 31, 32)
    fill = tuple(range(2, 7))  # 5 + 16 = 21: the context keeps one token
    full_cont = tuple(range(10, 26))  # exactly block_size tokens
    requests = [
        Request(long_ctx, cont),
        Request(long_ctx, (33,)),
        Request(fill, full_cont),
        *REQUESTS[:4],
    ]
    for batch_size in (1, 64):
        scores = Scorer(model, batch_size=batch_size).score(requests)
        assert [s.truncated for s in scores] == [True, True, True, False, False, False, False]
        expected = [
            brute_force(model, long_ctx[6:], cont),
            brute_force(model, long_ctx[4:], (33,)),
            brute_force(model, fill[-1:], full_cont),
            *(brute_force(model, r.context, r.continuation) for r in REQUESTS[:4]),
        ]
        for s, (logprob, greedy) in zip(scores, expected):
            assert s.logprob == pytest.approx(logprob, abs=1e-4) and s.greedy == greedy


def test_a_continuation_longer_than_the_block_is_refused_in_one_sentence():
    model = tiny_model()
    with pytest.raises(TaskError, match=r"continuation of 17 tokens .*block_size=16") as caught:
        Scorer(model).score([Request((1,), tuple(range(17)))])
    assert "\n" not in str(caught.value)


def test_scoring_uses_eval_mode_and_restores_the_training_mode():
    model = tiny_model(2, dropout=0.5)
    model.train()
    scores = Scorer(model, batch_size=4).score(REQUESTS[:3])
    assert model.training and all(m.training for m in model.modules())
    model.eval()  # dropout off: what the scorer must have used
    for r, s in zip(REQUESTS[:3], scores):
        assert s.logprob == pytest.approx(
            brute_force(model, r.context, r.continuation)[0], abs=1e-4
        )
    assert not model.training
    Scorer(model).score(REQUESTS[:1])
    assert not model.training  # an eval-mode model stays in eval mode
    model.train()
    with pytest.raises(IndexError):  # an id past the vocabulary fails inside the model ...
        Scorer(model).score([Request((999, 2), (1,)), Request((1,), (2, 3))])
    assert model.training  # ... and the mode is still restored


# -- encode_pair: lm-evaluation-harness's tokenization ------------------------------------


def _lm_eval_encoder(tokenizer):
    """lm-eval's own TemplateLM._encode_pair with our tokenizer, for a side-by-side check."""
    from lm_eval.api.model import TemplateLM

    class Enc(TemplateLM):
        backend = "causal"

        @property
        def eot_token_id(self):
            return tokenizer.eot_id

        def tok_encode(self, string, **kwargs):
            return tokenizer.encode_ordinary(string)

        def _loglikelihood_tokens(self, requests, **kwargs):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            raise NotImplementedError

    return Enc()


@needs_r50k
@pytest.mark.parametrize(
    ("context", "continuation"),
    [
        ("Question: Is it big?\nAnswer:", " yes"),
        ("Question: Is it big?\nAnswer: ", "yes"),  # the trailing space moves to "yes"
        ("A man sits on a roof.  ", "He starts pulling up roofing."),  # two spaces move
        ("The price is $", "42.50 today"),
    ],
)
def test_encode_pair_matches_lm_eval_and_moves_trailing_spaces(context, continuation):
    from gptlab.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    req = encode_pair(tok, context, continuation, tok.eot_id)
    ctx, cont = _lm_eval_encoder(tok)._encode_pair(context, continuation)
    assert (list(req.context), list(req.continuation)) == (ctx, cont)
    stripped = context.rstrip()
    assert tok.decode(list(req.context)) == stripped
    assert tok.decode(list(req.continuation)) == context[len(stripped) :] + continuation
    with_bos = encode_pair(tok, context, continuation, tok.eot_id, prepend_bos=True)
    assert (
        with_bos.context == (tok.eot_id, *req.context) and with_bos.continuation == req.continuation
    )


@needs_r50k
def test_encode_pair_cuts_the_joined_ids_where_lm_eval_does_when_tokens_merge_across_the_boundary():
    """ "Winter is" + "n't": the joined text has " isn" + "'t", so the continuation's ids are the
    joined ids after the context's two ("'t coming"), exactly lm-eval's (and not " is" + "n't")."""
    from gptlab.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    req = encode_pair(tok, "Winter is", "n't coming", tok.eot_id)
    ctx, cont = _lm_eval_encoder(tok)._encode_pair("Winter is", "n't coming")
    assert (list(req.context), list(req.continuation)) == (ctx, cont)
    assert tok.decode(list(req.continuation)) == "'t coming"


@needs_r50k
def test_an_empty_context_starts_with_the_end_of_text_id():
    from gptlab.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    req = encode_pair(tok, "", "Hello world", tok.eot_id)
    assert req.context == (50256,) and list(req.continuation) == tok.encode_ordinary("Hello world")
    assert encode_pair(tok, "", "Hi", tok.eot_id, prepend_bos=True).context == (50256,)


def test_empty_context_without_an_end_of_text_id_and_empty_continuations_are_refused():
    from gptlab.tokenizer.char import CharTokenizer

    tok = CharTokenizer.from_corpus("abc ")
    assert encode_pair(tok, "ab ", "c", tok.eot_id) == Request((1, 2), (0, 3))
    with pytest.raises(TaskError, match="empty context") as caught:
        encode_pair(tok, "", "abc", tok.eot_id)
    assert "\n" not in str(caught.value)
    with pytest.raises(TaskError, match="encodes to no tokens"):
        encode_pair(tok, "abc", "", tok.eot_id)


# -- the scoring rules, on Score objects built by hand -----------------------------------


def llm_c_choice(scores: list[Score]) -> tuple[int, int]:
    """llm.c's hellaswag.py: argmin of the summed loss, argmin of the mean loss per token."""
    sum_loss = torch.tensor([-s.logprob for s in scores])
    avg_loss = torch.tensor([-s.logprob / s.n_tokens for s in scores])
    return int(sum_loss.argmin()), int(avg_loss.argmin())


def mc_item(gold: int, choices: list[str]) -> Item:
    return Item(0, ("ctx",), tuple(" " + c for c in choices), gold, tuple(choices))


def S(logprob: float, n: int) -> Score:
    return Score(logprob, False, n, False)


def test_sum_and_mean_disagree_when_the_shorter_ending_wins_on_the_sum():
    """A short ending (1 token, -2.0) beats a long one (4 tokens, -3.2) on the sum; the long one
    (mean -0.8) wins per token. (The other way round cannot happen: log-probabilities are <= 0,
    so an ending with a higher sum and more tokens always has the higher mean too.)"""
    scores = [S(-2.0, 1), S(-3.2, 4), S(-9.0, 3)]
    assert llm_c_choice(scores) == (0, 1)
    assert judge(mc_item(0, ["ab", "cdefgh", "ijk"]), scores, "multiple_choice") == {
        "nats": 2.0,
        "bytes": 3.0,  # " ab"
        "acc": 1.0,
        "acc_norm": 0.0,
        "acc_char": 0.0,  # per character: -1.0, -0.533.., -3.0: choice 1
    }
    out = judge(mc_item(1, ["ab", "cdefgh", "ijk"]), scores, "multiple_choice")
    assert (out["acc"], out["acc_norm"], out["acc_char"], out["nats"]) == (0.0, 1.0, 1.0, 3.2)


def test_acc_char_divides_by_the_characters_of_the_choice_not_its_tokens():
    scores = [S(-3.0, 3), S(-4.0, 1)]  # per token -1.0 vs -4.0; per character -1.5 vs -0.5
    out = judge(mc_item(1, ["ab", "abcdefgh"]), scores, "multiple_choice")
    assert (out["acc"], out["acc_norm"], out["acc_char"]) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("gold", [0, 1, 2])
def test_ties_go_to_the_first_choice_as_llm_c_argmin_does(gold):
    scores = [S(-5.0, 2), S(-5.0, 2), S(-7.0, 2)]
    assert llm_c_choice(scores) == (0, 0)
    out = judge(mc_item(gold, ["aa", "bb", "cc"]), scores, "multiple_choice")
    assert out["acc"] == out["acc_norm"] == out["acc_char"] == float(gold == 0)
    later = [S(-9.0, 2), S(-5.0, 2), S(-5.0, 2)]  # a tie after the first index: the earlier wins
    out = judge(mc_item(1, ["aa", "bb", "cc"]), later, "multiple_choice")
    assert out["acc"] == out["acc_norm"] == 1.0


def test_schema_and_language_modeling_items():
    schema = Item(0, ("The trophy", "The suitcase"), (" was too big.",), 1, ("was too big.",))
    out = judge(schema, [S(-6.0, 4), S(-4.0, 4)], "schema")
    assert out == {"nats": 4.0, "bytes": 13.0, "acc": 1.0, "acc_norm": 1.0, "acc_char": 1.0}
    lm = Item(0, ("The cat sat on the",), (" mat",), 0, ("mat",))
    assert judge(lm, [Score(-1.5, True, 1, False)], "language_modeling") == {
        "nats": 1.5,
        "bytes": 4.0,
        "acc": 1.0,
    }
    assert judge(lm, [Score(-0.1, False, 1, False)], "language_modeling")["acc"] == 0.0


# -- end to end: the shipped hellaswag task on a real tiny model vs llm.c's brute force ----

HELLASWAG_ITEMS = [
    {
        "ctx": "A man is sitting on a roof. He",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        "label": 3,
    },
    {
        "ctx": "A woman is outside with a bucket and a dog. The dog is running around trying to avoid a bath. She",
        "endings": [
            "rinses the bucket off with soap and blow dry the dog's head.",
            "uses a hose to keep it from getting soapy.",
            "gets the dog wet, then it runs away again.",
            "gets into a bath tub with the dog.",
        ],
        "label": 2,
    },
    {
        "ctx": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles. Then, the man",
        "endings": ["continues removing the snow on his car.", "leaves.", "is seen.", "drives."],
        "label": 0,
    },
]


@needs_r50k
def test_hellaswag_end_to_end_matches_llm_c_brute_force(tmp_path: Path):
    from gptlab.tokenizer import GPT2Tokenizer

    data = tmp_path / "hellaswag_val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG_ITEMS))
    tok = GPT2Tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # sharper than N(0, 0.02) logits, so the choices differ clearly
        model.lm_head.weight.mul_(20)

    results = evaluate_tasks(model, tok, ["hellaswag"], batch_size=5, path=str(data))
    r = results["tasks"]["hellaswag"]
    task = load_task("hellaswag", path=str(data))
    scores = Scorer(model, batch_size=3).score(
        [q for qs in task_requests(task, task.items, tok) for q in qs]
    )

    acc, acc_norm, nats = [], [], []
    for n, item in enumerate(HELLASWAG_ITEMS):
        ctx_tokens = tok.encode_ordinary(item["ctx"])  # llm.c: the context, then " " + ending
        sum_loss, avg_loss = [], []
        for j, ending in enumerate(item["endings"]):
            end_tokens = tok.encode_ordinary(" " + ending)
            logprob, _ = brute_force(model, tuple(ctx_tokens), tuple(end_tokens))
            assert scores[4 * n + j].logprob == pytest.approx(logprob, abs=1e-4)
            sum_loss.append(-logprob)
            avg_loss.append(-logprob / len(end_tokens))
        margins = (
            sorted(avg_loss)[1] - sorted(avg_loss)[0],
            sorted(sum_loss)[1] - sorted(sum_loss)[0],
        )
        assert min(margins) > 1e-3  # far from a tie: the comparison below means something
        acc.append(float(int(torch.tensor(sum_loss).argmin()) == item["label"]))
        acc_norm.append(float(int(torch.tensor(avg_loss).argmin()) == item["label"]))
        nats.append(sum_loss[item["label"]])
    assert r["items"]["acc"] == acc and r["items"]["acc_norm"] == acc_norm
    assert r["items"]["nats"] == pytest.approx(nats, abs=1e-4)
    assert r["metrics"]["acc"] == pytest.approx(sum(acc) / 3)
    assert r["metrics"]["acc_norm"] == pytest.approx(sum(acc_norm) / 3)
    assert r["n"] == 3 and r["requests"] == 12 and r["truncated"] == 0


def test_items_whose_answer_exceeds_the_context_are_passed_over_or_refused(tmp_path):
    """The one too-long policy of the command and the callback: skip keeps `limit` items."""
    from gptlab.evaluation.evaluator import select_scorable
    from gptlab.tokenizer.char import CharTokenizer

    rows = [
        {"query": "a", "choices": ["b", "a" * 20], "gold": 0},  # 21 chars > block 16
        {"query": "a", "choices": ["b", "a"], "gold": 1},
        {"query": "b", "choices": ["a", "b"], "gold": 0},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(
        {"name": "t", "kind": "multiple_choice", "context": "{query}", "path": str(path)}
    )
    tokenizer = CharTokenizer("ab ")
    (kept,), skipped = select_scorable([task], tokenizer, limit=2, block_size=16)
    assert [it.index for it in kept.items] == [1, 2] and skipped == {"t": [0]}
    with pytest.raises(TaskError, match="item 0 of task t has an answer longer"):
        select_scorable([task], tokenizer, limit=2, block_size=16, too_long="error")
    with pytest.raises(TaskError, match="too_long='drop'"):
        select_scorable([task], tokenizer, limit=2, block_size=16, too_long="drop")
