"""``generate`` and ``stream``: autoregressive decoding for any gptlab GPT, with a KV cache.

``generate`` returns each prompt's new tokens as lists; ``stream`` yields them step by
step as they are drawn (``python -m gptlab.generate`` prints from it). Both run the same
loop, so ``generate`` is exactly the collected ``stream``.

How a step works
----------------
Prompts of different lengths share one batch by *left* padding: every row ends at the
same column, so the next token of every row is read from the last position. The
attention mask (1 = real token, 0 = padding) keeps padding out of attention, and the
position ids count only real tokens (``cumsum(mask) - 1``), so each row sees exactly
what it would see alone: batched generation equals one-by-one generation.

With ``use_cache=True`` the prompt is run once (the *prefill*) and every later step
feeds one token per row, reusing the keys and values stored in the model's
``KVCache``; without it, every step re-runs the whole window (slow; it exists as the
reference the cache is tested against and as the benchmark's baseline).

Past the context length: the sliding window
-------------------------------------------
GPT-2 has *learned absolute* position embeddings, so cached keys cannot be shifted to
new positions: once a row's window holds ``block_size`` tokens, the only exact option
is to recompute. Each row therefore has a window ``tokens[start:]`` that the model
sees, positions 0, 1, ... from its start. When appending a token would make the
window longer than ``block_size``, the window jumps forward to the row's last
``window_keep`` tokens (default ``block_size // 2``) and the cache is re-filled from
them (one prefill), after which cheap one-token steps resume. The rule depends only on
the row's own length, and the uncached path uses the very same windows, so cached ==
uncached and batched == one-by-one also hold past the context length. The price of a
jump is one prefill every ``block_size - window_keep + 1`` tokens; ``window_keep =
block_size`` reproduces nanoGPT's "crop to the last block_size tokens" semantics
exactly, at the cost of a full recompute every step once the context is full.

Prompts longer than ``block_size - 1`` tokens keep their last ``block_size - 1``
tokens (with a warning) so there is room for at least one new token. An empty prompt
starts from the end-of-text token - the token GPT-2 saw at every document start - or,
for vocabularies without one (the char tokenizer), from ``"\\n"`` when the vocabulary
has it, else from id 0 (``start_token_id``). The start token is not part of the output.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gptlab.model.gpt import GPT
from gptlab.model.kv_cache import KVCache
from gptlab.sampling.config import SamplerConfig
from gptlab.sampling.filters import (
    apply_penalties,
    apply_temperature,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)
from gptlab.tokenizer.base import Tokenizer, TokenizerError

Step = list[int | None]
"""What ``stream`` yields each step: one entry per prompt, the new token
id, or None once that row has finished (drew end-of-text, hit a stop string or its
``max_new_tokens``)."""


def filter_logits(
    logits: torch.Tensor, sampler: SamplerConfig, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply every filter of ``sampler`` in the documented order; returns new logits.

    penalties (needs ``counts``, (B, V) occurrences in the penalty window) ->
    temperature -> top-k -> top-p -> min-p. Sampling from ``softmax`` of the result is
    what ``generate`` does; the statistical test checks exactly that.
    """
    if counts is not None and sampler.uses_penalties:
        logits = apply_penalties(
            logits,
            counts,
            sampler.repetition_penalty,
            sampler.presence_penalty,
            sampler.frequency_penalty,
        )
    logits = apply_temperature(logits, sampler.temperature)
    if sampler.top_k is not None:
        logits = top_k_filter(logits, sampler.top_k)
    if sampler.top_p is not None:
        logits = top_p_filter(logits, sampler.top_p)
    if sampler.min_p is not None:
        logits = min_p_filter(logits, sampler.min_p)
    return logits


def sample_next(
    logits: torch.Tensor,
    sampler: SamplerConfig,
    counts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from logits (B, V); returns (B,) int64 ids.

    Greedy settings skip the softmax and the random draw altogether (and so consume
    no random numbers): temperature 0 is argmax whatever top-k/top-p/min-p say.
    """
    logits = logits.float()
    if sampler.greedy:
        if counts is not None and sampler.uses_penalties:
            logits = apply_penalties(
                logits,
                counts,
                sampler.repetition_penalty,
                sampler.presence_penalty,
                sampler.frequency_penalty,
            )
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits, sampler, counts), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def start_token_id(tokenizer: Tokenizer | None = None, eot_id: int | None = None) -> int:
    """The token an empty prompt starts from: end-of-text, else "\\n", else id 0."""
    if eot_id is not None:
        return int(eot_id)
    if tokenizer is not None:
        if tokenizer.eot_id is not None:
            return int(tokenizer.eot_id)
        try:
            ids = tokenizer.encode("\n")
        except TokenizerError:  # a char vocabulary without newline
            ids = []
        if len(ids) == 1:
            return int(ids[0])
    return 0


LogitsHook = Callable[[torch.Tensor], "torch.Tensor | None"]
"""Called each step with the raw next-token logits (B, V); returns replacements or None."""


def generate(
    model: GPT,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | torch.Tensor,
    sampler: SamplerConfig | None = None,
    *,
    use_cache: bool = True,
    dtype: torch.dtype | None = None,
    eot_id: int | None = None,
    tokenizer: Tokenizer | None = None,
    window_keep: int | None = None,
    generator: torch.Generator | None = None,
    logits_hook: LogitsHook | None = None,
) -> list[list[int]]:
    """Continue each prompt with new tokens; returns the new tokens of each prompt.

    Args:
        model: a gptlab ``GPT``. It is put in eval mode for the call and restored after.
        prompt_ids: a list of prompts (lists of ids, any lengths), a single flat list of
            ids, or a (B, T) / (T,) tensor.
        sampler: the decoding settings (default ``SamplerConfig()``).
        use_cache: decode with the KV cache (fast) or re-run the window every step.
        dtype: run in this dtype (e.g. ``torch.bfloat16`` halves the bytes read per token).
            The model's floating parameters and buffers are cast once, in place, for the
            call, and the original tensors are put back after it (also on an error), so
            the caller's model ends exactly as it was and no copy of the module is made.
            For many calls, cast the model once yourself instead.
        eot_id: the end-of-text id (default: ``tokenizer.eot_id``). With
            ``sampler.stop_at_eot`` a row ends when it draws it; the id is not output.
        tokenizer: needed only for ``sampler.stop`` strings and for the start token of an
            empty prompt. A row whose text contains a stop string ends there; its tokens up
            to and including the one completing the stop string are output (cut the text
            with ``gptlab.sampling.completion_text``).
        window_keep: tokens kept when a window slides past the context (module docstring).
        generator: the random source; default is a ``torch.Generator`` seeded with
            ``sampler.seed``, or the global RNG when the seed is None.
        logits_hook: called each step with the model's raw next-token logits (B, V),
            float32, before any filter; it may return replacement logits (constraints,
            logit bias) or None to keep them (logging, tests).

    Returns:
        ``list[list[int]]``: the new tokens per prompt (without the prompt or the eot).
    """
    steps = _start(
        model,
        prompt_ids,
        sampler,
        use_cache=use_cache,
        dtype=dtype,
        eot_id=eot_id,
        tokenizer=tokenizer,
        window_keep=window_keep,
        generator=generator,
        logits_hook=logits_hook,
    )
    out: list[list[int]] = []
    for step in steps:
        out = out or [[] for _ in step]
        for row, tok in zip(out, step):
            if tok is not None:
                row.append(tok)
    return out


def stream(
    model: GPT,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | torch.Tensor,
    sampler: SamplerConfig | None = None,
    *,
    use_cache: bool = True,
    dtype: torch.dtype | None = None,
    eot_id: int | None = None,
    tokenizer: Tokenizer | None = None,
    window_keep: int | None = None,
    generator: torch.Generator | None = None,
    logits_hook: LogitsHook | None = None,
) -> Iterator[Step]:
    """Like ``generate`` (same arguments), but yield each step as it is drawn.

    Each ``Step`` has one entry per prompt: the new id, or None once that row has
    finished. The arguments are checked at once; the model is set up (eval mode, the
    ``dtype`` cast) when the first step is asked for and restored when the iterator is
    exhausted or closed.
    """
    return _start(
        model,
        prompt_ids,
        sampler,
        use_cache=use_cache,
        dtype=dtype,
        eot_id=eot_id,
        tokenizer=tokenizer,
        window_keep=window_keep,
        generator=generator,
        logits_hook=logits_hook,
    )


def _start(
    model: GPT,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | torch.Tensor,
    sampler: SamplerConfig | None,
    *,
    use_cache: bool,
    dtype: torch.dtype | None,
    eot_id: int | None,
    tokenizer: Tokenizer | None,
    window_keep: int | None,
    generator: torch.Generator | None,
    logits_hook: LogitsHook | None,
) -> Iterator[Step]:
    """Check the arguments and normalise the prompts now; return the (lazy) loop."""
    sampler = sampler if sampler is not None else SamplerConfig()
    if not isinstance(sampler, SamplerConfig):
        raise TypeError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
    if eot_id is None and tokenizer is not None:
        eot_id = tokenizer.eot_id
    if sampler.stop and tokenizer is None:
        raise ValueError("sampler.stop strings need a tokenizer: pass tokenizer= to generate()")
    block_size = model.config.block_size
    keep = block_size // 2 if window_keep is None else int(window_keep)
    if not 1 <= keep <= block_size:
        raise ValueError(
            f"window_keep must be in [1, block_size = {block_size}], got {window_keep}"
        )
    rows = _prepare_prompts(
        prompt_ids, block_size, model.config.vocab_size, start_token_id(tokenizer, eot_id)
    )
    device = next(model.parameters()).device
    if generator is None and sampler.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampler.seed)
    options = _Options(
        sampler=sampler,
        use_cache=use_cache,
        eot_id=eot_id if sampler.stop_at_eot else None,
        tokenizer=tokenizer,
        keep=keep,
        generator=generator,
        device=device,
    )
    return _decode(model, rows, options, dtype, logits_hook)


def _prepare_prompts(
    prompt_ids: Any, block_size: int, vocab_size: int, start_id: int
) -> list[list[int]]:
    """Normalise the prompts to lists of ints, check the ids, crop and fill empty ones."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() not in (1, 2):
            raise ValueError(
                f"prompt_ids must be a 1-D or 2-D tensor, got shape {tuple(prompt_ids.shape)}"
            )
        prompt_ids = prompt_ids.tolist()
    prompt_ids = list(prompt_ids)
    if prompt_ids and all(isinstance(t, int) for t in prompt_ids):
        prompt_ids = [prompt_ids]  # one flat prompt
    if not prompt_ids:
        raise ValueError(
            "no prompts given: pass a list of prompts, e.g. [[id, id, ...]] (use [[]] for one empty prompt)"
        )
    rows: list[list[int]] = []
    for i, p in enumerate(prompt_ids):
        ids = [int(t) for t in p]
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(
                f"prompt {i} has token id(s) {bad[:5]} outside the model's vocabulary [0, {vocab_size})"
            )
        if len(ids) > block_size - 1:
            warnings.warn(
                f"prompt {i} has {len(ids)} tokens but the context holds {block_size}; "
                f"keeping its last {block_size - 1} tokens",
                stacklevel=4,
            )
            ids = ids[-(block_size - 1) :]
        rows.append(ids or [start_id])
    return rows


@dataclass(frozen=True)
class _Options:
    """The settings of one call, fixed for its whole loop (checked by ``stream``)."""

    sampler: SamplerConfig
    use_cache: bool
    eot_id: int | None  # the id that ends a row; None when ``sampler.stop_at_eot`` is off
    tokenizer: Tokenizer | None  # decodes the tail of a row for its stop strings
    keep: int  # tokens a sliding window keeps (``window_keep``)
    generator: torch.Generator | None
    device: torch.device


@torch.inference_mode()
def _decode(
    model: GPT,
    rows: list[list[int]],
    options: _Options,
    dtype: torch.dtype | None,
    logits_hook: LogitsHook | None,
) -> Iterator[Step]:
    """The decoding loop (a generator: ``inference_mode`` wraps each resume only)."""
    was_training = model.training
    model.eval()
    try:
        with _cast(model, dtype):
            yield from _DecodeState.new(model, rows, options).run(logits_hook)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _cast(model: GPT, dtype: torch.dtype | None) -> Iterator[None]:
    """Cast the model's floating parameters and buffers once, put the originals back after.

    What ``model.to(dtype)`` does, without the lossy cast back: the original tensors
    themselves are restored, so the caller's weights are bit-for-bit unchanged.
    """
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    if dtype is None or all(t.dtype == dtype for t in tensors):
        yield
        return
    originals = [t.data for t in tensors]
    try:
        for t in tensors:
            t.data = t.data.to(dtype)  # keeps the memory order (``to_decode_layout``'s too)
        yield
    finally:
        for t, original in zip(tensors, originals):
            t.data = original


@dataclass
class _DecodeState:
    """What one decoding loop keeps between steps: each row's tokens, window and status.

    Row i's model input is its window ``tokens[i][start[i]:]``; a finished row keeps a
    one-token window so it costs nothing in later steps.
    """

    model: GPT
    options: _Options
    tokens: list[list[int]]  # prompt + generated, per row
    n_prompt: list[int]  # prompt length per row: penalties and stop strings look past it
    start: list[int]  # window start per row
    done: list[bool]  # the row drew the eot, hit a stop string (or the loop ended)
    counts: torch.Tensor | None  # (B, V) penalty counts over the generated window
    cache: KVCache | None
    mask: torch.Tensor | None = None  # (B, cache.pos) attention mask while padding is cached
    next_pos: torch.Tensor | None = None  # (B, 1) position id of each row's next token

    @classmethod
    def new(cls, model: GPT, rows: list[list[int]], options: _Options) -> _DecodeState:
        """The state before the prefill: the prompts, nothing generated, an empty cache."""
        counts = cache = None
        if options.sampler.uses_penalties:
            counts = torch.zeros(len(rows), model.config.vocab_size, device=options.device)
        if options.use_cache:  # in the model's dtype: after ``_cast``
            dtype = next(model.parameters()).dtype
            cache = model.new_kv_cache(len(rows), device=options.device, dtype=dtype)
        return cls(
            model=model,
            options=options,
            tokens=[list(r) for r in rows],
            n_prompt=[len(r) for r in rows],
            start=[0] * len(rows),
            done=[False] * len(rows),
            counts=counts,
            cache=cache,
        )

    @property
    def sampler(self) -> SamplerConfig:
        return self.options.sampler

    def run(self, logits_hook: LogitsHook | None = None) -> Iterator[Step]:
        """Prefill, then draw, record and feed back one token per row each step."""
        logits = self._prefill()
        for step in range(self.sampler.max_new_tokens):
            logits = logits.float()
            if logits_hook is not None:
                replaced = logits_hook(logits)
                logits = logits if replaced is None else replaced
            new = sample_next(logits, self.sampler, self.counts, self.options.generator)
            yield self._accept(new.tolist())
            if all(self.done) or step == self.sampler.max_new_tokens - 1:
                return
            logits = self._advance(new)

    def _accept(self, new: list[int]) -> Step:
        """Record the drawn tokens; decide which rows finish; return what is output."""
        out: Step = []
        for i, tok in enumerate(new):
            if self.done[i]:
                out.append(None)
                continue
            self.tokens[i].append(tok)
            if tok == self.options.eot_id:
                self.done[i] = True
                out.append(None)
                continue
            out.append(tok)
            if self.sampler.stop and self._hit_stop(i):
                self.done[i] = True
        if self.counts is not None:
            self._count(self.counts, new)
        for i in range(len(new)):
            if self.done[i]:  # a finished row keeps one token so it costs nothing later
                self.start[i] = len(self.tokens[i]) - 1
        return out

    def _count(self, counts: torch.Tensor, new: list[int]) -> None:
        """Update the penalty counts over the generated window."""
        idx = torch.tensor(new, device=self.options.device).unsqueeze(-1)
        counts.scatter_add_(-1, idx, torch.ones_like(idx, dtype=counts.dtype))
        w = self.sampler.penalty_window
        if w is None:
            return
        for i, toks in enumerate(self.tokens):
            gen = len(toks) - self.n_prompt[i]
            if gen > w:  # the token that just left the window
                counts[i, toks[-w - 1]] -= 1

    def _hit_stop(self, i: int) -> bool:
        """Whether row i's generated text now contains a stop string (decodes its tail only)."""
        tokenizer = self.options.tokenizer
        assert tokenizer is not None  # ``stream`` refuses stop strings without one
        tail_tokens = 4 * max(len(s) for s in self.sampler.stop) + 4  # >= 1 token per char
        generated = self.tokens[i][self.n_prompt[i] :]
        tail = tokenizer.decode(generated[-tail_tokens:])
        return any(s in tail for s in self.sampler.stop)

    def _advance(self, new: torch.Tensor) -> torch.Tensor:
        """Logits for the next step, sliding windows that would outgrow the context."""
        block_size = self.model.config.block_size
        slid = False
        for i, toks in enumerate(self.tokens):
            if len(toks) - self.start[i] > block_size:
                self.start[i] = len(toks) - self.options.keep
                slid = True
        if self.cache is None or slid or self.cache.pos + 1 > block_size:
            return self._prefill()
        ids = new.to(self.options.device).view(-1, 1)
        if self.mask is None:  # no padding: the model's default positions are right
            logits = self._forward(ids, kv_cache=self.cache, last_only=True)
        else:
            assert self.next_pos is not None  # _prefill sets it together with the mask
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.tokens), 1)], dim=1)
            logits = self._forward(
                ids,
                kv_cache=self.cache,
                attention_mask=self.mask,
                position_ids=self.next_pos,
                last_only=True,
            )
            self.next_pos = self.next_pos + 1
        return logits[:, -1]

    def _prefill(self) -> torch.Tensor:
        """Run every row's window at once (left-padded); fills the cache when there is one."""
        device = self.options.device
        windows = [toks[s:] for toks, s in zip(self.tokens, self.start)]
        lengths = [len(w) for w in windows]
        width = max(lengths)
        ids = torch.tensor(
            [[0] * (width - n) + w for w, n in zip(windows, lengths)],
            dtype=torch.long,
            device=device,
        )
        kwargs: dict[str, Any] = {"last_only": True}
        self.mask = self.next_pos = None
        if min(lengths) != width:
            mask = torch.tensor(
                [[0] * (width - n) + [1] * n for n in lengths], dtype=torch.long, device=device
            )
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            self.mask = mask
            self.next_pos = torch.tensor(lengths, device=device).view(-1, 1)
        if self.cache is not None:
            self.cache.reset()
            kwargs["kv_cache"] = self.cache
        return self._forward(ids, **kwargs)[:, -1]

    def _forward(self, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The model's forward, run eagerly even if the model was ``torch.compile``d.

        Every decoding step has a new cache length and every prefill a new width, so a
        compiled model would recompile for many of them (seconds each) before it
        settled; decoding is bound by reading the weights, which compiling does not change.
        """
        set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
        with set_stance("force_eager") if set_stance is not None else contextlib.nullcontext():
            return self.model(ids, **kwargs)
