"""Write files so that a crash leaves either the old file or the new one, never half of one.

Every file gptlab writes that a later run reads (checkpoints, tokenizers, token
caches, exports) goes through here: write to a temporary file in the same folder,
flush and fsync it, then ``os.replace`` it over the target, which is atomic on POSIX
and Windows.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """The one skeleton of every atomic write: yield a temporary path beside ``path``, then rename it over.

    The caller fills and fsyncs the temporary file; on success it replaces ``path``
    atomically and the rename is made durable, on any failure (or kill signal turned
    exception) the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failed = _write_failure(e, path)
        if failed is not None:
            raise failed from None
        raise


def _write_failure(error: BaseException, path: Path) -> OSError | None:
    """The failed write as an ``OSError`` naming ``path`` (what the user asked for), not the temporary file.

    ``torch.save``'s zip writer reports a failed write (a full disk) as a ``RuntimeError``
    ("PytorchStreamWriter failed writing file ... unexpected pos"); it becomes ENOSPC
    when the disk is indeed (nearly) full, EIO otherwise.
    """
    if isinstance(error, OSError) and error.errno is not None and error.filename2 is None:
        return OSError(error.errno, error.strerror, str(path))
    if isinstance(error, RuntimeError) and (
        "PytorchStreamWriter" in str(error) or "unexpected pos" in str(error)
    ):
        try:
            full = shutil.disk_usage(path.parent).free < (1 << 20)
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
        return OSError(code, os.strerror(code), str(path))
    return None


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    with _replacing(Path(path)) as tmp:
        # O_EXCL: never write through a file (or link) that is already there. The permissions are
        # what open() would give (0o666 less the umask), which os.open applies itself.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_save(path: str | Path, write: Callable[[IO], None]) -> None:
    """Call ``write(file)`` on a temporary file, then move it over ``path``."""
    with atomic_open(path, "wb") as f:
        write(f)


def atomic_link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Make ``dst`` hold the same bytes as ``src``, atomically, without writing them twice.

    A hard link shares ``src``'s data (deleting ``src`` later leaves ``dst`` whole);
    where links are not possible (another file system, some network mounts) the file
    is copied. Either way the new ``dst`` appears in one rename.
    """
    src, dst = Path(src), Path(dst)
    with _replacing(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so a large file does not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder``.

    The atomic writers name their temporary files ``.<target>.<random>.tmp``; a process
    killed before the rename leaves one behind, as large as the file it was writing.
    Call this only where no other process is writing (e.g. a run's own checkpoint
    folder when the run starts).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
