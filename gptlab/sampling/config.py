"""``SamplerConfig``: every knob of text generation in one validated dataclass.

The YAML files in ``gptlab/conf/sampler/`` build it with ``_target_: gptlab.sampling.SamplerConfig``,
so training (the end-of-run sample) and ``python -m gptlab.generate`` share the same
presets. Values are checked when the object is made, so a bad command-line override
fails at once with a sentence naming the option, not deep inside a softmax.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The smallest temperature above 0. Logits divided by it stay finite in float32 (|logit| / 1e-6
# is far below 3.4e38); below it a temperature is, in effect, greedy decoding, which is spelled 0.
MIN_TEMPERATURE = 1e-6


@dataclass
class SamplerConfig:
    """How to pick each next token. The defaults sample from the model's distribution.

    Filters apply in this order (see ``gptlab.sampling.filters``): penalties ->
    temperature -> top-k -> top-p -> min-p. ``temperature=0`` is greedy decoding and
    makes the other filters irrelevant.

    Attributes:
        temperature: 0 (argmax) or >= ``MIN_TEMPERATURE``; below 1 sharpens, above 1 flattens.
        top_k: keep the k most likely tokens (None = off).
        top_p: nucleus sampling, keep the smallest set with mass >= top_p, in (0, 1].
        min_p: keep tokens with p >= min_p * p_max, in [0, 1].
        repetition_penalty: > 0, CTRL-style, 1.0 = off; counts generated tokens only.
        presence_penalty: subtracted once from every token already generated.
        frequency_penalty: subtracted once per earlier occurrence of the token.
        penalty_window: the penalties look at the last N generated tokens (None = all).
        stop: strings that end a sample; the text is cut before the first one.
        stop_at_eot: end a sample when the end-of-text token is drawn (it is not output).
        max_new_tokens: at most this many new tokens per sample, >= 1.
        seed: seeds a private ``torch.Generator``, so a run is reproducible without
            touching the global RNG (None = fresh randomness from the global RNG).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_window: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_at_eot: bool = True
    max_new_tokens: int = 200
    seed: int | None = None

    def __post_init__(self) -> None:
        # Hydra passes ListConfig / tuples; a bare string is one stop string, not chars.
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [str(s) for s in (self.stop or [])]
        _check(
            _is_number(self.temperature) and self.temperature >= 0,
            "temperature",
            self.temperature,
            "must be >= 0 (0 means greedy decoding)",
        )
        _check(
            self.temperature == 0 or self.temperature >= MIN_TEMPERATURE,
            "temperature",
            self.temperature,
            f"must be 0 (greedy decoding) or at least {MIN_TEMPERATURE:g}: dividing the logits by a smaller "
            "value overflows them to infinity",
        )
        _check(
            self.top_k is None or (_is_int(self.top_k) and self.top_k >= 1),
            "top_k",
            self.top_k,
            "must be an integer >= 1, or null to switch it off",
        )
        _check(
            self.top_p is None or (_is_number(self.top_p) and 0 < self.top_p <= 1),
            "top_p",
            self.top_p,
            "must be in (0, 1], or null to switch it off",
        )
        _check(
            self.min_p is None or (_is_number(self.min_p) and 0 <= self.min_p <= 1),
            "min_p",
            self.min_p,
            "must be in [0, 1], or null to switch it off",
        )
        _check(
            _is_number(self.repetition_penalty) and self.repetition_penalty > 0,
            "repetition_penalty",
            self.repetition_penalty,
            "must be > 0 (1.0 switches it off)",
        )
        _check(
            _is_number(self.presence_penalty),
            "presence_penalty",
            self.presence_penalty,
            "must be a number (0.0 switches it off)",
        )
        _check(
            _is_number(self.frequency_penalty),
            "frequency_penalty",
            self.frequency_penalty,
            "must be a number (0.0 switches it off)",
        )
        _check(
            self.penalty_window is None
            or (_is_int(self.penalty_window) and self.penalty_window >= 1),
            "penalty_window",
            self.penalty_window,
            "must be an integer >= 1, or null for all generated tokens",
        )
        _check(
            _is_int(self.max_new_tokens) and self.max_new_tokens >= 1,
            "max_new_tokens",
            self.max_new_tokens,
            "must be an integer >= 1",
        )
        _check(
            self.seed is None or _is_int(self.seed), "seed", self.seed, "must be an integer or null"
        )
        _check(all(self.stop), "stop", self.stop, "must not contain empty strings")

    @property
    def greedy(self) -> bool:
        """True when every step takes the argmax, so no randomness is involved."""
        return self.temperature == 0 or self.top_k == 1

    @property
    def uses_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )

    def replace(self, **changes: Any) -> SamplerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, e.g. for the ``settings`` of a samples.jsonl record."""
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SamplerConfig:
        """Build from a dict or DictConfig (a ``_target_`` key is ignored).

        Unknown keys raise ``ValueError`` listing the valid ones, so a typo such as
        ``sampler.topk=5`` is caught instead of silently ignored.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {str(k): v for k, v in dict(data).items() if k != "_target_"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"unknown sampler option(s) {unknown}; valid options are {sorted(names)}"
            )
        if "stop" in values and values["stop"] is not None and not isinstance(values["stop"], str):
            values["stop"] = list(values["stop"])
        return cls(**values)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ValueError(f"sampler option {name}={value!r} is invalid: it {rule}")
