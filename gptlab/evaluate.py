"""``python -m gptlab.evaluate``: score a checkpoint on the whole split of any corpus.

    python -m gptlab.evaluate ckpt=outputs/.../checkpoints/last.ckpt data=shakespeare
    python -m gptlab.evaluate ckpt=... data=local data.path=notes.txt split=all

Training's ``val/loss`` averages a fixed sample of random windows: cheap, comparable
between runs, but a sample. This scores every token of the split exactly once: the
token ids are cut into consecutive, non-overlapping windows of the model's
``block_size`` (the last one shorter), so each token is predicted from the 0 to
``block_size - 1`` tokens before it in its window, as in training. Reported:

    loss        mean next-token cross-entropy, nats per token
    perplexity  exp(loss)
    bpb         bits per byte of UTF-8 text = loss / ln 2 / (bytes per token); unlike the
                loss, comparable between tokenizers

The text is tokenized with the checkpoint's own tokenizer (cached like training data).
``ckpt=`` takes anything ``gptlab.checkpoint.load_model`` reads (a ``.ckpt``, an export
or a Hugging Face GPT-2 folder). Weights that are not finite, or a loss that is not, are
refused in one sentence instead of reported as ``"perplexity": Infinity``. The command
prints the numbers before it writes the JSON: when the JSON cannot be written (a
read-only folder, ``output=`` a folder, a full disk) the numbers are already on stdout,
one ``error:`` line on stderr says where they could not go, and the exit status is 1.
``evaluate(cfg)`` does the work and returns the numbers; ``main`` is the Hydra wrapper.

**Benchmarks.** ``task=<name>`` (a file in ``gptlab/conf/task/``: hellaswag, piqa,
arc_easy, ..., or the ``core`` suite) scores the model zero- or few-shot instead, and
``tasks=[a,b]`` several at once; ``hf=<folder or hub name>`` loads Hugging Face GPT-2
weights instead of ``ckpt=``; ``limit=N`` scores a fixed subset of N items per task.
The work is ``gptlab.evaluation``'s; the JSON (summary and per-item outcomes) goes beside
the checkpoint as ``<ckpt>.eval-<task>.json``.

    python -m gptlab.evaluate task=hellaswag ckpt=outputs/.../checkpoints/last.ckpt
    python -m gptlab.evaluate task=core hf=gpt2 limit=500
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from gptlab.cli import entry_point, user_message
from gptlab.data.token_view import TokenView
from gptlab.errors import ConfigError
from gptlab.utils.device import pick_device
from gptlab.utils.io import atomic_write_text
from gptlab.utils.progress import progress_bar

SPLITS = ("val", "train", "all")


def score_tokens(
    model: torch.nn.Module,
    tokens: np.ndarray | TokenView,
    block_size: int,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods (nats) and how many tokens were predicted.

    Every token but the first is predicted exactly once: window ``k`` holds ids
    ``[k T, (k + 1) T]`` and predicts ids ``k T + 1 .. (k + 1) T``.
    """
    n_pred = len(tokens) - 1
    if n_pred < 1:
        raise ConfigError("the text to evaluate has fewer than 2 tokens; give a longer corpus")
    starts = np.arange(0, n_pred, block_size)
    full = starts[starts + block_size <= n_pred]
    batches = [(full[i : i + batch_size], block_size) for i in range(0, len(full), batch_size)]
    tail = int(full[-1]) + block_size if len(full) else 0
    if tail < n_pred:  # the last, shorter window
        batches.append((np.array([tail]), n_pred - tail))
    total, count = 0.0, 0
    bar = progress_bar(len(batches), "evaluating", "batch", progress)
    with torch.inference_mode():
        for offsets, length in batches:
            index = offsets[:, None] + np.arange(length + 1)
            ids = torch.from_numpy(_take(tokens, index)).to(device)
            logits = model(ids[:, :-1]).float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(nll)
            count += ids[:, 1:].numel()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    if bar is not None:
        bar.close()
    return total, count


def _take(tokens: Any, index: np.ndarray) -> np.ndarray:
    """Ids at ``index`` as int64, from an array or a store's ``TokenView``."""
    if hasattr(tokens, "gather"):
        return tokens.gather(index)
    return np.asarray(tokens)[index].astype(np.int64)


def _split_tokens(datamodule, split: str) -> tuple[Any, int | None]:
    """The token ids of the chosen split (from the corpus's token store) and its UTF-8 bytes."""
    datamodule.prepare_data()
    store = datamodule.stores[0]
    names = ("train", "val") if split == "all" else (split,)
    info = store.manifest.get("splits", {})
    text_bytes = [info.get(n, {}).get("text_bytes") for n in names]
    view = TokenView([s for n in names for s in store.split(n).shards])
    return view, sum(text_bytes) if all(text_bytes) else None


def evaluate(cfg: DictConfig, write: bool = True) -> dict[str, Any]:
    """Score ``cfg.ckpt`` on ``cfg.split`` of ``cfg.data`` and return the numbers.

    With ``write`` the JSON is written too (``result["output"]``); the command line
    prints the numbers first and writes after, so a folder it cannot write to never
    costs the user the score.
    """
    from gptlab.checkpoint import CheckpointError

    if cfg.get("task") or cfg.get("tasks"):
        return evaluate_downstream(cfg, write)
    if not cfg.get("ckpt"):
        raise ConfigError(
            "ckpt=<path to a .ckpt file> is required, e.g. ckpt=outputs/<date>/<time>/checkpoints/last.ckpt"
        )
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split}; use one of {', '.join(SPLITS)}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} must be at least 1")
    device = pick_device(cfg.get("device"))
    loaded = load_scorable(cfg.ckpt, device)
    block_size = loaded.model.config.block_size
    with open_dict(cfg):
        cfg.model.block_size = block_size
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.build_tokenizer(loaded.tokenizer)
    tokens, n_bytes = _split_tokens(datamodule, cfg.split)

    start = time.perf_counter()
    total, count = score_tokens(
        loaded.model, tokens, block_size, int(cfg.batch_size), device, bool(cfg.progress)
    )
    seconds = time.perf_counter() - start
    loss = total / count
    if not math.isfinite(loss):
        raise CheckpointError(
            f"the loss of {cfg.ckpt} on this text is not finite ({loss}): the model's outputs overflow, "
            "so its weights are not usable; use an earlier checkpoint of the run"
        )
    result = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "data": datamodule.name,
        "data_path": str(datamodule.corpus.path) if datamodule.corpus.path else None,
        "split": cfg.split,
        "tokens": int(len(tokens)),
        "predicted_tokens": int(count),
        "bytes": n_bytes,
        "block_size": block_size,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bpb": loss / math.log(2) / (n_bytes / len(tokens)) if n_bytes else None,
        "seconds": round(seconds, 3),
    }
    result["output"] = str(output_path(cfg, datamodule.name))
    if write:
        write_result(result)
    return result


def load_scorable(source: str | Path, device: torch.device, kind: str | None = None):
    """``load_model``, refusing weights that hold NaN or inf (they cannot give a score)."""
    from gptlab.checkpoint import CheckpointError, load_model

    loaded = load_model(source, map_location=device, kind=kind)
    bad = loaded.first_nonfinite_weight()
    if bad is not None:
        raise CheckpointError(
            f"{source} cannot be scored: its weights are not finite ({bad} holds NaN or inf); "
            "use an earlier checkpoint of the run"
        )
    return loaded


def resolve_hf(name: str) -> Path:
    """A local Hugging Face folder as it is, or a hub name (``gpt2``) downloaded once into HF's cache."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name, allow_patterns=["config.json", "*.safetensors", "pytorch_model.bin"]
            )
        )
    except ImportError:
        raise ConfigError(
            f"hf={name} is not a folder here, and huggingface_hub is not installed to download it; "
            "pip install huggingface_hub, or pass the folder of a saved GPT-2"
        ) from None
    except (
        Exception
    ) as e:  # offline, unknown repo, no permission: one sentence, not the hub's traceback
        raise ConfigError(
            f"hf={name} is not a folder here and could not be downloaded from the Hugging Face hub "
            f"({type(e).__name__}); connect to the network or pass a local folder"
        ) from None


def _task_specs(cfg: DictConfig) -> list[Any]:
    specs: list[Any] = []
    if cfg.get("task"):
        specs.append(cfg.task)
    specs.extend(cfg.get("tasks") or [])
    return specs


def evaluate_downstream(cfg: DictConfig, write: bool = True) -> dict[str, Any]:
    """Score a model on benchmark tasks (``task=`` / ``tasks=``) and return the results dict."""
    from gptlab.evaluation.evaluator import evaluate_loaded, load_tasks, select_scorable

    if bool(cfg.get("ckpt")) == bool(cfg.get("hf")):
        raise ConfigError(
            "give exactly one of ckpt=<a .ckpt file or export folder> and hf=<a Hugging Face GPT-2 "
            "folder or hub name, e.g. gpt2>"
        )
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} must be at least 1")
    limit = cfg.get("limit")
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"limit={limit} must be a positive number of items (or null for all)")
    tasks, suites = load_tasks(
        _task_specs(cfg), cache_dir=cfg.paths.data_dir
    )  # bad names fail fast
    device = pick_device(cfg.get("device"))
    if cfg.get("ckpt"):
        loaded = load_scorable(cfg.ckpt, device)
    else:
        loaded = load_scorable(resolve_hf(str(cfg.hf)), device, kind="hf")
    tasks, skipped = select_scorable(
        tasks,
        loaded.tokenizer,
        int(limit) if limit else None,
        loaded.model.config.block_size,
        str(cfg.get("too_long", "skip")),
    )
    start = time.perf_counter()
    results = evaluate_loaded(
        loaded.model,
        loaded.tokenizer,
        tasks,
        suites,
        batch_size=int(cfg.batch_size),
        progress=bool(cfg.progress),
    )
    for name, passed in skipped.items():
        results["tasks"][name]["skipped"] = passed
    results = {
        "model": str(loaded.path),
        "kind": loaded.kind,
        "limit": limit,
        **results,
        "seconds": round(time.perf_counter() - start, 3),
    }
    names = [t.name for t in tasks if "/" not in t.name] + list(suites)
    label = (
        "+".join(n.replace("/", "_") for n in names) if len(names) <= 3 else f"{len(names)}tasks"
    )
    if cfg.get("output"):
        results["output"] = str(Path(cfg.output))
    elif cfg.get("ckpt"):
        ckpt = Path(cfg.ckpt)
        results["output"] = str(ckpt.with_name(f"{ckpt.stem}.eval-{label}.json"))
    else:
        results["output"] = str(Path.cwd() / f"eval-{Path(str(cfg.hf)).name}-{label}.json")
    if write:
        write_task_results(results)
    return results


def write_task_results(results: dict[str, Any]) -> None:
    from gptlab.evaluation import results as result_file

    result_file.write(results["output"], {k: v for k, v in results.items() if k != "output"})


def format_task_results(results: dict[str, Any]) -> str:
    """One line per task (accuracy ± standard error per rule, bits per byte) and per suite."""
    lines = []
    for name, r in results["tasks"].items():
        m = r["metrics"]
        rules = " | ".join(
            f"{rule} {m[rule]:.4f} ± {m[rule + '_se']:.4f}"
            for rule in ("acc", "acc_norm", "acc_char")
            if rule in m
        )
        extra = f" | truncated {r['truncated']}" if r["truncated"] else ""
        if r.get("skipped"):
            extra += f" | skipped {len(r['skipped'])} (answer longer than the context)"
        lines.append(
            f"{name}: {r['n']:,} items | {rules} | bpb {m['bpb']:.4f} | centred {r['centered']:.4f}{extra}"
        )
    for name, s in results["suites"].items():
        lines.append(
            f"{name}: {s['score']:.4f} ± {s['se']:.4f} (mean centred score of {len(s['tasks'])} tasks)"
        )
    return "\n".join(lines)


def output_path(cfg: DictConfig, data_name: str) -> Path:
    """Where the JSON goes: ``output=``, else beside the checkpoint."""
    return (
        Path(cfg.output)
        if cfg.get("output")
        else _default_output(Path(cfg.ckpt), data_name, cfg.split)
    )


def write_result(result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``result["output"]`` (atomically)."""
    output = Path(result["output"])
    if output.is_dir():
        raise ConfigError(
            f"output={output} is a folder; give a file path, e.g. output={output}/eval.json"
        )
    atomic_write_text(
        output, json.dumps({k: v for k, v in result.items() if k != "output"}, indent=2) + "\n"
    )


def _default_output(ckpt: Path, data_name: str, split: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in data_name)
    return ckpt.with_name(f"{ckpt.stem}.eval-{safe}-{split}.json")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@entry_point
def main(cfg: DictConfig) -> None:
    r = evaluate(cfg, write=False)
    if "tasks" in r:
        print(format_task_results(r), flush=True)
        _save_or_say(lambda: write_task_results(r))
        print(f"wrote {r['output']}")
        return
    print(
        f"{r['data']} {r['split']}: {r['predicted_tokens']:,} tokens | loss {r['loss']:.4f} | "
        f"perplexity {r['perplexity']:.3f} | bpb {r['bpb']:.4f} | {r['seconds']:.1f}s",
        flush=True,
    )
    _save_or_say(lambda: write_result(r))
    print(f"wrote {r['output']}")


def _save_or_say(save) -> None:
    """Write the JSON; the numbers are on stdout already, so a failure only says where they could not go."""
    try:
        save()
    except Exception as e:
        message = user_message(e)
        if message is None:
            raise
        print(f"error: the numbers above were not saved: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
