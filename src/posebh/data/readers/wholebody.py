"""COCO-WholeBody v1.0: 133 keypoints from the body list and the four part lists.

The release keeps COCO's 17-joint ``keypoints``/``num_keypoints`` and adds ``foot_kpts``,
``face_kpts``, ``lefthand_kpts``, ``righthand_kpts`` (concatenated in exactly that order, which is
mmpose's 133-keypoint layout), part validity flags and face/hand boxes.

Part visibility: the release writes v as 0/1/2 integers, 0.0/1.0/2.0 floats, or (for some
machine-assisted hands) a fractional confidence in (0, 1). The evaluation only asks v > 0, and a
confidence says nothing about occlusion, so a non-integral v in (0, 2) becomes 1 ("labelled,
visibility not asserted"); integral values pass unchanged (anything outside {0, 1, 2} is left for
validation to flag). ``extra["part_v_fractional"]`` counts the remapped values of a row.

An invalid part (its ``*_valid`` flag false) is all zeros (v = 0) in the table whatever the lists
hold. ``num_keypoints`` counts labelled keypoints over all 133; the release's body-only count is
``extra["num_keypoints_body"]``; flags and boxes are in ``extra`` too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.readers.coco import float_matrix, instances_from_coco, int_column, load_document

#: (annotation key, validity flag, skeleton part) in the order the 133 keypoints concatenate.
PART_FIELDS: tuple[tuple[str, str | None, str], ...] = (
    ("keypoints", None, "body"),
    ("foot_kpts", "foot_valid", "foot"),
    ("face_kpts", "face_valid", "face"),
    ("lefthand_kpts", "lefthand_valid", "left_hand"),
    ("righthand_kpts", "righthand_valid", "right_hand"),
)
PART_BOXES = ("face_box", "lefthand_box", "righthand_box")
#: the highest COCO visibility; fractional part values below it are confidences of labelled points
VISIBLE = 2
LABELLED = 1


def part_slices(dataset: str) -> list[tuple[str, str | None, slice]]:
    """(key, flag, keypoint slice) per part, from the skeleton registry's part table."""
    parts = skeletons.get(dataset).parts
    out = []
    for key, flag, part in PART_FIELDS:
        lo, hi = parts[part]
        out.append((key, flag, slice(lo, hi)))
    return out


@register_reader("coco_wholebody")
def read_coco_wholebody(
    *, annotations: str | Path, split: str, dataset: str = "coco_wholebody", image_root: str | Path | None = None
) -> pd.DataFrame:
    """COCO-WholeBody annotations as 133-keypoint rows (see the module docstring for v and parts)."""
    doc = load_document(annotations, ("images", "annotations"))
    anns = [a if type(a) is dict else {} for a in doc["annotations"]]
    n = len(anns)
    sk = skeletons.get(dataset)
    kp = np.zeros((n, sk.num_keypoints, 3), np.float32)
    issues: list[str | None] = [None] * n
    extra: list[dict] = [{} for _ in range(n)]
    fractional = np.zeros(n, np.int64)

    for key, flag, sl in part_slices(dataset):
        k = sl.stop - sl.start
        values, part_issues = float_matrix([a.get(key) for a in anns], 3 * k, key)
        part = values.reshape(n, k, 3)
        if flag is not None:
            flags = [a.get(flag) for a in anns]
            valid = np.fromiter((f is None or bool(f) for f in flags), bool, n)
            for i, f in enumerate(flags):
                if f is not None:
                    extra[i][flag] = bool(f)
            part[~valid] = 0.0
            if part_issues is not None:
                part_issues = [m if valid[i] else None for i, m in enumerate(part_issues)]
            v = part[..., 2]
            frac = (v > 0) & (v < VISIBLE) & (v != np.round(v))
            v[frac] = LABELLED
            fractional += frac.sum(axis=1)
        kp[:, sl] = part
        if part_issues is not None:
            for i, m in enumerate(part_issues):
                if m:
                    issues[i] = m if issues[i] is None else f"{issues[i]}; {m}"

    for key in PART_BOXES:
        for i, a in enumerate(anns):
            if key in a:
                extra[i][key] = a[key]
    body_count, bad = int_column([a.get("num_keypoints") for a in anns])
    for i, c in enumerate(body_count.tolist()):
        if bad is None or not bad[i]:
            extra[i]["num_keypoints_body"] = c
    for i in np.flatnonzero(fractional):
        extra[i]["part_v_fractional"] = int(fractional[i])

    flat = kp.reshape(n, -1)
    consumed = frozenset(key for key, _, _ in PART_FIELDS) | {f for _, f, _ in PART_FIELDS if f} | set(PART_BOXES)
    return instances_from_coco(
        doc,
        split=split,
        dataset=dataset,
        image_root=image_root,
        consumed_keys=consumed,
        keypoints=(flat, issues if any(issues) else None),
        num_keypoints=(kp[..., 2] > 0).sum(axis=1),
        row_extra=extra,
    )
