"""Atomic file writes: every artifact appears whole or not at all.

A write goes to a temporary file in the target's folder, is flushed to disk, and is renamed over
the target (``os.replace`` is atomic on POSIX); the folder is then synced so the rename survives a
crash. An interrupted write leaves the previous file intact and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

#: Mode of written files: mkstemp's private 0600 would hide artifacts from other users.
FILE_MODE = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
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


def _naming(e: OSError, target: Path, tmp: Path | None = None) -> OSError:
    """``e`` naming ``target``: a failed write() or fsync() names no file, mkstemp a temporary one.
    An error about another file (``tmp`` given: raised by the caller's own code) is left as it is."""
    if e.errno is None or (tmp is not None and e.filename not in (None, str(tmp), tmp)):
        return e
    return type(e)(e.errno, e.strerror or os.strerror(e.errno), str(target))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success sync it and rename it over ``path``.

    An OSError with an errno (disk full, permission denied, ...) is re-raised naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise _naming(e, target) from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, FILE_MODE & ~_umask())
        os.replace(tmp_path, target)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        named = _naming(e, target, tmp_path)
        if named is e:
            raise
        raise named from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path``."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))
