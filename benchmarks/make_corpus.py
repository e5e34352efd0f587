"""A synthetic but real-text corpus for benchmarking data preparation, deterministic from a seed.

    python benchmarks/make_corpus.py --mb 200 --out /tmp/corpora           # corpus_200mb.jsonl + .txt
    python benchmarks/make_corpus.py --mb 2000 --out /tmp/corpora --seed 1

Why not random bytes or one book repeated: a BPE encoder's speed depends on the text
(word lengths, punctuation, whitespace runs, code), and a prepare tool's memory and
per-document overhead depend on how many documents there are and how long they are. So
every document is real English prose and code-flavoured documentation, and documents
have web-like lengths:

* paragraphs come from Tiny Shakespeare (speeches) and Python's own reference
  documentation (``pydoc_data.topics``: prose, grammar, code samples), both on this
  machine, nothing downloaded;
* a document's length is lognormal with a median of 2.5 KB (FineWeb's documents have a
  median of a few KB and a long tail), clipped to [200 B, 200 KB];
* a document is runs of consecutive paragraphs from one source, each run starting at a
  random paragraph, until it reaches its length.

Two files with the same documents in the same order: ``.jsonl`` (one JSON object a line,
field ``text``) and ``.txt`` (documents separated by a blank line; plain-text loaders
that read a line a row see paragraphs, not documents).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")
MEDIAN_BYTES = 2500
SIGMA = 1.0
MIN_BYTES, MAX_BYTES = 200, 200_000


def paragraph_pools(shakespeare: Path) -> list[list[str]]:
    """The two paragraph pools: Shakespeare's speeches and the Python reference's paragraphs."""
    from pydoc_data.topics import topics

    plays = [p.strip() for p in shakespeare.read_text(encoding="utf-8").split("\n\n")]
    docs = [p.strip("\n") for t in sorted(topics) for p in topics[t].split("\n\n")]
    return [[p for p in plays if p], [p for p in docs if p.strip()]]


def documents(pools: list[list[str]], total_bytes: int, seed: int):
    """Yield documents until their text adds up to ``total_bytes`` (UTF-8)."""
    rng = random.Random(seed)
    written = 0
    while written < total_bytes:
        target = rng.lognormvariate(math.log(MEDIAN_BYTES), SIGMA)
        target = int(min(max(target, MIN_BYTES), MAX_BYTES))
        pool = pools[rng.random() < 0.5]
        parts: list[str] = []
        size = 0
        while size < target:
            start = rng.randrange(len(pool))
            for k in range(rng.randint(1, 8)):
                paragraph = pool[(start + k) % len(pool)]
                parts.append(paragraph)
                size += len(paragraph) + 2
                if size >= target:
                    break
        text = "\n\n".join(parts)
        written += len(text.encode("utf-8"))
        yield text


def write_corpus(out: Path, mb: int, seed: int, shakespeare: Path = SHAKESPEARE) -> list[Path]:
    """Write ``corpus_<mb>mb.jsonl`` and ``.txt`` under ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    jsonl, txt = out / f"corpus_{mb}mb.jsonl", out / f"corpus_{mb}mb.txt"
    n = 0
    with open(jsonl, "w", encoding="utf-8") as fj, open(txt, "w", encoding="utf-8") as ft:
        for text in documents(paragraph_pools(shakespeare), mb * 10**6, seed):
            fj.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            ft.write(text + "\n\n")
            n += 1
    print(f"{n} documents, {mb} MB of text -> {jsonl} and {txt}")
    return [jsonl, txt]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, nargs="+", default=[200], help="corpus sizes in MB of text")
    p.add_argument("--out", type=Path, default=Path("/tmp/corpora"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shakespeare", type=Path, default=SHAKESPEARE)
    args = p.parse_args()
    for mb in args.mb:
        write_corpus(args.out, mb, args.seed, args.shakespeare)


if __name__ == "__main__":
    main()
