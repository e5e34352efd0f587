"""Logit filters: small pure functions from logits (B, V) to logits (B, V).

Each filter returns a new tensor (the input is never modified) in which the tokens it
rules out are set to ``-inf``, so filters compose by plain function application and a
final softmax gives the sampling distribution. ``filter_logits`` applies them in this
order, which is the order most users expect from other libraries:

1. penalties (repetition, presence, frequency) over the tokens counted in ``counts``
   - they change the *model's* preferences, so they come before any reshaping;
2. temperature - scales what is left; ``temperature == 0`` means greedy decoding and
   keeps only the argmax, whatever the later filters say;
3. top-k - keep exactly ``k`` tokens;
4. top-p (nucleus) - keep the smallest set with probability >= ``p`` (after 2 and 3);
5. min-p - keep tokens with probability >= ``min_p`` times the best one's.

Ties are always broken towards the *lower token id*, so every filter is deterministic
and keeps exactly the number of tokens its definition says (a tie at the k-th value of
top-k does not let extra tokens through).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _keep(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Logits where ``keep`` is True, ``-inf`` elsewhere."""
    return logits.masked_fill(~keep, NEG_INF)


def apply_penalties(
    logits: torch.Tensor,
    counts: torch.Tensor,
    repetition_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
) -> torch.Tensor:
    """Discourage tokens that already occur in the penalty window.

    ``counts`` (B, V) holds how often each token occurs in the window (for generation:
    the tokens generated so far). Three classic penalties, each a no-op at its default:

    - ``repetition_penalty`` r (CTRL, Keskar et al. 2019): a seen token's logit is
      divided by r when positive and multiplied by r when negative, so r > 1 always
      makes it less likely, whatever the logit's sign;
    - ``presence_penalty``: subtract a constant from every token seen at least once;
    - ``frequency_penalty``: subtract it once per occurrence (OpenAI's definitions).
    """
    if repetition_penalty == 1.0 and presence_penalty == 0.0 and frequency_penalty == 0.0:
        return logits
    counts = counts.to(device=logits.device)
    seen = counts > 0
    out = logits
    if repetition_penalty != 1.0:
        penalised = torch.where(out > 0, out / repetition_penalty, out * repetition_penalty)
        out = torch.where(seen, penalised, out)
    if presence_penalty != 0.0:
        out = out - presence_penalty * seen.to(out.dtype)
    if frequency_penalty != 0.0:
        out = out - frequency_penalty * counts.to(out.dtype)
    return out


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by the temperature; ``0`` keeps only the argmax (greedy decoding).

    Temperature 0 is the limit T -> 0 of softmax(logits / T): all the mass on the best
    token. Dividing by zero would give NaN/inf, so it is written as a mask instead; with
    several tokens tied for the best, the lowest id wins (as ``torch.argmax`` does).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, best, True)
        return _keep(logits, keep)
    if temperature == 1.0:
        return logits
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` highest logits of each row.

    Ties at the k-th value are broken towards the lower token id: all tokens strictly
    above the k-th value are kept, then only as many of the tied tokens as are needed
    to reach k. (A naive ``logits >= kth_value`` would keep every tied token.) When a
    row has fewer than k finite logits, the extra kept tokens are ``-inf`` and carry no
    probability.
    """
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    above = logits > kth
    tied = logits == kth
    missing = k - above.sum(dim=-1, keepdim=True)
    keep = above | (tied & (tied.cumsum(dim=-1) <= missing))
    return _keep(logits, keep)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability is >= ``p``.

    Tokens are ranked by probability (ties towards the lower id) and a token is kept
    when the mass of the tokens ranked before it is still below ``p``; the best token is
    therefore always kept, even for a tiny ``p``. ``p == 1`` keeps everything (it is
    not computed, so float rounding in the cumulative sum cannot drop the tail).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep_sorted = mass_before < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return _keep(logits, keep)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least ``min_p`` times the best token's.

    Unlike top-p, the cut scales with the model's confidence: a peaked distribution
    keeps few tokens, a flat one many (Nguyen et al. 2024). ``min_p == 0`` keeps all.
    """
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p}")
    if min_p == 0.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)
    keep = probs >= min_p * probs.amax(dim=-1, keepdim=True)
    return _keep(logits, keep)
