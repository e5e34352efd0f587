"""The optimizer switches of issue 19: NorMuon, cautious weight decay, per-kind lrs.

Each is off by default and then leaves the optimizer exactly as before (torch's Muon and
AdamW, the same groups); each rule is checked against numbers worked out here by plain
formulas on a tiny matrix; each survives a state_dict round trip; bad settings are one
sentence.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gptlab.errors import ConfigError
from gptlab.model import GPT, GPTConfig
from gptlab.train import train
from gptlab.training.muon import Muon, newton_schulz, normuon_normalise
from gptlab.training.optim import adamw, decay_groups, muon, sgd
from gptlab.training.schedules import lambda_scheduler
from gptlab.utils.spec import build
from tests.conftest import TINY_OVERRIDES, compose_train

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(tie: bool = False, **extra) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=32,
        block_size=8,
        n_layer=2,
        n_head=2,
        n_embd=16,
        bias=False,
        tie_embeddings=tie,
        pad_vocab_multiple=1,
        **extra,
    )
    return GPT(config)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 32, (2, 8), generator=gen)
        logits = model(idx)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), idx.roll(-1, 1).flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


# -- off by default: exactly the previous optimizer ------------------------------------


def test_newton_schulz_runs_in_float32_off_cuda_and_agrees_with_bfloat16():
    """torch's bfloat16 iteration is very slow on a CPU; auto picks float32 there."""
    from gptlab.training.optim import newton_schulz_dtype

    model = tiny_gpt()
    opt = muon(model)
    assert type(opt.muon) is Muon and opt.muon.ns_dtype == torch.float32
    assert newton_schulz_dtype("auto", [torch.zeros(2, 2)]) == torch.float32
    assert newton_schulz_dtype("bfloat16", [torch.zeros(2, 2)]) == torch.bfloat16
    g = torch.randn(8, 24, generator=torch.Generator().manual_seed(0))
    o32, o16 = newton_schulz(g, dtype=torch.float32), newton_schulz(g).float()
    assert o32.dtype == torch.float32
    # both land near the orthogonal factor: singular values in the quintic's band around 1
    s = torch.linalg.svdvals(o32)
    assert s.min() > 0.5 and s.max() < 1.3
    assert (o32 - o16).abs().max() < 0.05  # bfloat16 keeps ~3 significant digits
    with pytest.raises(ConfigError, match="optimizer.ns_dtype='half' is not auto"):
        muon(model, ns_dtype="half")


def test_muon_with_switches_off_is_torch_muon_plus_adamw_bit_for_bit():
    ours, ref = tiny_gpt(), tiny_gpt()
    opt = muon(ours, weight_decay=0.1, ns_dtype="bfloat16")  # auto's choice on CUDA
    assert type(opt.muon) is torch.optim.Muon and type(opt.adamw) is torch.optim.AdamW
    # the previous code path, written out: the same split, torch's two optimizers
    head = {id(ref.lm_head.weight)}
    emb = {id(m.weight) for m in ref.modules() if isinstance(m, nn.Embedding)}
    params = list(ref.parameters())
    hidden = [p for p in params if p.dim() == 2 and id(p) not in head | emb]
    rest = [p for p in params if all(p is not h for h in hidden)]
    ref_muon = torch.optim.Muon(
        hidden, lr=0.02, momentum=0.95, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"
    )
    ref_adam = torch.optim.AdamW(
        [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=3e-3,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    class Both:
        def zero_grad(self):
            ref_muon.zero_grad()
            ref_adam.zero_grad()

        def step(self):
            ref_muon.step()
            ref_adam.step()

    train_steps(ours, opt, 4)
    train_steps(ref, Both(), 4)
    assert same_params(ours, ref)


def test_adamw_with_switches_off_is_torch_adamw_on_the_decay_groups_bit_for_bit():
    ours, ref = tiny_gpt(), tiny_gpt()
    opt = adamw(ours, lr=1e-2, fused=False)
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 2
    ref_opt = torch.optim.AdamW(decay_groups(ref, 0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    train_steps(ours, opt, 4)
    train_steps(ref, ref_opt, 4)
    assert same_params(ours, ref)


def test_gptlab_muon_step_with_switches_off_equals_torch_muon():
    torch.manual_seed(0)
    shapes = [(8, 5), (4, 12), (6, 6)]
    a = [torch.randn(s, requires_grad=True) for s in shapes]
    b = [p.detach().clone().requires_grad_() for p in a]
    ref = torch.optim.Muon(a, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    ours = Muon(b, lr=0.02, weight_decay=0.1)
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    assert max((p - q).abs().max().item() for p, q in zip(a, b, strict=True)) <= 1e-6


# -- NorMuon ---------------------------------------------------------------------------


def test_normuon_rule_on_a_2x3_matrix_over_two_steps():
    beta2, eps = 0.5, 1e-8
    o1 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    o2 = [[0.0, 1.0, 0.0], [2.0, 0.0, 2.0]]
    v = torch.zeros(2)
    expected_v = [0.0, 0.0]
    for o in (o1, o2):
        got = normuon_normalise(torch.tensor(o), v, beta2, eps)
        expected_v = [
            beta2 * expected_v[i] + (1 - beta2) * sum(x * x for x in o[i]) / 3 for i in range(2)
        ]
        scaled = [[x / (math.sqrt(expected_v[i]) + eps) for x in o[i]] for i in range(2)]
        norm_o = math.sqrt(sum(x * x for row in o for x in row))
        norm_s = math.sqrt(sum(x * x for row in scaled for x in row))
        expected = [[x * norm_o / norm_s for x in row] for row in scaled]
        assert v.tolist() == pytest.approx(expected_v, rel=1e-6)
        assert got.tolist() == [pytest.approx(row, rel=1e-6) for row in expected]


def test_normuon_step_equalises_the_rows_of_a_diagonal_update():
    """g = diag(3, 4) (2x3): NS keeps it diagonal, so O = diag(s1, s2) with s_i from the
    scalar quintic; NorMuon makes both rows' entries sqrt((s1^2 + s2^2) / 2)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    s = [3 / 5, 4 / 5]  # singular values over the Frobenius norm
    for _ in range(5):
        s = [a * x + b * x**3 + c * x**5 for x in s]
    w = torch.zeros(2, 3, requires_grad=True)
    opt = Muon([w], lr=0.1, momentum=0.0, nesterov=False, normuon=True, normuon_beta2=0.95)
    w.grad = torch.tensor([[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    opt.step()
    step = 0.1 * 0.2 * math.sqrt(3)  # lr * match_rms_adamw for a 2x3 matrix
    # bfloat16 rounding inside NS moves s by a few per cent from the exact scalar quintic
    o = newton_schulz(w.grad).float()
    assert [o[0, 0].item(), o[1, 1].item()] == pytest.approx(s, rel=5e-2)
    entry = math.sqrt((o[0, 0].item() ** 2 + o[1, 1].item() ** 2) / 2)
    assert w[0, 0].item() == pytest.approx(-step * entry, rel=1e-5)
    assert w[1, 1].item() == pytest.approx(-step * entry, rel=1e-5)
    assert w[0, 1].item() == w[0, 2].item() == w[1, 0].item() == w[1, 2].item() == 0.0


def test_normuon_keeps_plain_muons_update_norm():
    torch.manual_seed(0)
    a = torch.randn(6, 4, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    plain = Muon([a], lr=0.1, momentum=0.0)
    nor = Muon([b], lr=0.1, momentum=0.0, normuon=True)
    before = a.detach().clone()
    a.grad = b.grad = torch.randn(6, 4)
    plain.step()
    nor.step()
    assert (b - before).norm().item() == pytest.approx((a - before).norm().item(), rel=1e-3)
    assert not torch.allclose(a, b)


# -- cautious weight decay -------------------------------------------------------------


def adam_update(g_steps: list[float], t: int, lr: float, betas=(0.9, 0.95), eps=1e-8) -> float:
    """Adam's step for one coordinate at step t (1-based), from its gradient history."""
    m = v = 0.0
    for g in g_steps[:t]:
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
    m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
    return lr * m_hat / (math.sqrt(v_hat) + eps)


def test_cautious_adamw_on_a_2x2_matrix_with_decay_falling_to_zero():
    lr, wd = 0.1, 0.5
    p0 = [1.0, -2.0, 3.0, -4.0]
    grads = [[1.0, 1.0, -1.0, -1.0], [1.0, -2.0, -1.0, 3.0]]

    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(p0).reshape(2, 2))

    model = One()
    opt = adamw(model, lr=lr, weight_decay=wd, fused=False, cautious_wd=True, wd_decay_steps=2)
    expected = list(p0)
    for t, g in enumerate(grads, start=1):
        model.w.grad = torch.tensor(g).reshape(2, 2)
        opt.step()
        wd_t = wd * (1 - (t - 1) / 2)  # 1x then 0.5x: linear to 0 at step 2
        for i in range(4):
            u = adam_update([gs[i] for gs in grads], t, lr)
            decay = lr * wd_t * expected[i] if u * expected[i] >= 0 else 0.0
            expected[i] = expected[i] - u - decay
        assert model.w.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    # step 1 decays only (0,0) and (1,1): their update pulls toward zero too
    assert opt.param_groups[0]["weight_decay"] == wd  # restored after the step


def test_cautious_muon_skips_decay_where_it_fights_the_update():
    """O = diag(s, s) >= 0 on p = [[1, -2], [3, -4]]: only p11 (-4, pushed further
    negative by -O) keeps its full value; zeros of O count as agreeing (u * p >= 0)."""
    lr, wd = 0.1, 0.5
    start = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    a = start.clone().requires_grad_()
    b = start.clone().requires_grad_()
    plain = Muon([a], lr=lr, momentum=0.0, weight_decay=wd, cautious_wd=True)
    ref = Muon([b], lr=lr, momentum=0.0, weight_decay=wd)
    a.grad = b.grad = torch.eye(2)
    plain.step()
    ref.step()
    # identical orthogonalised update, so the difference is the skipped decay alone
    diff = (a - b).detach()
    assert diff[1, 1].item() == pytest.approx(lr * wd * -4.0, rel=1e-5)
    assert diff[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert diff[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert diff[1, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_muon_cautious_wd_also_covers_the_adamw_part():
    opt = muon(tiny_gpt(), weight_decay=0.1, cautious_wd=True)
    assert type(opt.muon) is Muon and opt.muon.param_groups[0]["cautious_wd"]
    assert all(g["cautious_wd"] for g in opt.adamw.param_groups)


# -- per-kind lrs ----------------------------------------------------------------------


def lr_of(opt: torch.optim.Optimizer, param: torch.Tensor) -> float:
    return next(g["lr"] for g in opt.param_groups if any(p is param for p in g["params"]))


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_head_and_embedding_lrs_and_the_schedule_scales_them(kind):
    model = tiny_gpt(tie=False)
    if kind == "adamw":
        opt = adamw(model, lr=1e-3, head_lr=0.004, embedding_lr=0.2, fused=False)
        other = model.transformer.h[0].attn.c_attn.weight
        default = 1e-3
    else:
        opt = muon(model, lr=0.02, adam_lr=3e-3, head_lr=0.004, embedding_lr=0.2)
        other = model.transformer.ln_f.weight
        default = 3e-3
    assert lr_of(opt, model.lm_head.weight) == 0.004
    assert lr_of(opt, model.transformer.wte.weight) == 0.2
    assert lr_of(opt, model.transformer.wpe.weight) == 0.2
    assert lr_of(opt, other) == default
    bases = [g["lr"] for g in opt.param_groups]
    sched = lambda_scheduler(opt, "cosine", warmup_steps=2, total_steps=6)["scheduler"]
    factor = sched.lr_lambdas[0]
    for k in range(1, 5):
        train_steps(model, opt, 1, seed=k)
        sched.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([b * factor(k) for b in bases])


def test_value_embeddings_count_as_embeddings():
    model = tiny_gpt(tie=False, value_embeds="alternate")
    tables = [m for n, m in model.named_modules() if isinstance(m, nn.Embedding) and "value" in n]
    assert tables, "the model has value-embedding tables"
    opt = muon(model, embedding_lr=0.2)
    assert all(lr_of(opt, t.weight) == 0.2 for t in tables)


def test_tied_head_lr_is_refused_unless_equal_to_the_embeddings():
    with pytest.raises(ConfigError, match="tie_embeddings=true makes the head the token embedding"):
        adamw(tiny_gpt(tie=True), lr=1e-3, head_lr=0.004)
    with pytest.raises(ConfigError, match="head_lr"):
        muon(tiny_gpt(tie=True), head_lr=0.004, embedding_lr=0.2)
    model = tiny_gpt(tie=True)
    opt = muon(model, head_lr=0.2, embedding_lr=0.2)
    assert lr_of(opt, model.lm_head.weight) == 0.2


# -- checkpoints -----------------------------------------------------------------------


def everything_on() -> dict:
    return dict(normuon=True, cautious_wd=True, wd_decay_steps=10, head_lr=1e-3, embedding_lr=0.05)


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_state_dict_round_trip_continues_exactly(kind, tmp_path):
    def make(model):
        if kind == "adamw":
            options = everything_on()
            del options["normuon"]
            return adamw(model, lr=1e-3, fused=False, weight_decay=0.1, **options)
        return muon(model, weight_decay=0.1, **everything_on())

    a = tiny_gpt()
    opt_a = make(a)
    train_steps(a, opt_a, 3)
    b = tiny_gpt()
    b.load_state_dict(a.state_dict())
    opt_b = make(b)
    saved = tmp_path / "optimizer.pt"  # through a file, as a checkpoint goes
    torch.save(opt_a.state_dict(), saved)
    opt_b.load_state_dict(torch.load(saved, weights_only=True))
    assert opt_b.param_groups[0]["wd_step"] == 3
    train_steps(a, opt_a, 2, seed=9)
    train_steps(b, opt_b, 2, seed=9)
    assert same_params(a, b)


def test_variants_train_and_resume_with_lightning(tmp_path):
    run = tmp_path / "run"
    base = [
        *TINY_OVERRIDES,
        "~callbacks.sample_text",
        "model.tie_embeddings=false",
        "optimizer=muon",
        "optimizer.normuon=true",
        "optimizer.cautious_wd=true",
        "optimizer.weight_decay=0.1",
        "optimizer.wd_decay_steps=${trainer.max_steps}",
        "optimizer.head_lr=0.004",
        "optimizer.embedding_lr=0.2",
        "trainer.val_check_interval=100",
    ]
    train(compose_train([*base, "trainer.max_steps=2", "checkpoint.every_n_steps=2"], run))
    metrics = train(compose_train([*base, "trainer.max_steps=3", f"resume={run}"], tmp_path / "x"))
    assert math.isfinite(metrics["train/loss"])
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3
    assert state["optimizer_states"][0]["muon"]["param_groups"][0]["wd_step"] == 3


# -- bad input -------------------------------------------------------------------------


def test_normuon_on_another_optimizer_is_one_sentence(tmp_path):
    cfg = compose_train([*TINY_OVERRIDES, "optimizer=adamw", "+optimizer.normuon=true"], tmp_path)
    with pytest.raises(
        ConfigError, match="optimizer=adamw has no option normuon; .*optimizer=muon"
    ):
        build(dict(cfg.optimizer), tiny_gpt())
    with pytest.raises(ConfigError, match="optimizer=sgd has no option normuon"):
        sgd(tiny_gpt(), normuon=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"normuon": True, "normuon_beta2": -0.1}, "normuon_beta2=-0.1 must be within"),
        ({"normuon": True, "normuon_beta2": 1.0}, "normuon_beta2=1.0 must be within"),
        ({"wd_decay_steps": 10}, "set optimizer.cautious_wd=true"),
        ({"cautious_wd": True, "wd_decay_steps": 0}, "wd_decay_steps=0 must be >= 1"),
        ({"head_lr": -1.0}, "head_lr=-1.0 must be >= 0"),
    ],
)
def test_bad_muon_settings_are_one_sentence(options, message):
    with pytest.raises(ConfigError, match=message):
        muon(tiny_gpt(), **options)


def test_yaml_defaults_are_all_off(tmp_path):
    for name in ("adamw", "muon"):
        cfg = compose_train([*TINY_OVERRIDES, f"optimizer={name}"], tmp_path)
        assert cfg.optimizer.cautious_wd is False
        assert cfg.optimizer.head_lr is None and cfg.optimizer.embedding_lr is None
        assert cfg.optimizer.wd_decay_steps is None
    assert cfg.optimizer.normuon is False and cfg.optimizer.normuon_beta2 == 0.95


def test_tied_head_lr_stops_a_real_run_with_the_sentence(tmp_path):
    cfg = compose_train(
        [*TINY_OVERRIDES, "~callbacks.sample_text", "optimizer=muon", "optimizer.head_lr=0.01"],
        tmp_path / "run",
    )
    with pytest.raises(ConfigError, match="makes the head the token embedding"):
        train(cfg)
