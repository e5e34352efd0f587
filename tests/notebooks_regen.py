"""Execute the walkthrough notebooks the way their test does, and commit the outputs.

The notebooks in ``experiments/notebooks/`` are committed executed, so a reader on a code
host sees every result and plot. ``tests/test_notebooks.py`` re-runs each one with
:func:`execute` and compares the fresh outputs with the committed ones; this module is
also the one command that regenerates them (after editing a notebook)::

    python -m tests.notebooks_regen                        # all four
    python -m tests.notebooks_regen 03_pretraining.ipynb   # one

Both run a fresh kernel of this interpreter on CPU, one thread, in an empty working
folder and temp folder, with the offline caches seeded from ``../shared/data`` (the
``GPTLAB_SHARED_DATA`` folder), so the regenerated outputs are the ones the test expects.
Paths under the temp folder are written as ``/tmp/...`` in the committed outputs.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO, seed_caches

NOTEBOOK_DIR = REPO / "experiments" / "notebooks"
CELL_TIMEOUT_S = 300
# What the committed outputs show for the run's temp folder (a reader's usual TMPDIR).
SHOWN_TMP = "/tmp"


def execute(name: str, root: Path, extra_env: dict[str, str] | None = None) -> Any:
    """Run notebook ``name`` top to bottom in a fresh kernel; return the executed notebook.

    ``root`` gets the kernel's empty working folder and temp folder, so a notebook cannot
    lean on files another one wrote (notebook 4 trains its own model). Paths under that
    temp folder are rewritten to ``/tmp`` in the outputs, so they read the same on every
    run. Any cell error raises ``nbclient.exceptions.CellExecutionError``.
    """
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    work, tmp = root / "cwd", root / "tmp"
    work.mkdir(parents=True)
    tmp.mkdir(parents=True)
    # No kernel folders searched: "python3" is then ipykernel's built-in spec, which runs
    # sys.executable, i.e. this venv, whatever kernels the user has registered elsewhere.
    km = AsyncKernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
    )
    env = {
        **os.environ,  # GPTLAB_DATA_DIR and TIKTOKEN_CACHE_DIR: the seeded offline caches
        **(extra_env or {}),
        # Jupyter's inline backend draws with Agg (no display needed) and returns each
        # figure as a PNG output, so the test can check that the plots were drawn.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TMPDIR": str(tmp),  # notebooks 3 and 4 keep their run folders under the temp dir
        # One thread: the same float summation order on every run (and no OpenMP
        # spin-waiting on shared machines, which makes tiny models many times slower).
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the outputs are CPU's, on a GPU machine too
        "PYTHONHASHSEED": "0",
    }
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute(env=env)
    # The longest first: the work and temp folders lie under root, which may lie in REPO.
    _rewrite_paths(nb, {str(tmp): SHOWN_TMP, str(work): ".", f"{REPO}/": ""})
    nb.metadata["gptlab"] = {"executed_sources_sha256": sources_digest(nb)}
    return nb


def sources_digest(nb: Any) -> str:
    """A digest of every code cell's source: the committed outputs are of exactly this code."""
    code = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _rewrite_paths(nb: Any, replacements: dict[str, str]) -> None:
    """Replace machine-specific folders in every text output (stream text, text/plain, html)."""

    def fix(s: str) -> str:
        for old, new in replacements.items():
            s = s.replace(old, new)
        return s

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = fix(out["text"])
            for key in ("text/plain", "text/html"):
                if key in out.get("data", {}):
                    out["data"][key] = fix(out["data"][key])
            if "traceback" in out:
                out["traceback"] = [fix(line) for line in out["traceback"]]


def regenerate(names: list[str]) -> None:
    """Execute each notebook and write it back in place, outputs included."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix="gptlab-notebooks-regen-") as d:
        root = Path(d)
        env = seed_caches(root / "caches")
        for name in names:
            start = time.perf_counter()
            nb = execute(name, root / name.removesuffix(".ipynb"), extra_env=env)
            nbformat.write(nb, NOTEBOOK_DIR / name)
            size = (NOTEBOOK_DIR / name).stat().st_size
            print(f"{name}: {time.perf_counter() - start:.0f} s, {size:,} bytes")


if __name__ == "__main__":
    regenerate(sys.argv[1:] or sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")))
