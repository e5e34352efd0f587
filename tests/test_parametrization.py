"""``model.parametrization=sp|mup``: sp unchanged, µP's init, multipliers and lr rules.

The rules tested here are stated in ``gptlab/model/parametrization.py``; the
coordinate check (``tests/test_coordcheck.py``) tests that together they make
activations width-independent.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gptlab.model import GPT, GPTConfig, ModelConfigError
from gptlab.model.parametrization import (
    attention_scale,
    base_config,
    base_n_kv_head,
    lr_multipliers,
    sp_state_dict,
    width_mult,
)
from gptlab.training.optim import adamw, muon, sgd
from gptlab.training.schedules import lambda_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, bias=True)
VARIANTS = {
    "gpt2": {},
    "untied": {"tie_embeddings": False},
    "gqa_rope_rms_swiglu": {
        "attention": {"n_kv_head": 2},
        "position": "rope",
        "norm": "rmsnorm",
        "mlp": "swiglu",
    },
    "mqa_qknorm_relu2": {"attention": {"n_kv_head": 1, "qk_norm": True}, "mlp": "relu2"},
}


def build(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**BASE, **kw}))


def mup(width: int, base: int, **kw) -> GPT:
    return build(
        n_embd=width, parametrization="mup", mup={"base_width": base, **kw.pop("mup", {})}, **kw
    )


def tokens(n: int = 2, t: int = 16) -> torch.Tensor:
    return torch.randint(0, BASE["vocab_size"], (n, t), generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------ sp
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sp_is_the_default_and_unchanged(variant):
    kw = {**VARIANTS[variant], "n_embd": 64}
    omitted, explicit = build(**kw), build(**kw, parametrization="sp")
    # the mup options are ignored under sp (so one sweep over sp,mup can set them once)
    ignored = build(
        **kw, parametrization="sp", mup={"base_width": 32, "base_n_head": 2, "output_mult": 3.0}
    )
    assert list(explicit.state_dict()) == list(omitted.state_dict())
    for name, p in omitted.state_dict().items():
        assert torch.equal(p, explicit.state_dict()[name]) and torch.equal(
            p, ignored.state_dict()[name]
        )
    x = tokens()
    assert torch.equal(omitted(x), explicit(x)) and torch.equal(omitted(x), ignored(x))
    assert all(block.attn.scale is None for block in omitted.transformer.h)


@pytest.mark.parametrize("heads", ["default", "explicit"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mup_at_its_base_width_is_sp_bit_for_bit(variant, heads):
    kw = dict(VARIANTS[variant])
    if heads == "explicit":  # base_n_head = n_head (and its kv heads) changes nothing
        n_kv = kw.get("attention", {}).get("n_kv_head", BASE["n_head"])
        kw["mup"] = {"base_n_head": BASE["n_head"], "base_n_kv_head": n_kv}
    sp_model, mup_model = build(n_embd=64, **VARIANTS[variant]), mup(64, 64, **kw)
    assert list(sp_model.state_dict()) == list(mup_model.state_dict())
    for name, p in sp_model.state_dict().items():
        assert torch.equal(p, mup_model.state_dict()[name]), name
    x = tokens()
    assert torch.equal(mup_model(x), sp_model(x))
    # ... and so are its optimizer groups
    for make in (adamw, sgd):
        a, b = make(sp_model, lr=0.01), make(mup_model, lr=0.01)
        assert [g.get("lr") for g in a.param_groups] == [g.get("lr") for g in b.param_groups]


def test_base_width_defaults_to_the_models_own():
    model = build(n_embd=64, parametrization="mup")
    assert width_mult(model.config) == 1.0 and model.logit_mult == 1.0


# --------------------------------------------------------------------------- init
def test_hidden_init_variance_is_divided_by_the_width_multiplier():
    m = 8
    model = mup(32 * m, 32, n_layer=2)
    std = dict(model.named_parameters())
    assert std["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.02)
    assert std["transformer.wpe.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    hidden = std["transformer.h.0.attn.c_attn.weight"].std().item()
    assert hidden == pytest.approx(0.02 / math.sqrt(m), rel=0.02)
    assert std["transformer.h.1.mlp.c_fc.weight"].std().item() == pytest.approx(
        0.02 / math.sqrt(m), rel=0.02
    )
    proj = std["transformer.h.0.mlp.c_proj.weight"].std().item()  # GPT-2's 1/sqrt(2L) kept
    assert proj == pytest.approx(0.02 / math.sqrt(2 * 2) / math.sqrt(m), rel=0.02)


def test_zero_readout_and_zero_query():
    model = mup(64, 32, tie_embeddings=False, mup={"zero_readout": True, "zero_query": True})
    assert torch.count_nonzero(model.lm_head.weight) == 0
    q_rows = model.config.n_embd
    for block in model.transformer.h:
        assert torch.count_nonzero(block.attn.c_attn.weight[:q_rows]) == 0
        assert torch.count_nonzero(block.attn.c_attn.weight[q_rows:]) > 0
    assert torch.count_nonzero(model.transformer.wte.weight) > 0
    assert torch.count_nonzero(model(tokens())) == 0  # a zero head scores uniformly


# -------------------------------------------------------------------- multipliers
def test_logits_are_scaled_by_output_mult_over_m_and_embeddings_by_input_mult():
    model = mup(128, 32, tie_embeddings=False, mup={"input_mult": 2.0, "output_mult": 3.0})
    assert model.logit_mult == pytest.approx(3.0 / 4) and model.input_mult == 2.0
    seen = {}
    model.transformer.drop.register_forward_hook(lambda m, i, o: seen.update(emb=o))
    x = tokens()
    logits = model(x)
    raw = model.transformer.wte(x) + model.transformer.wpe.weight[: x.size(1)]
    torch.testing.assert_close(seen["emb"], 2.0 * raw)
    hidden = {}
    model.transformer.ln_f.register_forward_hook(lambda m, i, o: hidden.update(h=o))
    model(x)
    plain = hidden["h"] @ model.lm_head.weight[: BASE["vocab_size"]].T
    torch.testing.assert_close(logits, 0.75 * plain)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_attention_scale_goes_through_every_backend(variant):
    kw = {**VARIANTS[variant]}
    attention = dict(kw.pop("attention", {}))
    models = {
        backend: mup(128, 32, attention={**attention, "backend": backend}, **kw)
        for backend in ("manual", "sdpa")
    }
    cfg = models["sdpa"].config
    assert attention_scale(cfg) == pytest.approx(math.sqrt(8) / 32)  # √d_base / d
    x = tokens()
    torch.testing.assert_close(models["manual"](x), models["sdpa"](x), rtol=1e-5, atol=1e-5)
    # the scale is really used: with sp's 1/√d the output differs
    for block in models["sdpa"].transformer.h:
        block.attn.scale = None
    assert not torch.allclose(models["manual"](x), models["sdpa"](x), atol=1e-4)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_heads_added_at_a_fixed_size_keep_sps_scale_at_every_width(variant):
    """A 4 x 32 proxy widened by adding heads of 32: no head changes, so the scale is 1/√32.

    (Deriving the base head size as ``base_width / n_head`` of the widened model, as
    before ``base_n_head``, gave √4/32 = 0.0625 at width 1024 instead of 0.177.)
    """
    kw = dict(VARIANTS[variant])
    n_kv = kw.pop("attention", {}).get("n_kv_head")
    x = tokens()
    for width in (128, 256, 512, 1024):
        n_head = width // 32
        # GQA keeps its ratio of query to key/value heads by default; MQA keeps its one head
        kv = None if n_kv is None else (1 if n_kv == 1 else n_head // 2)
        base_kv = {"base_n_kv_head": 1} if n_kv == 1 else {}
        model = mup(
            width,
            128,
            n_head=n_head,
            attention={"n_kv_head": kv},
            mup={"base_n_head": 4, **base_kv},
            **kw,
        )
        assert attention_scale(model.config) is None, width  # computed as sp computes it
        assert all(block.attn.scale is None for block in model.transformer.h)
        model.eval()
        with torch.no_grad():  # and it is sp's 1/√32: setting it explicitly changes nothing
            before = model(x)
            for block in model.transformer.h:
                block.attn.scale = 1 / math.sqrt(32)
            torch.testing.assert_close(model(x), before)
    # the head size may also change along with the head count: √d_base / d again
    both = GPTConfig(
        **{**BASE, "n_head": 16},
        n_embd=1024,
        parametrization="mup",
        mup={"base_width": 128, "base_n_head": 4},
    )
    assert attention_scale(both) == pytest.approx(math.sqrt(32) / 64)
    assert base_config(both).n_head == 4 and base_config(both).head_size == 32


def test_attention_scale_reaches_flexattention():
    pytest.importorskip("torch.nn.attention.flex_attention")
    flex = mup(64, 32, attention={"window": 8, "backend": "flex"})
    manual = mup(64, 32, attention={"window": 8, "backend": "manual"})
    x = tokens()
    with torch.no_grad():  # FlexAttention has no CPU backward; forward is enough here
        torch.testing.assert_close(flex(x), manual(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- optimizers
def _lrs(optimizer, model) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lrs[names[id(p)]] = group["lr"]
    return lrs


@pytest.mark.parametrize("tie", [True, False])
def test_adamw_divides_hidden_lr_by_m_only(tie):
    model = mup(128, 32, tie_embeddings=tie)
    lrs = _lrs(adamw(model, lr=0.01, embedding_lr=0.02 if not tie else None), model)
    for name, lr in lrs.items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            assert lr == pytest.approx(0.01 / 4), name
        elif "wte" in name or "wpe" in name:
            assert lr == pytest.approx(0.01 if tie else 0.02), name
        else:  # biases, norm gains, the readout
            assert lr == pytest.approx(0.01), name


def test_sgd_keeps_hidden_lr_and_multiplies_vectors_by_m():
    model = mup(128, 32, tie_embeddings=False)
    lrs = _lrs(sgd(model, lr=0.1), model)
    for name, lr in lrs.items():
        hidden = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        assert lr == pytest.approx(0.1 if hidden else 0.4), name


def test_scheduler_scales_every_groups_lr_relatively():
    model = mup(128, 32)
    optimizer = adamw(model, lr=0.01)
    before = [g["lr"] for g in optimizer.param_groups]
    assert len(set(before)) == 2  # hidden lr/m and the rest
    scheduler = lambda_scheduler(optimizer, "cosine", warmup_steps=2, total_steps=10)["scheduler"]
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    factor = scheduler.lr_lambdas[0](5)
    assert 0 < factor < 1
    after = [g["lr"] for g in optimizer.param_groups]
    assert after == pytest.approx([lr * factor for lr in before])


def _muon_step_spectral_norms(width: int, parametrization: str) -> dict[str, float]:
    kw = dict(tie_embeddings=False, bias=False)
    model = mup(width, 64, **kw) if parametrization == "mup" else build(n_embd=width, **kw)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = muon(model, lr=0.02, adam_lr=0.0, ns_dtype="float32")
    x = tokens(4)
    torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    optimizer.step()
    return {
        n: torch.linalg.matrix_norm(p.detach() - before[n], ord=2).item()
        for n, p in model.named_parameters()
        if n.endswith(("c_fc.weight", "attn.c_proj.weight"))
    }


def test_muon_under_mup_takes_width_independent_spectral_steps():
    """µP's Muon rule: ``lr * sqrt(base_max / max)`` makes ||ΔW||₂ the base model's at every width.

    gptlab's Muon scales its orthogonalised update by 0.2·sqrt(max(rows, cols)) (AdamW's
    RMS), so under sp the step's spectral norm grows as sqrt(width) (here x2 from 64 to
    256); µP divides that growth out. (``lr / m`` would make it shrink as 1/sqrt(width).)
    """
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch>=2.9")
    small, wide = _muon_step_spectral_norms(64, "mup"), _muon_step_spectral_norms(256, "mup")
    for name in small:
        assert wide[name] / small[name] == pytest.approx(1.0, rel=0.15), name
    sp_small, sp_wide = _muon_step_spectral_norms(64, "sp"), _muon_step_spectral_norms(256, "sp")
    for name in sp_small:
        assert sp_wide[name] / sp_small[name] == pytest.approx(2.0, rel=0.15), name


def test_gqa_multipliers_with_heads_added_at_a_fixed_size():
    """Per-tensor multipliers when key/value heads stay fixed while query heads are added.

    Model: 256 wide, 8 query heads of 32, 2 key/value heads, so ``c_attn`` is
    (8 + 2·2)·32 = 384 rows by 256. Proxy: 64 wide, ``base_n_head=2`` of 32 and
    ``base_n_kv_head=2``: (2 + 2·2)·32 = 192 rows by 64. So c_attn's fan-out multiplier is
    384/192 = 2 (not m = 4), its fan-in 4; every other hidden matrix has 4 and 4. By hand:
    Adam 1/4 for every hidden matrix; SGD 2/4 = 0.5 for c_attn (1 for the others) and 2
    for c_attn's bias (4 for the other vectors); Muon sqrt(max(192, 64) / max(384, 256))
    = sqrt(1/2) for c_attn, sqrt(64/256) = 1/2 for c_proj, sqrt(256/1024) for c_fc.
    (The old base, 8 heads of 64/8 = 8, had 96 rows: fan-out 4, SGD 1, Muon 1/2.)
    """
    model = mup(
        256,
        64,
        n_head=8,
        tie_embeddings=False,
        attention={"n_kv_head": 2},
        mup={"base_n_head": 2, "base_n_kv_head": 2},
    )
    names = {id(p): n for n, p in model.named_parameters()}
    base = base_config(model.config)
    assert (base.n_embd, base.n_head, base.n_kv_head, base.head_size) == (64, 2, 2, 32)

    def by_name(rule: str) -> dict[str, float]:
        return {names[i]: f for i, f in lr_multipliers(model, rule).items()}

    adam, sgd_, muon_ = by_name("adam"), by_name("sgd"), by_name("muon")
    for name in names.values():
        matrix = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        assert adam[name] == pytest.approx(0.25 if matrix else 1.0), name
        if name.endswith("c_attn.weight"):
            assert sgd_[name] == pytest.approx(0.5) and muon_[name] == pytest.approx(0.5**0.5)
        elif name.endswith("c_attn.bias"):
            assert sgd_[name] == pytest.approx(2.0), name
        elif matrix:
            assert sgd_[name] == pytest.approx(1.0), name
        else:  # embeddings, readout, biases, norm gains: vector-like, width multiplier 4
            assert sgd_[name] == pytest.approx(4.0), name
    assert muon_["transformer.h.0.attn.c_proj.weight"] == pytest.approx(0.5)
    assert muon_["transformer.h.0.mlp.c_fc.weight"] == pytest.approx(0.5)
    # by default base_n_kv_head keeps the ratio: 8 to 2 gives 2 to 0.5, refused
    with pytest.raises(ModelConfigError, match="set model.mup.base_n_kv_head"):
        mup(256, 64, n_head=8, attention={"n_kv_head": 2}, mup={"base_n_head": 2})
    # ... and with a whole ratio it is the ratio: 8:4 -> 2:1
    ratio = mup(256, 64, n_head=8, attention={"n_kv_head": 4}, mup={"base_n_head": 2})
    assert base_n_kv_head(ratio.config) == 1 and base_config(ratio.config).n_kv_head == 1


def test_muon_groups_under_mup():
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch>=2.9")
    model = mup(128, 32, tie_embeddings=False)
    optimizer = muon(model, lr=0.02, adam_lr=0.003)
    lrs = _lrs(optimizer, model)
    for name, lr in lrs.items():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            assert lr == pytest.approx(0.02 / 2), name  # 1/sqrt(m), m = 4
        else:  # AdamW part: embeddings, readout, vectors (all vector-like: Adam lr unchanged)
            assert lr == pytest.approx(0.003), name


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kw", "words"),
    [
        (dict(n_embd=64, mup={"base_width": 128}), "larger than model.n_embd=64"),
        (dict(n_embd=64, mup={"base_width": 30}), "not a multiple of model.n_head=4"),
        (dict(n_embd=64, mup={"base_width": 0}), "must be a positive integer"),
        (dict(n_embd=64, position="rope", mup={"base_width": 20}), "odd head size"),
        (dict(n_embd=64, mup={"output_mult": 0.0}), "output_mult=0.0 must be a positive"),
        (dict(n_embd=64, mup={"input_mult": -1.0}), "input_mult=-1.0 must be a positive"),
        (dict(n_embd=64, mup={"zero_readout": True}), "tie_embeddings=false"),
        (dict(n_embd=64, value_embeds="all"), "does not cover model.value_embeds"),
        (dict(n_embd=64, x0_shortcut=True), "does not cover model.x0_shortcut"),
        (dict(n_embd=64, unet_skips=True), "does not cover model.unet_skips"),
        (dict(n_embd=64, mup={"base_widht": 32}), "unknown key model.mup.base_widht"),
        (dict(n_embd=64, mup={"base_n_head": 0}), "base_n_head=0 must be a positive"),
        (dict(n_embd=64, mup={"base_n_head": True}), "base_n_head=True must be a positive"),
        (dict(n_embd=64, mup={"base_n_kv_head": 2.5}), "base_n_kv_head=2.5 must be a"),
        (dict(n_embd=64, mup={"base_n_head": 8}), "base_n_head=8 is larger than model.n_head=4"),
        (
            dict(n_embd=64, mup={"base_width": 40, "base_n_head": 3}),
            "base_width=40 is not a multiple of model.mup.base_n_head=3",
        ),
        (
            dict(n_embd=64, mup={"base_n_head": 3}),
            "model.n_embd=64 is not a multiple of model.mup.base_n_head=3",
        ),
        (
            dict(n_embd=64, position="rope", mup={"base_width": 12, "base_n_head": 4}),
            "odd head size (3)",
        ),
        (
            dict(n_embd=64, attention={"n_kv_head": 1}, mup={"base_width": 32, "base_n_head": 2}),
            "gives the base model 2*1/4 key/value heads, not a whole number",
        ),
        (
            dict(n_embd=64, attention={"n_kv_head": 2}, mup={"base_n_kv_head": 4}),
            "base_n_kv_head=4 is larger than the model's 2 key/value heads",
        ),
        (
            dict(n_embd=64, mup={"base_n_head": 4, "base_n_kv_head": 3}),
            "base_n_kv_head=3 does not divide the base model's model.mup.base_n_head=4",
        ),
    ],
)
def test_bad_mup_input_is_one_sentence(kw, words):
    with pytest.raises(ModelConfigError) as err:
        GPTConfig(**BASE, parametrization="mup", **kw)
    message = str(err.value)
    assert words in message and message.count(". ") == 0 and "\n" not in message


def test_unknown_parametrization_is_refused():
    with pytest.raises(ModelConfigError, match="choose one of sp, mup"):
        GPTConfig(**BASE, n_embd=64, parametrization="ntk")


def test_config_round_trips():
    cfg = GPTConfig(**BASE, n_embd=64, parametrization="mup", mup={"base_width": 32})
    again = GPTConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.mup.base_width == 32
    heads = GPTConfig(
        **BASE, n_embd=64, parametrization="mup", mup={"base_width": 32, "base_n_head": 2}
    )
    assert GPTConfig.from_dict(heads.to_dict()).mup.base_n_head == 2
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("parametrization", "mup")}
    assert GPTConfig.from_dict(old).parametrization == "sp"  # checkpoints from before


# ---------------------------------------------------------------- export, checkpoint
def test_hf_export_folds_the_multipliers(tmp_path):
    model = mup(
        128,
        32,
        tie_embeddings=False,
        mup={"input_mult": 2.0, "output_mult": 3.0},
    ).eval()
    model.save_hf(tmp_path / "hf")
    back = GPT.from_hf(tmp_path / "hf").eval()
    assert back.config.parametrization == "sp"
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=1e-4, atol=1e-5)
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), rtol=1e-4, atol=1e-5)


def test_hf_export_of_a_tied_model_needs_equal_multipliers(tmp_path):
    with pytest.raises(ModelConfigError, match="one tied matrix cannot hold"):
        mup(128, 32).save_hf(tmp_path / "a")
    # equal multipliers fold into the one matrix: input_mult = output_mult / m
    model = mup(128, 32, mup={"input_mult": 0.5, "output_mult": 2.0}).eval()
    state = sp_state_dict(model)
    assert state["lm_head.weight"] is not model.lm_head.weight
    model.save_hf(tmp_path / "b")
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(GPT.from_hf(tmp_path / "b")(x), model(x), rtol=1e-4, atol=1e-5)


def test_mup_checkpoint_round_trips_through_training(tmp_path):
    from gptlab.checkpoint import load_model
    from gptlab.export import export
    from gptlab.train import train
    from gptlab.training.module import GPTLightningModule
    from tests.conftest import TINY_OVERRIDES, compose_train

    cfg = compose_train(
        [
            *TINY_OVERRIDES,
            "model.n_embd=128",
            "model.parametrization=mup",
            "model.mup.base_width=64",
            "model.mup.output_mult=2.0",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "~callbacks.sample_text",
        ],
        tmp_path / "run",
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    module = GPTLightningModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert module.model.config.parametrization == "mup"
    assert module.model.config.mup.base_width == 64 and module.model.logit_mult == 1.0
    loaded, exported = load_model(ckpt), load_model(export(ckpt))
    assert exported.model.config == module.model.config
    x = torch.tensor([loaded.tokenizer.encode("The cat")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), module.model.eval()(x))
        assert torch.equal(exported.model(x), loaded.model(x))


@pytest.mark.parametrize("parametrization", ["sp", "mup"])
def test_attention_scores_are_the_ones_attention_uses(parametrization):
    """``CausalSelfAttention.scores`` (read by the coordinate check) is what the backends softmax."""
    model = build(
        n_embd=64,
        parametrization=parametrization,
        mup={"base_width": 32},
        position="rope",
        attention={"n_kv_head": 2},
    )
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(2))
    rope = (model.rope_cos[:16], model.rope_sin[:16])
    s = attn.scores(x, rope)
    s = s.masked_fill(~torch.ones(16, 16, dtype=torch.bool).tril(), float("-inf"))
    _, _, v = attn.heads(x, rope)
    y = (s.softmax(-1) @ v.repeat_interleave(2, dim=1)).transpose(1, 2).reshape(2, 16, 64)
    torch.testing.assert_close(attn.c_proj(y), attn(x, rope), rtol=1e-5, atol=1e-6)
