"""From log-likelihoods to a benchmark's numbers: which choice wins, accuracy, its error bar.

A multiple-choice item is answered by the choice with the highest score, under three
rules people publish (ties go to the first choice, as ``argmax`` does in llm.c and
lm-evaluation-harness):

    acc        summed log-likelihood of the choice's tokens
    acc_norm   mean log-likelihood per token (llm.c's HellaSwag "acc_norm", nanochat's CORE)
    acc_char   summed log-likelihood / characters of the choice (lm-evaluation-harness's
               "acc_norm")

Schema items compare contexts before one shared continuation, so the three agree.
Language-modelling items are right when greedy decoding reproduces the gold
continuation exactly (``acc``). Every task also reports ``bpb``, the bits per UTF-8 byte
of the gold continuation (OLMo's small-compute metric: smooth where accuracy sits at
chance). A proportion ``p`` over ``n`` items has the binomial standard error
``sqrt(p (1 - p) / n)``; a task's ``centered`` score is ``(p - baseline) / (1 - baseline)``
(DCLM's CORE centring: 0 at chance, 1 at perfect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gptlab.evaluation.scorer import Score
from gptlab.evaluation.tasks import Item

RULES = ("acc", "acc_norm", "acc_char")


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def judge(item: Item, scores: Sequence[Score], kind: str) -> dict[str, float]:
    """Per-item outcome: 1/0 per rule (``acc`` only for language modelling) and gold ``nats``/``bytes``."""
    gold_text = (
        item.continuations[0] if kind != "multiple_choice" else item.continuations[item.gold]
    )
    gold_score = scores[0] if kind == "language_modeling" else scores[item.gold]
    out: dict[str, float] = {
        "nats": -gold_score.logprob,
        "bytes": float(len(gold_text.encode("utf-8"))),
    }
    if kind == "language_modeling":
        out["acc"] = float(scores[0].greedy)
        return out
    ll = [s.logprob for s in scores]
    per_token = [s.logprob / s.n_tokens for s in scores]
    if kind == "multiple_choice":
        per_char = [s.logprob / max(1, len(t)) for s, t in zip(scores, item.choice_texts)]
    else:
        per_char = ll
    for rule, values in zip(RULES, (ll, per_token, per_char)):
        out[rule] = float(_argmax(values) == item.gold)
    return out


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n else float("nan")


def summarize(outcomes: Sequence[dict[str, float]], random_baseline: float, primary: str) -> dict:
    """Accuracy per rule with its standard error, bits per byte, and the centred primary score."""
    n = len(outcomes)
    metrics: dict[str, float] = {}
    for rule in RULES:
        if outcomes and rule in outcomes[0]:
            p = sum(o[rule] for o in outcomes) / n
            metrics[rule] = p
            metrics[f"{rule}_se"] = binomial_se(p, n)
    total_bytes = sum(o["bytes"] for o in outcomes)
    metrics["bpb"] = (
        sum(o["nats"] for o in outcomes) / math.log(2) / total_bytes
        if total_bytes
        else float("nan")
    )
    primary = primary if primary in metrics else "acc"
    centered = (metrics[primary] - random_baseline) / (1.0 - random_baseline)
    return {
        "n": n,
        "primary": primary,
        "metrics": metrics,
        "random_baseline": random_baseline,
        "centered": centered,
        "centered_se": metrics[f"{primary}_se"] / (1.0 - random_baseline),
    }
