"""Data: the unified table schema, one reader per raw release format, validation and preparation.

``read(format, **sources)`` is the one entry point for raw annotation files::

    from posebh import data
    df = data.read("coco", annotations="person_keypoints_val2017.json", split="val")

Readers register themselves with :func:`register_reader`; ``READERS`` lists them by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pandas as pd

from posebh.data.errors import DataFileError, UnsafePathError
from posebh.data.schema import TABLES, check_table

Reader = Callable[..., pd.DataFrame]
READERS: dict[str, Reader] = {}
#: which table of posebh.data.schema.TABLES each reader returns
READER_TABLES: dict[str, str] = {}

# Modules that define readers; imported on first use so ``import posebh.data`` stays light.
_READER_MODULES = (
    "posebh.data.readers.coco",
    "posebh.data.readers.wholebody",
    "posebh.data.readers.aic",
    "posebh.data.readers.mpii",
    "posebh.data.readers.apt36k",
    "posebh.data.readers.interhand",
    "posebh.data.readers.pw3d",
    "posebh.data.readers.detections",
)
_loaded = False


def register_reader(name: str, table: str = "instances") -> Callable[[Reader], Reader]:
    """Register a reader under a format name; ``table`` names the schema it returns."""
    if table not in TABLES:
        raise ValueError(f"unknown table kind {table!r}")

    def deco(fn: Reader) -> Reader:
        if name in READERS and READERS[name] is not fn:
            raise ValueError(f"reader {name!r} registered twice")
        READERS[name] = fn
        READER_TABLES[name] = table
        return fn

    return deco


def _load_readers() -> None:
    global _loaded
    if not _loaded:
        for mod in _READER_MODULES:
            importlib.import_module(mod)
        _loaded = True


def formats() -> dict[str, Reader]:
    """Every registered format name and its reader."""
    _load_readers()
    return dict(READERS)


def read(format: str, **sources) -> pd.DataFrame:
    """Read one raw release file (or file set) into the unified instance table."""
    _load_readers()
    try:
        reader = READERS[format]
    except KeyError:
        raise KeyError(f"unknown format {format!r}; known formats: {sorted(READERS)}") from None
    df = reader(**sources)
    check_table(df, TABLES[READER_TABLES[format]])
    return df


def read_sources(sources: list[dict] | None) -> dict[str, pd.DataFrame]:
    """Read a list of source specs ``{format: ..., **reader arguments}`` into one table per kind.

    Returns ``{"instances": ..., "images": ..., "detections": ...}``; kinds with no source are
    empty tables of their schema, so a dataset that is not configured flows through as empty.
    """
    from posebh.data.schema import concat

    _load_readers()
    parts: dict[str, list[pd.DataFrame]] = {kind: [] for kind in TABLES}
    for i, spec in enumerate(sources or []):
        if not isinstance(spec, dict) or "format" not in spec:
            raise ValueError(f"source #{i} must be a mapping with a 'format' key, got {spec!r}")
        args = dict(spec)
        fmt = args.pop("format")
        parts[READER_TABLES.get(fmt, "instances")].append(read(fmt, **args))
    return {kind: concat(tables, TABLES[kind]) for kind, tables in parts.items()}


__all__ = ["read", "read_sources", "formats", "register_reader", "READERS", "DataFileError", "UnsafePathError"]
