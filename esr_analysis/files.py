"""The one family of safe file writes: atomic replaces, atomic directories, advisory locks, file hashes.

Definitions
-----------
* **Atomic write**: the new content goes to a temporary file in the destination's directory (a unique
  name, so concurrent writers never share one), is flushed and ``fsync``'d, then ``os.replace``'d over
  the destination and the directory is ``fsync``'d. A reader sees either the old file or the complete
  new one; on any failure the old file is untouched and the temporary file is removed.
* **Atomic directory**: a directory is built under a temporary name next to its destination and renamed
  into place only when complete; an existing destination is moved aside first and deleted afterwards.
* **Lock**: an exclusive ``fcntl.flock`` on a lock file, released when the holder closes it or dies.

Every writer of results, caches and assembled assets in the toolkit goes through this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


def _temp_name(path: Path) -> Path:
    """A unique hidden sibling of ``path``: ``.<name>.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so a rename or a new file in it survives a crash (a no-op where unsupported)."""
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; it replaces ``path`` when the block exits
    normally (after an ``fsync`` of the file) and is deleted if the block raises.

    For writers that need a file name rather than bytes (``torch.save``, ``savefig`` with an explicit
    ``format``, a package's ``assemble(path)``); the temporary name ends in ``.tmp``. The parent directory is
    created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to the temporary file of {path}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically (see the module docstring); returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """Replace ``path`` with ``json.dumps(data, indent=indent, **dumps)`` plus a newline, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; when the block exits normally it becomes
    ``path`` (an existing ``path`` is moved aside, then deleted). If the block raises, the temporary
    directory is deleted and ``path`` is untouched. The directory gets the usual permissions (umask),
    not ``mkdtemp``'s private 0700, because caches are shared like any other directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(path.parent)


def acquire_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> int:
    """Open (creating) the lock file ``path`` and take an exclusive ``flock``; return its descriptor.

    With ``blocking=False`` a held lock raises :class:`BlockingIOError` at once; with ``blocking=True`` it
    waits (saying so in the log). Release with :func:`release_lock` (or by closing the descriptor).
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not blocking:
            os.close(fd)
            raise
        t0 = time.monotonic()
        logger.warning("waiting for another process that holds %s", path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        logger.info("lock %s acquired after %.1f s", path, time.monotonic() - t0)
    return fd


def release_lock(fd: int) -> None:
    """Release a lock taken with :func:`acquire_lock` (closing the descriptor drops the ``flock``)."""
    os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[Path]:
    """Hold :func:`acquire_lock` on ``path`` for the duration of the block (see there for ``blocking``)."""
    fd = acquire_lock(path, blocking=blocking)
    try:
        yield Path(path)
    finally:
        release_lock(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
