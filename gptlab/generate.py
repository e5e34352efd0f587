r"""``python -m gptlab.generate``: continue prompts with a trained checkpoint.

    python -m gptlab.generate ckpt=outputs/.../checkpoints/last.ckpt prompt="ROMEO:"
    python -m gptlab.generate ckpt=... prompt="ROMEO:" sampler=top_p sampler.temperature=0.8 \
        max_new_tokens=500 num_samples=3 seed=1
    python -m gptlab.generate ckpt=... prompt_file=prompts.txt output=samples.jsonl
    python -m gptlab.generate ckpt=... interactive=true

Hydra reads commas as lists: quote a prompt containing one,
``"prompt='But soft, what light'"``.

A single prompt streams its tokens to the terminal as they are produced (samples one
after another); ``prompt_file`` generates all its prompts (x ``num_samples``) as one
left-padded batch and prints them when done. Completions go to stdout, statistics and
the interactive prompt marker to stderr, so ``> out.txt`` captures just the text.

Newlines: a shell and Hydra pass ``\n`` through as two characters, so in ``prompt``,
``prompt_file`` lines, interactive prompts and ``sampler.stop`` the escapes ``\n``, ``\t``
and ``\\`` mean newline, tab and a backslash (``"sampler.stop=['\n\n']"`` ends a
sample at a blank line).

``ckpt=`` takes anything ``gptlab.checkpoint.load_model`` reads (a ``.ckpt`` or an export
folder); ``hf=`` insists on a Hugging Face GPT-2 folder. ``device=`` accepts auto, cpu,
cuda[:N] or mps (``gptlab.utils.device``).

Without a seed, a fresh one is drawn and recorded in the ``output`` file's settings, so
any sample can be repeated. ``run_cli(cfg)`` does the work and returns the exit code
(tests call it with a config from ``hydra.compose``); ``main`` is the thin Hydra wrapper.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from gptlab.cli import entry_point, user_message
from gptlab.errors import ConfigError
from gptlab.sampling import (
    SamplerConfig,
    TextStream,
    completion_text,
    encode_prompt,
    generate,
    stream,
    to_decode_layout,
)
from gptlab.utils.device import pick_device
from gptlab.utils.io import atomic_write_text

SEPARATOR = "\n---------------"
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


@dataclass
class Session:
    """What every sample of one command shares: the model, tokenizer and settings."""

    model: torch.nn.Module
    tokenizer: Any
    sampler: SamplerConfig
    generator: torch.Generator
    settings: dict[str, Any]
    use_cache: bool
    stream: bool
    out: TextIO
    err: TextIO


def run_cli(
    cfg: DictConfig,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command; user errors print one line to ``stderr`` and return 1."""
    stderr = stderr or sys.stderr
    try:
        with _one_line_warnings(stderr):
            run_generate(cfg, stdin=stdin, stdout=stdout, stderr=stderr)
    except Exception as e:
        message = user_message(e)
        if message is None:  # a bug: keep its traceback
            raise
        print(f"error: {message}", file=stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=stderr)
        return 130
    return 0


@contextlib.contextmanager
def _one_line_warnings(stream: TextIO) -> Iterator[None]:
    """Show warnings meant for the user (e.g. a prompt cropped to the context) as one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        original = warnings.showwarning
        warnings.showwarning = lambda message, category, *args, **kwargs: print(
            f"warning: {message}", file=stream
        )
        try:
            yield
        finally:
            warnings.showwarning = original


def run_generate(
    cfg: DictConfig,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Generate as ``cfg`` says; returns one record per sample (what ``output`` holds)."""
    from gptlab.checkpoint import CheckpointError, load_model

    stdin, out, err = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    sampler = build_sampler(cfg)
    device = pick_device(cfg.get("device"))
    dtype = pick_dtype(cfg.get("dtype"))
    prompts = read_prompts(cfg)  # before loading: a missing prompt file fails fast
    if not cfg.get("ckpt") and not cfg.get("hf"):
        raise ConfigError(
            "no checkpoint given: pass ckpt=<path to a .ckpt written by python -m gptlab.train> "
            "or hf=<a Hugging Face GPT-2 folder>"
        )
    if cfg.get("ckpt") and cfg.get("hf"):
        raise ConfigError("pass either ckpt= or hf=, not both")
    num_samples = int(cfg.get("num_samples", 1))
    if num_samples < 1:
        raise ConfigError(f"num_samples={num_samples} is invalid: it must be >= 1")

    source = cfg.get("ckpt") or cfg.get("hf")
    loaded = load_model(source, map_location="cpu", kind=None if cfg.get("ckpt") else "hf")
    bad = loaded.first_nonfinite_weight()
    if bad is not None:
        raise CheckpointError(
            f"{source} cannot generate text: its weights are not finite ({bad} holds NaN or inf); "
            "use an earlier checkpoint of the run"
        )
    model = loaded.model.to(device=device, dtype=dtype)
    model_dtype = next(model.parameters()).dtype  # dtype=None keeps the checkpoint's
    if device.type == "cpu" and model_dtype == torch.float32:
        # column-major weights: faster one-token steps on CPU BLAS (measured in float32)
        to_decode_layout(model)
    generator = torch.Generator(device=device).manual_seed(sampler.seed)
    settings = {
        "ckpt": str(Path(source).absolute()),
        "sampler": sampler.to_dict(),
        "device": str(device),
        "dtype": str(model_dtype).removeprefix("torch."),
        "use_cache": bool(cfg.get("use_cache", True)),
    }
    session = Session(
        model,
        loaded.tokenizer,
        sampler,
        generator,
        settings,
        bool(cfg.get("use_cache", True)),
        bool(cfg.get("stream", True)),
        out,
        err,
    )
    output = Path(cfg.output) if cfg.get("output") else None
    if output is not None and output.is_dir():
        raise ConfigError(
            f"output={output} is a folder; give a file path, e.g. output={output}/samples.jsonl"
        )
    records: list[dict[str, Any]] = []

    def save(new: list[dict[str, Any]]) -> None:
        records.extend(new)
        if output is not None:  # rewrite whole: a crash or Ctrl-C keeps every finished sample
            atomic_write_text(
                output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            )

    if cfg.get("interactive"):
        _interactive(session, num_samples, stdin, save)
    elif len(prompts) == 1:
        for i in range(num_samples):
            save([_one(session, prompts[0], i)])
    else:
        save(_batch(session, prompts, num_samples))
    if output is not None:
        print(f"wrote {len(records)} sample(s) to {output}", file=err)
    return records


def build_sampler(cfg: DictConfig) -> SamplerConfig:
    """The ``sampler`` group with the top-level ``max_new_tokens`` / ``seed`` applied.

    Without any seed, a fresh random one is drawn here, so it can be recorded.
    """
    values = OmegaConf.to_container(cfg.get("sampler") or {}, resolve=True)
    for key in ("max_new_tokens", "seed"):
        if cfg.get(key) is not None:
            values[key] = cfg[key]
    if values.get("seed") is None:
        values["seed"] = secrets.randbits(31)
    if values.get("stop"):
        values["stop"] = [
            unescape(s)
            for s in ([values["stop"]] if isinstance(values["stop"], str) else values["stop"])
        ]
    try:
        return SamplerConfig.from_mapping(values)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def unescape(text: str) -> str:
    """Turn the two-character escapes ``\\n``, ``\\t`` and ``\\\\`` into newline, tab and backslash.

    Only these three: a general decoder (``unicode_escape``) would mangle non-ASCII text.
    """
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def pick_dtype(name: Any) -> torch.dtype | None:
    if name in (None, ""):
        return None
    if str(name) not in DTYPES:
        raise ConfigError(f"dtype={name!r} is not supported; use one of {sorted(DTYPES)} or null")
    return DTYPES[str(name)]


def read_prompts(cfg: DictConfig) -> list[str]:
    """``prompt_file`` lines (blank lines skipped) or the single ``prompt``."""
    if not cfg.get("prompt_file"):
        return [unescape(str(cfg.get("prompt") or ""))]
    path = Path(cfg.prompt_file)
    if not path.is_file():
        raise ConfigError(
            f"prompt_file={path} does not exist; pass a text file with one prompt per line"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"prompt_file={path} is not UTF-8 text (byte {e.object[e.start : e.start + 1]!r} at "
            f"position {e.start}); save it as UTF-8"
        ) from None
    prompts = [unescape(line) for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt_file={path} has no prompts (every line is blank)")
    return prompts


def _record(
    s: Session, prompt: str, sample: int, ids: list[int], seconds: float, **extra: Any
) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "completion": completion_text(s.tokenizer, ids, s.sampler.stop),
        "sample": sample,
        "new_tokens": len(ids),
        "seconds": round(seconds, 4),
        "tokens_per_s": round(len(ids) / max(seconds, 1e-9), 2),
        **extra,
        "settings": s.settings,
    }


def _one(s: Session, prompt: str, sample: int) -> dict[str, Any]:
    """One prompt, one sample, streamed to ``s.out`` as the tokens come."""
    ids = encode_prompt(s.tokenizer, prompt)
    t0 = time.perf_counter()
    steps = stream(
        s.model,
        [ids],
        s.sampler,
        use_cache=s.use_cache,
        tokenizer=s.tokenizer,
        generator=s.generator,
    )
    text = TextStream(s.tokenizer, s.sampler.stop)
    s.out.write(prompt)
    for step in steps:
        if step[0] is not None:
            piece = text.push(step[0])
            if s.stream and piece:
                s.out.write(piece)
                s.out.flush()
    seconds = time.perf_counter() - t0
    s.out.write((text.finish() if s.stream else text.text) + SEPARATOR + "\n")
    s.out.flush()
    record = _record(s, prompt, sample, text.ids, seconds)
    print(
        f"[{record['new_tokens']} tokens in {seconds:.2f} s, {record['tokens_per_s']:.1f} tokens/s]",
        file=s.err,
    )
    return record


def _batch(s: Session, prompts: list[str], num_samples: int) -> list[dict[str, Any]]:
    """All prompts x samples as one left-padded batch; printed when it is done."""
    rows = [(p, i) for p in prompts for i in range(num_samples)]
    ids = [encode_prompt(s.tokenizer, p) for p, _ in rows]
    t0 = time.perf_counter()
    new = generate(
        s.model, ids, s.sampler, use_cache=s.use_cache, tokenizer=s.tokenizer, generator=s.generator
    )
    seconds = time.perf_counter() - t0
    batch_rate = round(sum(map(len, new)) / max(seconds, 1e-9), 2)
    records = [
        _record(s, p, i, toks, seconds, batch_size=len(rows), batch_tokens_per_s=batch_rate)
        for (p, i), toks in zip(rows, new)
    ]
    for r in records:
        s.out.write(r["prompt"] + r["completion"] + SEPARATOR + "\n")
    s.out.flush()
    print(
        f"[{len(rows)} samples, {sum(map(len, new))} tokens in {seconds:.2f} s, {batch_rate:.1f} tokens/s]",
        file=s.err,
    )
    return records


def _interactive(s: Session, num_samples: int, stdin: TextIO, save) -> None:
    """Prompt, generate, repeat; Ctrl-D (end of input) ends, a bad prompt is reported and skipped."""
    from gptlab.tokenizer import TokenizerError

    print("interactive: type a prompt and press Enter; Ctrl-D ends", file=s.err)
    while True:
        print("> ", end="", file=s.err, flush=True)
        line = stdin.readline()
        if not line:
            print(file=s.err)
            return
        prompt = unescape(line.rstrip("\n"))
        try:
            save([_one(s, prompt, i) for i in range(num_samples)])
        except TokenizerError as e:
            print(f"error: {e}", file=s.err)


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
@entry_point
def main(cfg: DictConfig) -> None:
    code = run_cli(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
