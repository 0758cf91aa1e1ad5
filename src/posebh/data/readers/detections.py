"""COCO detection-results files: [{image_id, category_id, bbox (x, y, w, h), score}, ...].

These drive top-down testing (COCO val AP_H_56, test-dev AP_H_609, CrowdPose). The detections
table has no ``issue`` column, so a malformed entry (not an object, image/category id not an
integer, box not 4 finite numbers, score not a finite number) cannot be quarantined row by row:
by default the file is refused with the count and the first bad index; with ``strict=False`` bad
entries are dropped and their number is ``df.attrs["dropped"]`` (0 when none were).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError
from posebh.data.io import load_json
from posebh.data.readers.coco import float_column, float_matrix, int_column
from posebh.data.schema import DETECTION_COLUMNS, make_table

#: COCO's person category, the one top-down human pose testing uses
PERSON_CATEGORY_ID = 1


@register_reader("detections", table="detections")
def read_detections(
    *,
    annotations: str | Path,
    split: str,
    dataset: str = "coco",
    image_root: str | Path | None = None,
    category_id: int | None = PERSON_CATEGORY_ID,
    strict: bool = True,
) -> pd.DataFrame:
    """Detection boxes of one category (``category_id=None`` keeps all), in file order.

    ``dataset`` and ``split`` name the images the boxes are on; ``image_root`` is accepted so every
    reader takes the same call.
    """
    path = Path(annotations)
    entries = load_json(path)
    if not isinstance(entries, list):
        raise DataFileError(path, f"expected a JSON list of detections, found {type(entries).__name__}")
    n = len(entries)
    reasons: dict[int, str] = {}
    rows = []
    for i, e in enumerate(entries):
        if type(e) is dict:
            rows.append(e)
        else:
            rows.append({})
            reasons[i] = "not a JSON object"

    image_id, bad_img = int_column([e.get("image_id") for e in rows])
    cat, bad_cat = int_column([e.get("category_id") for e in rows])
    bbox, box_issues = float_matrix([e.get("bbox") for e in rows], 4, "bbox", np.float64)
    score, _, _ = float_column([e.get("score") for e in rows])
    checks = (
        (bad_img, "image_id is not an integer"),
        (bad_cat, "category_id is not an integer"),
        (None if box_issues is None else np.array([m is not None for m in box_issues]), "bbox is not 4 finite numbers"),
        (~np.isfinite(score), "score is not a finite number"),
    )
    for mask, reason in checks:
        if mask is not None:
            for i in np.flatnonzero(mask):
                reasons.setdefault(int(i), reason)
    bad = np.zeros(n, bool)
    bad[list(reasons)] = True

    if bad.any() and strict:
        first = int(np.flatnonzero(bad)[0])
        raise DataFileError(
            path,
            f"{int(bad.sum())} of {n} detections are malformed (first at index {first}: {reasons[first]}); "
            "read with strict=False to drop them",
        )
    keep = ~bad
    if category_id is not None:
        keep &= cat == category_id
    df = make_table(
        {
            "dataset": skeletons.get(dataset).name,
            "split": split,
            "image_id": image_id[keep],
            "category_id": cat[keep],
            "bbox": bbox[keep],
            "score": score[keep],
        },
        int(keep.sum()),
        DETECTION_COLUMNS,
    )
    df.attrs["dropped"] = int(bad.sum())
    return df
