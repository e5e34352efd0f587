"""GPT forward/backward: shapes, init, causality for every option, manual == sdpa, GQA == MHA."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gptlab.model import GPT, GPTConfig, ModelConfigError, SelfAttention

VOCAB = 61  # not a multiple of 64, so padding is exercised


def tiny(**overrides) -> GPTConfig:
    d = dict(
        vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=False
    )
    d.update(overrides)
    return GPTConfig.from_dict(d)


def build(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


OPTIONS = {
    "gpt2": {},
    "bias": {"bias": True},
    "rope": {"position": "rope"},
    "nopos": {"position": "none"},
    "rmsnorm": {"norm": "rmsnorm"},
    "gelu_exact": {"mlp": "gelu_exact"},
    "relu2": {"mlp": "relu2"},
    "swiglu": {"mlp": "swiglu"},
    "gqa": {"attention": {"n_kv_head": 2}},
    "mqa": {"attention": {"n_kv_head": 1}},
    "qknorm": {"attention": {"qk_norm": True}},
    "window": {"attention": {"window": 5}},
    "untied": {"tie_embeddings": False},
    "logit_cap": {"logit_softcap": 15.0},
    "value_embeds": {"value_embeds": "all", "value_embed_gate": True},
    "x0_shortcut": {"x0_shortcut": True},
    "zero_init_proj": {"zero_init_proj": True},
    "unet_skips": {"unet_skips": True},
    "window_pattern": {"attention": {"window": 5, "window_pattern": "SL"}},
    "modern": {
        "position": "rope",
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "tie_embeddings": False,
        "attention": {"n_kv_head": 2, "qk_norm": True},
    },
}


def with_backend(options: dict, backend: str) -> dict:
    options = dict(options)
    options["attention"] = {**options.get("attention", {}), "backend": backend}
    return options


@pytest.mark.parametrize("name", list(OPTIONS))
def test_forward_backward_shapes(name):
    model = build(tiny(**OPTIONS[name])).train()
    idx = torch.randint(0, VOCAB, (3, 20))
    logits = model(idx)
    assert logits.shape == (3, 20, VOCAB) and logits.is_contiguous()
    loss = torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), idx.view(-1))
    assert math.isfinite(loss.item())
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
    assert model(idx, last_only=True).shape == (3, 1, VOCAB)


def test_initial_loss_is_about_uniform():
    model = build(tiny())
    idx, targets = torch.randint(0, VOCAB, (2, 4, 32))
    loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
    assert abs(loss.item() - math.log(VOCAB)) < 0.1


def test_gpt2_init_scales_residual_projections():
    cfg = tiny(n_layer=8, n_embd=64)
    model = build(cfg)
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(2 * 8)) < 0.002
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    assert model.lm_head.weight is model.transformer.wte.weight


def test_padding_rows_are_not_counted_and_never_scored():
    cfg = tiny()
    model = build(cfg)
    assert model.transformer.wte.weight.shape[0] == 64
    params = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == params - (64 - VOCAB) * 32
    untied = build(tiny(tie_embeddings=False))
    n = sum(p.numel() for p in untied.parameters())
    assert untied.num_parameters() == n - 2 * (64 - VOCAB) * 32


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("backend", ["sdpa", "manual"])
def test_causality(name, backend):
    """Changing token t never changes the logits at positions before t."""
    model = build(tiny(**with_backend(OPTIONS[name], backend)))
    idx = torch.randint(0, VOCAB, (2, 24))
    t = 13
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % VOCAB
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
    assert not torch.allclose(a[:, t:], b[:, t:])


ATTENTION = {
    "mha": {},
    "gqa": {"n_kv_head": 2},
    "mqa": {"n_kv_head": 1},
    "qknorm": {"qk_norm": True},
    "window": {"window": 5},
    "softcap": {"logit_softcap": 10.0},
}


@pytest.mark.parametrize("backend", ["sdpa", "manual"])
@pytest.mark.parametrize("position", ["learned", "rope", "none"])
@pytest.mark.parametrize("attention", list(ATTENTION))
def test_causality_every_attention_and_position(attention, position, backend):
    """The full product: each attention option x each position scheme x each backend."""
    options = {"position": position, "attention": {**ATTENTION[attention], "backend": backend}}
    if attention == "softcap" and backend == "sdpa":
        with pytest.raises(ModelConfigError, match="needs model.attention.backend=manual"):
            tiny(**options)
        return
    model = build(tiny(n_layer=1, **options))
    idx = torch.randint(0, VOCAB, (2, 16))
    for t in (0, 7, 15):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        a, b = model(idx), model(changed)
        torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
        assert not torch.allclose(a[:, t], b[:, t])


def test_sliding_window_limits_what_a_query_sees():
    model = build(tiny(attention={"window": 4}, n_layer=1, position="rope"))
    idx = torch.randint(0, VOCAB, (1, 20))
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % VOCAB
    a, b = model(idx), model(changed)
    assert not torch.allclose(a[:, 5:9], b[:, 5:9])  # positions 5..8 see token 5
    torch.testing.assert_close(a[:, 9:], b[:, 9:], atol=0, rtol=0)  # one layer: 9+ do not


PARITY = ["gpt2", "bias", "rope", "gqa", "mqa", "qknorm", "window", "modern"]
PARITY += ["value_embeds", "x0_shortcut", "unet_skips", "window_pattern"]


@pytest.mark.parametrize("name", PARITY)
def test_manual_matches_sdpa_forward_and_backward(name):
    manual = build(tiny(**with_backend(OPTIONS[name], "manual")))
    sdpa = build(tiny(**with_backend(OPTIONS[name], "sdpa")))
    sdpa.load_state_dict(manual.state_dict())
    idx = torch.randint(0, VOCAB, (2, 32))
    out_m, out_s = manual(idx), sdpa(idx)
    torch.testing.assert_close(out_m, out_s, atol=1e-5, rtol=0)
    target = torch.randn_like(out_m)
    (out_m * target).sum().backward()
    (out_s * target).sum().backward()
    grads_s = dict(sdpa.named_parameters())
    for n, p in manual.named_parameters():
        torch.testing.assert_close(p.grad, grads_s[n].grad, atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("backend", ["sdpa", "manual"])
def test_gqa_with_n_kv_head_equal_n_head_is_mha(backend):
    mha = build(tiny(attention={"backend": backend}))
    gqa = build(tiny(attention={"backend": backend, "n_kv_head": 4}), seed=1)
    gqa.load_state_dict(mha.state_dict())
    idx = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(mha(idx), gqa(idx), atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["sdpa", "manual"])
def test_gqa_equals_mha_with_repeated_kv_heads(backend):
    """GQA is MHA whose key/value heads are copied within each group of query heads."""
    H, H_kv, D, C = 4, 2, 8, 32
    gqa = build(tiny(attention={"backend": backend, "n_kv_head": H_kv}))
    mha = build(tiny(attention={"backend": backend}))
    state = gqa.state_dict()
    for key in [k for k in state if k.endswith("c_attn.weight")]:
        q, k, v = state[key].split([H * D, H_kv * D, H_kv * D])
        k = k.view(H_kv, D, C).repeat_interleave(H // H_kv, dim=0).reshape(H * D, C)
        v = v.view(H_kv, D, C).repeat_interleave(H // H_kv, dim=0).reshape(H * D, C)
        state[key] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    idx = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(mha(idx), gqa(idx), atol=1e-5, rtol=0)


def test_manual_softcap_and_dropout_train():
    model = build(tiny(dropout=0.1, attention={"backend": "manual", "logit_softcap": 5.0})).train()
    idx = torch.randint(0, VOCAB, (2, 16))
    a, b = model(idx), model(idx)
    assert not torch.allclose(a, b)  # dropout is active in training
    model.eval()
    torch.testing.assert_close(model(idx), model(idx))


def test_final_logit_softcap_bounds_logits():
    model = build(tiny(logit_softcap=0.5))
    with torch.no_grad():
        model.lm_head.weight.mul_(100)
    logits = model(torch.randint(0, VOCAB, (1, 8)))
    assert logits.abs().max() <= 0.5 and logits.abs().max() > 0.45


def test_activation_checkpointing_gives_same_gradients():
    plain = build(tiny(position="rope")).train()
    ckpt = build(tiny(position="rope", activation_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    idx = torch.randint(0, VOCAB, (2, 16))
    plain(idx).square().mean().backward()
    ckpt(idx).square().mean().backward()
    grads = dict(ckpt.named_parameters())
    for n, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads[n].grad, msg=n)


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="longer than model.block_size=32"):
        build(tiny())(torch.zeros(1, 33, dtype=torch.long))


def test_param_groups_decay_matrices_only():
    # the groups every gptlab optimizer is built from
    from gptlab.training.optim import decay_groups

    model = build(tiny(bias=True))
    decay, no_decay = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(
        p.dim() < 2 for p in no_decay["params"]
    )
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())
    torch.optim.AdamW([decay, no_decay], lr=1e-3)  # the groups are what optimizers take


def test_flops_per_token_matches_nanogpt_formula():
    cfg = GPTConfig()
    with torch.device("meta"):
        model = GPT(cfg)
    n = 124_439_808 - 1024 * 768
    assert model.flops_per_token(1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
    windowed = tiny(attention={"window": 8})
    m = build(windowed)
    assert m.flops_per_token(32) == m.flops_per_token(8) < build(tiny()).flops_per_token(32)


def test_textbook_single_head_is_causal_and_matches_manual_math():
    torch.manual_seed(0)
    head = SelfAttention(n_embd=16, head_size=8, block_size=10).eval()
    x = torch.randn(2, 10, 16)
    y = head(x)
    assert y.shape == (2, 10, 8)
    x2 = x.clone()
    x2[:, 6] += 1
    torch.testing.assert_close(head(x2)[:, :6], y[:, :6])
    q, k, v = head.query(x), head.key(x), head.value(x)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


def test_every_option_pair_builds():
    """Every pair of options that the config allows builds and runs a step."""
    names = [n for n in OPTIONS if n != "modern"]
    for a, b in itertools.combinations(names, 2):
        opts = {**OPTIONS[a], **OPTIONS[b]}
        opts["attention"] = {**OPTIONS[a].get("attention", {}), **OPTIONS[b].get("attention", {})}
        model = build(tiny(n_layer=2, **opts))  # two layers: U-net skips pair them
        assert model(torch.randint(0, VOCAB, (1, 6))).shape == (1, 6, VOCAB)


def test_bench_peak_prints_gflops(capsys):
    from gptlab import bench_peak

    flops = bench_peak.main(["--size", "64", "--repeats", "2"])
    assert flops > 0
    assert "GFLOP/s" in capsys.readouterr().out


def test_meta_build_then_materialise_matches():
    """Big models are built on the meta device; init_buffers refills the derived buffers."""
    cfg = tiny(position="rope", attention={"window": 6})
    ref = build(cfg)
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    model.init_buffers()
    model.load_state_dict(ref.state_dict())
    idx = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(model.eval()(idx), ref(idx), atol=0, rtol=0)


def test_attention_module_called_directly_is_causal_with_both_backends():
    """Without a mask, ``is_causal=True`` must mean causal for ``manual`` too (as for sdpa)."""
    from gptlab.model.attention import CausalSelfAttention

    torch.manual_seed(0)
    outputs = {}
    for backend in ("manual", "sdpa"):
        cfg = GPTConfig(
            vocab_size=16,
            block_size=8,
            n_layer=1,
            n_head=2,
            n_embd=16,
            attention={"backend": backend},
        )
        torch.manual_seed(0)
        attn = CausalSelfAttention(cfg).eval()
        x = torch.randn(1, 6, 16)
        changed = x.clone()
        changed[0, -1] += 1.0
        with torch.no_grad():
            a, b = attn(x), attn(changed)
        assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6), backend
        outputs[backend] = a
    assert torch.allclose(outputs["manual"], outputs["sdpa"], atol=1e-5)
