"""generate(): KV cache vs full forward, batching, sliding window, seeds, stops, bad input."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from gptlab.model import GPT, GPTConfig
from gptlab.sampling import (
    SamplerConfig,
    TextStream,
    completion_text,
    generate,
    generate_text,
    start_token_id,
    stream,
)
from gptlab.tokenizer import CharTokenizer

GREEDY = SamplerConfig(temperature=0.0, stop_at_eot=False, max_new_tokens=12)


def tiny_gpt(block_size: int = 16, vocab_size: int = 37, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(
        vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32, **kw
    )
    model = GPT(cfg).eval()
    with torch.no_grad():  # larger weights than GPT-2 init: peaked, varied logits
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return model


@pytest.fixture(scope="module")
def model() -> GPT:
    return tiny_gpt()


def record_logits(store: list[torch.Tensor]):
    def hook(logits: torch.Tensor) -> None:
        store.append(logits.clone())

    return hook


def reference_greedy(
    model: GPT, prompt: list[int], n: int, keep: int
) -> tuple[list[int], list[torch.Tensor]]:
    """Independent naive decoding: full forward over the documented window every step."""
    bs = model.config.block_size
    tokens, start, out, logits_seen = list(prompt), 0, [], []
    with torch.no_grad():
        for _ in range(n):
            if len(tokens) - start > bs:
                start = len(tokens) - keep
            logits = model(torch.tensor([tokens[start:]]))[0, -1]
            logits_seen.append(logits)
            tok = int(logits.argmax())
            tokens.append(tok)
            out.append(tok)
    return out, logits_seen


# --- correctness of the cache --------------------------------------------------------


@pytest.mark.parametrize("n_new", [5, 40], ids=["inside-context", "past-context"])
def test_cached_logits_equal_the_full_forward_at_every_step(model, n_new):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    sampler = GREEDY.replace(max_new_tokens=n_new)
    seen: list[torch.Tensor] = []
    out = generate(model, [prompt], sampler, logits_hook=record_logits(seen))[0]
    ref_tokens, ref_logits = reference_greedy(
        model, prompt, n_new, keep=model.config.block_size // 2
    )
    assert out == ref_tokens
    assert len(seen) == n_new
    for step, (a, b) in enumerate(zip(seen, ref_logits)):
        assert torch.allclose(a[0], b, atol=1e-5, rtol=0), (
            f"step {step}: max diff {(a[0] - b).abs().max()}"
        )


@pytest.mark.parametrize("keep", [1, 8, 16])
def test_cached_equals_uncached_through_several_window_slides(model, keep):
    prompts = [[1, 2, 3], [7] * 11, [5]]
    sampler = GREEDY.replace(max_new_tokens=45)
    cached, plain = [], []
    a = generate(model, prompts, sampler, window_keep=keep, logits_hook=record_logits(cached))
    b = generate(
        model, prompts, sampler, window_keep=keep, use_cache=False, logits_hook=record_logits(plain)
    )
    assert a == b
    assert all(len(r) == 45 for r in a)
    for x, y in zip(cached, plain):
        assert torch.allclose(x, y, atol=1e-5, rtol=0)


def test_window_keep_block_size_is_nanogpt_cropping(model):
    prompt = [2, 4, 6, 8]
    bs = model.config.block_size
    out = generate(model, [prompt], GREEDY.replace(max_new_tokens=30), window_keep=bs)[0]
    tokens, expected = list(prompt), []
    with torch.no_grad():
        for _ in range(30):  # nanoGPT: idx_cond = idx[:, -block_size:]
            tok = int(model(torch.tensor([tokens[-bs:]]))[0, -1].argmax())
            tokens.append(tok)
            expected.append(tok)
    assert out == expected


def test_batched_generation_equals_one_by_one(model):
    prompts = [[1], [4, 5, 6, 7, 8], [9, 9, 2, 3, 30, 31, 1, 0, 5], []]
    sampler = GREEDY.replace(max_new_tokens=30)  # crosses the 16-token context
    batched_logits: list[torch.Tensor] = []
    batched = generate(model, prompts, sampler, logits_hook=record_logits(batched_logits))
    for i, p in enumerate(prompts):
        alone_logits: list[torch.Tensor] = []
        alone = generate(model, [p], sampler, logits_hook=record_logits(alone_logits))[0]
        assert batched[i] == alone, f"prompt {i}"
        for step, (x, y) in enumerate(zip(batched_logits, alone_logits)):
            assert torch.allclose(x[i], y[0], atol=1e-5, rtol=0), f"prompt {i} step {step}"


def test_tensor_and_flat_list_prompts(model):
    a = generate(model, torch.tensor([[1, 2, 3], [4, 5, 6]]), GREEDY)
    b = generate(model, [[1, 2, 3], [4, 5, 6]], GREEDY)
    c = generate(model, [1, 2, 3], GREEDY)
    d = generate(model, torch.tensor([1, 2, 3]), GREEDY)
    assert a == b and c == d == [b[0]]


def test_works_with_rope_and_gqa_models():
    m = tiny_gpt(
        position="rope", attention={"n_kv_head": 1}, norm="rmsnorm", mlp="swiglu", bias=False
    )
    prompts = [[1, 2, 3, 4, 5], [6]]
    sampler = GREEDY.replace(max_new_tokens=25)
    assert generate(m, prompts, sampler) == generate(m, prompts, sampler, use_cache=False)
    assert generate(m, prompts, sampler)[1] == generate(m, [[6]], sampler)[0]


# --- randomness ----------------------------------------------------------------------


def test_seed_makes_sampling_reproducible(model):
    s = SamplerConfig(temperature=1.0, top_k=20, max_new_tokens=20, seed=5, stop_at_eot=False)
    prompts = [[1, 2], [3, 4, 5]]
    torch.manual_seed(0)
    a = generate(model, prompts, s)
    torch.manual_seed(1)  # the global RNG does not matter when a seed is given
    b = generate(model, prompts, s)
    c = generate(model, prompts, s.replace(seed=6))
    assert a == b and a != c


def test_stream_yields_one_entry_per_row_each_step_and_matches_batch_mode(model):
    s = SamplerConfig(max_new_tokens=10, seed=3, stop_at_eot=False)
    steps = list(stream(model, [[1], [2, 3]], s))
    assert len(steps) == 10 and all(len(step) == 2 for step in steps)
    assert [[step[i] for step in steps] for i in range(2)] == generate(model, [[1], [2, 3]], s)


def test_bfloat16_runs_and_leaves_the_callers_model_alone(model):
    out = generate(model, [[1, 2, 3]], GREEDY, dtype=torch.bfloat16)
    assert len(out[0]) == GREEDY.max_new_tokens
    assert next(model.parameters()).dtype == torch.float32


def test_dtype_casts_in_place_once_and_puts_the_very_same_tensors_back(model):
    """No copy of the module: the cast runs on the caller's model and is undone exactly."""
    before = {n: (t, t.data_ptr(), t.clone()) for n, t in model.state_dict(keep_vars=True).items()}
    seen: list[torch.dtype] = []
    steps = stream(
        model,
        [[1, 2, 3]],
        GREEDY,
        dtype=torch.bfloat16,
        logits_hook=lambda _: seen.append(model.lm_head.weight.dtype),
    )
    next(steps)
    assert seen == [torch.bfloat16]  # cast for the call, on the model itself
    steps.close()  # abandoned half-way: the originals are back all the same
    after = model.state_dict(keep_vars=True)
    for name, (tensor, ptr, values) in before.items():
        assert after[name] is tensor and tensor.data_ptr() == ptr
        assert tensor.dtype == values.dtype and torch.equal(tensor, values)
    reference = copy.deepcopy(model).to(torch.bfloat16)  # what dtype= used to run
    assert generate(model, [[1, 2, 3]], GREEDY, dtype=torch.bfloat16) == generate(
        reference, [[1, 2, 3]], GREEDY
    )


def test_stream_checks_its_arguments_at_once(model):
    with pytest.raises(ValueError, match="window_keep"):
        stream(model, [[1]], GREEDY, window_keep=17)  # before any step is asked for


def test_training_mode_is_restored(model):
    model.train()
    try:
        generate(model, [[1]], GREEDY.replace(max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_penalties_look_at_the_generated_window(model):
    no_repeat = GREEDY.replace(max_new_tokens=30, presence_penalty=1e6)
    out = generate(model, [[1, 2, 3]], no_repeat)[0]
    assert len(set(out)) == len(out)  # every token once: 30 < vocab 37
    windowed = no_repeat.replace(max_new_tokens=36, penalty_window=4)
    out = generate(model, [[1, 2, 3]], windowed)[0]
    assert all(len(set(out[i : i + 5])) == 5 for i in range(len(out) - 4))


# --- ending a sample -----------------------------------------------------------------


def force(sequence: list[int], vocab: int = 37):
    """A logits hook that makes greedy decoding emit ``sequence`` (then repeats its end)."""
    step = [0]

    def hook(logits: torch.Tensor) -> torch.Tensor:
        tok = sequence[min(step[0], len(sequence) - 1)]
        step[0] += 1
        forced = torch.full_like(logits, -10.0)
        forced[:, tok] = 10.0
        return forced

    return hook


def test_end_of_text_ends_a_row_and_is_not_output(model):
    s = GREEDY.replace(max_new_tokens=10, stop_at_eot=True)
    out = generate(model, [[1], [2]], s, eot_id=7, logits_hook=force([3, 4, 7, 5]))
    assert out == [[3, 4], [3, 4]]
    steps = list(stream(model, [[1]], s, eot_id=7, logits_hook=force([3, 7])))
    assert steps == [[3], [None]]  # stops early: no wasted steps
    out = generate(
        model, [[1]], s.replace(stop_at_eot=False), eot_id=7, logits_hook=force([3, 7, 5])
    )
    assert out == [[3, 7] + [5] * 8]


def test_stop_strings_end_the_sample_and_are_cut_from_the_text(model):
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz.,!? \nABCDEFGH"[:37]))
    ids = tok.encode("hello. world")
    s = GREEDY.replace(max_new_tokens=20, stop=[". w"])
    out = generate(model, [[1]], s, tokenizer=tok, logits_hook=force(ids))[0]
    assert tok.decode(out) == "hello. w"  # the row ends on the token completing the stop string
    assert completion_text(tok, out, s.stop) == "hello"
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, [[1]], s)


def test_text_stream_never_prints_a_stop_string_or_half_a_character():
    tok = CharTokenizer(list("ab. \n"))
    stream = TextStream(tok, stop=[". \n"])
    pieces = [stream.push(i) for i in tok.encode("ab. a. \nb")]
    assert "".join(pieces) + stream.finish() == "ab. a"
    assert pieces[2] == ""  # "." could start the stop string: held back
    assert stream.stopped

    class Bytes:  # a byte-level decoder that shows incomplete UTF-8 as U+FFFD
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    stream = TextStream(Bytes())
    pieces = [stream.push(b) for b in "é!".encode()]
    assert pieces == ["", "é", "!"]


def test_generate_text_returns_the_completion_only(model):
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz.,!? \nABCDE"))
    assert tok.vocab_size == model.config.vocab_size
    text = generate_text(model, tok, "abc", GREEDY.replace(max_new_tokens=15))
    assert isinstance(text, str) and len(text) == 15
    assert text == tok.decode(
        generate(model, [tok.encode("abc")], GREEDY.replace(max_new_tokens=15))[0]
    )


# --- bad input -----------------------------------------------------------------------


def test_prompt_longer_than_the_context_keeps_its_last_block_size_minus_one_tokens(model):
    long = list(range(30))
    with pytest.warns(UserWarning, match="keeping its last 15 tokens"):
        out = generate(model, [long], GREEDY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert out == generate(model, [long[-15:]], GREEDY)


def test_empty_prompt_starts_from_the_end_of_text_token(model):
    seen: list[torch.Tensor] = []
    generate(
        model, [[]], GREEDY.replace(max_new_tokens=1), eot_id=36, logits_hook=record_logits(seen)
    )
    with torch.no_grad():
        assert torch.allclose(seen[0][0], model(torch.tensor([[36]]))[0, -1], atol=1e-6)


def test_start_token_without_end_of_text():
    assert start_token_id(CharTokenizer(list("ab\nc"))) == 2  # "\n"
    assert start_token_id(CharTokenizer(list("abc"))) == 0
    assert start_token_id(CharTokenizer(list("abc")), eot_id=2) == 2


def test_unknown_characters_raise_a_clear_error(model):
    from gptlab.tokenizer import TokenizerError

    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz.,!? \nABCDE"))
    with pytest.raises(TokenizerError, match="never saw"):
        generate_text(model, tok, "hello ~", GREEDY)


@pytest.mark.parametrize(
    ("prompts", "match"),
    [([], "no prompts"), ([[1, 99]], "outside the model's vocabulary"), ([[-1]], "outside")],
)
def test_bad_prompts_raise(model, prompts, match):
    with pytest.raises(ValueError, match=match):
        generate(model, prompts, GREEDY)


def test_bad_window_keep_raises(model):
    with pytest.raises(ValueError, match="window_keep"):
        generate(model, [[1]], GREEDY, window_keep=17)


def test_a_compiled_model_decodes_eagerly_without_compiling():
    """Each step has a new cache length: compiling them would cost seconds apiece."""
    compiled_graphs = []

    def counting_backend(graph_module, example_inputs):
        compiled_graphs.append(graph_module)
        return graph_module.forward

    reference = tiny_gpt()
    expected = generate(reference, [[1, 2, 3], [4, 5]], GREEDY)
    model = tiny_gpt()
    model.compile(backend=counting_backend)
    assert generate(model, [[1, 2, 3], [4, 5]], GREEDY) == expected
    assert generate(model, [[1, 2, 3], [4, 5]], GREEDY, use_cache=False) == expected
    assert compiled_graphs == []
    model(torch.tensor([[1, 2, 3]]))  # outside generate the model is still compiled
    assert compiled_graphs
