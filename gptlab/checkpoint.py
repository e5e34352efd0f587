"""Load a trained model for inference: ``load_model(source)`` for every place weights live.

One loader, one result type (``LoadedModel``), for the three kinds of source:

    ckpt    a Lightning ``.ckpt`` written by ``python -m gptlab.train``
    export  a folder written by ``python -m gptlab.export`` (model.safetensors, config.json,
            tokenizer.json)
    hf      a Hugging Face GPT-2 folder (config.json + model.safetensors or pytorch_model.bin),
            used with GPT-2's own tokenizer

Nothing is unpickled that could run code: ``.ckpt`` and ``.bin`` files are read with
``torch.load(weights_only=True)``, safetensors need no pickle at all. Weights carry a
checksum (``add_checksum`` when a checkpoint is written, safetensors metadata in an
export), verified on load, so a flipped bit is refused instead of silently changing the
model; files written before checksums existed still load. Every failure is one
``CheckpointError`` sentence that names the file and what to do.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptlab.errors import GptlabError
from gptlab.model import GPT, GPTConfig, ModelConfigError
from gptlab.tokenizer import Tokenizer, TokenizerError, load_tokenizer, tokenizer_from_dict
from gptlab.utils.checksum import tensors_sha256

CHECKSUM_KEY = "gptlab_checksum"  # in a .ckpt dict and in an export's safetensors metadata
KINDS = ("ckpt", "export", "hf")


class CheckpointError(GptlabError, ValueError):
    """The file is missing, unreadable or not a gptlab checkpoint; the message says what to do."""


@dataclass
class LoadedModel:
    """A model ready for inference and everything known about where it came from.

    ``config`` is the run config the model was trained with (the Hydra config as a plain
    dict; empty for Hugging Face and export folders): the provenance a caller records.
    """

    model: GPT  # in eval mode, on the requested device
    tokenizer: Tokenizer
    config: dict[str, Any]
    path: Path
    kind: str  # one of KINDS
    model_config: GPTConfig = field(init=False)

    def __post_init__(self) -> None:
        self.model_config = self.model.config

    def first_nonfinite_weight(self) -> str | None:
        """The name of the first parameter holding NaN or inf, or None when all are finite."""
        for name, param in self.model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                return name
        return None


# -- checksums -------------------------------------------------------------------------


def add_checksum(checkpoint: dict[str, Any]) -> None:
    """Store the sha256 of ``checkpoint["state_dict"]`` in it (the checkpoint writer calls this)."""
    checkpoint[CHECKSUM_KEY] = tensors_sha256(checkpoint.get("state_dict") or {})


def verify_checksum(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose weights differ from the checksum written with them.

    A checkpoint without one (written before gptlab stored checksums) is accepted.
    """
    expected = checkpoint.get(CHECKSUM_KEY)
    if expected is None:
        return
    if (
        not isinstance(expected, str)
        or tensors_sha256(checkpoint.get("state_dict") or {}) != expected
    ):
        raise CheckpointError(_damaged(Path(path)))


def _damaged(path: Path) -> str:
    """The sentence for weights that fail their checksum, naming a sibling checkpoint to use."""
    others = []
    if path.parent.is_dir():
        for p in sorted(path.parent.glob("*.ckpt")):
            try:
                if not os.path.samefile(p, path):  # last.ckpt is a hard link to the newest step
                    others.append(p.name)
            except OSError:
                continue
    fix = (
        f"use another checkpoint (e.g. {others[-1]})"
        if others
        else "use another checkpoint or retrain"
    )
    return f"{path} is damaged: its weights do not match the checksum written with it; {fix}"


# -- .ckpt files ----------------------------------------------------------------------


def safe_torch_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` whose every failure is one ``CheckpointError`` sentence.

    A damaged file can fail deep inside the zip reader or the unpickler with almost any
    exception type (truncation, a flipped byte, an absurd record size), so everything
    that goes wrong while reading is reported as "not a readable checkpoint". A gptlab
    checkpoint's checksum is verified here, so resuming is covered too; ``mmap`` maps the
    tensors instead of reading them (cheap for checking a large file's config), and then
    the checksum, which would read every byte, is left to the full load.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; pass the checkpoint file, e.g. {path}/checkpoints/last.ckpt"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; check the path (runs keep theirs in outputs/<date>/<time>/checkpoints/)"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (not a torch.save archive); it may be truncated or corrupt"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{path} refers to {found.group(1)}, not only to tensors and plain data, so it was not "
                "loaded (loading it could run arbitrary code); use checkpoints written by gptlab"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (bad pickle data); it may be truncated or corrupt"
        ) from None
    except (
        Exception
    ) as e:  # any other failure of the zip reader or the unpickler means a damaged file
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}); it may be truncated or corrupt"
        ) from None
    if isinstance(data, dict) and not mmap:
        verify_checksum(data, path)
    return data


def read_checkpoint(
    path: str | Path, map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint file safely (tensors and plain data only) and check its shape."""
    data = safe_torch_load(path, map_location, mmap=mmap)
    hparams = data.get("hyper_parameters") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or "state_dict" not in data
        or not isinstance(hparams, dict)
        or not isinstance(hparams.get("model_config"), dict)
    ):
        raise CheckpointError(
            f"{path} is not a gptlab checkpoint (no model config inside); pass a .ckpt written by python -m gptlab.train"
        )
    return data


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The GPT's own weights: the Lightning module stores them under ``model.``."""
    prefix = "model."
    return {
        k[len(prefix) :].replace("_orig_mod.", ""): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(prefix)
    }


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """The ``ckpt`` branch of ``load_model``: the trained model (eval mode) and its tokenizer."""
    data = read_checkpoint(path, map_location)
    hparams = data["hyper_parameters"]
    tokenizer_state = hparams.get("tokenizer")
    if not tokenizer_state:
        raise CheckpointError(
            f"{path} carries no tokenizer, so its ids cannot be turned into text; retrain with gptlab >= 0.1"
        )
    try:
        config = GPTConfig.from_dict(dict(hparams["model_config"]))
        tokenizer = tokenizer_from_dict(dict(tokenizer_state))
    except (ModelConfigError, TokenizerError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # stored data of the wrong shape
        raise CheckpointError(
            f"{path} holds a damaged model or tokenizer description ({type(e).__name__}: {e})"
        ) from None
    model = _fill(GPT(config), model_state_dict(data), path)
    return LoadedModel(
        model.to(map_location).eval(),
        tokenizer,
        dict(hparams.get("run_config") or {}),
        Path(path),
        "ckpt",
    )


def _fill(model: GPT, state: dict[str, torch.Tensor], path: str | Path) -> GPT:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: the weights do not fit the model config stored with them ({first})"
        ) from None
    return model


# -- folders ----------------------------------------------------------------------------


def load_model(
    source: str | Path, map_location: str | torch.device = "cpu", kind: str | None = None
) -> LoadedModel:
    """Load a ``.ckpt`` file, a gptlab export folder or a Hugging Face GPT-2 folder.

    ``kind`` (``ckpt``, ``export`` or ``hf``) insists on one kind; by default a file is a
    ``.ckpt``, and a folder is an export when it holds gptlab's ``tokenizer.json`` beside
    a ``config.json`` that is not a Hugging Face one.
    """
    path = Path(source).expanduser()
    if kind not in (None, *KINDS):
        raise CheckpointError(
            f"kind={kind!r} is not a kind of model source; use one of {', '.join(KINDS)}"
        )
    if kind is None:
        kind = _kind_of(path)
    if kind == "ckpt":
        return load_checkpoint(path, map_location)
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is a file, not a model folder; pass the folder that holds config.json and model.safetensors"
            if path.exists()
            else f"{path} does not exist; check the path"
        )
    loaded = _load_export(path) if kind == "export" else _load_hf(path)
    loaded.model.to(map_location)
    return loaded


def _kind_of(path: Path) -> str:
    if not path.is_dir():
        return "ckpt"
    if not (path / "config.json").is_file() and not (path / "model.safetensors").is_file():
        last = path / "checkpoints" / "last.ckpt"
        hint = f"; did you mean {last}?" if last.is_file() else ""
        raise CheckpointError(
            f"{path} has no model.safetensors or config.json, so it is not a model folder; pass a .ckpt file, a folder "
            f"written by python -m gptlab.export or a Hugging Face GPT-2 folder{hint}"
        )
    if not (path / "tokenizer.json").is_file():
        return "hf"
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    return "hf" if "model_type" in config or "architectures" in config else "export"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path} is not valid JSON ({e}); it is truncated or corrupt: restore or rewrite it"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(data).__name__}, not an object of settings; restore or rewrite it"
        )
    return data


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; a damaged file is one sentence."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # safetensors raises its own error type, or OSError, for every damage
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({reason}); it may be truncated or corrupt: "
            "export or download it again"
        ) from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensors_sha256(tensors) != expected:
        raise CheckpointError(
            f"{path} is damaged: its weights do not match the checksum written with it; "
            "export or download it again"
        )
    return tensors, metadata


def _load_export(folder: Path) -> LoadedModel:
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"{folder} has no {name}; export a checkpoint with python -m gptlab.export first"
            )
    try:
        config = GPTConfig.from_dict(_read_json(folder / "config.json"))
        tokenizer = load_tokenizer(folder / "tokenizer.json")
    except (ModelConfigError, TokenizerError) as e:
        raise CheckpointError(f"{folder}: {e}") from None
    state, _ = _read_safetensors(folder / "model.safetensors")
    if config.tie_embeddings and "transformer.wte.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model = _fill(GPT(config), state, folder / "model.safetensors")
    return LoadedModel(model.eval(), tokenizer, {}, folder, "export")


def _load_hf(folder: Path) -> LoadedModel:
    from gptlab.model.hf import config_from_hf, model_from_hf_weights
    from gptlab.tokenizer import GPT2Tokenizer

    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a Hugging Face model folder (no config.json); "
            "pass the folder that holds config.json and model.safetensors"
        )
    try:
        config = config_from_hf(_read_json(folder / "config.json"))
    except ModelConfigError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(
            f"{folder}/config.json is not a GPT-2 config ({type(e).__name__}: {e}); "
            "pass a folder written by transformers' GPT2LMHeadModel.save_pretrained"
        ) from None
    weights = folder / "model.safetensors"
    if weights.is_file():
        state, _ = _read_safetensors(weights)
    elif (folder / "pytorch_model.bin").is_file():
        state = _read_bin(folder / "pytorch_model.bin")
    else:
        raise CheckpointError(
            f"{folder} has neither model.safetensors nor pytorch_model.bin; point to a Hugging Face "
            "GPT-2 model folder (a sharded checkpoint must be merged first)"
        )
    try:
        model = model_from_hf_weights(GPT, config, state, folder)
    except (KeyError, ModelConfigError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise CheckpointError(str(message).splitlines()[0]) from None
    return LoadedModel(model.eval(), GPT2Tokenizer(), {}, folder, "hf")


def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model.bin`` that holds only tensors; anything else is refused, never unpickled."""
    try:
        state = safe_torch_load(path)
    except CheckpointError as e:
        found = re.search(r"refers to (\S+)", str(e))
        why = (
            f"it refers to {found.group(1)}, not only to tensors, and loading it could run arbitrary code"
            if found
            else "it is not a readable torch.save archive of tensors"
        )
        raise CheckpointError(
            f"{path} was not loaded: {why}; save the model as model.safetensors instead "
            "(transformers: model.save_pretrained(folder))"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a plain dict of tensors; save the model as model.safetensors instead"
        )
    return state
