"""``python -m gptlab.coordcheck``: µP's coordinate check, as ``microsoft/mup`` draws it.

    python -m gptlab.coordcheck model.parametrization=mup widths=[64,128,256,512,1024]
    python -m gptlab.coordcheck model.parametrization=sp               # the contrast
    python -m gptlab.coordcheck model.parametrization=mup optimizer=muon
    python -m gptlab.coordcheck --multirun model.parametrization=sp,mup

A parametrization is right for width when nothing in the network changes its size as
the width grows. The check shows it directly: each width trains a few steps at a large
learning rate on one fixed batch (the same characters, the same seed), and forward
hooks record the mean absolute value of every layer's output at every step: the
embedding output (after ``input_mult``), each block's attention scores (``scale · q·k``
over the causal pairs, from ``CausalSelfAttention.scores``: the only place µP's 1/d rule
shows), its attention and MLP outputs (what they add to the residual stream) and the
logits. Under µP the curves over width are
flat; under sp the later steps grow with width (the hidden updates, and with them the
logits, scale with the width), which is why a learning rate tuned at one width is wrong
at another.

Reported: per layer, the max/min ratio over widths at the last step (``ratios``; a flat
curve is near 1, tests/test_coordcheck.py asks ≤ 2 for every layer under µP and > 10
for some layer under sp),
``coordcheck.csv`` (width, step, layer, mean |activation|), ``coordcheck.json`` (the
same plus the ratios and the settings) and ``coordcheck.png`` (one panel per step,
mean |activation| against width, both log-scaled, a line per layer). Under µP the base
width is ``base_width`` (default: the smallest width), so the smallest model is sp.

``coord_check(cfg)`` does the work and returns a ``CoordCheck``; ``main`` is the Hydra
wrapper. The model is ``cfg.model`` (any preset, ``model=micro`` by default) with
``n_embd`` set per width (and ``n_head = width / head_size`` with ``head_size`` set:
heads added at a fixed size instead of growing) and ``block_size`` from
``cfg.block_size``; the optimizer is
``cfg.optimizer`` (its lr set large in ``gptlab/conf/coordcheck.yaml``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from gptlab.cli import entry_point
from gptlab.errors import ConfigError
from gptlab.model import GPT, GPTConfig
from gptlab.tokenizer import CharTokenizer
from gptlab.utils.io import atomic_write_bytes, atomic_write_text
from gptlab.utils.spec import build


@dataclass
class CoordCheck:
    """What a coordinate check measured (see the module docstring)."""

    parametrization: str
    widths: list[int]
    steps: int
    rows: list[dict[str, Any]]  # {"width", "step", "layer", "mean_abs"}
    ratios: dict[str, float]  # layer -> max/min over widths at the last step
    losses: dict[int, list[float]] = field(default_factory=dict)  # width -> loss per step
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.ratios)

    def value(self, width: int, step: int, layer: str) -> float:
        for row in self.rows:
            if (row["width"], row["step"], row["layer"]) == (width, step, layer):
                return float(row["mean_abs"])
        raise KeyError((width, step, layer))


def _text(path: str | None) -> str:
    if path is None:
        from gptlab.data.sources import embedded_text

        return embedded_text()
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"text={path} is not a file; give a text file, or text=null for the embedded corpus"
        )
    return file.read_text(encoding="utf-8")


def fixed_batch(
    text: str, batch_size: int, block_size: int, seed: int
) -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """A character tokenizer of ``text`` and one seeded batch of (input, target) windows."""
    tokenizer = CharTokenizer.from_corpus(text)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if len(ids) <= block_size + 1:
        raise ConfigError(
            f"the text has {len(ids)} characters, too few for block_size={block_size}; "
            "give a longer text or a smaller block_size"
        )
    starts = np.random.default_rng(seed).integers(0, len(ids) - block_size - 1, batch_size)
    rows = np.stack([ids[s : s + block_size + 1] for s in starts])
    return tokenizer, torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, 1:])


def _check(cfg: DictConfig) -> tuple[list[int], int]:
    widths = [int(w) for w in cfg.widths]
    if len(widths) < 2 or any(w < 1 for w in widths) or len(set(widths)) != len(widths):
        raise ConfigError(
            f"widths={list(cfg.widths)} must be at least two different positive widths, "
            "e.g. widths=[64,128,256]"
        )
    head_size = cfg.get("head_size")
    if head_size is not None:
        if not isinstance(head_size, int) or isinstance(head_size, bool) or head_size < 1:
            raise ConfigError(
                f"head_size={head_size!r} must be a positive integer, or null to keep "
                "model.n_head at every width"
            )
        odd = [w for w in widths if w % head_size]
        if odd:
            raise ConfigError(
                f"width {odd[0]} is not a multiple of head_size={head_size}, so it cannot "
                f"be split into heads of {head_size}; choose widths that are multiples of "
                f"{head_size}"
            )
    steps = int(cfg.steps)
    if steps < 1:
        raise ConfigError(f"steps={steps} must be at least 1 (updates before the last record)")
    return sorted(widths), steps


def _plain(node: Any) -> dict[str, Any]:
    d = OmegaConf.to_container(node, resolve=True)
    assert isinstance(d, dict)
    return {str(k): v for k, v in d.items()}


def model_config(cfg: DictConfig, width: int, vocab_size: int, base_width: int) -> GPTConfig:
    """``cfg.model`` at ``width``; under µP with the check's base width unless the model sets one.

    With ``cfg.head_size`` set, the model is widened by adding heads of that size
    (``n_head = width / head_size``, and under µP the base model's heads
    ``base_width / head_size`` unless the model sets ``mup.base_n_head``), the other way
    to widen a transformer, which µP's attention rule must also get right.
    """
    d = _plain(cfg.model)
    d.update(n_embd=width, vocab_size=vocab_size, block_size=int(cfg.block_size))
    head_size = cfg.get("head_size")
    if head_size is not None:
        d["n_head"] = width // int(head_size)
    if d.get("parametrization") == "mup":
        mup = dict(d.get("mup") or {})
        if mup.get("base_width") is None:
            mup["base_width"] = base_width
        if head_size is not None and mup.get("base_n_head") is None:
            mup["base_n_head"] = int(mup["base_width"]) // int(head_size)
        d["mup"] = mup
    return GPTConfig.from_dict(d)


def _record(model: GPT, seen: dict[str, float]) -> list[Any]:
    """Forward hooks writing each layer's mean |output| into ``seen``; returns the handles."""

    def hook(name: str):
        def fn(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            seen[name] = output.detach().abs().mean().item()

        return fn

    def scores(name: str):
        def fn(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            x, rope = inputs[0], inputs[1] if len(inputs) > 1 else None
            with torch.no_grad():
                s = module.scores(x, rope)  # type: ignore[operator]
            T = s.size(-1)
            causal = torch.ones(T, T, dtype=torch.bool, device=s.device).tril()
            seen[name] = s.abs()[..., causal].mean().item()

        return fn

    handles = [model.transformer["drop"].register_forward_hook(hook("embedding"))]
    for i, block in enumerate(model.transformer["h"]):
        handles.append(block.attn.register_forward_hook(scores(f"block{i}.scores")))
        handles.append(block.attn.register_forward_hook(hook(f"block{i}.attn")))
        handles.append(block.mlp.register_forward_hook(hook(f"block{i}.mlp")))
    handles.append(model.register_forward_hook(hook("logits")))
    return handles


def coord_check(cfg: DictConfig) -> CoordCheck:
    """Train each width ``cfg.steps`` steps on one fixed batch, recording every layer's mean |output|.

    With ``cfg.seeds`` > 1 each seed draws its own batch and init, and the records are
    averaged over seeds (as ``microsoft/mup``'s ``get_coord_data`` does): a tiny model's
    few steps are noisy, the average is not.
    """
    widths, steps = _check(cfg)
    base = int(cfg.base_width) if cfg.get("base_width") is not None else widths[0]
    text = _text(cfg.get("text"))
    optimizer_spec = _plain(cfg.optimizer)
    seeds = [int(cfg.seed) + i for i in range(int(cfg.get("seeds") or 1))]
    totals: dict[tuple[int, int, str], float] = {}
    losses: dict[int, list[float]] = {w: [0.0] * (steps + 1) for w in widths}
    for seed in seeds:
        tokenizer, x, y = fixed_batch(text, int(cfg.batch_size), int(cfg.block_size), seed)
        for width in widths:
            torch.manual_seed(seed)
            model = GPT(model_config(cfg, width, tokenizer.vocab_size, base)).train()
            for step, seen, loss in _train(model, build(dict(optimizer_spec), model), x, y, steps):
                losses[width][step] += loss / len(seeds)
                for layer, value in seen.items():
                    key = (width, step, layer)
                    totals[key] = totals.get(key, 0.0) + value / len(seeds)
    rows: list[dict[str, Any]] = [
        {"width": w, "step": t, "layer": k, "mean_abs": v} for (w, t, k), v in totals.items()
    ]
    last = [r for r in rows if r["step"] == steps]
    ratios: dict[str, float] = {}
    for layer in dict.fromkeys(str(r["layer"]) for r in last):
        values = [r["mean_abs"] for r in last if r["layer"] == layer]
        ratios[layer] = max(values) / min(values) if min(values) > 0 else math.inf
    parametrization = str(cfg.model.get("parametrization", "sp"))
    return CoordCheck(parametrization, widths, steps, rows, ratios, losses)


def _train(
    model: GPT, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
):
    """Yield ``(step, {layer: mean |output|}, loss)`` after 0, 1, ..., ``steps`` updates."""
    seen: dict[str, float] = {}
    handles = _record(model, seen)
    try:
        for step in range(steps + 1):
            logits = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            yield step, dict(seen), loss.item()
            if step == steps:
                break
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        for handle in handles:
            handle.remove()


def write(result: CoordCheck, folder: Path, plot: bool = True, settings: Any = None) -> CoordCheck:
    """Write ``coordcheck.csv``, ``coordcheck.json`` and (``plot``) ``coordcheck.png`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["width,step,layer,mean_abs"]
    lines += [f"{r['width']},{r['step']},{r['layer']},{r['mean_abs']:.6g}" for r in result.rows]
    atomic_write_text(folder / "coordcheck.csv", "\n".join(lines) + "\n")
    summary = {
        "parametrization": result.parametrization,
        "widths": result.widths,
        "steps": result.steps,
        "ratios": result.ratios,
        "losses": {str(w): v for w, v in result.losses.items()},
        "settings": settings,
        "rows": result.rows,
    }
    atomic_write_text(folder / "coordcheck.json", json.dumps(summary, indent=1) + "\n")
    result.files = {"csv": folder / "coordcheck.csv", "json": folder / "coordcheck.json"}
    if plot:
        result.files["png"] = folder / "coordcheck.png"
        atomic_write_bytes(result.files["png"], _plot(result))
    return result


def _plot(result: CoordCheck) -> bytes:
    """microsoft/mup's picture: a panel per step, mean |activation| against width, a line per layer."""
    import io

    from matplotlib.figure import Figure  # Agg: no display needed

    steps = list(range(result.steps + 1))
    fig = Figure(figsize=(3.0 * len(steps), 3.4))
    axes = fig.subplots(1, len(steps), sharey=True)
    cmap = __import__("matplotlib").colormaps["viridis"]
    layers = result.layers
    for ax, step in zip(np.atleast_1d(axes), steps, strict=True):
        for i, layer in enumerate(layers):
            ys = [result.value(w, step, layer) for w in result.widths]
            ax.plot(
                result.widths,
                ys,
                marker="o",
                ms=3,
                color=cmap(i / max(1, len(layers) - 1)),
                label=layer,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {step}")
        ax.set_xlabel("width")
    np.atleast_1d(axes)[0].set_ylabel("mean |activation|")
    name = {"mup": "µP", "sp": "SP"}.get(result.parametrization, result.parametrization)
    fig.suptitle(f"coordinate check, {name}")
    fig.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), loc="center right", fontsize=7)
    fig.subplots_adjust(right=0.88, top=0.82, bottom=0.18)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def format_ratios(result: CoordCheck) -> str:
    """One line per layer: the max/min ratio over widths at the last step."""
    lines = [
        f"{result.parametrization}: max/min over widths {result.widths} after {result.steps} steps"
    ]
    lines += [f"  {layer:<14} {ratio:8.2f}" for layer, ratio in result.ratios.items()]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="coordcheck")
@entry_point
def main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    result = coord_check(cfg)
    if cfg.get("output_dir"):
        folder = Path(str(cfg.output_dir)).expanduser().absolute()
    else:
        from hydra.core.hydra_config import HydraConfig

        folder = Path(HydraConfig.get().runtime.output_dir)
    write(result, folder, bool(cfg.plot), OmegaConf.to_container(cfg, resolve=True))
    print(format_ratios(result))
    print(f"wrote {', '.join(str(p) for p in result.files.values())}")


if __name__ == "__main__":
    main()
