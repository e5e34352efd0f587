"""KV cache and attention masks: incremental decoding and left padding match the full forward."""

from __future__ import annotations

import pytest
import torch

from gptlab.model import GPT, GPTConfig
from gptlab.sampling import to_decode_layout

VOCAB = 61
TOL = dict(atol=1e-5, rtol=0)


def build(**overrides) -> GPT:
    d = dict(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32, bias=True)
    d.update(overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig.from_dict(d)).eval()


VARIANTS = {
    "learned": {},
    "rope": {"position": "rope"},
    "rope_manual": {"position": "rope", "attention": {"backend": "manual"}},
    "learned_gqa": {"attention": {"n_kv_head": 2}},
    "rope_mqa_qknorm": {"position": "rope", "attention": {"n_kv_head": 1, "qk_norm": True}},
    "rope_window": {"position": "rope", "attention": {"window": 6}},
    "learned_window_manual": {"attention": {"window": 6, "backend": "manual"}},
    "nopos": {"position": "none"},
    "speedrun_switches": {
        "position": "rope",
        "n_layer": 4,
        "value_embeds": "alternate",
        "value_embed_gate": True,
        "x0_shortcut": True,
        "unet_skips": True,
        "attention": {"window": 6, "window_pattern": "SL", "n_kv_head": 2},
    },
}


@pytest.mark.parametrize("name", list(VARIANTS))
@torch.no_grad()
def test_incremental_decoding_matches_full_forward(name):
    model = build(**VARIANTS[name])
    idx = torch.randint(0, VOCAB, (2, 20))
    full = model(idx)
    cache = model.new_kv_cache(2)
    assert cache.pos == 0
    out = model(idx[:, :7], kv_cache=cache)  # prefill
    torch.testing.assert_close(out, full[:, :7], **TOL)
    assert cache.pos == 7
    for t in range(7, 12):  # one token at a time
        step = model(idx[:, t : t + 1], kv_cache=cache, last_only=True)
        torch.testing.assert_close(step[:, 0], full[:, t], **TOL)
    chunk = model(idx[:, 12:20], kv_cache=cache)  # several new tokens after a prefix
    torch.testing.assert_close(chunk, full[:, 12:20], **TOL)
    assert cache.pos == 20


@torch.no_grad()
def test_cache_overflow_reset_and_crop():
    model = build()
    cache = model.new_kv_cache(1, max_len=8)
    assert cache.k.shape == (2, 1, 4, 8, 8) and cache.k.dtype == torch.float32
    model(torch.zeros(1, 6, dtype=torch.long), kv_cache=cache)
    with pytest.raises(
        ValueError, match="KV cache is full: 6 positions filled \\+ 3 new > max_len=8"
    ):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)
    assert cache.pos == 6  # the refused step wrote nothing
    cache.crop(2)
    assert cache.pos == 2
    cache.reset()
    assert cache.pos == 0
    idx = torch.randint(0, VOCAB, (1, 8))
    torch.testing.assert_close(model(idx, kv_cache=cache), model(idx), **TOL)
    with pytest.raises(ValueError, match="max_len=64 must be between 1 and model.block_size=32"):
        model.new_kv_cache(1, max_len=64)
    with pytest.raises(ValueError, match="made for batch size 1, got a batch of 2"):
        model(torch.zeros(2, 3, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize(
    "name", ["learned", "rope", "rope_manual", "learned_gqa", "rope_window", "speedrun_switches"]
)
@torch.no_grad()
def test_left_padding_matches_unpadded_sequences(name):
    model = build(**VARIANTS[name])
    long = torch.randint(0, VOCAB, (12,))
    short = torch.randint(0, VOCAB, (7,))
    pad = 12 - 7
    idx = torch.stack([long, torch.cat([torch.zeros(pad, dtype=torch.long), short])])
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :pad] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(idx, attention_mask=mask, position_ids=pos)
    assert torch.isfinite(out).all()  # padding queries see only padding: still no NaN
    torch.testing.assert_close(out[0], model(long[None])[0], **TOL)
    ref_short = model(short[None])[0]
    torch.testing.assert_close(out[1, pad:], ref_short, **TOL)

    # The same batch through a KV cache: padded prefill, then decode steps.
    extra = torch.randint(0, VOCAB, (2, 4))
    cache = model.new_kv_cache(2)
    model(idx, kv_cache=cache, attention_mask=mask, position_ids=pos)
    for t in range(4):
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
        step_pos = pos[:, -1:] + 1 + t
        step = model(
            extra[:, t : t + 1], kv_cache=cache, attention_mask=mask, position_ids=step_pos
        )
        ref_long = model(torch.cat([long, extra[0, : t + 1]])[None])[0, -1]
        ref_short = model(torch.cat([short, extra[1, : t + 1]])[None])[0, -1]
        torch.testing.assert_close(step[0, -1], ref_long, **TOL)
        torch.testing.assert_close(step[1, -1], ref_short, **TOL)


def test_attention_mask_of_wrong_shape_is_refused():
    model = build()
    with pytest.raises(ValueError, match="attention_mask has shape \\(2, 5\\) but must be"):
        model(torch.zeros(2, 6, dtype=torch.long), attention_mask=torch.ones(2, 5))


@torch.no_grad()
def test_cache_follows_model_dtype():
    model = build().to(torch.bfloat16)
    cache = model.new_kv_cache(1)
    assert cache.k.dtype == torch.bfloat16
    assert model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache).dtype == torch.bfloat16


@pytest.mark.parametrize("tie", [True, False])
@torch.no_grad()
def test_decode_layout_changes_memory_order_only(tie, tmp_path):
    """Column-major weights: same logits, same cached decoding, same state_dict; still tied."""
    model = build(tie_embeddings=tie, mlp="swiglu")
    idx = torch.randint(0, VOCAB, (2, 12))
    before = model(idx)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    assert to_decode_layout(model) is model
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(
        m.weight.t().is_contiguous() and not m.weight.is_contiguous() for m in linears
    )
    assert (model.lm_head.weight is model.transformer.wte.weight) == tie
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    torch.testing.assert_close(model(idx), before, **TOL)

    cache = model.new_kv_cache(2)
    steps = [model(idx[:, :8], kv_cache=cache, last_only=True)]
    steps += [model(idx[:, t : t + 1], kv_cache=cache, last_only=True) for t in range(8, 12)]
    for t, logits in zip(range(7, 12), steps):
        torch.testing.assert_close(logits[:, 0], before[:, t], **TOL)

    torch.save(model.state_dict(), tmp_path / "w.pt")  # saves and reloads into a fresh model
    fresh = build(tie_embeddings=tie, mlp="swiglu")
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(fresh(idx), before, **TOL)
