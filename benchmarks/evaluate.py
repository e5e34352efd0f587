"""Scoring throughput: gptlab's evaluator vs lm-evaluation-harness's ``HFLM``, same model, same items.

    python benchmarks/evaluate.py --task hellaswag --path hellaswag_val.jsonl --items 200
    python benchmarks/evaluate.py --task experiments/downstream_eval/hellaswag_text.yaml

Both score the same (context, continuation) requests of the first ``--items`` items of
the task with one randomly initialised GPT-2 124M (transformers' ``GPT2LMHeadModel``,
loaded into gptlab from the same Hugging Face folder), at the same batch size, in
alternating rounds. Tokens/s counts each request's context and continuation tokens once
(what a scorer that shares nothing must run); gptlab runs each shared context once, which
is where its lead comes from. The largest log-likelihood difference between the two is
printed as a check that both computed the same thing. Needs ``TIKTOKEN_CACHE_DIR`` (or
network) for GPT-2's ranks: the Hugging Face tokenizer is rebuilt from them offline,
and the task's data in ``GPTLAB_DATA_DIR`` (or network, or ``--path``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from gptlab.cli import entry_point


def hf_gpt2_tokenizer():
    """``transformers.GPT2Tokenizer`` from tiktoken's r50k ranks (GPT-2's ids), with no download."""
    import tiktoken
    import transformers

    from gptlab.tokenizer.bpe_format import merges_from_vocab
    from gptlab.tokenizer.bpe_patterns import render_bytes

    enc = tiktoken.get_encoding("r50k_base")
    vocab = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab - 1)]
    ids = {render_bytes(t): i for i, t in enumerate(vocab)}
    ids["<|endoftext|>"] = len(vocab)
    merges = [(render_bytes(vocab[a]), render_bytes(vocab[b])) for a, b in merges_from_vocab(vocab)]
    return transformers.GPT2Tokenizer(vocab=ids, merges=merges)


@entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hellaswag", help="a task name or task YAML path")
    parser.add_argument("--path", default=None, help="a local copy of the task's data file")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from gptlab.checkpoint import load_model
    from gptlab.evaluation.evaluator import task_requests
    from gptlab.evaluation.scorer import Scorer
    from gptlab.evaluation.tasks import load_task

    task = load_task(args.task, **({"path": args.path} if args.path else {}))
    items = task.items[: args.items]
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        ours = load_model(tmp, kind="hf")
    hflm = HFLM(pretrained=hf_model, tokenizer=hf_gpt2_tokenizer(), batch_size=args.batch_size)

    requests = [r for reqs in task_requests(task, items, ours.tokenizer) for r in reqs]
    pairs = [pair for item in items for pair in item.pairs]
    tokens = sum(len(r.context) + len(r.continuation) for r in requests)
    instances = [
        Instance("loglikelihood", {}, pair, i, ("bench", i, 1)) for i, pair in enumerate(pairs)
    ]
    scorer = Scorer(ours.model, batch_size=args.batch_size)

    def run_gptlab() -> list[float]:
        return [s.logprob for s in scorer.score(requests)]

    def run_hflm() -> list[float]:
        return [lp for lp, _ in hflm.loglikelihood(instances, disable_tqdm=True)]

    times: dict[str, list[float]] = {"gptlab": [], "lm-eval HFLM": []}
    values: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, fn in (("gptlab", run_gptlab), ("lm-eval HFLM", run_hflm)):
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    diff = max(abs(a - b) for a, b in zip(values["gptlab"], values["lm-eval HFLM"]))

    print(
        f"task {task.name}: {len(items)} items, {len(requests)} requests, {tokens:,} tokens; "
        f"GPT-2 124M, float32, batch {args.batch_size}, {args.threads} threads"
    )
    print(f"| scorer | tokens/s (median of {args.rounds}) | seconds per round |")
    print("| --- | --- | --- |")
    rates = {}
    for name, ts in times.items():
        rates[name] = tokens / statistics.median(ts)
        print(f"| {name} | {rates[name]:,.0f} | {', '.join(f'{t:.1f}' for t in ts)} |")
    print(f"gptlab / HFLM tokens/s: {rates['gptlab'] / rates['lm-eval HFLM']:.2f}x")
    print(f"largest log-likelihood difference: {diff:.2e} nats")


if __name__ == "__main__":
    main()
