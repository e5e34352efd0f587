"""``python -m gptlab.export``: take the weights out of a training checkpoint.

    python -m gptlab.export ckpt=outputs/.../checkpoints/last.ckpt                 # safetensors
    python -m gptlab.export ckpt=outputs/.../checkpoints/last.ckpt format=hf       # HF GPT-2

A training checkpoint also holds the optimizer and loop state; an export holds only
what inference needs, in formats that load without unpickling: ``model.safetensors``
with gptlab's ``config.json`` and ``tokenizer.json``, or a Hugging Face GPT-2 folder for
GPT-2-shaped models. ``gptlab.checkpoint.load_model(folder)`` reads either back. The
safetensors metadata carries a checksum of the weights, verified on load. Every file is
written atomically, so a full disk or a kill leaves the previous export whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from gptlab.checkpoint import CHECKSUM_KEY, load_model
from gptlab.cli import entry_point
from gptlab.errors import ConfigError
from gptlab.model import GPT
from gptlab.tokenizer import Tokenizer
from gptlab.utils.checksum import tensors_sha256
from gptlab.utils.io import atomic_write_bytes, atomic_write_text

FORMATS = ("safetensors", "hf")


def export_safetensors(model: GPT, tokenizer: Tokenizer, out: Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` into ``out``."""
    from safetensors.torch import save

    state = model.state_dict()
    if model.config.tie_embeddings:  # one tensor, two names: safetensors stores it once
        state.pop("lm_head.weight", None)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    metadata = {"format": "pt", "producer": "gptlab", CHECKSUM_KEY: tensors_sha256(tensors)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.safetensors", save(tensors, metadata=metadata))
    atomic_write_text(out / "config.json", json.dumps(model.config.to_dict(), indent=2) + "\n")
    tokenizer.save(out / "tokenizer.json")
    return out


def export(ckpt: str | Path, format: str = "safetensors", out: str | Path | None = None) -> Path:
    """Export one checkpoint (or any source ``load_model`` reads); returns the folder written."""
    if format not in FORMATS:
        raise ConfigError(
            f"format={format!r} is not an export format; use one of {', '.join(FORMATS)}"
        )
    folder = Path(out) if out else Path(ckpt).resolve().parent.parent / "export" / format
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"out={folder} is a file; an export is a folder: give a new or existing folder"
        )
    loaded = load_model(ckpt)
    try:
        with torch.no_grad():
            if format == "hf":
                loaded.model.save_hf(folder)
            else:
                export_safetensors(loaded.model, loaded.tokenizer, folder)
    except (
        OSError
    ) as e:  # read-only or full disk, a file in the way: the files already there are intact
        raise ConfigError(
            f"could not write the export to {folder} ({e.strerror or e}); choose a folder you can "
            "write to with enough free space, e.g. out=<folder>"
        ) from None
    return folder


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@entry_point
def main(cfg: DictConfig) -> None:
    folder = export(cfg.ckpt, cfg.format, cfg.get("out"))
    print(f"exported {cfg.format} to {folder}")


if __name__ == "__main__":
    main()
