"""``python -m gptlab.export``: take the weights out of a training checkpoint.

    python -m gptlab.export ckpt=outputs/.../checkpoints/last.ckpt                 # safetensors
    python -m gptlab.export ckpt=outputs/.../checkpoints/last.ckpt format=hf       # HF GPT-2

A training checkpoint also holds the optimizer and loop state; an export holds only
what inference needs, in formats that load without unpickling: ``model.safetensors``
with gptlab's ``config.json`` and ``tokenizer.json`` (``load_exported`` reads it back),
or a Hugging Face GPT-2 folder for GPT-2-shaped models. Every file is written atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from gptlab.checkpoint import CheckpointError, load_checkpoint
from gptlab.errors import ConfigError, user_errors
from gptlab.model import GPT, GPTConfig
from gptlab.tokenizer import Tokenizer, load_tokenizer
from gptlab.utils.io import atomic_write_bytes, atomic_write_text

FORMATS = ("safetensors", "hf")


def export_safetensors(model: GPT, tokenizer: Tokenizer, out: Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` into ``out``."""
    from safetensors.torch import save

    state = model.state_dict()
    if model.config.tie_embeddings:  # one tensor, two names: safetensors stores it once
        state.pop("lm_head.weight", None)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.safetensors", save(tensors, metadata={"format": "pt", "producer": "gptlab"}))
    atomic_write_text(out / "config.json", json.dumps(model.config.to_dict(), indent=2) + "\n")
    tokenizer.save(out / "tokenizer.json")
    return out


def load_exported(folder: str | Path) -> tuple[GPT, Tokenizer]:
    """Rebuild the model (eval mode) and tokenizer from an ``export_safetensors`` folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} has no {name}; export a checkpoint with python -m gptlab.export first")
    model = GPT(GPTConfig.from_dict(json.loads((folder / "config.json").read_text())))
    state = load_file(folder / "model.safetensors")
    if model.config.tie_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model.eval(), load_tokenizer(folder / "tokenizer.json")


def export(ckpt: str | Path, format: str = "safetensors", out: str | Path | None = None) -> Path:
    """Export one checkpoint; returns the folder written."""
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not an export format; use one of {', '.join(FORMATS)}")
    loaded = load_checkpoint(ckpt)
    folder = Path(out) if out else Path(ckpt).resolve().parent.parent / "export" / format
    if format == "hf":
        loaded.model.save_hf(folder)
    else:
        export_safetensors(loaded.model, loaded.tokenizer, folder)
    return folder


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        with torch.no_grad():
            folder = export(cfg.ckpt, cfg.format, cfg.get("out"))
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"exported {cfg.format} to {folder}")


if __name__ == "__main__":
    main()
