"""COCO detection-results files: [{image_id, category_id, bbox (x, y, w, h), score}, ...].

These drive top-down testing (COCO val AP_H_56, test-dev AP_H_609, CrowdPose). Like the instance
readers, this one never drops an entry it cannot use: a malformed one (not an object, image or
category id not an integer, box not 4 finite numbers or with a width or height <= 0, score not a
finite number) is kept with placeholders and its reasons in ``issue``, and prepare counts it under
that reason instead of attaching it. ``strict=True`` refuses such a file instead, naming the count
and the first bad index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError
from posebh.data.io import load_json
from posebh.data.readers.coco import Issues, float_column, float_matrix, int_column
from posebh.data.schema import DETECTION_COLUMNS, ISSUE_SEPARATOR, detection_issues, make_table

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
    strict: bool = False,
) -> pd.DataFrame:
    """Detection boxes of one category (``category_id=None`` keeps all), in file order.

    An entry whose category id is unreadable is kept whatever ``category_id`` asks, so that no
    malformed box is filtered away unseen. ``dataset`` and ``split`` name the images the boxes are
    on; ``image_root`` is accepted so every reader takes the same call.
    """
    path = Path(annotations)
    entries = load_json(path)
    if not isinstance(entries, list):
        raise DataFileError(path, f"expected a JSON list of detections, found {type(entries).__name__}")
    n = len(entries)
    issues = Issues()
    is_object = np.fromiter((type(e) is dict for e in entries), bool, n)
    rows = entries if is_object.all() else [e if type(e) is dict else {} for e in entries]
    issues.add_where(~is_object, "not a JSON object")

    image_id, bad_img = int_column([e.get("image_id") for e in rows])
    cat, bad_cat = int_column([e.get("category_id") for e in rows])
    bbox, _ = float_matrix([e.get("bbox") for e in rows], 4, "bbox", np.float64)
    score, _, _ = float_column([e.get("score") for e in rows])
    for mask, reason in ((bad_img, "image_id is not an integer"), (bad_cat, "category_id is not an integer")):
        if mask is not None:
            issues.add_where(mask & is_object, reason)
    issues.merge([m if ok else None for m, ok in zip(detection_issues(bbox, score), is_object)])

    if issues.rows and strict:
        first = min(issues.rows)
        raise DataFileError(
            path,
            f"{len(issues.rows)} of {n} detections are malformed (first at index {first}: "
            f"{ISSUE_SEPARATOR.join(issues.rows[first])}); read with strict=False to keep them flagged in 'issue'",
        )
    keep = np.ones(n, bool) if category_id is None else cat == category_id
    if bad_cat is not None:
        keep |= bad_cat
    issue = np.array(issues.column(n), dtype=object)
    return make_table(
        {
            "dataset": skeletons.get(dataset).name,
            "split": split,
            "image_id": image_id[keep],
            "category_id": cat[keep],
            "bbox": bbox[keep],
            "score": score[keep],
            "issue": list(issue[keep]),
        },
        int(keep.sum()),
        DETECTION_COLUMNS,
    )
