"""Text generation: logit filters, ``SamplerConfig``, ``generate`` and ``stream`` with a KV cache.

    from gptlab.sampling import SamplerConfig, generate, generate_text, stream

    ids = generate(model, [prompt_ids], SamplerConfig(temperature=0.8, top_p=0.95))
    for step in stream(model, [prompt_ids], SamplerConfig(max_new_tokens=20)):
        print(step[0])  # the new id of prompt 0, or None once it has finished
    text = generate_text(model, tokenizer, "ROMEO:", SamplerConfig(max_new_tokens=100))

- ``filters``: pure functions on logits (B, V) and the order they compose in;
- ``config``: ``SamplerConfig``, validated, built from ``gptlab/conf/sampler/*.yaml``;
- ``generate``: batching with left padding, KV-cache decoding, the sliding window;
  ``generate`` returns lists, ``stream`` yields each step;
- ``layout``: ``to_decode_layout``, column-major weights for fast CPU decoding;
- ``text``: prompts, stop strings and streaming decode for text.
"""

from gptlab.sampling.config import SamplerConfig
from gptlab.sampling.filters import (
    apply_penalties,
    apply_temperature,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)
from gptlab.sampling.generate import (
    Step,
    filter_logits,
    generate,
    sample_next,
    start_token_id,
    stream,
)
from gptlab.sampling.layout import to_decode_layout
from gptlab.sampling.text import TextStream, completion_text, encode_prompt, generate_text

__all__ = [
    "SamplerConfig",
    "Step",
    "TextStream",
    "apply_penalties",
    "apply_temperature",
    "completion_text",
    "encode_prompt",
    "filter_logits",
    "generate",
    "generate_text",
    "min_p_filter",
    "sample_next",
    "start_token_id",
    "stream",
    "to_decode_layout",
    "top_k_filter",
    "top_p_filter",
]
