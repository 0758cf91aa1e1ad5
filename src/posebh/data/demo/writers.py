"""Deterministic, atomic file writers for the demo releases.

Every file is written to a temporary name in its folder and renamed into place, so a reader never
sees half a file. Output is byte-identical for the same content: JSON with fixed separators and
the producer's key order, JPEG through OpenCV (fixed quality, no metadata), pickles with a fixed
protocol, MATLAB files with a fixed header text instead of scipy's creation timestamp.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

from posebh import atomic

import numpy as np

JPEG_QUALITY = 88
#: Protocol 2 is what the Python 2 tooling behind the real 3DPW pickles wrote.
PICKLE_PROTOCOL = 2
#: The 116-byte descriptive text of a MAT 5 header (scipy writes the creation time here).
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: posebh demo generator, Created on: deterministic"
_MAT_TEXT_BYTES = 116


class OutputTree:
    """Writes files under one root and keeps the list of what it wrote (relative paths, sizes)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.files: dict[str, int] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic.write_bytes(self.path(rel), data)
        self.files[rel] = len(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, dump_json(obj))

    def write_jpeg(self, rel: str, rgb: np.ndarray) -> None:
        self.write_bytes(rel, encode_jpeg(rgb))

    def write_pickle(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, pickle.dumps(obj, protocol=PICKLE_PROTOCOL))

    def write_mat(self, rel: str, variables: dict) -> None:
        self.write_bytes(rel, encode_mat(variables))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def prune(self, folder: str) -> list[str]:
        """Remove files under ``folder`` this tree did not write (a previous, larger generation)."""
        base = self.path(folder)
        removed = []
        if not base.is_dir():
            return removed
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and rel not in self.files:
                p.unlink()
                removed.append(rel)
        for p in sorted(base.rglob("*"), reverse=True):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        return removed


def dump_json(obj: Any) -> bytes:
    """Compact JSON as the releases ship it; key order is the producer's (deterministic)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_mat(variables: dict) -> bytes:
    """A MAT 5 file from scipy with the timestamped header text replaced by a fixed one."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:_MAT_TEXT_BYTES] = MAT_HEADER_TEXT.ljust(_MAT_TEXT_BYTES, b" ")
    return bytes(data)


def r2(x) -> Any:
    """Python floats rounded to 2 decimals (scalars or nested lists), as the releases print them."""
    return np.round(np.asarray(x, np.float64), 2).tolist()
