"""``python -m gptlab.generate``: prompts, batches, interactive mode, output file, bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from gptlab.generate import run_cli, run_generate
from gptlab.model import GPT, GPTConfig
from gptlab.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET: Ay me!\n"


def write_checkpoint(path: Path, tokenizer: CharTokenizer | None, block_size: int = 32) -> Path:
    """A checkpoint in the layout ``python -m gptlab.train`` writes (Lightning's keys)."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size if tokenizer else 40,
        block_size=block_size,
        n_layer=2,
        n_head=2,
        n_embd=32,
    )
    model = GPT(config)
    with torch.no_grad():  # sharper than the init, so greedy text is varied, not one repeated char
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    hparams = {"model_config": config.to_dict(), "run_config": {"seed": 0}}
    if tokenizer is not None:
        hparams["tokenizer"] = tokenizer.to_dict()
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": hparams,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "last.ckpt", CharTokenizer.from_corpus(CORPUS)
    )


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "gptlab" / "conf"), version_base="1.3"):
        return compose(config_name="generate", overrides=list(overrides))


def run(*overrides: str, stdin: str = "") -> tuple[list[dict], str, str]:
    out, err = io.StringIO(), io.StringIO()
    records = run_generate(make_cfg(*overrides), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return records, out.getvalue(), err.getvalue()


def test_single_prompt_samples_and_seed(ckpt):
    records, out, err = run(
        f"ckpt={ckpt}",
        "prompt=ROMEO:",
        "sampler=top_p",
        "sampler.temperature=0.8",
        "max_new_tokens=20",
        "num_samples=3",
        "seed=1",
    )
    assert len(records) == 3
    assert all(r["prompt"] == "ROMEO:" and r["new_tokens"] == 20 for r in records)
    assert out.count("ROMEO:") == 3 and out.count("---------------") == 3
    for r in records:
        assert f"ROMEO:{r['completion']}" in out
    s = records[0]["settings"]["sampler"]
    assert (s["max_new_tokens"], s["seed"], s["top_p"], s["temperature"]) == (20, 1, 0.95, 0.8)
    assert "tokens/s" in err
    again, _, _ = run(
        f"ckpt={ckpt}",
        "prompt=ROMEO:",
        "sampler=top_p",
        "sampler.temperature=0.8",
        "max_new_tokens=20",
        "num_samples=3",
        "seed=1",
    )
    assert [r["completion"] for r in again] == [r["completion"] for r in records]
    assert len({r["completion"] for r in records}) > 1  # the samples differ from each other


def test_without_a_seed_one_is_drawn_and_recorded(ckpt):
    records, _, _ = run(f"ckpt={ckpt}", "max_new_tokens=10", "prompt=JULIET:")
    seed = records[0]["settings"]["sampler"]["seed"]
    assert isinstance(seed, int)
    again, _, _ = run(f"ckpt={ckpt}", "max_new_tokens=10", "prompt=JULIET:", f"seed={seed}")
    assert again[0]["completion"] == records[0]["completion"]


def test_prompt_file_is_one_batch_and_output_jsonl(ckpt, tmp_path):
    prompts = ["ROMEO:", "JULIET: Ay", "But soft"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts[:2]) + "\n\n" + prompts[2] + "\n")
    output = tmp_path / "out" / "samples.jsonl"
    records, out, err = run(
        f"ckpt={ckpt}",
        f"prompt_file={tmp_path / 'prompts.txt'}",
        "sampler=greedy",
        "max_new_tokens=15",
        "num_samples=2",
        f"output={output}",
    )
    assert [r["prompt"] for r in records] == [p for p in prompts for _ in range(2)]
    assert all(r["batch_size"] == 6 for r in records)
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [x["completion"] for x in lines] == [r["completion"] for r in records]
    assert {"prompt", "completion", "settings", "tokens_per_s", "new_tokens"} <= set(lines[0])
    assert not list(output.parent.glob(".*.tmp"))  # written atomically, nothing left over
    for p in prompts:  # batched greedy == one prompt at a time
        alone, _, _ = run(f"ckpt={ckpt}", f"prompt={p}", "sampler=greedy", "max_new_tokens=15")
        assert alone[0]["completion"] == next(r["completion"] for r in records if r["prompt"] == p)


def test_interactive_loop_until_end_of_input(ckpt, tmp_path):
    records, out, err = run(
        f"ckpt={ckpt}",
        "interactive=true",
        "max_new_tokens=5",
        "sampler=greedy",
        f"output={tmp_path / 's.jsonl'}",
        stdin="ROMEO:\nZounds!\nJULIET:\n",
    )
    assert [r["prompt"] for r in records] == ["ROMEO:", "JULIET:"]
    assert "never saw" in err  # the bad prompt is reported and the loop goes on
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 2


def test_stop_strings_and_empty_prompt(ckpt):
    records, out, _ = run(f"ckpt={ckpt}", "prompt=", "sampler=greedy", "max_new_tokens=30")
    assert records[0]["new_tokens"] == 30  # started from "\n": the char vocabulary has no eot
    text = records[0]["completion"]
    stop = text[10:12]
    records, out, _ = run(
        f"ckpt={ckpt}",
        "prompt=",
        "sampler=greedy",
        "max_new_tokens=30",
        f"sampler.stop=[{json.dumps(stop)}]",
    )
    assert records[0]["completion"] == text[: text.index(stop)]
    assert stop not in out.split("---")[0]


def test_no_stream_and_no_cache_give_the_same_text(ckpt):
    a, out_a, _ = run(f"ckpt={ckpt}", "prompt=ROMEO:", "sampler=greedy", "max_new_tokens=40")
    b, out_b, _ = run(
        f"ckpt={ckpt}",
        "prompt=ROMEO:",
        "sampler=greedy",
        "max_new_tokens=40",
        "stream=false",
        "use_cache=false",
    )
    assert a[0]["completion"] == b[0]["completion"] and out_a == out_b


def test_bfloat16(ckpt):
    records, _, _ = run(f"ckpt={ckpt}", "prompt=ROMEO:", "max_new_tokens=5", "dtype=bf16")
    assert records[0]["settings"]["dtype"] == "bfloat16"


# --- bad input: one line on stderr, exit code 1 ----------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.txt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, d / "other.ckpt")
    write_checkpoint(d / "no_tokenizer.ckpt", None)
    (d / "latin1.txt").write_bytes("ROMEO: caf\xe9\n".encode("latin-1"))
    nan = torch.load(
        write_checkpoint(d / "nan.ckpt", CharTokenizer.from_corpus(CORPUS)), weights_only=True
    )
    nan["state_dict"]["model.transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    torch.save(nan, d / "nan.ckpt")
    (d / "hf_no_config").mkdir()
    return d


def test_smallest_temperature_still_samples(ckpt):
    """The smallest temperature allowed keeps the logits finite: it samples (as greedy would)."""
    tiny, _, _ = run(
        f"ckpt={ckpt}", "prompt=ROMEO:", "sampler.temperature=1e-6", "max_new_tokens=12", "seed=2"
    )
    greedy, _, _ = run(f"ckpt={ckpt}", "prompt=ROMEO:", "sampler=greedy", "max_new_tokens=12")
    assert tiny[0]["completion"] == greedy[0]["completion"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "no checkpoint given"),
        (["ckpt={d}/missing.ckpt"], "does not exist"),
        (["ckpt={d}/notes.txt"], "not a readable PyTorch checkpoint"),
        (["ckpt={d}/other.ckpt"], "not a gptlab checkpoint"),
        (["ckpt={d}/no_tokenizer.ckpt"], "no tokenizer"),
        (["ckpt={ckpt}", "prompt=Zounds"], "never saw"),
        (["ckpt={ckpt}", "sampler.top_p=1.5"], "top_p=1.5"),
        (["ckpt={ckpt}", "sampler.top_k=0"], "top_k=0"),
        (["ckpt={ckpt}", "sampler.temperature=-1"], "temperature=-1"),
        (["ckpt={ckpt}", "max_new_tokens=0"], "max_new_tokens=0"),
        (["ckpt={ckpt}", "sampler.min_p=2"], "min_p=2"),
        (["ckpt={ckpt}", "+sampler.topk=3"], "unknown sampler option"),
        (["ckpt={ckpt}", "prompt_file={d}/nope.txt"], "prompt_file"),
        (["ckpt={ckpt}", "dtype=float8"], "dtype"),
        (["ckpt={ckpt}", "num_samples=0"], "num_samples"),
        (["ckpt={ckpt}", "sampler.temperature=1e-45"], "temperature=1e-45"),
        (["ckpt={ckpt}", "prompt_file={d}/latin1.txt"], "is not UTF-8 text"),
        (["ckpt={ckpt}", "device=meta"], "device=meta holds no data"),
        (["ckpt={ckpt}", "device=banana"], "is not a device"),
        (["ckpt={ckpt}", "output={d}"], "is a folder"),
        (["ckpt={d}/nan.ckpt"], "weights are not finite"),
        (["hf={d}/hf_no_config"], "no config.json"),
    ],
)
def test_bad_input_is_one_clear_line(ckpt, bad_files, overrides, message):
    overrides = [o.format(d=bad_files, ckpt=ckpt) for o in overrides]
    err = io.StringIO()
    assert run_cli(make_cfg(*overrides), stdout=io.StringIO(), stderr=err) == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def _python_m(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "gptlab.generate", *args],
        capture_output=True,
        text=True,
        cwd=kw.pop("cwd", ROOT),
        env=env,
        timeout=120,
        **kw,
    )


def test_entry_point_bad_checkpoint_exits_1_without_traceback(tmp_path):
    (tmp_path / "x.ckpt").write_text("nope")
    proc = _python_m(f"ckpt={tmp_path / 'x.ckpt'}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert list(tmp_path.iterdir()) == [tmp_path / "x.ckpt"]  # no run folder, no log file


@pytest.mark.slow
def test_entry_point_streams_a_sample(ckpt, tmp_path):
    proc = _python_m(
        f"ckpt={ckpt}",
        "prompt=ROMEO:",
        "max_new_tokens=25",
        "seed=3",
        "sampler=top_k",
        f"output={tmp_path / 'o.jsonl'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "o.jsonl").read_text())
    assert proc.stdout.startswith("ROMEO:" + record["completion"])


def test_backslash_escapes_in_prompts_and_stop_strings(ckpt):
    from gptlab.generate import unescape

    assert unescape(r"a\nb\tc\\n é") == "a\nb\tc\\n é"
    records, _, _ = run(
        f"ckpt={ckpt}",
        r"prompt=ROMEO:\n",
        "sampler=default",
        "max_new_tokens=60",
        "seed=4",
        r"sampler.stop=['\n']",
    )
    assert records[0]["prompt"] == "ROMEO:\n"
    assert records[0]["settings"]["sampler"]["stop"] == ["\n"]
    free, _, _ = run(
        f"ckpt={ckpt}", r"prompt=ROMEO:\n", "sampler=default", "max_new_tokens=60", "seed=4"
    )
    assert "\n" in free[0]["completion"]  # so the stop string had something to cut
    assert records[0]["completion"] == free[0]["completion"].split("\n")[0]


@pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data" / "r50k_base.tiktoken").is_file(),
    reason="needs shared/data/r50k_base.tiktoken for GPT-2's tokenizer",
)
def test_hf_folder_generates_with_gpt2_tokenizer_like_transformers(tmp_path):
    """hf=<folder> loads GPT-2-format weights and GPT-2's tokenizer; greedy text matches transformers."""
    transformers = pytest.importorskip("transformers")
    from gptlab.tokenizer import GPT2Tokenizer

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)
    )
    hf.save_pretrained(tmp_path / "gpt2")
    records, out, _ = run(
        f"hf={tmp_path / 'gpt2'}", "prompt=Hello world", "sampler=greedy", "max_new_tokens=8"
    )
    ids = GPT2Tokenizer().encode("Hello world")
    expected = (
        hf.eval()
        .generate(
            torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=8,
            min_new_tokens=8,
            pad_token_id=50256,
        )[0, len(ids) :]
        .tolist()
    )
    assert records[0]["completion"] == GPT2Tokenizer().decode(expected)
    assert "Hello world" in out


def test_ckpt_and_hf_together_or_neither_are_refused(ckpt, tmp_path):
    err = io.StringIO()
    assert (
        run_cli(make_cfg(f"ckpt={ckpt}", f"hf={tmp_path}"), stdout=io.StringIO(), stderr=err) == 1
    )
    assert "either ckpt= or hf=" in err.getvalue()
    err = io.StringIO()
    assert run_cli(make_cfg(f"hf={tmp_path}"), stdout=io.StringIO(), stderr=err) == 1
    assert "not a Hugging Face model folder" in err.getvalue()
