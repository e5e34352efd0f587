"""A regular (non-editable) install works: the wheel carries the Hydra configs the CLI needs.

The editable install the README uses reads ``gptlab/conf/`` from the checkout, so it
cannot notice configs missing from the wheel; ``pip install gptlab`` would then fail
with Hydra's "Primary config directory not found". This builds the real wheel from a
copy of the sources, installs it into a folder of its own, and has every entry point
compose its config from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy, so setuptools' build/ and egg-info never land in the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "gptlab", src / "gptlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("gptlab-*.whl")
    return wheel


def test_wheel_ships_every_config_and_the_cli_composes_from_it(tmp_path):
    wheel = _build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO).as_posix() for p in (REPO / "gptlab" / "conf").rglob("*.yaml")}
    assert configs and not configs - shipped, f"missing from the wheel: {sorted(configs - shipped)}"

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )

    def installed(*args: str) -> subprocess.CompletedProcess:
        """Run from an empty folder with only the installed copy on the path (dependencies from this venv)."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = installed("-m", "gptlab.train", "experiment=shakespeare_char", "--cfg", "job")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "n_embd: 128" in done.stdout and "max_steps: 2000" in done.stdout
    for entry_point in (
        "generate",
        "evaluate",
        "tokenize",
        "export",
    ):  # each has its own top config
        done = installed("-m", f"gptlab.{entry_point}", "--cfg", "job")
        assert done.returncode == 0 and done.stdout.strip(), (
            f"gptlab.{entry_point}: {done.stderr[-2000:]}"
        )
    done = installed("-m", "gptlab.compare", "--help")
    assert done.returncode == 0 and "metric" in done.stdout, done.stderr[-2000:]
    located = installed("-c", "import gptlab; print(gptlab.__file__)")
    assert Path(located.stdout.strip()).is_relative_to(site), (
        "the test ran the checkout, not the wheel"
    )
