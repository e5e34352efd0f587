"""Real disk faults for tests: a read-only folder and a full disk, where this machine allows them.

Tests often run as root, and root writes into a ``chmod 555`` folder anyway, so a
permission bit proves nothing there. These helpers use what the kernel enforces for
everyone: a small tmpfs mounted read-only (EROFS) or with a few KiB of space (ENOSPC).
Mounting needs privileges; without them the folder falls back to ``chmod`` when that
really blocks this user's writes (it does for a non-root user), and otherwise the test
is skipped with the reason. A path below a regular file (ENOTDIR) fails for everyone
and needs no helper.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _writes_blocked(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return True
    probe.unlink()
    return False


@contextlib.contextmanager
def read_only_folder(parent: Path, files: dict[str, bytes] | None = None) -> Iterator[Path]:
    """A folder holding ``files`` that no process may write to (skips where none can be made)."""
    folder = parent / "read_only"
    if _mount_tmpfs(folder, "size=1m"):
        try:
            for name, data in (files or {}).items():
                (folder / name).write_bytes(data)
            subprocess.run(
                ["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True
            )
            assert _writes_blocked(folder)
            yield folder
        finally:
            _unmount(folder)
        return
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if not _writes_blocked(folder):
            pytest.skip(
                "cannot make a read-only folder here: mounting is not permitted and this user "
                f"(uid {os.getuid()}) writes through chmod"
            )
        yield folder
    finally:
        folder.chmod(stat.S_IRWXU)


@contextlib.contextmanager
def full_disk(parent: Path, size_kib: int = 64) -> Iterator[Path]:
    """A folder on a file system of ``size_kib`` KiB, so larger writes fail with ENOSPC."""
    folder = parent / "full_disk"
    if not _mount_tmpfs(folder, f"size={size_kib}k"):
        pytest.skip("cannot make a small file system here (mounting a tmpfs is not permitted)")
    try:
        yield folder
    finally:
        _unmount(folder)
