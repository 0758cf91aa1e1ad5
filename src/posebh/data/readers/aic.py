"""AI Challenger 2017 keypoints: mmpose's converted COCO-style file (``aic``) and the official raw
release (``aic_raw``).

The raw release is a list of image records {url, image_id (40-hex), keypoint_annotations
{"human1": [x, y, v]*14, ...}, human_annotations {"human1": [x1, y1, x2, y2], ...}}. Converting it
the way mmpose did gives the same rows as ``aic`` on mmpose's file (checked on the samples):

* corner box -> (x1, y1, x2 - x1, y2 - y1);
* raw visibility 1 (visible) -> 2, 2 (occluded) -> 1, 3 (absent, x = y = 0) -> 0; x, y kept;
* file_name = "<image_id>.jpg"; integer image ids 1.. in record order; instance ids 1.. in record
  order, humans in numeric key order (human1, human2, ..., human10). mmpose's file numbers the
  same instances from a different start, so rows match in order, not by instance id;
* width/height come from the image header under ``image_root`` (the raw file has none);
* the hash, url and human key go to ``extra``; area follows the skeleton's rule (0.53*w*h).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError, UnsafePathError
from posebh.data.io import image_size, load_json
from posebh.data.paths import relative_file_name, resolve
from posebh.data.readers.coco import Issues, float_matrix, read_coco
from posebh.data.schema import make_table

#: raw AIC visibility -> COCO visibility
RAW_VISIBILITY = {1: 2, 2: 1, 3: 0}
#: the category id mmpose's converted file gives every person
PERSON_CATEGORY_ID = 1
IMAGE_SUFFIX = ".jpg"
#: parallel header reads pay off only past a handful of images
_THREAD_THRESHOLD = 64
_HUMAN_NUMBER = re.compile(r"(\d+)$")


@register_reader("aic")
def read_aic(
    *, annotations: str | Path, split: str, dataset: str = "aic", image_root: str | Path | None = None
) -> pd.DataFrame:
    """mmpose's converted AIC json (aic_train.json / aic_val.json): COCO-style, no area, no iscrowd."""
    return read_coco(annotations=annotations, split=split, dataset=dataset, image_root=image_root)


def _human_order(key: str) -> tuple[int, int, str]:
    m = _HUMAN_NUMBER.search(key)
    return (0, int(m.group(1)), key) if m else (1, 0, key)


def _image_sizes(image_root: str | Path, names: list[str | None]) -> list[tuple[int, int] | str | None]:
    """Each image's size, None when unreadable, or why its path is refused (a symlink out of the root)."""

    def one(name: str | None) -> tuple[int, int] | str | None:
        if name is None:
            return None
        try:
            return image_size(resolve(image_root, name))
        except UnsafePathError as e:
            return f"unsafe file name ({e.problem})"

    if len(names) < _THREAD_THRESHOLD:
        return [one(x) for x in names]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, names))


@register_reader("aic_raw")
def read_aic_raw(
    *, annotations: str | Path, split: str, dataset: str = "aic", image_root: str | Path | None = None
) -> pd.DataFrame:
    """The official raw AIC release converted to the unified table (see the module docstring).

    ``image_root`` is required: the raw file has no image sizes. A missing or unreadable image
    leaves width = height = 0 and an issue on its rows.
    """
    path = Path(annotations)
    if image_root is None:
        raise ValueError(f"aic_raw needs image_root to read image sizes ({path} has none)")
    records = load_json(path)
    if not isinstance(records, list):
        raise DataFileError(path, f"expected a JSON list of image records, found {type(records).__name__}")
    sk = skeletons.get(dataset)
    width = 3 * sk.num_keypoints

    names: list[str] = []
    safe: list[str | None] = []
    name_issue: list[str | None] = []
    rows_image: list[int] = []
    kps: list[Any] = []
    boxes: list[Any] = []
    extra: list[dict] = []
    issues = Issues()

    for r, rec in enumerate(records):
        if type(rec) is not dict:
            names.append("")
            safe.append(None)
            name_issue.append("image record is not a JSON object")
            rows_image.append(r)
            kps.append(None)
            boxes.append(None)
            extra.append({})
            continue
        hash_ = rec.get("image_id")
        if isinstance(hash_, str):
            names.append(hash_ + IMAGE_SUFFIX)
            try:
                safe.append(relative_file_name(names[-1]))
                name_issue.append(None)
            except UnsafePathError as e:
                safe.append(None)
                name_issue.append(f"unsafe file name ({e.problem})")
        else:
            names.append("" if hash_ is None else str(hash_))
            safe.append(None)
            name_issue.append("image_id is not a string")
        kp_map = rec.get("keypoint_annotations")
        box_map = rec.get("human_annotations")
        map_problems = [f"{key} is not a JSON object" for key, m in
                        (("keypoint_annotations", kp_map), ("human_annotations", box_map)) if m is not None and type(m) is not dict]  # fmt: skip
        kp_map = kp_map if type(kp_map) is dict else {}
        box_map = box_map if type(box_map) is dict else {}
        humans = sorted(kp_map.keys() | box_map.keys(), key=_human_order)
        if not humans and map_problems:  # nothing to convert, but the record is not dropped unseen
            humans = [None]
        for human in humans:
            i = len(rows_image)
            rows_image.append(r)
            kps.append(kp_map.get(human))
            boxes.append(box_map.get(human))
            for problem in map_problems:
                issues.add(i, problem)
            if human is not None and human not in kp_map:
                issues.add(i, "human has no keypoint annotation")
            if human is not None and human not in box_map:
                issues.add(i, "human has no box")
            extra.append({"image_hash": hash_, "url": rec.get("url"), "human": human})

    n = len(rows_image)
    img = np.asarray(rows_image, np.int64)
    sizes = _image_sizes(image_root, safe)
    w = np.array([s[0] if isinstance(s, tuple) else 0 for s in sizes], np.int64)
    h = np.array([s[1] if isinstance(s, tuple) else 0 for s in sizes], np.int64)
    for r, (s, problem) in enumerate(zip(sizes, name_issue)):
        if problem is None and isinstance(s, str):
            name_issue[r] = s
        elif problem is None and s is None:
            name_issue[r] = "image not found or unreadable"
    for i, r in enumerate(rows_image):
        if name_issue[r]:
            issues.add(i, name_issue[r])

    kp, kp_issues = float_matrix(kps, width, "keypoints")
    for i, m in enumerate(kp_issues or ()):
        if m is not None and kps[i] is not None:
            issues.add(i, m)
    v = kp[:, 2::3]
    mapped = np.full_like(v, np.nan)
    for raw, coco in RAW_VISIBILITY.items():
        mapped[v == raw] = coco
    unknown = np.isnan(mapped) & ~np.isnan(v)
    for i in np.flatnonzero(unknown.any(axis=1)):
        bad = sorted({float(x) for x in v[i][unknown[i]]})
        issues.add(i, f"raw visibility {bad} not in {sorted(RAW_VISIBILITY)}")
    mapped[unknown] = v[unknown]
    kp[:, 2::3] = mapped

    corners, box_issues = float_matrix(boxes, 4, "box", np.float64)
    if box_issues is not None:
        for i, m in enumerate(box_issues):
            if m is not None and boxes[i] is not None:
                issues.add(i, "bbox is not 4 numbers")
    bbox = np.column_stack([corners[:, :2], corners[:, 2:] - corners[:, :2]])
    return make_table(
        {
            "dataset": sk.name,
            "split": split,
            "image_id": img + 1,
            "file_name": [safe[r] or names[r] for r in rows_image],
            "width": w[img],
            "height": h[img],
            "instance_id": np.arange(1, n + 1, dtype=np.int64),
            "bbox": bbox,
            "area": skeletons.oks_area(bbox, sk.area_rule),
            "iscrowd": 0,
            "keypoints": kp,
            "num_keypoints": (kp[:, 2::3] > 0).sum(axis=1),
            "category_id": PERSON_CATEGORY_ID,
            "category": sk.category,
            "extra": extra,
            "issue": issues.column(n),
        },
        n,
    )
