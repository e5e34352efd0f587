"""The coordinate check as a test: µP's activations are flat in width, sp's are not.

``python -m gptlab.coordcheck``'s defaults at widths 64..1024 (micro: 2 layers, 2 heads;
4 x 32 characters; AdamW at lr 3e-3; 5 steps; averaged over 3 seeds), on one CPU thread.
Each rule of µP was switched off in turn (init variance, hidden Adam lr, the 1/m logit
multiplier, the 1/d attention scale) and each then fails the µP assertion; the note of
issue 18 lists the ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gptlab.coordcheck import coord_check, format_ratios, write
from gptlab.errors import GptlabError
from tests.conftest import CONF_DIR, REPO

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = "widths=[64,128,256,512,1024]"


def compose_coordcheck(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("coordcheck", overrides=overrides)


@pytest.fixture(scope="module")
def checks():
    return {
        p: coord_check(compose_coordcheck([WIDTHS, f"model.parametrization={p}"]))
        for p in ("mup", "sp")
    }


def test_mup_activations_do_not_depend_on_width(checks):
    result = checks["mup"]
    assert result.steps == 5 and result.widths == [64, 128, 256, 512, 1024]
    layers = set(result.ratios)
    assert {"embedding", "logits", "block0.attn", "block1.mlp", "block1.scores"} <= layers
    assert max(result.ratios.values()) <= 2.0, format_ratios(result)


def test_sp_activations_grow_with_width(checks):
    result = checks["sp"]
    assert max(result.ratios.values()) > 10, format_ratios(result)
    # and they grow: the widest model's hidden outputs are the largest
    for layer in ("block0.attn", "block1.mlp"):
        values = [result.value(w, 5, layer) for w in result.widths]
        assert values[-1] == max(values)


def test_mup_with_muon_keeps_the_hidden_outputs_flat():
    """Muon's µP rule (lr x sqrt(base_max / max)) keeps every layer's output flat in width.

    Measured with the rule removed (lr unchanged) the MLP outputs grow 6x from width 64
    to 512, with Adam's lr / m instead they shrink 2.3x. The attention scores are left
    out: under Muon they shrink with width (about 1/sqrt(width) at 5 steps, since the
    orthogonalised query update is not aligned with the keys the way Adam's is, so µP's
    1/d over-corrects); the issue 18 note records it.
    """
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch>=2.9")
    cfg = compose_coordcheck(
        ["widths=[64,128,256,512]", "seeds=2", "optimizer=muon", "optimizer.lr=0.02"]
    )
    result = coord_check(cfg)
    outputs = {k: v for k, v in result.ratios.items() if not k.endswith(".scores")}
    assert max(outputs.values()) <= 2.0, format_ratios(result)


def test_mup_with_heads_added_at_a_fixed_size_stays_flat():
    """Widening by adding heads of 32 (2 heads at width 64 ... 32 at 1024), µP from 2 x 32.

    No head changes size, so the attention scale stays sp's 1/sqrt(32) at every width.
    Measured with the scale derived the old way (base head size base_width / n_head of
    the widened model: 2 at width 1024) the scores' ratio is 6.8 (block 1) and 3.7 (block 0),
    with the other layers as here; sp with fixed head size exceeds 200 (README, µP section).
    """
    result = coord_check(compose_coordcheck([WIDTHS, "head_size=32"]))
    assert max(result.ratios.values()) <= 2.0, format_ratios(result)


def test_mup_trains_at_every_width_and_sp_breaks_at_the_widest(checks):
    mup, sp = checks["mup"].losses, checks["sp"].losses
    assert all(losses[-1] < losses[0] - 0.5 for losses in mup.values())
    assert sp[64] == pytest.approx(mup[64])  # the base width: µP is sp there
    assert sp[1024][-1] > mup[1024][-1] + 0.5  # the same lr is too large for sp at 1024


def test_files_and_cli(tmp_path, checks):
    write(checks["mup"], tmp_path / "api")
    data = json.loads((tmp_path / "api" / "coordcheck.json").read_text())
    assert data["ratios"] == pytest.approx(checks["mup"].ratios)
    assert (tmp_path / "api" / "coordcheck.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "api" / "coordcheck.csv").read_text().splitlines()
    assert lines[0] == "width,step,layer,mean_abs" and len(lines) == 1 + len(checks["mup"].rows)

    out = tmp_path / "cli"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptlab.coordcheck",
            "widths=[32,64]",
            "steps=1",
            "seeds=1",
            "threads=1",
            f"output_dir={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "mup: max/min over widths [32, 64] after 1 steps" in done.stdout
    assert {p.name for p in out.iterdir()} == {
        "coordcheck.csv",
        "coordcheck.json",
        "coordcheck.png",
    }


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("widths=[64]", "at least two different positive widths"),
        ("steps=0", "steps=0 must be at least 1"),
        ("base_width=128", "model.mup.base_width=128 is larger than model.n_embd=64"),
        ("text=/no/such/file.txt", "is not a file"),
        ("head_size=48", "width 64 is not a multiple of head_size=48"),
        ("head_size=0", "head_size=0 must be a positive integer"),
    ],
)
def test_bad_input(override, words):
    cfg = compose_coordcheck(["widths=[64,128]", "steps=1", "seeds=1", override])
    with pytest.raises(GptlabError) as err:
        coord_check(cfg)
    assert words in str(err.value)
