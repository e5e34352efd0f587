"""The walkthrough notebooks in ``experiments/notebooks/`` run top to bottom, headless.

Each notebook runs in a fresh kernel of this interpreter, in its own empty working
folder and with its own ``TMPDIR``, so it cannot lean on files another notebook wrote
(notebook 4 must train its own model when notebook 3's checkpoint is not there). The
data caches are the session's offline copies seeded by ``conftest.offline_environment``;
the kernel inherits them through the environment. Any cell error fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import R50K, REPO, SHAKESPEARE

NOTEBOOK_DIR = REPO / "experiments" / "notebooks"
# What each notebook reads from ../shared/data (through the seeded caches).
NEEDS: dict[str, tuple[Path, ...]] = {
    "01_tokenization.ipynb": (SHAKESPEARE, R50K),
    "02_attention.ipynb": (),
    "03_pretraining.ipynb": (SHAKESPEARE,),
    "04_generation.ipynb": (SHAKESPEARE,),
}
CELL_TIMEOUT_S = 300


def test_every_notebook_is_listed_and_committed_without_outputs() -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extras)")
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == sorted(NEEDS), (
        "tests/test_notebooks.py must list every notebook with the data it needs"
    )
    for name in found:
        path = NOTEBOOK_DIR / name
        assert path.stat().st_size < 200_000, (
            f"{name} is {path.stat().st_size:,} bytes; keep notebooks small"
        )
        nb = nbformat.read(path, as_version=4)
        with_outputs = [
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and (c.outputs or c.execution_count)
        ]
        assert not with_outputs, (
            f"{name}: cells {with_outputs} have outputs; clear them before committing"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEEDS))
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    missing = [str(p) for p in NEEDS[name] if not p.is_file()]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)} (the shared test data), which is not there")
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extras)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient (dev extras)")
    pytest.importorskip(
        "ipykernel", reason="pip install ipykernel (dev extras): it runs the notebooks"
    )
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    work, tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    # No kernel folders searched: "python3" is then ipykernel's built-in spec, which runs
    # sys.executable, i.e. this venv, whatever kernels the user has registered elsewhere.
    km = AsyncKernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
    )
    env = {
        **os.environ,  # GPTLAB_DATA_DIR and TIKTOKEN_CACHE_DIR: the seeded offline caches
        # Jupyter's inline backend draws with Agg (no display needed) and returns each
        # figure as a PNG output, so the test can check that the plots were drawn.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TMPDIR": str(tmp),  # notebooks 3 and 4 keep their run folders under the temp dir
        # The test machines are shared: one thread per kernel avoids OpenMP spin-waiting,
        # which makes tiny models many times slower when cores are oversubscribed.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute(env=env)  # any cell error raises CellExecutionError with its traceback

    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert images, f"{name} drew no plot: its figures must render to PNG without a display"
