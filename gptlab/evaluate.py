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
``evaluate(cfg)`` does the work and returns the numbers; ``main`` is the Hydra wrapper.
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

from gptlab.errors import ConfigError, user_errors
from gptlab.utils.io import atomic_write_text

SPLITS = ("val", "train", "all")


def score_tokens(model: torch.nn.Module, tokens: np.ndarray, block_size: int, batch_size: int = 16,
                 device: str | torch.device = "cpu", progress: bool = False) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods (nats) and how many tokens were predicted.

    Every token but the first is predicted exactly once: window ``k`` holds ids
    ``[k T, (k + 1) T]`` and predicts ids ``k T + 1 .. (k + 1) T``.
    """
    n_pred = len(tokens) - 1
    if n_pred < 1:
        raise ConfigError("the text to evaluate has fewer than 2 tokens; give a longer corpus")
    starts = np.arange(0, n_pred, block_size)
    full = starts[starts + block_size <= n_pred]
    batches = [(full[i:i + batch_size], block_size) for i in range(0, len(full), batch_size)]
    tail = int(full[-1]) + block_size if len(full) else 0
    if tail < n_pred:  # the last, shorter window
        batches.append((np.array([tail]), n_pred - tail))
    total, count = 0.0, 0
    bar = _progress(len(batches), progress)
    with torch.inference_mode():
        for offsets, length in batches:
            index = offsets[:, None] + np.arange(length + 1)
            ids = torch.from_numpy(np.asarray(tokens)[index].astype(np.int64)).to(device)
            logits = model(ids[:, :-1]).float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += ids[:, 1:].numel()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    if bar is not None:
        bar.close()
    return total, count


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluating", unit="batch", file=sys.stderr, mininterval=0.5)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu")
    return torch.device(name)


def _split_tokens(datamodule, split: str) -> tuple[np.ndarray, str]:
    """The token ids and text of the chosen split (tokenized once and cached)."""
    from gptlab.data.token_cache import cached_tokens

    if split == "all":
        text = datamodule.load_text()
        return cached_tokens(text, datamodule.tokenizer, datamodule.cache_dir, f"{datamodule.name}-all"), text
    datamodule.prepare_data()
    train_text, val_text = datamodule.split_text()
    if split == "train":
        return datamodule.train_tokens, train_text
    return datamodule.val_tokens, val_text


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.ckpt`` on ``cfg.split`` of ``cfg.data``; write and return the numbers."""
    from gptlab.checkpoint import load_checkpoint

    if not cfg.get("ckpt"):
        raise ConfigError("ckpt=<path to a .ckpt file> is required, e.g. ckpt=outputs/<date>/<time>/checkpoints/last.ckpt")
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split}; use one of {', '.join(SPLITS)}")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} must be at least 1")
    device = _device(str(cfg.device))
    loaded = load_checkpoint(cfg.ckpt, map_location=device)
    block_size = loaded.model.config.block_size
    with open_dict(cfg):
        cfg.model.block_size = block_size
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.build_tokenizer(loaded.tokenizer)
    tokens, text = _split_tokens(datamodule, cfg.split)

    start = time.perf_counter()
    total, count = score_tokens(loaded.model, tokens, block_size, int(cfg.batch_size), device, bool(cfg.progress))
    seconds = time.perf_counter() - start
    loss = total / count
    n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
    result = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "data": datamodule.name,
        "data_path": str(datamodule.path) if datamodule.path else None,
        "split": cfg.split,
        "tokens": int(len(tokens)),
        "predicted_tokens": int(count),
        "bytes": n_bytes,
        "block_size": block_size,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bpb": loss / math.log(2) / (n_bytes / len(tokens)),
        "seconds": round(seconds, 3),
    }
    output = Path(cfg.output) if cfg.get("output") else _default_output(Path(cfg.ckpt), datamodule.name, cfg.split)
    atomic_write_text(output, json.dumps(result, indent=2) + "\n")
    result["output"] = str(output)
    return result


def _default_output(ckpt: Path, data_name: str, split: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in data_name)
    return ckpt.with_name(f"{ckpt.stem}.eval-{safe}-{split}.json")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        r = evaluate(cfg)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(
        f"{r['data']} {r['split']}: {r['predicted_tokens']:,} tokens | loss {r['loss']:.4f} | "
        f"perplexity {r['perplexity']:.3f} | bpb {r['bpb']:.4f} | {r['seconds']:.1f}s\nwrote {r['output']}"
    )


if __name__ == "__main__":
    main()
