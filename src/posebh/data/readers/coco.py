"""COCO-style keypoint files (COCO, OCHuman, AP-10K, CrowdPose, mmpose's AIC) and the shared core
that the AIC, COCO-WholeBody and APT-36K readers build on.

The core turns a loaded COCO document into the unified table column-wise: one comprehension per
field over the annotation list, then numpy, so COCO-train scale stays close to the cost of
``json.load`` itself. Rows that cannot be converted keep placeholders and an ``issue``.

Release quirks handled here (see ``reference/datasets.md``):

* ``area``: the OKS scale. Datasets whose skeleton has ``area_rule == "annotation"`` keep the
  release's value (w*h with ``extra["area_from"] = "wh"`` when it is missing); ``"wh"`` and
  ``"0.53wh"`` datasets compute it from the box, and a differing release value is kept in
  ``extra["release_area"]``.
* CrowdPose: ``num_keypoints`` stays the release's count (labelled joints among the first 12),
  which is what its evaluation ignores on; ``extra["num_keypoints_rule"]`` says so. Its category
  ``skeleton`` (COCO's 17-joint list) is never read. ``crowdIndex`` lands in ``extra``.
* AP-10K: species categories; the image ``background`` lands in ``extra``.
* Fields the unified table has no column for (image ``url``, ``background``, ``crowdIndex``,
  unknown annotation keys) are kept in ``extra``; COCO's bookkeeping (``license``, urls,
  ``date_captured``) and ``segmentation`` are not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError, UnsafePathError
from posebh.data.io import image_size, load_json, require_keys
from posebh.data.paths import relative_file_name, resolve
from posebh.data.schema import IMAGE_COLUMNS, ISSUE_SEPARATOR, make_table

#: Annotation keys that map onto table columns (or are deliberately dropped).
ANNOTATION_KEYS = frozenset(
    {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "keypoints", "num_keypoints", "segmentation",
     "video_id", "track_id"}
)  # fmt: skip
#: Image keys that map onto table columns.
IMAGE_KEYS = frozenset({"id", "file_name", "width", "height", "video_id"})
#: COCO image bookkeeping that is neither a column nor worth carrying in ``extra``.
IMAGE_BOOKKEEPING = frozenset({"license", "coco_url", "flickr_url", "date_captured"})

#: Datasets whose release ``num_keypoints`` follows its own rule (kept as-is, recorded in extra).
RELEASE_NUM_KEYPOINTS_RULES = {
    "crowdpose": "release count: labelled joints among the first 12 (head and neck excluded)",
}



# ----------------------------------------------------------------------------------------------
# Column builders shared by the COCO-family readers
# ----------------------------------------------------------------------------------------------


class Issues:
    """Per-row reasons, stored sparsely because clean files have none."""

    def __init__(self) -> None:
        self.rows: dict[int, list[str]] = {}

    def add(self, i: int, message: str) -> None:
        self.rows.setdefault(int(i), []).append(message)

    def add_where(self, mask: np.ndarray, message: str) -> None:
        for i in np.flatnonzero(mask):
            self.add(i, message)

    def merge(self, per_row: Sequence[str | None] | None) -> None:
        if per_row is not None:
            for i, m in enumerate(per_row):
                if m:
                    self.add(i, m)

    def column(self, n: int) -> list[str | None]:
        col: list[str | None] = [None] * n
        for i, msgs in self.rows.items():
            col[i] = ISSUE_SEPARATOR.join(msgs)
        return col


def float_matrix(
    values: Sequence[Any], width: int, field: str, dtype: type = np.float32
) -> tuple[np.ndarray, list[str | None] | None]:
    """(n, width) array from JSON lists of numbers; a row that is not ``width`` finite numbers is
    NaN and gets a reason (the list is None when every row converted)."""
    n = len(values)
    lengths = np.fromiter((len(v) if type(v) is list else -1 for v in values), np.int64, n)
    ok = lengths == width
    out = np.full((n, width), np.nan, dtype)
    good = np.flatnonzero(ok)
    rows = values if len(good) == n else [values[i] for i in good]
    try:
        out[good] = np.fromiter(chain.from_iterable(rows), dtype, count=len(good) * width).reshape(-1, width)
    except (TypeError, ValueError, OverflowError):
        for i in good:
            try:
                out[i] = np.asarray(values[i], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                out[i] = np.nan
    finite = np.isfinite(out).all(axis=1)
    if finite.all():
        return out, None
    issues: list[str | None] = [None] * n
    for i in np.flatnonzero(~finite):
        length = int(lengths[i])
        if length < 0:
            issues[i] = f"{field} is not a list"
        elif length != width:
            issues[i] = f"{field} has {length} values, expected {width}"
        else:
            issues[i] = f"{field} has non-numeric values"
    return out, issues


def int_column(values: Sequence[Any], missing: int = -1) -> tuple[np.ndarray, np.ndarray | None]:
    """int64 array from JSON integers; returns the mask of entries that are not integers (or None)."""
    n = len(values)
    if all(type(v) is int for v in values):
        try:
            return np.fromiter(values, np.int64, n), None
        except OverflowError:
            pass
    out = np.full(n, missing, np.int64)
    bad = np.zeros(n, bool)
    for i, v in enumerate(values):
        if type(v) is float and v.is_integer():
            v = int(v)
        if type(v) is int and -(2**63) <= v < 2**63:
            out[i] = v
        else:
            bad[i] = True
    return out, bad


def float_column(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 array (NaN where missing or not a number), the missing mask and the bad mask."""
    n = len(values)
    missing = np.fromiter((v is None for v in values), bool, n)
    if all(type(v) is float or type(v) is int for v in values):
        try:
            return np.fromiter(values, np.float64, n), missing, np.zeros(n, bool)
        except OverflowError:  # a JSON integer beyond float range
            pass
    out = np.full(n, np.nan)
    bad = np.zeros(n, bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            f = float(v) if type(v) in (int, float) else math.nan
        except OverflowError:
            f = math.nan
        if math.isfinite(f):
            out[i] = f
        else:
            bad[i] = True
    return out, missing, bad


def nullable_ints(values: Sequence[Any]) -> tuple[list[int | None], np.ndarray]:
    """Integers or None (for the nullable Int64 columns), and the mask of present non-integers."""
    out: list[int | None] = []
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        if type(v) is float and v.is_integer():
            v = int(v)
        if v is None or type(v) is int:
            out.append(v)
        else:
            out.append(None)
            bad[i] = True
    return out, bad


def dump_extra(d: dict) -> str:
    return json.dumps(d, sort_keys=True) if d else "{}"


def load_document(path: str | Path, required: tuple[str, ...]) -> dict:
    """Load a COCO-style JSON object and check its top-level lists; whole-file problems raise."""
    doc = load_json(path)
    require_keys(doc, required, path)
    for key in (*required, "categories"):
        if key in doc and not isinstance(doc[key], list):
            raise DataFileError(path, f"'{key}' must be a list, found {type(doc[key]).__name__}")
    return doc


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


class ImageName(NamedTuple):
    """A release file name turned into the table's relative name (``issue`` when it cannot be)."""

    file_name: str
    issue: str | None = None
    extra: dict | None = None
    frame_index: int | None = None


def coco_file_name(raw: Any) -> ImageName:
    if not isinstance(raw, str):
        return ImageName("" if raw is None else str(raw), "file_name is not a string")
    try:
        return ImageName(relative_file_name(raw))
    except UnsafePathError as e:
        return ImageName(raw, f"unsafe file name ({e.problem})")


NameRule = Callable[[Any], ImageName]


class ImageIndex:
    """Per-image columns plus a trailing sentinel row, so annotations gather image fields with one
    fancy index (an unknown image_id points at the sentinel)."""

    def __init__(self, images: list, *, image_root: str | Path | None, name_rule: NameRule) -> None:
        m = len(images)
        self.size = m
        self.image_id = np.full(m, -1, np.int64)
        self.file_name = np.empty(m + 1, object)
        self.width = np.zeros(m + 1, np.int64)
        self.height = np.zeros(m + 1, np.int64)
        self.video_id = np.full(m + 1, None, object)
        self.frame_index = np.full(m + 1, None, object)
        self.extra: list[dict] = [{}] * (m + 1)
        self.issue: list[str | None] = [None] * (m + 1)
        self.pos: dict[int, int] = {}
        self.copies: dict[int, list[int]] = {}  # rows of image ids that occur more than once
        self.file_name[m] = ""
        for i, im in enumerate(images):
            self._add(i, im, image_root, name_rule)
        for iid, rows in self.copies.items():
            message = f"image id {iid} appears {len(rows)} times in images"
            for r in rows:
                self.issue[r] = message if self.issue[r] is None else f"{self.issue[r]}{ISSUE_SEPARATOR}{message}"

    def _add(self, i: int, im: Any, image_root: str | Path | None, name_rule: NameRule) -> None:
        problems = []
        if type(im) is not dict:
            self.file_name[i] = ""
            self.issue[i] = "image entry is not a JSON object"
            return
        iid = im.get("id")
        if type(iid) is int:
            self.image_id[i] = iid
            if iid in self.pos:  # annotations of this id cannot be attributed to one image
                self.copies[iid] = self.copies.get(iid, [self.pos[iid]]) + [i]
            self.pos[iid] = i
        else:
            problems.append("image id is not an integer")
        name = name_rule(im.get("file_name"))
        self.file_name[i] = name.file_name
        if name.issue:
            problems.append(name.issue)
        self.frame_index[i] = name.frame_index
        w, h = im.get("width"), im.get("height")
        if type(w) is int and type(h) is int:
            self.width[i], self.height[i] = w, h
            if w <= 0 or h <= 0:
                problems.append(f"image width/height {w}x{h} not positive")
        else:
            size = None
            if image_root is not None and not name.issue:
                try:
                    size = image_size(resolve(image_root, name.file_name))
                except UnsafePathError as e:  # a symlink that leaves the root
                    problems.append(f"unsafe file name ({e.problem})")
            if size is None:
                problems.append("image width/height missing and not readable from the image")
            else:
                self.width[i], self.height[i] = size
        vid = im.get("video_id")
        if vid is not None:
            if type(vid) is int:
                self.video_id[i] = vid
            else:
                problems.append("image video_id is not an integer")
        extra = {k: v for k, v in im.items() if k not in IMAGE_KEYS and k not in IMAGE_BOOKKEEPING}
        if name.extra:
            extra.update(name.extra)
        self.extra[i] = extra
        if problems:
            self.issue[i] = ISSUE_SEPARATOR.join(problems)

    def lookup(self, image_ids: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
        """Row of each id in this index; the sentinel for unknown or invalid ids."""
        get, m = self.pos.get, self.size
        idx = np.fromiter((get(i, m) for i in image_ids.tolist()), np.int64, len(image_ids))
        if bad is not None:
            idx[bad] = m
        return idx


def images_table(
    doc: dict, *, split: str, dataset: str, image_root: str | Path | None = None, name_rule: NameRule = coco_file_name
) -> pd.DataFrame:
    index = ImageIndex(doc["images"], image_root=image_root, name_rule=name_rule)
    m = index.size
    return make_table(
        {
            "dataset": dataset,
            "split": split,
            "image_id": index.image_id,
            "file_name": index.file_name[:m],
            "width": index.width[:m],
            "height": index.height[:m],
            "extra": [dump_extra(e) for e in index.extra[:m]],
            "issue": index.issue[:m],
        },
        m,
        IMAGE_COLUMNS,
    )


# ----------------------------------------------------------------------------------------------
# Instances
# ----------------------------------------------------------------------------------------------


def instances_from_coco(
    doc: dict,
    *,
    split: str,
    dataset: str,
    image_root: str | Path | None = None,
    name_rule: NameRule = coco_file_name,
    crowd_keys: tuple[str, ...] = ("iscrowd",),
    consumed_keys: frozenset[str] = frozenset(),
    keypoints: tuple[np.ndarray, list[str | None] | None] | None = None,
    num_keypoints: np.ndarray | None = None,
    row_extra: list[dict] | None = None,
) -> pd.DataFrame:
    """The unified table of a loaded COCO-style document.

    ``keypoints`` (array, per-row issues), ``num_keypoints`` and ``row_extra`` let a format with its
    own keypoint layout (COCO-WholeBody) supply them; ``consumed_keys`` are annotation keys that
    format already handled, so they are not copied into ``extra``.
    """
    sk = skeletons.get(dataset)
    dataset = sk.name
    width = 3 * sk.num_keypoints
    issues = Issues()

    anns = doc["annotations"]
    if not all(type(a) is dict for a in anns):
        anns = list(anns)
        for i, a in enumerate(anns):
            if type(a) is not dict:
                anns[i] = {}
                issues.add(i, "annotation is not a JSON object")
    n = len(anns)

    instance_id, bad = int_column([a.get("id") for a in anns])
    if bad is not None:
        issues.add_where(bad, "id is not an integer")

    image_id, bad_img = int_column([a.get("image_id") for a in anns])
    if bad_img is not None:
        issues.add_where(bad_img, "image_id is not an integer")
    images = ImageIndex(doc["images"], image_root=image_root, name_rule=name_rule)
    idx = images.lookup(image_id, bad_img)
    sentinel = idx == images.size
    for i in np.flatnonzero(sentinel):
        if bad_img is None or not bad_img[i]:
            issues.add(i, f"image_id {image_id[i]} not in images")
    for i in np.flatnonzero(~sentinel):
        if images.issue[idx[i]]:
            issues.add(i, images.issue[idx[i]])

    category_id, bad = int_column([a.get("category_id") for a in anns])
    if bad is not None:
        issues.add_where(bad, "category_id is not an integer")
    if "categories" in doc:
        names = {c["id"]: c.get("name") for c in doc["categories"] if type(c) is dict and type(c.get("id")) is int}
        category = [names.get(c) for c in category_id.tolist()]
        for i, c in enumerate(category):
            if c is None:
                category[i] = ""
                if bad is None or not bad[i]:
                    issues.add(i, f"category_id {category_id[i]} not in categories")
    else:
        category = [sk.category] * n

    bbox, bbox_issues = float_matrix([a.get("bbox") for a in anns], 4, "bbox", np.float64)
    if bbox_issues is not None:
        issues.merge(["bbox is not 4 numbers" if m else None for m in bbox_issues])

    if keypoints is None:
        keypoints = float_matrix([a.get("keypoints") for a in anns], width, "keypoints")
    kp, kp_issues = keypoints
    issues.merge(kp_issues)

    extras: dict[int, dict] = {}

    def note(i: int, key: str, value: Any) -> None:
        extras.setdefault(int(i), {})[key] = value

    release_area, area_missing, area_bad = float_column([a.get("area") for a in anns])
    issues.add_where(area_bad, "area is not a number")
    if sk.area_rule == "annotation":
        area = release_area.copy()
        fill = area_missing
        area[fill] = skeletons.oks_area(bbox[fill], "wh")
        for i in np.flatnonzero(fill):
            note(i, "area_from", "wh")
    else:
        area = skeletons.oks_area(bbox, sk.area_rule)
        differs = ~area_missing & ~area_bad & ~np.isclose(release_area, area)
        for i in np.flatnonzero(differs):
            note(i, "release_area", float(release_area[i]))

    iscrowd = np.zeros(n, np.int64)
    for key in crowd_keys:
        values = [a.get(key) for a in anns]
        present = np.fromiter((v is not None for v in values), bool, n)
        if present.any():
            crowd, bad = int_column([0 if v is None else int(v) if type(v) is bool else v for v in values], missing=0)
            if bad is not None:
                issues.add_where(bad, f"{key} is not an integer")
            iscrowd = np.where(present, crowd, iscrowd)

    if num_keypoints is None:
        labelled = (kp[:, 2::3] > 0).sum(axis=1)
        num_keypoints, bad = int_column([a.get("num_keypoints") for a in anns])
        if bad is not None:
            num_keypoints = np.where(bad, labelled, num_keypoints)
        rule = RELEASE_NUM_KEYPOINTS_RULES.get(dataset)
        if rule is not None:
            for i in range(n) if bad is None else np.flatnonzero(~bad):
                note(i, "num_keypoints_rule", rule)

    video_id, _ = _ann_nullable(anns, "video_id", issues)
    track_id, _ = _ann_nullable(anns, "track_id", issues)
    image_video = images.video_id[idx]
    if video_id is None:
        video_id = image_video
    else:
        for i, (a, b) in enumerate(zip(video_id, image_video)):
            if a is None:
                video_id[i] = b
            elif b is not None and a != b:
                issues.add(i, f"video_id {a} differs from its image's {b}")

    known = ANNOTATION_KEYS | consumed_keys | set(crowd_keys)
    for i, a in enumerate(anns):
        if len(a) and a.keys() - known:
            for k in a.keys() - known:
                note(i, k, a[k])
    if row_extra is not None:
        for i, d in enumerate(row_extra):
            if d:
                extras.setdefault(i, {}).update(d)

    image_extra_json = np.array([dump_extra(e) for e in images.extra], dtype=object)
    extra = image_extra_json[idx]
    for i, d in extras.items():
        extra[i] = dump_extra({**images.extra[idx[i]], **d})

    file_name = images.file_name[idx]
    return make_table(
        {
            "dataset": dataset,
            "split": split,
            "image_id": image_id,
            "file_name": file_name,
            "width": images.width[idx],
            "height": images.height[idx],
            "instance_id": instance_id,
            "bbox": bbox,
            "area": area,
            "iscrowd": iscrowd,
            "keypoints": kp,
            "num_keypoints": num_keypoints,
            "category_id": category_id,
            "category": category,
            "video_id": list(video_id),
            "frame_index": list(images.frame_index[idx]),
            "track_id": track_id if track_id is not None else [None] * n,
            "extra": extra,
            "issue": issues.column(n),
        },
        n,
    )


def _ann_nullable(anns: list[dict], key: str, issues: Issues) -> tuple[list[int | None] | None, np.ndarray | None]:
    if not any(key in a for a in anns):
        return None, None
    values, bad = nullable_ints([a.get(key) for a in anns])
    issues.add_where(bad, f"{key} is not an integer")
    return values, bad


# ----------------------------------------------------------------------------------------------
# Registered readers
# ----------------------------------------------------------------------------------------------


@register_reader("coco")
def read_coco(
    *, annotations: str | Path, split: str, dataset: str = "coco", image_root: str | Path | None = None
) -> pd.DataFrame:
    """COCO-format person/animal keypoints: COCO, OCHuman, AP-10K, CrowdPose (and AIC via ``aic``).

    ``dataset`` picks the skeleton (K, area rule); a keypoint list of another length is an issue.
    ``image_root`` is only used to read a size the file does not give.
    """
    doc = load_document(annotations, ("images", "annotations"))
    return instances_from_coco(doc, split=split, dataset=dataset, image_root=image_root)


@register_reader("coco_image_info", table="images")
def read_coco_image_info(
    *, annotations: str | Path, split: str, dataset: str = "coco", image_root: str | Path | None = None
) -> pd.DataFrame:
    """The images of a COCO-style file as the images table (COCO test-dev has no annotations)."""
    doc = load_document(annotations, ("images",))
    return images_table(doc, split=split, dataset=skeletons.get(dataset).name, image_root=image_root)
