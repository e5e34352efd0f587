"""The walkthrough notebooks are committed executed, and their outputs are current.

``experiments/notebooks/`` holds the notebooks with their outputs and figures, so a
reader on a code host sees every result without running anything. The fast test checks
that they are committed that way (every code cell run, in order, from the code it shows,
at a reasonable size). The slow one re-runs each notebook with ``tests.notebooks_regen``
(a fresh kernel of this interpreter, CPU, one thread, its own empty working folder and
``TMPDIR``, the offline caches of ``conftest.offline_environment``) and compares the fresh
outputs with the committed ones, tolerantly:

* text outputs (stdout, ``text/plain``, ``text/html``, errors) must match after
  normalising: numbers compared with a relative tolerance of 5 % (plus 1e-3 absolute, for
  float noise such as ``max |difference|: 1.2e-07``),
  whitespace dropped (column padding follows the widest number), and
  masked: timings (``6 s``, ``84.2it/s``), memory addresses, run-folder timestamps and
  the sample a run prints at the end of training;
* stderr is not compared (library warnings and progress bars vary with versions);
* images by presence: the same number of PNG outputs per cell;
* a cell tagged ``"gptlab": "volatile"`` in its metadata (wall-clock speed, text sampled
  from the trained model, a run folder's file sizes) must only have output.

Regenerate after a change: ``python -m tests.notebooks_regen`` (see the notebooks' README).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import R50K, SHAKESPEARE
from tests.notebooks_regen import NOTEBOOK_DIR, execute, sources_digest

# What each notebook reads from ../shared/data (through the seeded caches).
NEEDS: dict[str, tuple[Path, ...]] = {
    "01_tokenization.ipynb": (SHAKESPEARE, R50K),
    "02_attention.ipynb": (),
    "03_pretraining.ipynb": (SHAKESPEARE,),
    "04_generation.ipynb": (SHAKESPEARE,),
}
MAX_BYTES = 300_000  # figures are PNGs at 80 dpi: a notebook is about 100 KB
REL_TOL, ABS_TOL = 0.05, 1e-3
REGEN = "python -m tests.notebooks_regen"

# Masked before comparing: what differs between two honest runs of the same notebook.
MASKS: list[tuple[re.Pattern[str], str]] = [
    # The sample gptlab.train prints after training (notebooks 3 and 4): sampled text.
    (re.compile(r"--- sample \(prompt .*?\) ---\n.*?\n---\n", re.S), "--- sample ---\n"),
    (re.compile(r"\b\d{8}-\d{6}\b"), "<timestamp>"),  # run folders: 03_pretraining-<date-time>
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),  # memory addresses in reprs
    # Durations and rates: "trained in 6 s", "84.2it/s", "14.8MB/s", "[00:05<00:00".
    (re.compile(r"\d[\d,.]*\s*(?:[kMG]?(?:it|B|merge|tokens?)/s|ms|s)\b"), "<time>"),
    (re.compile(r"\[\d+:\d\d<[^\]]*\]"), "[<time>]"),
]
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _is_volatile(cell: Any) -> bool:
    return cell.metadata.get("gptlab") == "volatile"


def _render_stream(text: str) -> str:
    """Stream text as a terminal shows it: a carriage return rewrites its line."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def cell_texts(cell: Any) -> list[str]:
    """The comparable text of one code cell's outputs: stdout joined, then each display."""
    texts, stdout = [], []
    for out in cell.outputs:
        if out.output_type == "stream":
            if out.name == "stdout":
                stdout.append(out.text)
        elif out.output_type == "error":
            texts.append(f"{out.ename}: {out.evalue}")
        else:
            data = out.get("data", {})
            texts.extend(data[k] for k in ("text/html", "text/plain") if k in data)
    return [_render_stream("".join(stdout)), *texts] if stdout else texts


def normalise(text: str) -> tuple[str, list[float]]:
    """``text`` masked, numbers replaced by ``#`` and whitespace dropped; and the numbers.

    Whitespace goes because torch and f-strings pad columns to the widest number.
    """
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    numbers = [float(m.group().replace(",", "")) for m in NUMBER.finditer(text)]
    return "".join(NUMBER.sub("#", text).split()), numbers


def same_output(committed: str, fresh: str) -> str | None:
    """None when the two texts agree (masks, tolerances); otherwise what differs."""
    (t1, n1), (t2, n2) = normalise(committed), normalise(fresh)
    if t1 != t2:
        return f"text differs:\n  committed: {t1[:400]!r}\n  fresh:     {t2[:400]!r}"
    for a, b in zip(n1, n2):
        if not math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            return f"number {a:g} is now {b:g} (in {t1[:200]!r})"
    return None


def image_count(cell: Any) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def compare(committed: Any, fresh: Any) -> list[str]:
    """Every difference between a committed and a freshly executed notebook, one line each."""
    problems = []
    pairs = [
        (i, c, f)
        for i, (c, f) in enumerate(zip(committed.cells, fresh.cells))
        if c.cell_type == "code"
    ]
    for i, old, new in pairs:
        if bool(old.outputs) != bool(new.outputs):
            problems.append(
                f"cell {i}: committed with {len(old.outputs)} outputs, now {len(new.outputs)}"
            )
            continue
        if image_count(old) != image_count(new):
            problems.append(
                f"cell {i}: {image_count(old)} figures committed, {image_count(new)} now"
            )
        if _is_volatile(old):
            continue
        old_texts, new_texts = cell_texts(old), cell_texts(new)
        if len(old_texts) != len(new_texts):
            problems.append(
                f"cell {i}: {len(old_texts)} text outputs committed, {len(new_texts)} now"
            )
            continue
        for a, b in zip(old_texts, new_texts):
            if (why := same_output(a, b)) is not None:
                problems.append(f"cell {i}: {why}")
    return problems


def test_every_notebook_is_listed_and_committed_executed() -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extras)")
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == sorted(NEEDS), (
        "tests/test_notebooks.py must list every notebook with the data it needs"
    )
    for name in found:
        path = NOTEBOOK_DIR / name
        size = path.stat().st_size
        assert size < MAX_BYTES, f"{name} is {size:,} bytes; draw its figures smaller"
        nb = nbformat.read(path, as_version=4)
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        counts = [c.execution_count for _, c in code]
        assert counts == list(range(1, len(code) + 1)), (
            f"{name}: execution counts {counts}: run it top to bottom in one kernel ({REGEN})"
        )
        empty = [i for i, c in code if not c.outputs]
        assert not empty, f"{name}: cells {empty} have no output; regenerate it ({REGEN})"
        errors = [i for i, c in code if any(o.output_type == "error" for o in c.outputs)]
        assert not errors, f"{name}: cells {errors} were committed with an error"
        assert any(image_count(c) for _, c in code), f"{name} is committed without its plots"
        digest = nb.metadata.get("gptlab", {}).get("executed_sources_sha256")
        assert digest == sources_digest(nb), (
            f"{name}: its code changed since its outputs were made; regenerate it ({REGEN})"
        )


def _notebook(source: str, outputs: list[dict[str, Any]], volatile: bool = False) -> Any:
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extras)")
    cell = nbformat.v4.new_code_cell(source, outputs=[nbformat.from_dict(o) for o in outputs])
    if volatile:
        cell.metadata["gptlab"] = "volatile"
    return nbformat.v4.new_notebook(cells=[cell])


def _stdout(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


@pytest.mark.parametrize(
    ("committed", "fresh"),
    [
        ("loss 2.3292 | val bpb 3.3603\n", "loss 2.3301 | val bpb 3.36\n"),  # within 5 %
        ("max |difference|: 1.19e-07\n", "max |difference|: 0.0\n"),  # float noise
        ("trained in 6 s\n", "trained in 31 s\n"),  # a timing
        ("run folder /tmp/x/03-20261202-065250\n", "run folder /tmp/x/03-20270101-000000\n"),
        ("tensor([ 1.0000, -0.5000])\n", "tensor([1.0000, -0.5000])\n"),  # column widths
        ("Epoch 0: 10%\rEpoch 0: 100%\n", "Epoch 0: 100%\n"),  # carriage returns
    ],
)
def test_comparison_tolerates_honest_reruns(committed: str, fresh: str) -> None:
    assert compare(_notebook("", [_stdout(committed)]), _notebook("", [_stdout(fresh)])) == []


@pytest.mark.parametrize(
    ("committed", "fresh"),
    [
        ("loss 2.33\n", "loss 2.61\n"),  # a number 12 % off
        ("merge 0: b'a' + b'a'\n", "merge 1: b'a' + b'a'\n"),  # a small integer
        ("the fast trainer agrees: True\n", "the fast trainer agrees: False\n"),  # a string
        ("65 ids\n", ""),  # the committed output lacks a line
    ],
)
def test_comparison_catches_stale_outputs(committed: str, fresh: str) -> None:
    assert compare(_notebook("", [_stdout(committed)]), _notebook("", [_stdout(fresh)]))


def test_comparison_checks_volatile_cells_and_figures_by_presence() -> None:
    png = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Fig>"}}
    png["metadata"] = {}
    slow, fast = _stdout("120 tokens/s, 2.1x\n"), _stdout("480 tokens/s, 4.0x\n")
    assert compare(_notebook("", [slow], True), _notebook("", [fast], True)) == []
    assert compare(_notebook("", [], True), _notebook("", [fast], True))  # missing output
    assert compare(_notebook("", [png]), _notebook("", [_stdout("x")]))  # missing figure


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEEDS))
def test_notebook_runs_and_its_committed_outputs_are_current(name: str, tmp_path: Path) -> None:
    missing = [str(p) for p in NEEDS[name] if not p.is_file()]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)} (the shared test data), which is not there")
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extras)")
    pytest.importorskip("nbclient", reason="pip install nbclient (dev extras)")
    pytest.importorskip(
        "ipykernel", reason="pip install ipykernel (dev extras): it runs the notebooks"
    )
    committed = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    fresh = execute(name, tmp_path)  # any cell error raises CellExecutionError
    assert any(image_count(c) for c in fresh.cells if c.cell_type == "code"), (
        f"{name} drew no plot: its figures must render to PNG without a display"
    )
    problems = compare(committed, fresh)
    assert not problems, (
        f"{name}'s committed outputs are stale; regenerate them ({REGEN}):\n" + "\n".join(problems)
    )
