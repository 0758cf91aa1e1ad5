"""Atomic file writes: every artifact appears whole or not at all.

A write goes to a temporary file in the target's folder, is flushed to disk, and is renamed over
the target (``os.replace`` is atomic on POSIX); the folder is then synced so the rename survives a
crash. An interrupted write leaves the previous file intact and no temporary file behind; a
writer killed outright (SIGKILL, power loss) leaves its hidden ``.<name>.<pid>.<random>.tmp``,
which the next successful write of the same target removes once that pid is gone.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

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


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError, ValueError):  # another user's process, or not a pid at all
        return False
    return False


def stale_temporaries(path: str | Path, *, before_ns: int | None = None) -> list[Path]:
    """Temporaries of ``path`` left by writers that died mid-write (their pid is gone).

    Only exact ``.<name>.<pid>.<random>.tmp`` regular files count; ``before_ns`` also spares
    files modified after it, so a writer whose pid this host cannot see (another machine on a
    shared folder) keeps the file it is still writing.
    """
    target = Path(path)
    if os.name != "posix":  # os.kill(pid, 0) does not probe there
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.([0-9]+)\.[a-z0-9_]+\.tmp")
    prefix = f".{target.name}."
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix)]
    except OSError:
        return []
    out = []
    for name in sorted(names):
        m = pattern.fullmatch(name)
        if m is None or not _pid_gone(int(m.group(1))):
            continue
        p = target.parent / name
        try:
            st = p.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (before_ns is None or st.st_mtime_ns <= before_ns):
            out.append(p)
    return out


def remove_stale_temporaries(path: str | Path, *, before_ns: int | None = None) -> list[Path]:
    """Delete :func:`stale_temporaries` of ``path`` and log them; never raises (the write itself
    has already succeeded)."""
    removed = []
    for p in stale_temporaries(path, before_ns=before_ns):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("could not remove stale temporary %s: %s", p, e)
            continue
        removed.append(p)
    if removed:
        log.warning(
            "removed %d stale temporary file(s) of %s left by killed writers: %s",
            len(removed), path, ", ".join(p.name for p in removed),
        )
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success sync it and rename it over ``path``.

    An OSError with an errno (disk full, permission denied, ...) is re-raised naming ``path``.
    After the rename, temporaries of ``path`` that killed writers left are removed
    (:func:`stale_temporaries`), so they cannot pile up run after run.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise _naming(e, target) from e
    started_ns = os.fstat(fd).st_mtime_ns
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
    remove_stale_temporaries(target, before_ns=started_ns)


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
