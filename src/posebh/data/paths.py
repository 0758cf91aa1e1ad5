"""Image paths: normalised relative to the dataset's image root, never escaping it."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path, PurePosixPath

from posebh.data.errors import UnsafePathError

_DRIVE = re.compile(r"^[A-Za-z]:")


def relative_file_name(name: str) -> str:
    """Normalise a release file name to a relative POSIX path, rejecting escapes.

    Absolute paths, Windows drive prefixes, and ``..`` components that leave the root are
    refused: an annotation must never make the pipeline read outside the image root.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(repr(name), "empty file name")
    s = name.replace("\\", "/")
    if _DRIVE.match(s) or s.startswith("/"):
        raise UnsafePathError(name, "absolute path; file names must be relative to the image root")
    norm = posixpath.normpath(s)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePathError(name, "path escapes the image root")
    if "\x00" in norm:
        raise UnsafePathError(name, "NUL byte in file name")
    return norm


def is_safe_file_name(name: str) -> bool:
    try:
        return relative_file_name(name) == name
    except UnsafePathError:
        return False


def resolve(image_root: str | Path, file_name: str) -> Path:
    """Absolute path of ``file_name`` under ``image_root``; raises if it would escape the root."""
    rel = relative_file_name(file_name)
    root = Path(image_root).resolve()
    full = (root / PurePosixPath(rel)).resolve()
    if root != full and root not in full.parents:
        raise UnsafePathError(file_name, f"resolves outside the image root {image_root}")
    return full
