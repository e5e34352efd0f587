"""The log-likelihood of a continuation given a context: the one number every benchmark needs.

``Scorer.score`` takes ``(context ids, continuation ids)`` requests and returns, for each,
the summed log-probability of the continuation's tokens, whether greedy decoding would
have produced exactly them, and how many tokens were scored. Three things make it fast
and correct:

- **Shared contexts.** The choices of one multiple-choice item share their context. The
  context is run once with a KV cache, the cache is copied to one row per choice, and
  only the continuations are run on top (positions continuing from each context's
  length). A HellaSwag item costs one context and four endings, not four of each.
- **Length-sorted batches.** Contexts are sorted longest first and batched, so padding
  is small and the first batch shows at once whether memory suffices.
- **Left truncation.** A request longer than the model's ``block_size + 1`` tokens loses
  tokens from the left of its context, as lm-evaluation-harness does; ``truncated``
  counts them.

Contexts are padded on the left and continuations on the right: every context's last
token sits in the batch's last context slot, so one head call per context gives the
prediction of its first continuation token, and between real tokens the distance in
cache slots is their distance in positions (what a sliding window counts). Padded
slots are masked out; positions are passed explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gptlab.evaluation.tasks import TaskError
from gptlab.model.gpt import GPT
from gptlab.utils.progress import progress_bar


@dataclass(frozen=True)
class Request:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of the continuation tokens' log-probabilities (nats)
    greedy: bool  # every continuation token is the argmax of its prediction
    n_tokens: int  # continuation tokens scored
    truncated: bool  # the context was cut on the left to fit the block size


def encode_pair(
    tokenizer, context: str, continuation: str, prefix_id: int | None, prepend_bos: bool = False
) -> Request:
    """Token ids of a (context, continuation) pair as lm-evaluation-harness makes them.

    Trailing spaces of the context move to the continuation, the pair is encoded whole
    and the context's own ids are cut off its front, so the continuation's ids are the
    ones the joined text really has. An empty context (or ``prepend_bos``) starts with
    the end-of-text id, the only "nothing before" a GPT-2-style model knows.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode_ordinary(context + continuation)
    ctx = tokenizer.encode_ordinary(context) if context else []
    cont = whole[len(ctx) :]
    if (prepend_bos or not ctx) and prefix_id is not None:
        ctx = [prefix_id, *ctx]
    if not ctx:
        raise TaskError(
            "a request has an empty context and the tokenizer has no end-of-text token to start it "
            "with; give the task a non-empty context"
        )
    if not cont:
        raise TaskError(
            f"the continuation {continuation!r} encodes to no tokens; check the task's fields"
        )
    return Request(tuple(ctx), tuple(cont))


def _fit(request: Request, block_size: int) -> tuple[Request, bool]:
    """Cut the context from the left so context + continuation is at most ``block_size + 1``."""
    extra = len(request.context) + len(request.continuation) - (block_size + 1)
    if extra <= 0:
        return request, False
    if len(request.continuation) > block_size:
        raise TaskError(
            f"a continuation of {len(request.continuation)} tokens does not fit the model's "
            f"block_size={block_size}; score it with loglikelihood_rolling or a longer-context model"
        )
    return Request(request.context[extra:], request.continuation), True


class Scorer:
    """Scores requests with ``model`` in batches of about ``batch_size`` continuations."""

    def __init__(
        self,
        model: GPT,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.block_size = int(model.config.block_size)
        self.batch_size = max(1, int(batch_size))
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.progress = progress

    def score(self, requests: Sequence[Request]) -> list[Score]:
        fitted = [_fit(r, self.block_size) for r in requests]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (r, _) in enumerate(fitted):
            groups.setdefault(r.context, []).append(i)
        order = sorted(
            groups,
            key=lambda c: -(len(c) + max(len(fitted[i][0].continuation) for i in groups[c])),
        )
        results: list[Score | None] = [None] * len(requests)
        bar = progress_bar(len(requests), "scoring", "req", self.progress)
        batch: list[tuple[int, ...]] = []
        rows = 0
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for context in order:
                    batch.append(context)
                    rows += len(groups[context])
                    if rows >= self.batch_size:
                        self._run(batch, groups, fitted, results, bar)
                        batch, rows = [], 0
                if batch:
                    self._run(batch, groups, fitted, results, bar)
        finally:
            self.model.train(was_training)
            if bar is not None:
                bar.close()
        return [r for r in results if r is not None]

    def _run(self, contexts, groups, fitted, results, bar) -> None:
        """Score every continuation of ``contexts``: one context pass, one continuation pass."""
        dev = self.device
        lengths = [len(c) for c in contexts]
        L = max(lengths)
        longest_cont = max(len(fitted[i][0].continuation) for c in contexts for i in groups[c])
        if len(contexts) > 1 and L + longest_cont - 1 > self.block_size:
            half = (
                len(contexts) // 2
            )  # each request fits alone; their longest parts together may not
            self._run(contexts[:half], groups, fitted, results, bar)
            self._run(contexts[half:], groups, fitted, results, bar)
            return
        ctx_ids = torch.zeros(len(contexts), L, dtype=torch.long)
        ctx_mask = torch.zeros(len(contexts), L, dtype=torch.bool)
        for b, c in enumerate(contexts):  # left padding: every context ends in the last slot
            ctx_ids[b, L - len(c) :] = torch.tensor(c)
            ctx_mask[b, L - len(c) :] = True
        row_ctx = [b for b, c in enumerate(contexts) for _ in groups[c]]
        row_req = [i for c in contexts for i in groups[c]]
        conts = [fitted[i][0].continuation for i in row_req]
        K = max(len(c) for c in conts) - 1  # continuation tokens fed as input
        cache = self.model.new_kv_cache(len(contexts), L + K) if K > 0 else None
        ctx_ids, ctx_mask = ctx_ids.to(dev), ctx_mask.to(dev)
        ctx_pos = (ctx_mask.long().cumsum(-1) - 1).clamp(min=0)
        # Only the last context position's logits are needed (they predict the first
        # continuation token): the head, the costliest layer of a small model with a
        # large vocabulary, runs once per context.
        last = self.model(
            ctx_ids, kv_cache=cache, attention_mask=ctx_mask, position_ids=ctx_pos, last_only=True
        )
        first_logits = last[:, 0][row_ctx]  # (R, V)
        del last

        R = len(row_req)
        targets = torch.zeros(R, K + 1, dtype=torch.long)
        valid = torch.zeros(R, K + 1, dtype=torch.bool)
        for r, c in enumerate(conts):
            targets[r, : len(c)] = torch.tensor(c)
            valid[r, : len(c)] = True
        targets, valid = targets.to(dev), valid.to(dev)
        lp = [_logprob_and_hit(first_logits, targets[:, 0])]
        if cache is not None:
            index = torch.tensor(row_ctx, device=dev)
            rows = cache.select(index)
            positions = torch.tensor([lengths[b] for b in row_ctx], device=dev)[
                :, None
            ] + torch.arange(K, device=dev)
            mask = torch.cat([ctx_mask[index], valid[:, :K]], dim=1)
            more = self.model(
                targets[:, :K], kv_cache=rows, attention_mask=mask, position_ids=positions
            )
            lp.append(_logprob_and_hit(more, targets[:, 1:]))
        token_lp = torch.cat([lp[0][0][:, None], *([lp[1][0]] if K > 0 else [])], dim=1)
        hit = torch.cat([lp[0][1][:, None], *([lp[1][1]] if K > 0 else [])], dim=1)
        logprob = (token_lp * valid).sum(1).tolist()
        greedy = (hit | ~valid).all(1).tolist()
        for r, i in enumerate(row_req):
            results[i] = Score(float(logprob[r]), bool(greedy[r]), len(conts[r]), fitted[i][1])
        if bar is not None:
            bar.update(R)


def _logprob_and_hit(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and argmax == target, without materialising a log-softmax over the vocabulary."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1), logits.argmax(-1) == targets
