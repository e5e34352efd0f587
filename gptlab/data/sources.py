"""Where training text comes from: the embedded corpus, a download, or local files.

Every source returns one ``str``. The default corpus ships with Python itself (the
prose of the language reference and library topics in ``pydoc_data``), so the first
run needs no network. Downloads are verified against a sha256 and cached; a file
whose checksum does not match is deleted, never used.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from gptlab.errors import GptlabError
from gptlab.utils.io import atomic_open, sha256_file


class DataError(GptlabError, ValueError):
    """The corpus cannot be read or is unusable for training; the message says how to fix it."""


def embedded_text() -> str:
    """~0.46 MB of English prose that every CPython ships: the pydoc topic pages.

    Topics are joined in sorted order so the corpus (and so every cache key) is the
    same on every machine with the same Python version.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"


def read_local(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a text file, or every ``*.txt`` file under a folder (sorted, joined by blank lines)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(
                f"the folder {path} holds no .txt files; point data.path at a text file or a folder of .txt files"
            )
        return "\n\n".join(_read_file(p, encoding, errors) for p in files)
    if not path.is_file():
        raise DataError(f"the corpus file {path} does not exist; check data.path")
    return _read_file(path, encoding, errors)


def _read_file(path: Path, encoding: str, errors: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not valid {encoding} at byte {e.start}; convert the file to UTF-8 "
            "or set data.errors=replace to substitute the bad bytes"
        ) from None


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float = 60.0,
    git_sha1: str | None = None,
    setting: str = "data.path",
) -> Path:
    """Fetch ``url`` to ``dest`` once; later calls reuse the cached file if its checksum holds.

    The download goes to a temporary file that only replaces ``dest`` after the
    checksum matched, so an interrupted or tampered download never looks cached.
    ``git_sha1`` is the file's git blob id (what ``git ls-tree`` prints): the checksum a
    file served from a git repository carries when nobody published its sha256.
    ``setting`` is the config key that points at a local copy instead (named in errors).
    """
    dest = Path(dest)
    if dest.is_file() and _matches(dest, sha256, git_sha1):
        return dest
    if dest.is_file():  # cached file that no longer matches: remove it and fetch again
        dest.unlink()
    h = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            atomic_open(dest, "wb") as out,
        ):
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            if sha256 is not None and h.hexdigest() != sha256:
                raise DataError(
                    f"the file downloaded from {url} has sha256 {h.hexdigest()}, expected {sha256}; "
                    f"it was not kept. Retry later, or download it yourself and set {setting}"
                )
    except DataError:
        raise
    except OSError as e:
        raise DataError(
            f"could not download {url} ({e}); connect to the network, or put a copy at {dest} "
            f"(or anywhere, and set {setting})"
        ) from None
    if git_sha1 is not None and (found := git_blob_sha1(dest)) != git_sha1:
        dest.unlink()  # the blob id needs the size first, so it is checked once the file is whole
        raise DataError(
            f"the file downloaded from {url} has git blob id {found}, expected {git_sha1}; "
            f"it was not kept. Retry later, or download it yourself and set {setting}"
        )
    return dest


def git_blob_sha1(path: str | Path) -> str:
    """The id git gives the file's content: sha1 of ``b"blob <size>\\0"`` and the bytes."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _matches(path: Path, sha256: str | None, git_sha1: str | None) -> bool:
    return (sha256 is None or sha256_file(path) == sha256) and (
        git_sha1 is None or git_blob_sha1(path) == git_sha1
    )


def default_cache_dir() -> Path:
    """Where downloads and token caches live unless ``paths.data_dir`` says otherwise."""
    return Path(os.environ.get("GPTLAB_DATA_DIR", Path.home() / ".cache" / "gptlab"))
