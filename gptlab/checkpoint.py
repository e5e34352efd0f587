"""Load a gptlab checkpoint for inference: the model, its tokenizer and the run's config.

Checkpoints are Lightning ``.ckpt`` files that hold only tensors and plain data, so
they are read with ``torch.load(weights_only=True)``: a file crafted to run code
when unpickled is refused instead of executed. Everything needed to rebuild the
model and the tokenizer travels inside the file (no Hydra, no config files).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptlab.model import GPT, GPTConfig, ModelConfigError
from gptlab.tokenizer import Tokenizer, TokenizerError, tokenizer_from_dict


class CheckpointError(ValueError):
    """The file is missing, unreadable or not a gptlab checkpoint; the message says what to do."""


@dataclass
class LoadedCheckpoint:
    model: GPT
    tokenizer: Tokenizer
    config: dict[str, Any]
    path: Path


def safe_torch_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` whose every failure is one ``CheckpointError`` sentence.

    A damaged file can fail deep inside the zip reader or the unpickler with almost any
    exception type (truncation, a flipped byte, an absurd record size), so everything
    that goes wrong while reading is reported as "not a readable checkpoint". ``mmap``
    maps the tensors instead of reading them: cheap for checking a large file's contents.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file, e.g. {path}/checkpoints/last.ckpt")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (runs keep theirs in outputs/<date>/<time>/checkpoints/)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a torch.save archive); it may be truncated or corrupt")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{path} refers to {found.group(1)}, not only to tensors and plain data, so it was not "
                "loaded (loading it could run arbitrary code); use checkpoints written by gptlab"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (bad pickle data); it may be truncated or corrupt") from None
    except Exception as e:  # any other failure of the zip reader or the unpickler means a damaged file
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}); it may be truncated or corrupt") from None


def read_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint file safely (tensors and plain data only) and check its shape."""
    data = safe_torch_load(path, map_location, mmap=mmap)
    hparams = data.get("hyper_parameters") if isinstance(data, dict) else None
    if not isinstance(data, dict) or "state_dict" not in data or not isinstance(hparams, dict) or not isinstance(hparams.get("model_config"), dict):
        raise CheckpointError(f"{path} is not a gptlab checkpoint (no model config inside); pass a .ckpt written by python -m gptlab.train")
    return data


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The GPT's own weights: the Lightning module stores them under ``model.``."""
    prefix = "model."
    return {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the trained model (in eval mode) and its tokenizer from one checkpoint file."""
    data = read_checkpoint(path, map_location)
    hparams = data["hyper_parameters"]
    tokenizer_state = hparams.get("tokenizer")
    if not tokenizer_state:
        raise CheckpointError(f"{path} carries no tokenizer, so its ids cannot be turned into text; retrain with gptlab >= 0.1")
    try:
        config = GPTConfig.from_dict(dict(hparams["model_config"]))
        tokenizer = tokenizer_from_dict(dict(tokenizer_state))
    except (ModelConfigError, TokenizerError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # stored data of the wrong shape
        raise CheckpointError(f"{path} holds a damaged model or tokenizer description ({type(e).__name__}: {e})") from None
    model = GPT(config)
    try:
        model.load_state_dict(model_state_dict(data))
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: the weights do not fit the model config stored with them ({first})") from None
    model.to(map_location).eval()
    return LoadedCheckpoint(model, tokenizer, dict(hparams.get("run_config") or {}), Path(path))
