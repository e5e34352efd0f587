"""Issue 15's configs that trained wrongly or died late are refused first, in one sentence.

Every case points ``data.path`` at a corpus that does not exist (as ``test_validation.py``
does): the config error, not "the corpus file does not exist", proves the check ran
before any data work (the probe saw ``trainer.max_steps=0`` fail after 26 s of
tokenizing). Real Hydra composition and the real ``train()``; no mocks.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from gptlab.errors import ConfigError
from gptlab.train import train
from gptlab.training.memory import machine_memory_bytes
from gptlab.training.preflight import MAX_SEED, check_vocab
from tests.conftest import REPO, TINY_OVERRIDES, compose_train

NO_CORPUS = ["data=local", "data.path=/nonexistent/corpus.txt"]


def _block_size_beyond_memory() -> int:
    """A context whose causal-mask buffer alone (two bytes per position pair) exceeds this machine."""
    memory = machine_memory_bytes()
    assert memory is not None
    return math.isqrt(memory // 2) + 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # gradient ascent: loss 4.17 -> 5.77 with exit 0 before
        (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be a number >= 0"),
        (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val='abc'"),
        # reported as checkpoint.every_n_steps=0 before: name the key the user typed
        (
            ["trainer.val_check_interval=0"],
            "trainer.val_check_interval=0 must be a positive whole number",
        ),
        (["trainer.val_check_interval=0.5"], "trainer.val_check_interval=0.5"),
        (["trainer.max_steps=0"], "trainer.max_steps=0 must be a positive whole number"),
        (["trainer.max_steps=-1"], "trainer.max_steps=-1 must be a positive whole number"),
        (["seed=abc"], "seed='abc' must be a whole number from 0 to"),
        ([f"seed={2**64}"], f"seed={2**64} must be a whole number"),
        ([f"seed={MAX_SEED + 1}"], "must be a whole number from 0 to 4,294,967,295"),
        (["seed=-1"], "seed=-1 must be a whole number"),
        (["data.batch_size=abc"], "data.batch_size='abc' must be a positive whole number"),
        (["data.batch_size=0"], "data.batch_size=0 must be a positive whole number"),
        (["data.batch_size=2.5"], "data.batch_size=2.5"),
        (["data.val_batches=0"], "data.val_batches=0"),
        # a checkpoint outside the run folder, a cache outside the cache folder
        (
            ["callbacks.model_checkpoint.filename=../../x"],
            "callbacks.model_checkpoint.filename='../../x' must be a plain name",
        ),
        (["data.name=../../escaped"], "data.name='../../escaped' must be a plain name"),
        (["data.name=a/b/c"], "data.name='a/b/c' must be a plain name"),
        # code from config data: spec.build is no backdoor around Hydra's blocklist
        (
            ["optimizer._target_=os.system"],
            "optimizer _target_='os.system' is not something gptlab builds",
        ),
        (
            ["scheduler._target_=builtins.eval"],
            "scheduler _target_='builtins.eval' is not something gptlab builds",
        ),
    ],
)
def test_bad_setting_is_refused_before_any_work(tmp_path, overrides, expected):
    cfg = compose_train([*TINY_OVERRIDES, *NO_CORPUS, *overrides], tmp_path / "run")
    with pytest.raises(
        ConfigError, match=expected.replace("(", r"\(").replace(".", r"\.").replace("+", r"\+")
    ) as caught:
        train(cfg)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_val_check_interval_is_named_not_the_checkpoint_key_derived_from_it(tmp_path):
    cfg = compose_train(
        [*TINY_OVERRIDES, *NO_CORPUS, "trainer.val_check_interval=0"], tmp_path / "run"
    )
    assert cfg.checkpoint.every_n_steps == 0  # derived from it
    with pytest.raises(ConfigError) as caught:
        train(cfg)
    assert "val_check_interval" in str(caught.value) and "every_n_steps" not in str(caught.value)


def test_clipping_off_and_usual_seeds_still_pass_preflight(tmp_path):
    from gptlab.training.preflight import validate_run_config

    for extra in (
        ["trainer.gradient_clip_val=0"],
        ["trainer.gradient_clip_val=null"],
        ["seed=0"],
        [f"seed={MAX_SEED}"],
        ["trainer.val_check_interval=null"],
    ):
        validate_run_config(compose_train([*TINY_OVERRIDES, *extra], tmp_path / "run"))


def test_cpu_run_beyond_the_machines_memory_is_refused_before_any_work(tmp_path):
    """model.block_size=100000 died inside torch's allocator; now a floor of the memory need is checked."""
    block = _block_size_beyond_memory()
    cfg = compose_train(
        [*TINY_OVERRIDES, *NO_CORPUS, f"model.block_size={block}"], tmp_path / "run"
    )
    with pytest.raises(
        ConfigError, match=r"needs at least .* GiB of memory on the CPU .* lower model\.block_size"
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_prints_one_line_not_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptlab.train",
            "seed=abc",
            *NO_CORPUS,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: seed='abc' must be a whole number" in result.stderr


# ------------------------------------------------------------------ check_vocab (after the tokenizer)


def test_check_vocab_takes_the_tokenizers_size_and_refuses_a_smaller_model_vocab(tmp_path):
    cfg = compose_train(TINY_OVERRIDES, tmp_path / "run")
    assert check_vocab(65, cfg.model)["vocab_size"] == 65
    cfg.model.vocab_size = 10
    with pytest.raises(
        ConfigError, match="model.vocab_size=10 is smaller than the tokenizer's 65 ids"
    ):
        check_vocab(65, cfg.model)


def test_check_vocab_refuses_an_embedding_larger_than_the_machine(tmp_path):
    """A special token at id ~3e9 asked for a 12-512 GB embedding; refuse before building it."""
    cfg = compose_train(TINY_OVERRIDES, tmp_path / "run")
    memory = machine_memory_bytes()
    vocab = memory // (4 * cfg.model.n_embd) + 1
    with pytest.raises(
        ConfigError, match=r"needs a [\d,]+ GiB embedding table, more than this machine's"
    ):
        check_vocab(vocab, cfg.model)


# ------------------------------------------------------------------ out of memory on the CPU


def test_a_real_cpu_allocation_failure_is_recognised_as_out_of_memory(tiny_cfg):
    """The CPU allocator's own error (no mock: 2**62 bytes exceed any address space) gets the OOM advice."""
    import torch

    from gptlab.training.guards import OutOfMemory, is_out_of_memory

    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(caught.value)
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    message = str(OutOfMemory.explain(tiny_cfg, "cpu"))
    assert message.startswith("out of memory on cpu") and "lower model.block_size" in message


# ------------------------------------------------------------------ spec.build's allow-list


def test_spec_build_refuses_arbitrary_callables_and_builds_the_registered_ones(tmp_path):
    import torch

    from gptlab.training.optim import adamw
    from gptlab.utils.spec import build, locate

    marker = tmp_path / "ran"
    for target in (
        "os.system",
        "builtins.eval",
        "subprocess.run",
        "torch.optim.optimizer.torch.load",
        "gptlab.training.optim.torch.hub.load",
    ):
        with pytest.raises(ConfigError, match="is not something gptlab builds"):
            build({"_target_": target, "command": f"touch {marker}"})
    assert not marker.exists()
    model = torch.nn.Linear(2, 2)
    assert isinstance(
        build({"_target_": "torch.optim.SGD", "lr": 0.1}, model.parameters()), torch.optim.SGD
    )
    assert locate("gptlab.training.optim.adamw") is adamw


def test_resume_after_the_corpus_gained_characters_is_refused_naming_them(tmp_path):
    """The run's saved character tokenizer is the one used; a re-fit would remap the trained ids."""
    from gptlab.tokenizer import TokenizerError

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    base = [
        *TINY_OVERRIDES,
        "~callbacks.sample_text",
        "data=local",
        f"data.path={corpus}",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
    ]
    run = tmp_path / "run"
    train(compose_train(base, run))
    corpus.write_text("The quick brown fox jumps over the lazy dog!\n" * 200)  # 'T' and '!' are new
    with pytest.raises(
        TokenizerError,
        match=r"2 character\(s\) that the run's saved character tokenizer does not know \('!', 'T'\)",
    ):
        train(compose_train([*base, "trainer.max_steps=6", f"resume={run}"], tmp_path / "unused"))
