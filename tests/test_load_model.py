"""``gptlab.checkpoint.load_model``: one loader for .ckpt files, exports and HF folders, with checksums.

Every damaged or wrong source is refused with one ``CheckpointError`` sentence; a flipped
bit in stored weights is caught by the checksum written with them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import CHECKSUM_KEY, CheckpointError, LoadedModel, add_checksum, load_model
from gptlab.errors import ConfigError
from gptlab.export import export
from gptlab.model import GPT, GPTConfig
from gptlab.tokenizer import CharTokenizer, GPT2Tokenizer
from gptlab.utils.checksum import tensors_sha256
from gptlab.utils.device import pick_device

CORPUS = "To be, or not to be, that is the question.\n"


def write_checkpoint(path: Path, checksum: bool = True) -> Path:
    """A checkpoint in the layout the trainer writes, with the checksum its writer adds."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_corpus(CORPUS)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=True
    )
    model = GPT(config)
    data = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "model_config": config.to_dict(),
            "tokenizer": tokenizer.to_dict(),
            "run_config": {"seed": 7},
        },
    }
    if checksum:
        add_checksum(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def flip_a_weight_bit(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit inside ``tensor``'s bytes where they lie in the file (nothing else changes)."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0, "the tensor's bytes are not stored verbatim"
    data[at + len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_one_type_for_every_kind_of_source(tmp_path):
    transformers = pytest.importorskip("transformers")
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    from_ckpt = load_model(ckpt)
    exported = load_model(export(ckpt))
    hf_model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=16)
    )
    hf_model.save_pretrained(tmp_path / "hf")
    from_hf = load_model(tmp_path / "hf")
    assert [type(x) for x in (from_ckpt, exported, from_hf)] == [LoadedModel] * 3
    assert [x.kind for x in (from_ckpt, exported, from_hf)] == ["ckpt", "export", "hf"]
    assert all(not x.model.training for x in (from_ckpt, exported, from_hf))
    assert from_ckpt.config == {"seed": 7} and from_ckpt.model_config.n_embd == 32
    assert from_hf.model_config.vocab_size == 50257 and isinstance(from_hf.tokenizer, GPT2Tokenizer)
    ids = torch.tensor([from_ckpt.tokenizer.encode("To be")])
    with torch.no_grad():
        assert torch.equal(exported.model(ids), from_ckpt.model(ids))
    assert exported.tokenizer.to_dict() == from_ckpt.tokenizer.to_dict()


def test_a_flipped_bit_in_a_checkpoint_is_refused_naming_another_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder / "step000002.ckpt")
    damaged = write_checkpoint(folder / "step000004.ckpt")
    assert load_model(damaged).model is not None  # intact: loads
    weight = torch.load(damaged, weights_only=True)["state_dict"][
        "model.transformer.h.0.mlp.c_fc.weight"
    ]
    flip_a_weight_bit(damaged, weight)
    with pytest.raises(CheckpointError) as caught:
        load_model(damaged)
    message = str(caught.value)
    assert "is damaged: its weights do not match the checksum written with it" in message
    assert "step000002.ckpt" in message and "\n" not in message


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    old = write_checkpoint(tmp_path / "old.ckpt", checksum=False)
    assert CHECKSUM_KEY not in torch.load(old, weights_only=True)
    assert load_model(old).kind == "ckpt"


def test_add_checksum_is_fast_enough_for_gpt2_small():
    """124M float32 parameters (GPT-2 small) hash in about a second, not minutes."""
    state = {f"w{i}": torch.ones(1_000_000 * 124 // 12) for i in range(12)}
    checkpoint = {"state_dict": state}
    start = time.perf_counter()
    add_checksum(checkpoint)
    assert time.perf_counter() - start < 5.0  # ~0.3 s here; generous for a shared CPU
    assert checkpoint[CHECKSUM_KEY] == tensors_sha256(state)
    state["w3"][17] = 1.0000001
    assert tensors_sha256(state) != checkpoint[CHECKSUM_KEY]


def test_a_flipped_bit_in_an_export_is_refused(tmp_path):
    folder = export(
        write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt"), out=tmp_path / "export"
    )
    metadata = json.loads(
        (folder / "model.safetensors").read_bytes()[8:][
            : int.from_bytes((folder / "model.safetensors").read_bytes()[:8], "little")
        ]
    )["__metadata__"]
    assert metadata[CHECKSUM_KEY]
    flip_a_weight_bit(
        folder / "model.safetensors", load_model(folder).model.transformer.h[0].mlp.c_fc.weight
    )
    with pytest.raises(CheckpointError, match="is damaged: its weights do not match the checksum"):
        load_model(folder)


# --- every bad Hugging Face folder is one sentence --------------------------------------


@pytest.fixture
def hf_folder(tmp_path) -> Path:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=16)
    )
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def refused(folder: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as caught:
        load_model(folder, kind="hf")
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message
    return message


def test_hf_folder_without_config_json(hf_folder):
    (hf_folder / "config.json").unlink()
    refused(hf_folder, "not a Hugging Face model folder \\(no config.json\\)")


def test_hf_folder_with_bad_json(hf_folder):
    (hf_folder / "config.json").write_text('{"n_layer": 1,')
    refused(hf_folder, "config.json is not valid JSON")
    (hf_folder / "config.json").write_text("[1, 2]")
    refused(hf_folder, "config.json holds a JSON list")
    (hf_folder / "config.json").write_text('{"model_type": "gpt2"}')
    refused(hf_folder, "is not a GPT-2 config")


def test_hf_folder_with_truncated_safetensors(hf_folder):
    weights = hf_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused(hf_folder, "model.safetensors is not a readable safetensors file")
    weights.write_bytes(b"\x05")
    refused(hf_folder, "not a readable safetensors file")


def test_hf_folder_with_only_a_pickled_pytorch_model_bin(hf_folder, tmp_path):
    """A .bin that holds only tensors loads; one that would run code is refused, without torch's advice."""
    from tests.test_safe_loading import Payload

    torch.save(load_model(hf_folder).model.state_dict(), tmp_path / "plain.bin")
    (hf_folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor pytorch_model.bin"):
        load_model(hf_folder)
    marker = tmp_path / "pwned"
    torch.save(
        {"transformer.wte.weight": torch.zeros(3), "x": Payload(marker)},
        hf_folder / "pytorch_model.bin",
    )
    message = refused(hf_folder, "pytorch_model.bin was not loaded: it refers to")
    assert "save the model as model.safetensors" in message and not marker.exists()


def test_hf_folder_whose_weights_do_not_fit_config(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    (hf_folder / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    refused(hf_folder, "has shape")


def test_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="did you mean .*last.ckpt"):
        load_model(tmp_path / "run")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere", kind="hf")


@pytest.mark.parametrize(
    ("name", "match"),
    [("meta", "holds no data"), ("banana", "is not a device"), ("cuda:99", "cuda")],
)
def test_device_picker_refuses_in_one_sentence(name, match):
    with pytest.raises(ConfigError, match=match):
        pick_device(name)
    assert pick_device("cpu") == torch.device("cpu") and pick_device(None).type in ("cpu", "cuda")
