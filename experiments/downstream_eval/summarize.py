"""Table and plot of the downstream study: benchmark scores per checkpoint, with error bars.

    python experiments/downstream_eval/summarize.py <results folder> <run folder>

Reads ``hellaswag-<step>.json`` and ``core18-<step>.json`` (written by ``run.sh``) and the
run's ``metrics.csv`` (validation loss), prints a markdown table (accuracy ± binomial
standard error, bits per byte of the gold answer, the centred suite score ± its error)
and McNemar's paired test between the first and the last checkpoint on the same items,
and writes ``downstream.png``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from gptlab.analysis.stats import mcnemar


def load(folder: Path, prefix: str) -> dict[int, dict]:
    out = {}
    for path in folder.glob(f"{prefix}-*.json"):
        out[int(path.stem.split("-")[-1])] = json.loads(path.read_text())
    return dict(sorted(out.items()))


def val_loss(run: Path) -> dict[int, float]:
    out = {}
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("val/loss"):
                out[int(row["step"]) + 1] = float(row["val/loss"])
    return out


def pooled(result: dict, rule: str) -> list[float]:
    """Per-item outcomes of every task of a result, concatenated in task order."""
    return [v for t in result["tasks"].values() for v in t["items"].get(rule, t["items"]["acc"])]


def main(results: Path, run: Path) -> None:
    hs, core = load(results, "hellaswag"), load(results, "core18")
    losses = val_loss(run)
    print(
        "| step | val loss | HellaSwag acc_norm | HellaSwag acc | HellaSwag bpb | CORE-18 centred | CORE-18 bpb (mean) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for step in sorted(set(hs) | set(core)):
        h = hs.get(step, {}).get("tasks", {}).get("hellaswag_text")
        c = core.get(step)
        cells = [str(step), f"{losses.get(step, float('nan')):.3f}"]
        if h:
            m = h["metrics"]
            cells += [
                f"{m['acc_norm']:.4f} ± {m['acc_norm_se']:.4f}",
                f"{m['acc']:.4f} ± {m['acc_se']:.4f}",
                f"{m['bpb']:.3f}",
            ]
        else:
            cells += ["", "", ""]
        if c:
            s = c["suites"]["core18"]
            bpbs = [t["metrics"]["bpb"] for t in c["tasks"].values()]
            cells += [f"{s['score']:.4f} ± {s['se']:.4f}", f"{sum(bpbs) / len(bpbs):.3f}"]
        else:
            cells += ["", ""]
        print("| " + " | ".join(cells) + " |")

    for name, table, rule, key in (
        ("HellaSwag", hs, "acc_norm", "hellaswag_text"),
        ("CORE-18 (items pooled)", core, "acc_norm", None),
    ):
        if len(table) < 2:
            continue
        first, last = min(table), max(table)
        if key:
            a = table[first]["tasks"][key]["items"][rule]
            b = table[last]["tasks"][key]["items"][rule]
            n = min(len(a), len(b))
            a, b = a[:n], b[:n]
        else:
            a, b = pooled(table[first], rule), pooled(table[last], rule)
        t = mcnemar(a, b)
        delta = (sum(b) - sum(a)) / len(a)
        verdict = "above the noise" if t.p < 0.05 else "within the noise"
        print(
            f"{name}, step {first} -> {last}: Δ{rule} {delta:+.4f} on {t.n} paired items "
            f"(b01={t.b01}, b10={t.b10}, McNemar {t.method} p={t.p:.3g}): {verdict}"
        )
    plot(hs, core, losses, results / "downstream.png")


def plot(hs: dict, core: dict, losses: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    steps = sorted(hs)
    m = [hs[s]["tasks"]["hellaswag_text"]["metrics"] for s in steps]
    axes[0].errorbar(
        steps,
        [x["acc_norm"] for x in m],
        yerr=[2 * x["acc_norm_se"] for x in m],
        marker="o",
        label="acc_norm",
    )
    axes[0].errorbar(
        steps, [x["acc"] for x in m], yerr=[2 * x["acc_se"] for x in m], marker="s", label="acc"
    )
    axes[0].axhline(0.25, color="grey", ls="--", lw=1, label="chance")
    axes[0].set(title="HellaSwag (±2 se)", xlabel="step", ylabel="accuracy")
    axes[0].legend(fontsize=8)
    steps_c = sorted(core)
    s = [core[k]["suites"]["core18"] for k in steps_c]
    axes[1].errorbar(steps_c, [x["score"] for x in s], yerr=[2 * x["se"] for x in s], marker="o")
    axes[1].axhline(0.0, color="grey", ls="--", lw=1)
    axes[1].set(title="CORE-18 centred (±2 se)", xlabel="step")
    axes[2].plot(steps, [x["bpb"] for x in m], marker="o", label="HellaSwag gold bpb")
    if steps_c:
        axes[2].plot(
            steps_c,
            [
                sum(t["metrics"]["bpb"] for t in core[k]["tasks"].values()) / len(core[k]["tasks"])
                for k in steps_c
            ],
            marker="s",
            label="CORE-18 mean gold bpb",
        )
    ax2 = axes[2].twinx()
    ls = sorted(losses)
    ax2.plot(ls, [losses[k] for k in ls], color="black", ls=":", label="val loss (nats)")
    axes[2].set(title="smooth metrics", xlabel="step", ylabel="bits per byte")
    axes[2].legend(fontsize=8, loc="upper right")
    ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
