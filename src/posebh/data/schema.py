"""The unified instance table: one row per annotated instance, whatever the release format.

This module is the single definition of the table. Readers build rows with :func:`make_table`,
validation derives its checks from :data:`COLUMNS`, and parquet I/O round-trips through
:func:`to_arrow` / :func:`from_arrow`.

Conventions every reader guarantees:

* ``keypoints`` is a flat float32 array of length 3*K (x, y, v per keypoint) in the dataset's own
  skeleton order; pixel coordinates, 0-based; v in {0, 1, 2} (0 unlabelled, 1 labelled but
  occluded, 2 visible); unlabelled keypoints have x = y = 0.
* ``bbox`` is (x, y, w, h) in pixels, float64.
* ``area`` is the OKS scale: the release's area where it has one, otherwise the dataset's
  ``area_rule`` from the skeleton registry (``0.53wh`` or ``wh``).
* ``file_name`` is relative to the dataset's image root, with forward slashes; a name that is
  absolute or escapes the root never reaches the table (see :mod:`posebh.data.paths`).
* ``issue`` is <NA> for a clean row. A reader never drops a row it cannot convert: it keeps it
  with placeholders and says why here, and validation moves it to quarantine.
* ``extra`` is a JSON object string with the dataset-specific fields (MPII head box, InterHand
  hand type, 3DPW camera, ...), so the table stays flat and parquet-friendly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # pandas dtype for scalar columns; "array" for per-row numpy arrays
    nullable: bool = False
    doc: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("dataset", "string", doc="dataset identity, a key of the skeleton registry"),
    Column("split", "string", doc="train / val / test (or the release's split name)"),
    Column("image_id", "int64", doc="integer image id (assigned deterministically where the release has none)"),
    Column("file_name", "string", doc="image path relative to the dataset's image root"),
    Column("width", "int64", doc="image width in pixels"),
    Column("height", "int64", doc="image height in pixels"),
    Column("instance_id", "int64", doc="integer instance id, unique within (dataset, split)"),
    Column("bbox", "array", doc="float64[4]: x, y, w, h"),
    Column("area", "float64", doc="OKS area (see the dataset's area_rule)"),
    Column("iscrowd", "int64", doc="1 for crowd regions (ignored by OKS evaluation)"),
    Column("keypoints", "array", doc="float32[3K]: x, y, v per keypoint"),
    Column("num_keypoints", "int64", doc="labelled keypoints (v > 0), or the release's own count rule"),
    Column("category_id", "int64", doc="release category id (species for animals)"),
    Column("category", "string", doc="release category name"),
    Column("video_id", "Int64", nullable=True, doc="video id for video datasets"),
    Column("frame_index", "Int64", nullable=True, doc="frame index within the video"),
    Column("track_id", "Int64", nullable=True, doc="instance track id within the video"),
    Column("extra", "string", doc="JSON object with dataset-specific fields"),
    Column("issue", "string", nullable=True, doc="why the reader could not convert this row cleanly (quarantined by validation)"),
)

#: Image table (``coco_image_info``: test-dev has images and no annotations).
IMAGE_COLUMNS: tuple[Column, ...] = tuple(
    c for c in COLUMNS if c.name in ("dataset", "split", "image_id", "file_name", "width", "height", "extra", "issue")
)

#: Detection table (COCO detection-results files: person or animal boxes with scores).
DETECTION_COLUMNS: tuple[Column, ...] = (
    Column("dataset", "string", doc="the dataset whose images the boxes are on"),
    Column("split", "string"),
    Column("image_id", "int64"),
    Column("category_id", "int64"),
    Column("bbox", "array", doc="float64[4]: x, y, w, h"),
    Column("score", "float64"),
    Column("issue", "string", nullable=True, doc="why the box is unusable (prepare counts it and never attaches it)"),
)

TABLES: dict[str, tuple[Column, ...]] = {"instances": COLUMNS, "images": IMAGE_COLUMNS, "detections": DETECTION_COLUMNS}

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
ARRAY_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.dtype == "array")
_ARRAY_DTYPES = {"bbox": np.float64, "keypoints": np.float32}

#: Joins several reasons in one row's ``issue``.
ISSUE_SEPARATOR = "; "

#: Columns that identify an instance across the whole multi-dataset table.
KEY = ("dataset", "split", "instance_id")


class SchemaError(ValueError):
    """A table does not follow the unified schema."""


def empty_table(schema: tuple[Column, ...] = COLUMNS) -> pd.DataFrame:
    return make_table({}, 0, schema)


def make_table(columns: Mapping[str, Any], n: int | None = None, schema: tuple[Column, ...] = COLUMNS) -> pd.DataFrame:
    """Build a schema-conformant table from column values.

    Scalars broadcast; ``bbox`` and ``keypoints`` may be given as 2-D arrays (N, 4) / (N, 3K)
    or as sequences of 1-D arrays; ``extra`` may be given as dicts (serialised to JSON).
    Missing nullable columns are filled with <NA>, missing ``extra`` with ``{}``.
    """
    if n is None:
        n = next((len(v) for v in columns.values() if _is_sequence(v)), 0)
    data: dict[str, Any] = {}
    for col in schema:
        value = columns.get(col.name)
        if value is None:
            if n == 0:
                value = []
            elif col.name == "extra":
                value = ["{}"] * n
            elif col.nullable:
                value = pd.array([pd.NA] * n, dtype=col.dtype)
            else:
                raise SchemaError(f"column {col.name!r} is required")
        if col.dtype == "array":
            data[col.name] = _array_column(value, _ARRAY_DTYPES[col.name], n, col.name)
        elif col.name == "extra":
            data[col.name] = pd.array(
                [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in _broadcast(value, n)],
                dtype="string",
            )
        else:
            data[col.name] = pd.array(list(_broadcast(value, n)), dtype=col.dtype)
    extra_cols = set(columns) - {c.name for c in schema}
    if extra_cols:
        raise SchemaError(f"unknown columns {sorted(extra_cols)}; the schema is defined in posebh.data.schema")
    return pd.DataFrame(data, index=pd.RangeIndex(n))


def check_table(df: pd.DataFrame, schema: tuple[Column, ...] = COLUMNS) -> None:
    """Raise SchemaError if ``df`` lacks a column or has a wrong scalar dtype."""
    missing = [c.name for c in schema if c.name not in df.columns]
    if missing:
        raise SchemaError(f"table lacks columns {missing}")
    for col in schema:
        if col.dtype != "array" and str(df[col.name].dtype) not in (col.dtype, col.dtype.lower(), "str"):
            raise SchemaError(f"column {col.name!r} has dtype {df[col.name].dtype}, expected {col.dtype}")


def concat(tables: Iterable[pd.DataFrame], schema: tuple[Column, ...] = COLUMNS) -> pd.DataFrame:
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_table(schema)
    return pd.concat(tables, ignore_index=True)


def keypoints_array(df: pd.DataFrame) -> np.ndarray:
    """Stack the keypoints of rows that share a skeleton into an (N, K, 3) float32 array."""
    if len(df) == 0:
        return np.zeros((0, 0, 3), np.float32)
    lengths = {len(k) for k in df["keypoints"]}
    if len(lengths) != 1:
        raise SchemaError(f"rows mix skeletons (keypoint lengths {sorted(lengths)}); select one dataset first")
    return np.stack(df["keypoints"].to_numpy()).astype(np.float32).reshape(len(df), -1, 3)


def detection_issues(bbox: np.ndarray, score: np.ndarray) -> list[str | None]:
    """Why each detection (an (N, 4) box and a score) is unusable, None where it is usable.

    One rule for the reader, which flags the rows, and for prepare, which re-checks tables
    written without an ``issue`` column: a box of 4 finite numbers with width and height > 0
    and a finite score.
    """
    bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
    score = np.asarray(score, np.float64)
    finite = np.isfinite(bbox).all(axis=1)
    empty = finite & (bbox[:, 2:] <= 0).any(axis=1)
    bad_score = ~np.isfinite(score)
    out: list[str | None] = [None] * len(score)
    for i in np.flatnonzero(~finite | empty | bad_score):
        msgs = []
        if not finite[i]:
            msgs.append("bbox is not 4 finite numbers")
        elif empty[i]:
            msgs.append("bbox width or height is not positive")
        if bad_score[i]:
            msgs.append("score is not a finite number")
        out[i] = ISSUE_SEPARATOR.join(msgs)
    return out


def bbox_array(df: pd.DataFrame) -> np.ndarray:
    """(N, 4) float64 array of x, y, w, h."""
    if len(df) == 0:
        return np.zeros((0, 4))
    return np.stack(df["bbox"].to_numpy()).astype(np.float64)


def extra_dicts(df: pd.DataFrame) -> list[dict]:
    return [json.loads(e) for e in df["extra"]]


def _is_sequence(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray, pd.Series, pd.api.extensions.ExtensionArray))


def _broadcast(value: Any, n: int):
    if _is_sequence(value):
        if len(value) != n:
            raise SchemaError(f"column length {len(value)} != {n}")
        return value
    return [value] * n


def _array_column(value: Any, dtype, n: int, name: str) -> list[np.ndarray]:
    if isinstance(value, np.ndarray) and value.ndim == 2:
        if value.shape[0] != n:
            raise SchemaError(f"column {name!r} has {value.shape[0]} rows, expected {n}")
        arr = np.ascontiguousarray(value, dtype=dtype)
        return list(arr)
    rows = list(_broadcast(value, n))
    return [np.asarray(r, dtype=dtype).reshape(-1) for r in rows]
