"""Seconds from process start to the first optimizer step: gptlab's debug run vs nanoGPT's train.py.

    NANOGPT_DIR=/path/to/nanoGPT python benchmarks/startup.py --rounds 5
    NANOGPT_DIR=... python benchmarks/startup.py --python .venv/bin/python --python /tmp/plain/bin/python

Every debug run and every job of a sweep pays the start-up before it trains anything, so
this is the wait a user sees. The two commands, alternated in every round (the order
flips each round, so neither always runs on a warmer cache), each run by the same
interpreter (so the same torch):

* gptlab: ``python -m gptlab.train debug=default callbacks.progress_bar.refresh_rate=1``
  from this checkout (micro model: 2 layers, 2 heads, 64 wide, context 64, batch 4; the
  pydoc corpus, char tokenizer);
* nanoGPT: its ``train.py`` with the same model and batch on the same corpus, encoded by
  its own ``data/shakespeare_char/prepare.py`` (CPU, float32, no compile,
  ``max_iters=0``: exactly one step; ``eval_iters=1``: its evaluation before step 0, which
  it cannot skip, costs two forward passes of the micro model).

How "first optimizer step" is timed, from outside and without touching either program:
the clock starts just before the process is spawned and stops when the process writes
the line it writes anyway right after its first ``optimizer.step()``: nanoGPT's
``iter 0: loss ...``, and for gptlab Lightning's progress bar reaching ``1/<steps>``
(drawn in ``on_train_batch_end``, after the step; ``refresh_rate=1`` makes it draw at
step 1 instead of step 10, which changes nothing else). Both run with
``PYTHONUNBUFFERED=1`` so the line is not held in a pipe buffer. Checked once against
torch's own ``Optimizer.register_optimizer_step_post_hook`` run inside each process: the
line arrives 0-5 ms after the first step returns. Each process then runs to
its normal end and must exit with status 0; that time is the "exit" column (gptlab's
includes its 5 debug steps, validation, sample and checkpoint, nanoGPT's one step).

nanoGPT is not part of gptlab: point NANOGPT_DIR at a checkout (as for vs_nanogpt.sh).
Nothing is written into it: its data and outputs go to a temporary folder
(``--dataset`` takes an absolute path). On a shared machine the numbers are noisy:
compare the ratio measured in one run, and read the median and the minimum.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MICRO = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=4)  # gptlab's debug=default
NANOGPT_MARK = re.compile(rb"iter 0: loss")
# tqdm's line after step 1: "Epoch 0:  20%|##        | 1/5 [00:00<..."
GPTLAB_MARK = re.compile(rb"Epoch 0:[^\r\n]*\| 1/\d+ \[")


def prepare_nanogpt_data(nanogpt: Path, folder: Path) -> Path:
    """nanoGPT's own char-level prepare.py, run on gptlab's default corpus in a temp folder."""
    sys.path.insert(0, str(REPO))
    from gptlab.data.sources import embedded_text

    data = folder / "pydoc_char"
    data.mkdir()
    shutil.copy(nanogpt / "data" / "shakespeare_char" / "prepare.py", data / "prepare.py")
    (data / "input.txt").write_text(embedded_text(), encoding="utf-8")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, stdout=subprocess.DEVNULL)
    return data


def nanogpt_command(python: str, data: Path, out: Path) -> list[str]:
    args = dict(
        MICRO,
        dataset=data,
        out_dir=out,
        device="cpu",
        dtype="float32",
        compile=False,
        dropout=0.0,
        bias=False,
        gradient_accumulation_steps=1,
        max_iters=0,
        eval_iters=1,
        log_interval=1,
        always_save_checkpoint=False,
        wandb_log=False,
    )
    return [python, "train.py", *(f"--{key}={value}" for key, value in args.items())]


def gptlab_command(python: str, out: Path, overrides: list[str]) -> list[str]:
    return [
        python,
        "-m",
        "gptlab.train",
        "debug=default",
        "callbacks.progress_bar.refresh_rate=1",
        f"hydra.run.dir={out}",
        *overrides,
    ]


def timed(command: list[str], cwd: Path, mark: re.Pattern[bytes]) -> tuple[float, float]:
    """(seconds to the first line matching ``mark``, seconds to exit) of one process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, first = b"", None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        output += chunk
        if first is None and mark.search(output, max(0, len(output) - len(chunk) - 200)):
            first = time.perf_counter() - start
    proc.wait()
    end = time.perf_counter() - start
    if proc.returncode != 0 or first is None:
        tail = output[-3000:].decode(errors="replace")
        sys.exit(
            f"error: {' '.join(command[:4])} ... exited {proc.returncode} "
            f"{'without its first-step line' if first is None else ''}:\n{tail}"
        )
    return first, end


def run_rounds(
    python: str,
    nanogpt: Path,
    data: Path,
    scratch: Path,
    rounds: int,
    warmup: int,
    overrides: list[str],
) -> dict[str, list[tuple[float, float]]]:
    """Alternate the two commands; the first ``warmup`` rounds are printed but not counted."""
    runs = {"nanogpt": [], "gptlab": []}
    print(f"\n{python}  (load average before: {os.getloadavg()[0]:.2f})")
    print(f"{'round':<8} {'tool':<8} {'first step s':>12} {'exit s':>8}")
    for index in range(warmup + rounds):
        order = ["nanogpt", "gptlab"] if index % 2 == 0 else ["gptlab", "nanogpt"]
        for tool in order:
            out = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=scratch))
            if tool == "nanogpt":
                first, end = timed(nanogpt_command(python, data, out), nanogpt, NANOGPT_MARK)
            else:
                first, end = timed(gptlab_command(python, out, overrides), REPO, GPTLAB_MARK)
            label = "warm-up" if index < warmup else str(index - warmup + 1)
            print(f"{label:<8} {tool:<8} {first:>12.2f} {end:>8.2f}", flush=True)
            if index >= warmup:
                runs[tool].append((first, end))
    return runs


def summarise(runs: dict[str, list[tuple[float, float]]]) -> None:
    firsts = {tool: [first for first, _ in values] for tool, values in runs.items()}
    print(f"{'':<8} {'tool':<8} {'median s':>12} {'min s':>8}")
    for tool, values in firsts.items():
        print(f"{'':<8} {tool:<8} {statistics.median(values):>12.2f} {min(values):>8.2f}")
    median = statistics.median(firsts["gptlab"]) / statistics.median(firsts["nanogpt"])
    best = min(firsts["gptlab"]) / min(firsts["nanogpt"])
    print(
        f"gptlab / nanoGPT to the first step: {median:.2f}x (medians), {best:.2f}x (minimums); "
        f"target <= 2x; load average after: {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--warmup", type=int, default=1, help="uncounted rounds first (cold file cache)"
    )
    parser.add_argument(
        "--python",
        action="append",
        help="interpreter (environment) to run both with; repeat for several",
    )
    parser.add_argument(
        "--override", action="append", default=[], help="extra gptlab override, e.g. logger=csv"
    )
    args = parser.parse_args()
    nanogpt_dir = os.environ.get("NANOGPT_DIR")
    if not nanogpt_dir or not (Path(nanogpt_dir) / "train.py").is_file():
        sys.exit("error: set NANOGPT_DIR to a nanoGPT checkout (the folder holding train.py)")
    nanogpt = Path(nanogpt_dir).resolve()
    pythons = args.python or [sys.executable]
    with tempfile.TemporaryDirectory(prefix="gptlab-startup-") as scratch:
        data = prepare_nanogpt_data(nanogpt, Path(scratch))
        for python in pythons:
            summarise(
                run_rounds(
                    python, nanogpt, data, Path(scratch), args.rounds, args.warmup, args.override
                )
            )


if __name__ == "__main__":
    main()
