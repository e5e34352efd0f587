"""``python -m gptlab.prepare``: tokenize a corpus once into a token store.

    python -m gptlab.prepare data=local data.path=corpus.jsonl tokenizer=gpt2
    python -m gptlab.prepare data=fineweb_edu_10bt tokenizer=gpt2   # FineWeb-Edu, streamed
    python -m gptlab.train data=local data.path=corpus.jsonl tokenizer=gpt2 ...   # uses it

Documents are streamed, encoded on every CPU this process may use, and written as
llm.c-format shards with a manifest (``gptlab/data/ingest.py``); memory stays bounded
however large the corpus. Killed midway, the same command continues from the last
complete shard; run on a store that exists, it only opens (and with ``verify=true``
checks) it. Training makes the same store itself when it is missing: this command
only does it ahead of time (and without importing Lightning). ``prepare(cfg)`` does the
work and returns the stores' summaries.
"""

from __future__ import annotations

import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from gptlab.cli import entry_point


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Prepare (or open) the token store of ``cfg.data`` for ``cfg.tokenizer``; return a summary."""
    from gptlab.data.corpus import (
        Corpus,
        build_tokenizer,
        corpus_settings,
        mixture_parts,
        training_corpora,
    )
    from gptlab.data.store import open_store, read_manifest

    start = time.perf_counter()
    settings: dict[str, Any] = OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[assignment]
    base = corpus_settings(settings)
    name = base.pop("name")
    corpus = Corpus(name, **base)
    corpora = training_corpora(corpus, mixture_parts(name, base, settings.get("mixture")))
    tokenizer = build_tokenizer(hydra.utils.instantiate(cfg.tokenizer), corpus)
    summaries = []
    for part in corpora:
        store = part.open(tokenizer, progress=bool(cfg.get("progress", True)))
        if cfg.get("verify") and read_manifest(store.folder) is not None:
            open_store(store.folder, verify=True)  # every shard's ids against its checksum
        splits = store.manifest.get("splits", {})
        summaries.append(
            {
                "store": str(store.folder),
                "shards": len(store.manifest.get("shards", [])),
                **{f"{s}_tokens": len(v) for s, v in store.splits.items()},
                **{f"{s}_documents": splits.get(s, {}).get("documents") for s in store.splits},
                "skipped_records": store.manifest.get("skipped_records", 0),
            }
        )
    seconds = time.perf_counter() - start
    for s in summaries:
        skipped = f"; {s['skipped_records']:,} bad records skipped" if s["skipped_records"] else ""
        print(
            f"token store {s['store']}: {s['train_tokens']:,} training and {s['val_tokens']:,} "
            f"validation tokens in {s['shards']} shard(s){skipped} ({seconds:.1f} s)",
            flush=True,
        )
    return {"seconds": seconds, "stores": summaries}


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
@entry_point
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
