"""Greedy generation on HF GPT-2 weights gives the same tokens as transformers' generate."""

from __future__ import annotations

import pytest
import torch

from gptlab.model import GPT
from gptlab.sampling import SamplerConfig, generate

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A random small GPT-2 in transformers and the same weights loaded into gptlab."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=101,
        n_positions=64,
        n_embd=48,
        n_layer=3,
        n_head=4,
        bos_token_id=100,
        eos_token_id=100,
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # sharper than the init so greedy paths are not decided by noise
        for p in hf.parameters():
            if p.dim() > 1:
                p.mul_(6.0)
    path = tmp_path_factory.mktemp("hf-gpt2")
    hf.save_pretrained(path)
    return hf, GPT.from_hf(path).eval()


def hf_greedy(hf, input_ids, attention_mask, n):
    out = hf.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
    )
    return out[:, input_ids.shape[1] :].tolist()


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_tokens_match_transformers(pair, use_cache):
    hf, ours = pair
    prompt = [5, 17, 42, 8, 99, 3]
    n = 40
    expected = hf_greedy(
        hf, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), n
    )
    got = generate(
        ours,
        [prompt],
        SamplerConfig(temperature=0.0, max_new_tokens=n, stop_at_eot=False),
        use_cache=use_cache,
    )
    assert got == expected


def test_left_padded_batch_matches_transformers(pair):
    hf, ours = pair
    prompts = [[7, 8, 9, 10, 11, 12, 13], [20, 21], [30, 31, 32, 33]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    expected = hf_greedy(hf, ids, mask, 20)
    got = generate(
        ours, prompts, SamplerConfig(temperature=0.0, max_new_tokens=20, stop_at_eot=False)
    )
    assert got == expected
