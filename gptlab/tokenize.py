"""``python -m gptlab.tokenize``: train a tokenizer on a corpus and measure its compression.

    python -m gptlab.tokenize data=shakespeare tokenizer.vocab_size=8192
    python -m gptlab.train tokenizer=bpe tokenizer.path=<the saved tokenizer.json> ...

The tokenizer learns from the training split only, so the bytes per token reported on
the validation split measure how it compresses text it has not seen.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gptlab.cli import entry_point
from gptlab.errors import ConfigError


def tokenize(cfg: DictConfig) -> dict[str, float | str]:
    """Train (or load) the configured tokenizer, save it, and return its statistics."""
    output = (
        Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / "tokenizer.json"
    )
    if output.is_dir():  # checked before the minutes of training, not after
        raise ConfigError(
            f"output={output} is a folder; give a file path, e.g. output={output}/tokenizer.json"
        )
    datamodule = hydra.utils.instantiate(cfg.data)
    train_text, val_text = datamodule.split_text()
    start = time.perf_counter()
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)(text=train_text)
    seconds = time.perf_counter() - start
    tokenizer.save(output)
    val_ids = tokenizer.encode_batch([val_text])[0]
    val_bytes = len(val_text.encode("utf-8", errors="surrogatepass"))
    stats = {
        "path": str(output),
        "vocab_size": tokenizer.vocab_size,
        "train_seconds": round(seconds, 3),
        "val_bytes": val_bytes,
        "val_tokens": len(val_ids),
        "val_bytes_per_token": val_bytes / max(1, len(val_ids)),
    }
    print(
        f"tokenizer {tokenizer.kind} with {tokenizer.vocab_size:,} ids built in {seconds:.2f} s; "
        f"validation split: {stats['val_bytes_per_token']:.3f} bytes per token "
        f"({val_bytes:,} bytes -> {len(val_ids):,} tokens)\n"
        f"saved to {output}"
        + (
            f"; train with it: tokenizer=bpe tokenizer.path={output}"
            if tokenizer.kind == "bpe"
            else ""
        )
    )
    return stats


@hydra.main(version_base="1.3", config_path="conf", config_name="tokenize")
@entry_point
def main(cfg: DictConfig) -> None:
    tokenize(cfg)


if __name__ == "__main__":
    main()
