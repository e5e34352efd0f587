"""Hugging Face GPT-2 interop: our model reproduces transformers' logits, both ways.

A randomly initialised ``GPT2LMHeadModel`` from a small ``GPT2Config`` (nothing is
downloaded) is saved, loaded with ``GPT.from_hf`` and compared on random tokens; then our
``save_hf`` output is loaded back with ``GPT2LMHeadModel.from_pretrained``.
"""

from __future__ import annotations

import json

import pytest
import torch

from gptlab.model import GPT, GPTConfig, ModelConfigError

transformers = pytest.importorskip("transformers")

VOCAB = 101  # not a multiple of 64: exercises the vocab padding


def hf_model(tie: bool = True, activation: str = "gelu_new") -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        activation_function=activation,
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=48,
        n_layer=2,
        n_head=4,
        tie_word_embeddings=tie,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF zero-initialises biases and unit norms: randomise them too
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_logits(model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_from_hf_and_back(tmp_path, safe, tie):
    ref = hf_model(tie)
    if safe:
        ref.save_pretrained(tmp_path / "hf")
    else:  # transformers 5 only writes safetensors; write the classic pickle by hand
        ref.config.save_pretrained(tmp_path / "hf")
        torch.save(ref.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    weights = {p.name for p in (tmp_path / "hf").iterdir()}
    assert ("model.safetensors" in weights) == safe and ("pytorch_model.bin" in weights) != safe

    model = GPT.from_hf(tmp_path / "hf").eval()
    assert model.config.vocab_size == VOCAB and model.config.padded_vocab_size == 128
    assert model.config.tie_embeddings == tie
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    idx = torch.randint(0, VOCAB, (3, 32))
    expected = hf_logits(ref, idx)
    with torch.no_grad():
        ours = model(idx)
    assert (ours - expected).abs().max().item() <= 1e-4

    model.save_hf(tmp_path / "ours")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    assert (hf_logits(back, idx) - expected).abs().max().item() <= 1e-4


def test_exact_gelu_models_load_and_save_as_hf_gelu(tmp_path):
    """HF's ``activation_function="gelu"`` is the erf GELU: it maps to ``mlp=gelu_exact`` and back."""
    ref = hf_model(activation="gelu")
    ref.save_pretrained(tmp_path / "hf")
    model = GPT.from_hf(tmp_path / "hf").eval()
    assert model.config.mlp == "gelu_exact"
    idx = torch.randint(0, VOCAB, (2, 32))
    expected = hf_logits(ref, idx)
    with torch.no_grad():
        assert (model(idx) - expected).abs().max().item() <= 1e-4
        # Layer by layer, where the two GELUs' difference (~1e-3 at inputs of order 1) shows:
        h = torch.randn(4, 48) * 3
        hf_mlp, our_mlp = ref.transformer.h[0].mlp, model.transformer.h[0].mlp
        assert torch.allclose(our_mlp(h), hf_mlp(h), atol=1e-5)
        tanh_mlp = GPT.from_hf(tmp_path / "hf", mlp="gelu").transformer.h[0].mlp
        assert not torch.allclose(tanh_mlp(h), hf_mlp(h), atol=1e-5)
    model.save_hf(tmp_path / "ours")
    assert (
        json.loads((tmp_path / "ours" / "config.json").read_text())["activation_function"] == "gelu"
    )
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    assert (hf_logits(back, idx) - expected).abs().max().item() <= 1e-4


def test_bias_free_model_saves_with_zero_biases(tmp_path):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False)
    model = GPT(cfg).eval()
    model.save_hf(tmp_path)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        assert (back(idx).logits - model(idx)).abs().max().item() <= 1e-4
    assert json.loads((tmp_path / "config.json").read_text())["n_positions"] == 16


def test_non_gpt2_models_are_refused(tmp_path):
    cfg = GPTConfig(
        vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=32, position="rope"
    )
    with pytest.raises(
        ModelConfigError, match="cannot save as Hugging Face GPT-2: the model uses position=rope"
    ):
        GPT(cfg).save_hf(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        GPT.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "n_embd": 8}))
    with pytest.raises(ModelConfigError, match="only GPT-2 checkpoints"):
        GPT.from_hf(tmp_path)


def test_original_openai_key_layout_loads(tmp_path):
    """The original GPT-2 files have no "transformer." prefix, no lm_head, and mask buffers."""
    from safetensors.torch import save_file

    ref = hf_model()
    ref.config.save_pretrained(tmp_path)
    state = {
        k.removeprefix("transformer."): v.contiguous()
        for k, v in ref.state_dict().items()
        if not k.startswith("lm_head")
    }
    for i in range(ref.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
    save_file(state, tmp_path / "model.safetensors")
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        diff = GPT.from_hf(tmp_path).eval()(idx) - hf_logits(ref, idx)
    assert diff.abs().max().item() <= 1e-4
