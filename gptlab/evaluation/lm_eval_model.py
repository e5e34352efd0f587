"""lm-evaluation-harness on any gptlab model: the ``gptlab`` model type of ``lm_eval``.

Importing this module registers ``GptlabLM`` under the name ``gptlab`` in lm_eval's
model registry, so every lm-eval task runs on a gptlab checkpoint:

    python -m gptlab.lm_eval --model gptlab --model_args ckpt=<run>/checkpoints/last.ckpt \\
        --tasks hellaswag,lambada_openai --batch_size 32

    import lm_eval, gptlab.evaluation.lm_eval_model  # the import registers "gptlab"
    lm_eval.simple_evaluate(model="gptlab", model_args="ckpt=<export folder>", tasks=["piqa"])

``model_args``: ``ckpt=`` anything ``gptlab.checkpoint.load_model`` reads (a ``.ckpt``, a
``python -m gptlab.export`` folder, a Hugging Face GPT-2 folder), ``kind=`` to insist on
one of ``ckpt``/``export``/``hf``, ``device=`` (``auto``, ``cpu``, ``cuda:N``, ``mps``),
``dtype=`` (``float32``, ``bfloat16``, ``float16``; default as stored), ``batch_size=``
(continuations scored per batch; on the lm-eval command line give ``--batch_size``,
because lm-eval always passes its own) and ``max_gen_toks=`` (default 256, lm-eval's).

The three request types reuse gptlab's own machinery, so a score here is the score
gptlab's evaluator gives:

- ``loglikelihood``: ``encode_pair`` (lm-eval's rule: trailing spaces of the context move
  to the continuation, the pair is encoded whole; an empty context starts from the
  end-of-text token) and ``Scorer.score`` (each shared context run once through the KV
  cache, left truncation to ``block_size + 1`` tokens as lm-eval does).
- ``loglikelihood_rolling``: the text's tokens cut into lm-eval's disjoint windows of
  ``block_size`` (``lm_eval.utils.get_rolling_token_windows`` with ``context_len=1``), the
  first token predicted from the end-of-text token, every token scored exactly once.
- ``generate_until``: ``gptlab.sampling.generate`` with a ``SamplerConfig`` built from the
  request's ``gen_kwargs`` (greedy unless ``do_sample``/``temperature`` say otherwise;
  ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty`` and ``seed`` are honoured), stopped
  at end-of-text or an ``until`` string, which is cut off; the prompt keeps its last
  ``block_size - max_gen_toks`` tokens, as lm-eval's HF model does.

Text goes through the checkpoint's own tokenizer. ``encode_ordinary`` is used for scored
text (a literal ``<|endoftext|>`` in a document is text, as in gptlab's evaluator) and
``encode`` for prompts to generate from (as ``python -m gptlab.generate`` does). Any
architecture gptlab builds works (learned or rotary positions, LayerNorm or RMSNorm,
GELU or SwiGLU, MHA/GQA/MQA): only the model's forward and KV cache are used. One process
only: lm-eval's data-parallel launch (accelerate) is not supported.

``import gptlab`` never imports lm_eval; this module does, and says in one sentence how to
install it when it is missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import torch

from gptlab.errors import ConfigError, GptlabError
from gptlab.utils.progress import progress_bar


class LmEvalNotInstalled(GptlabError, ImportError):
    """lm-evaluation-harness is not installed; the message says how to install it."""


try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ModuleNotFoundError as e:  # only lm_eval itself missing; a broken dependency keeps its error
    if not (e.name or "").startswith("lm_eval"):
        raise
    raise LmEvalNotInstalled(
        'the lm-evaluation-harness adapter needs the lm_eval package, which is not installed; run pip install "gptlab[eval]"'
    ) from None

import lm_eval.models  # noqa: E402,F401  (lm-eval's own model names, before "gptlab" joins them)

from gptlab.evaluation.scorer import Request, Scorer, encode_pair  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for its HF model
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# gen_kwargs lm-eval tasks pass that map onto SamplerConfig fields of the same name.
SAMPLER_KWARGS = ("top_k", "top_p", "min_p", "repetition_penalty", "seed")
MAX_TOKEN_ALIASES = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")


@register_model("gptlab")
class GptlabLM(LM):
    """A gptlab model as an lm-eval ``LM``: built from ``model_args`` or from loaded objects.

    ``GptlabLM(ckpt=path)`` loads a checkpoint; ``GptlabLM(model=gpt, tokenizer=tok)``
    wraps a model already in memory (e.g. during training), without touching the disk;
    that model is moved to ``device`` (and ``dtype``) and put in eval mode in place.
    """

    def __init__(
        self,
        ckpt: str | None = None,
        kind: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str | None = None,
        max_gen_toks: int | str | None = None,
        max_batch_size: int | str | None = None,  # lm-eval passes it; there is no auto batch size
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ConfigError(
                f"unknown gptlab model_args {', '.join(sorted(unknown))}; the gptlab model takes "
                "ckpt, kind, device, dtype, batch_size and max_gen_toks"
            )
        from gptlab.utils.device import pick_device

        self._device = pick_device(device)
        if model is None:
            if not ckpt:
                raise ConfigError(
                    "the gptlab model needs a checkpoint; give --model_args ckpt=<a .ckpt file, "
                    "an export folder or a Hugging Face GPT-2 folder>"
                )
            from gptlab.checkpoint import load_model

            loaded = load_model(str(ckpt), map_location=self._device, kind=kind or None)
            model, tokenizer = loaded.model, loaded.tokenizer
            self._info: dict[str, Any] = {
                "gptlab_source": str(loaded.path),
                "gptlab_kind": loaded.kind,
            }
        else:
            if tokenizer is None:
                raise ConfigError("GptlabLM(model=...) needs tokenizer= too, to turn text into ids")
            model = model.to(self._device)
            self._info = {"gptlab_source": "in memory", "gptlab_kind": type(model).__name__}
        if dtype:
            if str(dtype) not in DTYPES:
                raise ConfigError(
                    f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}"
                )
            model = model.to(DTYPES[str(dtype)])
        net: Any = model.eval()  # a gptlab GPT (or anything with its forward, config and cache)
        self.model = net
        self.tokenizer = tokenizer
        self._batch_size = _positive_int(batch_size, "batch_size", DEFAULT_BATCH_SIZE, auto=True)
        self._max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks", DEFAULT_MAX_GEN_TOKS)
        self.block_size = int(net.config.block_size)
        eot = getattr(tokenizer, "eot_id", None)
        self.eot_id: int | None = None if eot is None else int(eot)
        from gptlab.sampling import start_token_id

        # What predicts a text's first token: end-of-text, else "\n" or id 0 (char vocabularies).
        self.rolling_prefix = start_token_id(tokenizer, self.eot_id)

    # -- what lm-eval reads ------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int | None:
        return self.eot_id

    @property
    def max_length(self) -> int:
        return self.block_size

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "kind", type(self.tokenizer).__name__))

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results' ``config``."""
        params = getattr(self.model, "num_parameters", None)
        return {
            **self._info,
            "model_num_parameters": params() if callable(params) else None,
            "model_dtype": str(next(self.model.parameters()).dtype),
            "gptlab_model_config": self.model.config.to_dict()
            if hasattr(self.model.config, "to_dict")
            else {},
        }

    def _scorer(self, disable_tqdm: bool) -> Scorer:
        return Scorer(
            self.model,
            batch_size=self._batch_size,
            device=self._device,
            progress=not disable_tqdm and self.rank == 0,
        )

    # -- log-likelihoods ---------------------------------------------------------------------
    def loglikelihood(
        self, requests: Sequence[Any], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), greedy)`` per request, in request order."""
        pairs = [tuple(r.args) for r in requests]
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        todo: list[int] = []
        encoded: list[Request] = []
        for i, (context, continuation) in enumerate(pairs):
            if not continuation and context == context.rstrip():
                results[i] = (0.0, True)  # nothing to score: log p = 0, and greedy trivially
                continue
            encoded.append(encode_pair(self.tokenizer, context, continuation, self.eot_id))
            todo.append(i)
        for i, score in zip(todo, self._scorer(disable_tqdm).score(encoded)):
            results[i] = (score.logprob, score.greedy)
        for args, result in zip(pairs, results):
            self.cache_hook.add_partial("loglikelihood", args, result)
        return [r for r in results if r is not None]

    def loglikelihood_rolling(
        self, requests: Sequence[Any], disable_tqdm: bool = False
    ) -> list[float]:
        """log p(text) per request: every token scored once, in disjoint ``block_size`` windows."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        texts = [r.args[0] for r in requests]
        windows: list[Request] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            ids = list(self.tokenizer.encode_ordinary(text)) if text else []
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=ids,
                    prefix_token=self.rolling_prefix,
                    max_seq_len=self.block_size,
                    context_len=1,
                ),
            ):
                windows.append(Request(tuple(context), tuple(continuation)))
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, score in zip(owner, self._scorer(disable_tqdm).score(windows)):
            totals[i] += score.logprob
        for text, total in zip(texts, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    # -- generation --------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Each context's continuation, cut before the first ``until`` string."""
        from gptlab.sampling import completion_text, generate

        args = [tuple(r.args) for r in requests]
        groups: dict[str, list[int]] = {}
        settings: dict[str, tuple[Any, list[str]]] = {}
        for i, (_, gen_kwargs) in enumerate(args):
            sampler, until = sampler_from_gen_kwargs(gen_kwargs, self._max_gen_toks)
            key = json.dumps(sampler.to_dict(), sort_keys=True)
            settings[key] = (sampler, until)
            groups.setdefault(key, []).append(i)
        out: list[str | None] = [None] * len(args)
        bar = progress_bar(len(args), "generating", "req", not disable_tqdm and self.rank == 0)
        for key, indices in groups.items():
            sampler, until = settings[key]
            prompts = {i: self._prompt_ids(args[i][0], sampler.max_new_tokens) for i in indices}
            indices = sorted(
                indices, key=lambda i: -len(prompts[i])
            )  # similar lengths share a batch
            for start in range(0, len(indices), self._batch_size):
                chunk = indices[start : start + self._batch_size]
                new = generate(
                    self.model,
                    [prompts[i] for i in chunk],
                    sampler,
                    tokenizer=self.tokenizer,
                    eot_id=self.eot_id,
                )
                for i, ids in zip(chunk, new):
                    out[i] = completion_text(self.tokenizer, list(ids), until)
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
        for (context, gen_kwargs), text in zip(args, out):
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return [t if t is not None else "" for t in out]

    def _prompt_ids(self, context: str, max_new_tokens: int) -> list[int]:
        """The prompt's ids, keeping its last ``block_size - max_new_tokens`` (lm-eval's rule).

        When the new tokens alone fill the context, the prompt keeps ``block_size - 1``
        tokens and generation slides its window (lm-eval's HF model refuses instead).
        """
        from gptlab.sampling import encode_prompt

        ids = encode_prompt(self.tokenizer, context)
        room = self.block_size - max_new_tokens
        keep = room if room >= 1 else self.block_size - 1
        return ids[-keep:] if len(ids) > keep else ids


def sampler_from_gen_kwargs(gen_kwargs: Any, default_max_gen_toks: int = DEFAULT_MAX_GEN_TOKS):
    """The ``SamplerConfig`` and stop strings for one lm-eval ``gen_kwargs`` dict.

    lm-eval's rules: greedy unless ``do_sample`` is true or a positive ``temperature`` is
    given without ``do_sample``; ``do_sample=False`` is greedy whatever the temperature;
    ``do_sample=True`` without a temperature samples at 1.0 (Hugging Face's default). The
    token limit is the first of ``max_gen_toks``, ``max_new_tokens``, ``max_tokens``,
    ``max_completion_tokens`` given. Keys gptlab cannot honour (beam search, ...) are
    named in a warning and ignored.
    """
    from gptlab.sampling import SamplerConfig

    if gen_kwargs is None:
        gen_kwargs = {}
    if not isinstance(gen_kwargs, dict):
        raise ConfigError(
            f"generation settings must be a dict of gen_kwargs, got {type(gen_kwargs).__name__}; "
            "check the task's generation_kwargs"
        )
    kwargs = dict(gen_kwargs)
    until = kwargs.pop("until", None)
    until = [until] if isinstance(until, str) else list(until or [])
    until = [str(s) for s in until if s]
    limits = [kwargs.pop(k, None) for k in MAX_TOKEN_ALIASES]
    max_new = next((v for v in limits if v is not None), default_max_gen_toks)
    do_sample = _flag(kwargs.pop("do_sample", None))
    temperature = kwargs.pop("temperature", None)
    temperature = None if temperature is None else float(temperature)
    if do_sample is False:
        temperature = 0.0
    elif do_sample is True and temperature is None:
        temperature = 1.0
    sampler_kwargs = {k: kwargs.pop(k) for k in SAMPLER_KWARGS if kwargs.get(k) is not None}
    if "top_k" in sampler_kwargs:
        sampler_kwargs["top_k"] = int(sampler_kwargs["top_k"])
        if sampler_kwargs["top_k"] <= 0:  # Hugging Face's "off"
            del sampler_kwargs["top_k"]
    for k in ("top_p", "min_p", "repetition_penalty"):
        if k in sampler_kwargs:
            sampler_kwargs[k] = float(sampler_kwargs[k])
    if sampler_kwargs.get("min_p") == 0.0:
        del sampler_kwargs["min_p"]
    if "seed" in sampler_kwargs:
        sampler_kwargs["seed"] = int(sampler_kwargs["seed"])
    ignored = sorted(k for k, v in kwargs.items() if v is not None)
    if ignored:
        log.warning("gptlab ignores the generation settings %s", ", ".join(ignored))
    try:
        sampler = SamplerConfig(
            temperature=temperature or 0.0,
            stop=until,
            stop_at_eot=True,
            max_new_tokens=_positive_int(max_new, "max_gen_toks", default_max_gen_toks),
            **sampler_kwargs,
        )
    except ValueError as e:
        if isinstance(e, GptlabError):
            raise
        raise ConfigError(f"{e}; check the task's generation_kwargs or --gen_kwargs") from None
    return sampler, until


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"do_sample={value!r} is not true or false; give do_sample=true or false")


def _positive_int(value: Any, name: str, default: int, auto: bool = False) -> int:
    """``value`` as an integer >= 1; ``None`` (and ``auto``/``auto:N`` if allowed) is ``default``."""
    if value is None or (auto and str(value).startswith("auto")):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(value).strip():
        raise ConfigError(f"{name}={value!r} must be a positive integer")
    return number


__all__ = ["GptlabLM", "LmEvalNotInstalled", "sampler_from_gen_kwargs"]
