"""Preparing a corpus into token ids: throughput and peak memory of gptlab and its peers.

    python benchmarks/make_corpus.py --mb 200 2000                      # /tmp/corpora/corpus_*.jsonl
    python benchmarks/data_prepare.py --corpus /tmp/corpora/corpus_200mb.jsonl --rounds 2
    python benchmarks/data_prepare.py --corpus /tmp/corpora/corpus_2000mb.jsonl --only a c e
    python benchmarks/data_prepare.py --startup-corpus BIG TINY --startup-cmd "..."  # start-up

Every row is a subprocess that reads the same file from the page cache (read once
before the first row). The parent is a small process (psutil only) that times the child's
wall clock (interpreter start and imports included) and samples its process tree every
50 ms: the peak of the tree's summed RSS (what a multi-process tool holds; shared pages
such as libraries and file mappings count once per process, so this over-counts), the
peak of the tree's summed PSS (shared pages split between the processes that map them:
the honest total, sampled every 200 ms because it is dearer to read) and the peak RSS of
the single largest process. Rows alternate within a round (a, b, c, ..., a, b, c, ...), so
two programs sharing a busy machine see the same load; every round is printed.

Rows (N = the CPUs this process may run on, ``len(os.sched_getaffinity(0))``):

  a  tiktoken, one thread: ``encode_ordinary`` document by document, counting ids. The
     baseline: nothing is converted or written, so every other row does more work than it.
  b  tiktoken threads: ``encode_ordinary_batch(docs, num_threads=N)`` on ~1 MB batches;
     the main thread turns ids into uint16 and appends them to a file.
  b2 thread pool, pipelined: one ``ThreadPoolExecutor(N)``, at most 2N ~1 MB batches in
     flight, each thread encodes a batch and builds its uint16 bytes while the main thread
     reads, parses and writes (the shape of gptlab's ``ParallelEncoder`` "threads" mode).
  c  process pool, documents shipped: the main process reads and parses documents, N
     worker processes encode ~1 MB batches and send back uint16 bytes, at most 2N batches
     in flight (memory stays bounded); the main process writes them in order.
  c2 process pool, byte ranges: each worker reads and parses its own ~4 MB range of the
     file (cut at line ends) and sends back uint16 bytes; the main process only writes.
     Possible only for a local file whose documents can be found by their line ends.
  d  nanoGPT's procedure (data/openwebtext/prepare.py, re-written): ``datasets.load_dataset
     ("json")`` into a fresh Arrow cache, ``.map(tokenize, num_proc=N)``, the lengths summed,
     then the ids copied into an ``np.memmap`` in 1,024 contiguous shards. Its train/val
     split is left out (it costs an index, not a pass).
  e  gptlab: ``python -m gptlab.prepare`` (``--gptlab-cmd``); ids counted from the shards'
     headers. Skipped with a note while the module does not exist.

Every row appends the end-of-text id after each document, as nanoGPT does. MB is the
file's size (10^6 bytes; JSON quoting included), the same for every row. The ratio is MB/s
over row a's in the same round. The 10B-token projection scales a row's tokens/s by
16/cores, with cores = 1 for row a and N otherwise: it assumes throughput grows linearly
with cores (no shared bottleneck, the same per-core speed); a single-reader tool like b or
c would hit its reader's limit first, so it flatters them.

Columns besides the obvious: ``cpu s`` is the user + system time of the row's whole
process tree (``RUSAGE_CHILDREN``), which a busy machine does not inflate the way it does
wall time: it shows what a row costs, not how long it waited. ``main s`` is the CPU of the
part that does not run in parallel (the main thread for threaded rows, the coordinating
process for pools), and ``est s`` = max(cpu s / cores, main s) is what the row would take on
an idle machine if nothing else serialised it (threads' GIL hand-offs do, so for them it is
optimistic). ``load`` is the 1-minute load average when the row started: the cores are
shared, and a round run at load 4 says little about parallel speed-ups.

A ``.txt`` corpus is split into documents at blank lines (``datasets``' ``sample_by=
"paragraph"`` does the same for row d).

Start-up mode (``--startup-corpus BIG TINY``) times ``--startup-cmd`` (a template with
``{python}``, ``{corpus}``) on the store of BIG and of TINY, alternating, and prints the
difference of the medians. One untimed run of each comes first: it prepares a store that is
missing and brings the files into the page cache, so the rounds time opening a prepared store.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
R50K = Path("/work/shared/data/r50k_base.tiktoken")
R50K_CACHE_NAME = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"  # sha1 of tiktoken's r50k_base URL
BATCH_BYTES = 1 << 20
RANGE_BYTES = 4 << 20
TARGET_TOKENS = 10e9
TARGET_CORES = 16
ROWS = {
    "a": "tiktoken 1 thread",
    "b": "tiktoken N threads",
    "b2": "thread pool N (pipelined)",
    "c": "pool N procs (docs shipped)",
    "c2": "pool N procs (byte ranges)",
    "d": "nanoGPT datasets.map",
    "e": "gptlab.prepare",
}
GPTLAB_CMD = (
    "{python} -m gptlab.prepare data=local data.path={corpus} tokenizer=gpt2 paths.data_dir={out}"
)


# ---------------------------------------------------------------- the rows (child side)


def gpt2():
    import tiktoken

    return tiktoken.get_encoding("r50k_base")  # GPT-2's ranks; "gpt2" would download its vocab.bpe


def read_documents(path: Path):
    """Documents of a .jsonl (field "text") or a .txt (blocks between blank lines), streamed."""
    with open(path, encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for line in f:
                yield json.loads(line)["text"]
            return
        block: list[str] = []
        for line in f:
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block).rstrip("\n")
                block = []
        if block:
            yield "".join(block).rstrip("\n")


def batches(docs, batch_bytes: int = BATCH_BYTES):
    """Group documents into lists of about ``batch_bytes`` characters."""
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def flat_uint16(id_lists: list[list[int]], eot: int) -> bytes:
    """The ids of a batch of documents, each followed by end-of-text, as uint16 bytes."""
    import numpy as np

    flat: list[int] = []
    for ids in id_lists:
        flat.extend(ids)
        flat.append(eot)
    return np.array(flat, dtype=np.uint16).tobytes()


def row_a(corpus: Path, out: Path, n: int) -> int:
    enc = gpt2()
    encode = enc.encode_ordinary
    return sum(len(encode(doc)) + 1 for doc in read_documents(corpus))


def row_b(corpus: Path, out: Path, n: int) -> int:
    enc = gpt2()
    written = 0
    with open(out, "wb") as f:
        for batch in batches(read_documents(corpus)):
            written += f.write(
                flat_uint16(enc.encode_ordinary_batch(batch, num_threads=n), enc.eot_token)
            )
    return written // 2


_ENC = None


def _worker_init() -> None:
    """Load the encoding once, before the pool forks, so every worker inherits it."""
    global _ENC
    _ENC = gpt2()


def _encode_docs(batch: list[str]) -> bytes:
    return flat_uint16([_ENC.encode_ordinary(d) for d in batch], _ENC.eot_token)


def _encode_range(job: tuple[str, int, int]) -> bytes:
    path, start, end = job
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read(end - start).decode("utf-8").splitlines()
    return _encode_docs([json.loads(line)["text"] for line in lines])


def _ordered_pool(submit, jobs, out: Path, n: int) -> int:
    """Submit ``jobs`` with at most 2n in flight, writing their results in order.

    ``submit(job)`` starts one and returns a function that waits for its result.
    """
    pending: deque = deque()
    written = 0
    with open(out, "wb") as f:
        for job in jobs:
            pending.append(submit(job))
            if len(pending) >= 2 * n:
                written += f.write(pending.popleft()())
        while pending:
            written += f.write(pending.popleft()())
    return written // 2


def row_b2(corpus: Path, out: Path, n: int) -> int:
    from concurrent.futures import ThreadPoolExecutor

    _worker_init()  # one encoding, shared by the threads
    with ThreadPoolExecutor(n) as pool:
        return _ordered_pool(
            lambda job: pool.submit(_encode_docs, job).result,
            batches(read_documents(corpus)),
            out,
            n,
        )


def row_c(corpus: Path, out: Path, n: int) -> int:
    import multiprocessing as mp

    _worker_init()  # fail here, not in a pool that restarts failing workers for ever
    with mp.get_context("fork").Pool(n) as pool:
        return _ordered_pool(
            lambda job: pool.apply_async(_encode_docs, (job,)).get,
            batches(read_documents(corpus)),
            out,
            n,
        )


def byte_ranges(path: Path, size: int = RANGE_BYTES):
    """(path, start, end) pieces of a file, each ending just after a newline."""
    total = path.stat().st_size
    with open(path, "rb") as f:
        start = 0
        while start < total:
            f.seek(min(start + size, total))
            f.readline()
            end = min(f.tell(), total)
            yield (str(path), start, end)
            start = end


def row_c2(corpus: Path, out: Path, n: int) -> int:
    import multiprocessing as mp

    if corpus.suffix != ".jsonl":
        raise SystemExit("row c2 reads byte ranges of a .jsonl only")
    _worker_init()  # the forked workers inherit the encoding
    with mp.get_context("fork").Pool(n) as pool:
        return _ordered_pool(
            lambda job: pool.apply_async(_encode_range, (job,)).get, byte_ranges(corpus), out, n
        )


def _nanogpt_tokenize(example: dict) -> dict:
    ids = _ENC.encode_ordinary(example["text"])
    ids.append(_ENC.eot_token)
    return {"ids": ids, "len": len(ids)}


def row_d(corpus: Path, out: Path, n: int) -> int:
    import numpy as np
    from datasets import load_dataset

    _worker_init()  # forked map workers inherit the encoding, as nanoGPT's global enc
    cache = out.parent / "hf_cache"
    if corpus.suffix == ".jsonl":
        ds = load_dataset("json", data_files=str(corpus), split="train", cache_dir=str(cache))
    else:
        ds = load_dataset(
            "text",
            data_files=str(corpus),
            split="train",
            cache_dir=str(cache),
            sample_by="paragraph",
        )
    tokenized = ds.map(_nanogpt_tokenize, remove_columns=["text"], desc="tokenizing", num_proc=n)
    total = int(np.sum(tokenized["len"], dtype=np.uint64))
    arr = np.memmap(out, dtype=np.uint16, mode="w+", shape=(total,))
    shards = min(1024, len(tokenized))
    idx = 0
    for i in range(shards):
        part = tokenized.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
        ids = np.concatenate(part["ids"])
        arr[idx : idx + len(ids)] = ids
        idx += len(ids)
    arr.flush()
    return total


def run_row(name: str, corpus: Path, out: Path, n: int) -> None:
    t0 = time.perf_counter()
    tokens = globals()[f"row_{name}"](corpus, out, n)
    if name in ("c", "c2", "d"):  # the coordinating process (its pickling threads too)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        main_cpu = usage.ru_utime + usage.ru_stime
    else:  # the main thread: the part the encoding threads do not share
        main_cpu = time.thread_time()
    print(
        "RESULT "
        + json.dumps(
            {"tokens": tokens, "inner_s": time.perf_counter() - t0, "main_cpu_s": main_cpu}
        ),
        flush=True,
    )


# ---------------------------------------------------------------- measuring (parent side)


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Peak summed RSS and PSS of a process and its descendants, and the largest single RSS."""

    def __init__(self, pid: int, every_s: float = 0.05, pss_every: int = 4):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.every_s, self.pss_every = every_s, pss_every
        self.tree_rss = self.tree_pss = self.max_rss = 0
        self.max_procs = 0
        self.done = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.done.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            rss = []
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss.append(p.memory_info().rss)
            if rss:
                self.tree_rss = max(self.tree_rss, sum(rss))
                self.max_rss = max(self.max_rss, max(rss))
                self.max_procs = max(self.max_procs, len(rss))
            if tick % self.pss_every == 0:
                self.tree_pss = max(self.tree_pss, 1024 * sum(pss_kb(p.pid) for p in procs))
            tick += 1
            self.done.wait(self.every_s)


def measure(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd``; its wall time, memory peaks, exit status and last RESULT line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=logf, text=True, cwd=REPO
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        stdout, _ = proc.communicate()
        wall = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
        logf.write(stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "tree_rss": sampler.tree_rss,
        "tree_pss": sampler.tree_pss,
        "max_rss": sampler.max_rss,
        "procs": sampler.max_procs,
        **result,
    }


def shard_ids(out: Path) -> tuple[int, str]:
    """Number of ids and sha256 of the ids across the llm.c shards under ``out``, by file name."""
    import numpy as np

    total, digest = 0, hashlib.sha256()
    for path in sorted(out.rglob("*.bin")):
        with open(path, "rb") as f:
            header = np.frombuffer(f.read(1024), dtype="<i4")
            if len(header) < 3 or int(header[0]) not in (20240520, 20240801):
                continue
            total += int(header[2])
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return total, digest.hexdigest()[:12]


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def fill(template: str, **values: object) -> str:
    """``template`` with ``{name}`` replaced; other braces (Hydra's ``${now:...}``) are left alone."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def bench_env(work: Path) -> dict:
    """Offline settings: tiktoken reads r50k_base from a local cache, HF never goes online."""
    cache = work / "tiktoken"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / R50K_CACHE_NAME).is_file():
        if not R50K.is_file():
            raise SystemExit(f"{R50K} is not there: tiktoken's GPT-2 ranks are needed offline")
        shutil.copy(R50K, cache / R50K_CACHE_NAME)
    env = dict(os.environ)
    env.update(
        TIKTOKEN_CACHE_DIR=str(cache),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(work / "hf_home"),
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="offline",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def gptlab_available(python: str, env: dict) -> bool:
    probe = [
        python,
        "-c",
        "import importlib.util,sys; sys.exit(importlib.util.find_spec('gptlab.prepare') is None)",
    ]
    return subprocess.run(probe, env=env, cwd=REPO).returncode == 0


def one_row(name: str, corpus: Path, args, env: dict, work: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=work))
    out = run_dir / "ids.bin"
    if name.startswith("e"):
        template = args.gptlab_cmd[int(name[1:] or 1) - 1]
        cmd = shlex.split(fill(template, python=args.python, corpus=corpus, out=run_dir / "store"))
    else:
        cmd = [
            args.python,
            __file__,
            "--row",
            name,
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--n",
            str(args.n),
        ]
    load = os.getloadavg()[0]
    r = measure(cmd, env, work / f"{name}_{corpus.stem}.log")
    r["load"] = load
    r["cmd"] = " ".join(cmd)
    if r["rc"] == 0 and name.startswith("e"):
        r["tokens"], r["sha"] = shard_ids(run_dir / "store")
    elif r["rc"] == 0 and out.is_file():
        r["sha"] = file_sha(out)
    shutil.rmtree(run_dir, ignore_errors=True)
    return r


def fmt_mb(b: float) -> str:
    return f"{b / 1e6:,.0f}"


def print_table(rows: list[tuple[str, Path, dict]], n: int) -> None:
    """One line a row: wall-clock and CPU throughput, memory peaks, the 10B-token projections."""
    print(
        f"{'row':<3} {'tool':<28} {'corpus':<20} {'MB':>5} {'wall s':>7} {'MB/s':>6} {'tok/s':>10} "
        f"{'cpu s':>6} {'MB/cpu-s':>8} {'treeRSS':>7} {'treePSS':>7} {'maxRSS':>6} {'procs':>5} "
        f"{'x(a)':>5} {'h wall':>6} {'h cpu':>6} {'main s':>6} {'est s':>6} {'load':>4}"
    )
    base = {c: r["wall_s"] for name, c, r in rows if name == "a" and r["rc"] == 0}
    for name, corpus, r in rows:
        mb = corpus.stat().st_size / 1e6
        if r["rc"] != 0:
            print(
                f"{name:<3} {ROWS.get(name, 'gptlab.prepare ' + name):<28} {corpus.name:<20} {mb:>5.0f}  failed (rc {r['rc']}): see its log"
            )
            continue
        tokens = r.get("tokens", 0)
        tps = tokens / r["wall_s"]
        cores = 1 if name == "a" else n
        h_wall = TARGET_TOKENS / (tps * TARGET_CORES / cores) / 3600 if tps else float("nan")
        h_cpu = (
            TARGET_TOKENS / (tokens / r["cpu_s"] * TARGET_CORES) / 3600 if tokens else float("nan")
        )
        ratio = base[corpus] / r["wall_s"] if corpus in base else float("nan")
        main = r.get("main_cpu_s", float("nan"))
        estimate = max(r["cpu_s"] / cores, main) if "main_cpu_s" in r else float("nan")
        print(
            f"{name:<3} {ROWS.get(name, 'gptlab.prepare ' + name):<28} {corpus.name:<20} {mb:>5.0f} {r['wall_s']:>7.1f} {mb / r['wall_s']:>6.2f} "
            f"{tps:>10,.0f} {r['cpu_s']:>6.1f} {mb / r['cpu_s']:>8.2f} {fmt_mb(r['tree_rss']):>7} "
            f"{fmt_mb(r['tree_pss']):>7} {fmt_mb(r['max_rss']):>6} {r['procs']:>5} {ratio:>5.2f} "
            f"{h_wall:>6.2f} {h_cpu:>6.2f} {main:>6.1f} {estimate:>6.1f} {r['load']:>4.1f}"
        )


def bench(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    names = args.only or list(ROWS)
    if "e" in names and not gptlab_available(args.python, env):
        print("row e skipped: gptlab.prepare does not exist yet (python -m gptlab.prepare)")
        names.remove("e")
    if "e" in names:  # one row a --gptlab-cmd: e, e2, e3, ...
        at = names.index("e")
        names[at : at + 1] = ["e"] + [f"e{k}" for k in range(2, len(args.gptlab_cmd) + 1)]
    for corpus in args.corpus:
        subprocess.run(
            ["cat", str(corpus)], stdout=subprocess.DEVNULL, check=True
        )  # into the page cache
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  N={args.n} cores  {psutil.cpu_count()} CPUs here"
    )
    print(f"rows {names}, {args.rounds} rounds, alternating; logs under {work}")
    for name in names:
        if name.startswith("e"):
            print(f"row {name}: {args.gptlab_cmd[int(name[1:] or 1) - 1]}")
    all_rows: list[tuple[str, Path, dict]] = []
    for rnd in range(1, args.rounds + 1):
        rows = []
        for corpus in args.corpus:
            for name in names:
                if name == "c2" and corpus.suffix != ".jsonl":
                    continue  # byte ranges need one document a line
                r = one_row(name, corpus, args, env, work)
                rows.append((name, corpus, r))
                print(
                    f"  round {rnd} {name} {corpus.name}: {r['wall_s']:.1f} s rc {r['rc']}",
                    flush=True,
                )
        print(f"\nround {rnd}")
        print_table(rows, args.n)
        print()
        all_rows += rows
    with open(work / "results.json", "a") as f:
        for name, corpus, r in all_rows:
            f.write(json.dumps({"row": name, "corpus": str(corpus), "n": args.n, **r}) + "\n")
    for corpus in args.corpus:
        counts = {
            f"{n}: {r.get('tokens'):,} {r.get('sha', '')}"
            for n, c, r in all_rows
            if c == corpus and r["rc"] == 0
        }
        print(f"{corpus.name}: ids per row (count, sha256 of the uint16 ids) {sorted(counts)}")


def startup(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    runs: dict[str, list[dict]] = {c: [] for c in args.startup_corpus}
    for corpus in args.startup_corpus:  # untimed: prepares a missing store, warms the page cache
        cmd = shlex.split(fill(args.startup_cmd, python=args.python, corpus=corpus))
        r = measure(cmd, env, work / f"startup_warmup_{Path(corpus).stem}.log")
        print(f"warm-up {corpus}: {r['wall_s']:.1f} s rc {r['rc']}", flush=True)
    print(f"command: {args.startup_cmd}")
    for rnd in range(args.rounds):
        for corpus in args.startup_corpus:
            cmd = shlex.split(fill(args.startup_cmd, python=args.python, corpus=corpus))
            r = measure(cmd, env, work / f"startup_{Path(corpus).stem}.log")
            print(
                f"round {rnd + 1} {Path(corpus).name}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, "
                f"rc {r['rc']}, peak tree RSS {fmt_mb(r['tree_rss'])} MB, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            runs[corpus].append(r)
    big, tiny = args.startup_corpus
    for key in ("wall_s", "cpu_s"):
        med = {c: statistics.median(r[key] for r in rs) for c, rs in runs.items()}
        print(
            f"median {key}: {Path(big).name} {med[big]:.2f}, {Path(tiny).name} {med[tiny]:.2f}, "
            f"difference {med[big] - med[tiny]:+.2f} s"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--corpus", type=Path, nargs="+", default=[Path("/tmp/corpora/corpus_200mb.jsonl")]
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=list(ROWS), help="rows to run (default: all)")
    p.add_argument(
        "--gptlab-cmd",
        nargs="+",
        default=[GPTLAB_CMD],
        help="templates with {python} {corpus} {out}; each is a row (e, e2, ...)",
    )
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--n", type=int, default=len(os.sched_getaffinity(0)), help="threads/processes")
    p.add_argument("--work", default="/tmp/corpora/work", help="outputs and logs (emptied per row)")
    p.add_argument("--startup-corpus", nargs=2, metavar=("BIG", "TINY"))
    p.add_argument("--startup-cmd", help="template: {python} {corpus}")
    p.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.row:
        run_row(args.row, args.corpus[0], args.out, args.n)
    elif args.startup_corpus:
        if not args.startup_cmd:
            p.error("--startup-corpus needs --startup-cmd")
        startup(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
