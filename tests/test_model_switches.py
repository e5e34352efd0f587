"""The speed-record switches, each against a small case computed by hand in the test.

Zero-initialised projections make every block the identity, which turns the shortcut
and skip arithmetic into a few lines of algebra the test can write out; value
embeddings and document masks are checked against attention written out here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlab.model import GPT, GPTConfig, ModelConfigError
from gptlab.model.flex import is_block_mask
from gptlab.model.masks import layer_masks

VOCAB = 61


def config(**overrides) -> GPTConfig:
    d = dict(
        vocab_size=VOCAB, block_size=32, n_layer=4, n_head=2, n_embd=16, dropout=0.0, bias=False
    )
    d.update(overrides)
    return GPTConfig.from_dict(d)


def build(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def head(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """ln_f then the tied head, written out."""
    w = model.transformer.ln_f.weight
    return F.layer_norm(x, (x.size(-1),), w) @ model.transformer.wte.weight[:VOCAB].T


def embed(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    T = idx.size(1)
    return model.transformer.wte.weight[idx] + model.transformer.wpe.weight[:T]


def test_zero_init_projections_make_every_block_the_identity():
    model = build(config(zero_init_proj=True))
    for block in model.transformer.h:
        assert block.attn.c_proj.weight.abs().sum() == 0
        assert block.mlp.c_proj.weight.abs().sum() == 0
        assert block.mlp.c_fc.weight.std() > 0.01  # only the output projections
    idx = torch.randint(0, VOCAB, (2, 10))
    torch.testing.assert_close(model(idx), head(model, embed(model, idx)))


def test_x0_shortcut_mixes_the_embedding_into_every_block_input():
    cfg = config(zero_init_proj=True, x0_shortcut=True)
    model = build(cfg)
    # nanochat's start: resid 1.15 -> 1.05, x0 0.20 -> 0.05 over the layers
    torch.testing.assert_close(
        model.resid_lambdas.detach(), torch.tensor([1.15, 1.15 - 0.1 / 3, 1.15 - 0.2 / 3, 1.05])
    )
    torch.testing.assert_close(model.x0_lambdas.detach(), torch.tensor([0.20, 0.15, 0.10, 0.05]))
    with torch.no_grad():
        model.resid_lambdas.copy_(torch.tensor([1.0, 0.5, 2.0, 1.0]))
        model.x0_lambdas.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    idx = torch.randint(0, VOCAB, (2, 10))
    x0 = embed(model, idx)
    # blocks are the identity: x1 = x0; x2 = .5 x0 + x0; x3 = 2 x2 - x0; x4 = x3 + .5 x0
    x = 2.0 * (0.5 * x0 + x0) - x0 + 0.5 * x0
    torch.testing.assert_close(model(idx), head(model, x))


def test_unet_skips_add_mirrored_outputs_with_learned_weights():
    model = build(config(n_layer=5, zero_init_proj=True, unet_skips=True))
    assert model.skip_weights.tolist() == [1.0, 1.0]  # 5 layers: 2 pairs, the middle alone
    with torch.no_grad():
        model.skip_weights.copy_(torch.tensor([0.5, 2.0]))
    idx = torch.randint(0, VOCAB, (2, 10))
    x0 = embed(model, idx)
    # identity blocks: out0 = x0, out1 = x0, out2 = x0;
    # block 3 input = out2 + w[0] * out1 = 1.5 x0; block 4 input = out3 + w[1] * out0 = 3.5 x0
    torch.testing.assert_close(model(idx), head(model, 3.5 * x0))


def written_out_attention(model: GPT, x: torch.Tensor, value_embed: torch.Tensor) -> torch.Tensor:
    """One layer of causal multi-head attention with a value embedding, step by step."""
    attn = model.transformer.h[0].attn
    B, T, C = x.shape
    H, D = attn.n_head, attn.head_size
    q, k, v = attn.c_attn(x).split(C, dim=-1)
    v = v + value_embed
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T).tril() == 0, float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


@pytest.mark.parametrize("gated", [False, True])
def test_value_embeddings_are_added_to_the_values(gated):
    model = build(config(n_layer=1, value_embeds="0", value_embed_gate=gated))
    assert list(model.value_embeds) == ["0"]
    attn = model.transformer.h[0].attn
    idx = torch.randint(0, VOCAB, (2, 9))
    x = torch.randn(2, 9, 16)
    ve = model.value_embeds["0"](idx)
    if gated:
        assert attn.ve_gate.weight.abs().sum() == 0  # starts at exactly 1: ungated
        torch.testing.assert_close(attn(x, value_embed=ve), written_out_attention(model, x, ve))
        with torch.no_grad():
            attn.ve_gate.weight.normal_()
        gate = 2 * torch.sigmoid(x[..., :12] @ attn.ve_gate.weight.T)  # (B, T, n_kv_head)
        ve = (ve.view(2, 9, 2, 8) * gate[..., None]).flatten(2)
    else:
        assert attn.ve_gate is None
    torch.testing.assert_close(
        attn(x, value_embed=model.value_embeds["0"](idx)), written_out_attention(model, x, ve)
    )


def test_value_embed_layer_choices():
    assert config(n_layer=4, value_embeds="alternate").value_embed_layers == [1, 3]
    assert config(n_layer=5, value_embeds="alternate").value_embed_layers == [0, 2, 4]
    assert config(n_layer=3, value_embeds="all").value_embed_layers == [0, 1, 2]
    assert config(value_embeds="2, 0").value_embed_layers == [0, 2]
    cfg = config(n_layer=4, value_embeds="alternate", attention={"n_kv_head": 1})
    model = build(cfg)
    assert model.value_embeds["1"].weight.shape == (64, 8)  # padded vocab x kv width
    n = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == n - (64 - VOCAB) * (16 + 2 * 8)


def test_window_pattern_gives_per_layer_windows_last_layer_long():
    cfg = config(n_layer=6, attention={"window": 8, "window_pattern": "SSSL"})
    assert cfg.layer_windows == [8, 8, 8, None, 8, None]
    assert config(n_layer=3, attention={"window": 4}).layer_windows == [4, 4, 4]
    assert config(n_layer=2).layer_windows == [None, None]


def test_layer_masks_per_window_written_out():
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    masks = layer_masks(causal, [3, None, 3, 20], B=1, T=10, start=0)
    q, k = torch.arange(10)[:, None], torch.arange(10)[None, :]
    assert torch.equal(masks[0][0], (q >= k) & (q - k < 3)) and masks[0][1] is False
    assert masks[0][0] is masks[2][0]  # one mask per distinct window
    assert masks[1][1] is True and masks[3][1] is True  # a window >= T is plain causal
    # with a KV cache: queries 8, 9 over keys 0..9
    cached = layer_masks(causal, [3], B=1, T=2, start=8)[0][0]
    assert cached.tolist() == [
        [k in (6, 7, 8) for k in range(10)],
        [k in (7, 8, 9) for k in range(10)],
    ]


def test_per_layer_windows_match_one_window_model_per_layer():
    """An "SL" model equals running its first layer windowed and its second full."""
    cfg = config(n_layer=2, position="rope", attention={"window": 4, "window_pattern": "SL"})
    model = build(cfg)
    idx = torch.randint(0, VOCAB, (2, 20))
    x = model.transformer.wte(idx)
    rope = model._rope(0, 20, None)
    pos = torch.arange(20)
    windowed = (pos[:, None] >= pos[None, :]) & (pos[:, None] - pos[None, :] < 4)
    h0, h1 = model.transformer.h
    x = h0(x, rope, windowed, False)
    x = h1(x, rope, None, True)
    torch.testing.assert_close(model(idx), model._logits(model.transformer.ln_f(x)))


def test_window_cap_limits_every_window():
    capped = build(config(n_layer=2, attention={"window": 8, "window_pattern": "SL"}))
    capped.set_window_cap(3)
    assert capped.effective_windows() == [3, 3]
    plain = build(config(n_layer=2, attention={"window": 3}))
    idx = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(capped(idx), plain(idx))
    capped.set_window_cap(None)
    assert capped.effective_windows() == [8, None]
    capped.set_window_cap(64)
    assert capped.effective_windows() == [8, None]
    with pytest.raises(ValueError, match="window cap 0 must be a positive integer"):
        capped.set_window_cap(0)


def test_document_mask_makes_each_document_its_own_sequence():
    """With RoPE (relative positions), document 2's logits equal running it alone."""
    model = build(config(position="rope"))
    idx = torch.randint(0, VOCAB, (1, 24))
    docs = torch.tensor([[0] * 9 + [1] * 15])
    packed = model(idx, document_ids=docs)
    alone = model(idx[:, 9:])
    torch.testing.assert_close(packed[:, 9:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, :9], model(idx[:, :9]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(idx)[:, 9:], alone, atol=1e-3)  # without the mask it leaks
    with pytest.raises(ValueError, match="document_ids has shape"):
        model(idx, document_ids=docs[:, :10])


@torch.no_grad()
def test_flex_attention_equals_the_dense_path():
    """FlexAttention's block-sparse masks give the dense masks' results (CPU: forward only)."""
    kw = dict(n_layer=3, position="rope", attention={"window": 5, "window_pattern": "SSL"})
    dense = build(config(**kw))
    flex = build(config(**{**kw, "attention": {**kw["attention"], "backend": "flex"}}))
    idx = torch.randint(0, VOCAB, (2, 32))
    docs = torch.tensor([[0] * 7 + [1] * 25, [0] * 20 + [1] * 12])
    masks = flex._layer_masks(2, 32, 0, None, None)
    assert is_block_mask(masks[0][0]) and masks[2] == (masks[2][0], True)  # long layer: sdpa
    assert not is_block_mask(dense._layer_masks(2, 32, 0, None, None)[0][0])
    torch.testing.assert_close(flex(idx), dense(idx), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        flex(idx, document_ids=docs), dense(idx, document_ids=docs), atol=1e-5, rtol=1e-5
    )


def test_flex_refuses_to_train_on_cpu():
    model = build(config(attention={"window": 4, "backend": "flex"})).train()
    with pytest.raises(ModelConfigError, match="cannot train on a CPU"):
        model(torch.randint(0, VOCAB, (1, 16)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(attention={"window": 64}), "window=64 is larger than model.block_size=32"),
        (dict(attention={"window": 4, "window_pattern": "SSSLS"}), "has 5 letters but"),
        (dict(attention={"window": 4, "window_pattern": "SXL"}), "must be made of S"),
        (dict(attention={"window_pattern": "SL"}), "model.attention.window \\(their size\\)"),
        (dict(value_embeds="0,7"), "names layer 7, but the model has layers 0..3"),
        (dict(value_embeds="every"), "is not alternate, all, or layer numbers"),
        (dict(value_embed_gate=True), "model.value_embeds is null"),
        (dict(n_layer=1, unet_skips=True), "model.n_layer=1"),
        (dict(dropout=0.1, attention={"backend": "flex"}), "backend=flex has no attention"),
    ],
)
def test_bad_switches_are_refused_in_one_sentence(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        config(**overrides)


@pytest.mark.parametrize(
    "overrides, name",
    [
        (dict(value_embeds="alternate"), "value_embeds"),
        (dict(x0_shortcut=True), "x0_shortcut"),
        (dict(unet_skips=True), "unet_skips"),
        (dict(attention={"window": 4, "window_pattern": "SL"}), "attention.window_pattern"),
    ],
)
def test_hf_export_refuses_switches_gpt2_cannot_hold(tmp_path, overrides, name):
    model = build(config(**overrides))
    with pytest.raises(ModelConfigError, match=f"uses .*{name}"):
        model.save_hf(tmp_path / "hf")


def test_switches_that_change_training_only_still_export(tmp_path):
    build(config(zero_init_proj=True, attention={"document_mask": True})).save_hf(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").exists()


def test_every_switch_off_adds_nothing():
    """Default models carry no extra parameters, so their checkpoints are unchanged."""
    model = build(config())
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "value_embeds" in n or "lambdas" in n or "skip" in n]
    assert not [n for n in names if "ve_gate" in n]


def test_explicit_flex_is_refused_where_torch_lacks_it(monkeypatch):
    """Old torch has no FlexAttention; this one has, so its absence is simulated."""
    import gptlab.model.gpt as gpt_module

    monkeypatch.setattr(gpt_module, "flex_available", lambda: False)
    with pytest.raises(ModelConfigError, match="backend=flex needs torch>=2.5"):
        GPT(config(attention={"window": 4, "backend": "flex"}))
    monkeypatch.setattr(gpt_module, "_WARNED_NO_FLEX", False)
    with pytest.warns(UserWarning, match="FlexAttention is not available"):
        assert gpt_module._fast_path_available() is False
