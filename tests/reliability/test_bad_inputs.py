"""Hostile and broken inputs, generated here, against every reader, validation, the image loader and
both checkpoint loaders.

Every case ends in one of two ways:

* a whole-file error (:class:`DataFileError`, or a checkpoint error) whose message names the file
  and the problem, or
* the reader keeps the row with an ``issue`` and ``validate`` quarantines it with a reason, while
  every good row of the same file reaches the clean table untouched (counted before and after).

Payload pickles and checkpoints would create a marker file if their code ran; none may exist.
The counts are gathered in :data:`SUMMARY` and printed by the last test.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import pickle
import subprocess
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from posebh import data
from posebh.data.errors import DataFileError
from posebh.data.validation import validate

W, H = 640, 480  # the image size the annotations claim
SUMMARY: Counter = Counter()
MARKERS: list[Path] = []  # every marker a payload would create if it ran


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, allow_nan=True))  # NaN / Infinity tokens, as sloppy writers emit
    return path


def png_bytes(w: int = W, h: int = H) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (40, 80, 120)).save(buf, "PNG")
    return buf.getvalue()


def bomb_bytes() -> bytes:
    """A tiny PNG whose header claims 40000 x 40000 pixels (a decompression bomb)."""
    b = bytearray(png_bytes(8, 8))
    b[16:24] = (40000).to_bytes(4, "big") * 2
    b[29:33] = zlib.crc32(bytes(b[12:29])).to_bytes(4, "big")
    return bytes(b)


def write_image(path: Path, content: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes() if content is None else content)
    return path


def _symlink_outside(path: Path) -> None:
    root = next(p for p in path.parents if p.name == "images")
    outside = write_image(root.parent / "outside.png")  # a valid image, but outside the root
    path.symlink_to(outside)


#: Ways an image can be broken: each makes ``path`` (under an ``images`` root) unusable.
IMAGE_DEFECTS: dict[str, Callable[[Path], None]] = {
    "missing": lambda p: None,
    "zero_byte": lambda p: p.write_bytes(b""),
    "corrupt": lambda p: p.write_bytes(b"\x00not an image\xff" * 64),
    "bomb": lambda p: p.write_bytes(bomb_bytes()),
    "directory": lambda p: p.mkdir(),
    "symlink_outside_root": _symlink_outside,
}


def break_image(root: Path, rel: str, defect: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    IMAGE_DEFECTS[defect](p)


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


@dataclass
class Built:
    """What a row case wrote: reader arguments, the instance ids (image ids for the images table)
    expected clean and quarantined (an id may be in both: a duplicate's first occurrence stays
    clean), and a phrase every quarantined row's reason must contain."""

    kwargs: dict[str, Any]
    good: list[int] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)
    phrase: str = ""
    check: Callable[[pd.DataFrame], None] | None = None  # extra assertions on the reader's table


@dataclass(frozen=True)
class Case:
    fmt: str
    name: str
    build: Callable[[Path], Built]

    @property
    def id(self) -> str:
        return f"{self.fmt}:{self.name}"


@dataclass(frozen=True)
class New:
    """Returned by a mutation that replaces the whole entry (other mutations edit it in place)."""

    value: Any


def replaced(entry: Any, result: Any) -> Any:
    return result.value if isinstance(result, New) else entry


def _kps(k: int, v: float = 2, lo: int = 0) -> list[float]:
    out: list[float] = []
    for j in range(lo, lo + k):
        out += [10.0 + (j % 20) * 25, 10.0 + (j // 20) * 25, v]
    return out


# --- COCO family: coco, aic (converted), apt36k, coco_wholebody, coco_image_info --------------

COCO_FAMILY = ("coco", "aic", "apt36k", "coco_wholebody")
BODY_K = {"coco": 17, "aic": 14, "apt36k": 17, "coco_wholebody": 17}
WB_PARTS = (("foot_kpts", "foot_valid", 17, 23), ("face_kpts", "face_valid", 23, 91),
            ("lefthand_kpts", "lefthand_valid", 91, 112), ("righthand_kpts", "righthand_valid", 112, 133))  # fmt: skip
APT_PREFIX = "D:\\Animal_pose\\AP-36k-patr1\\29wolf"


def coco_image(fmt: str, i: int, vid0: int = 0) -> dict:
    if fmt == "apt36k":
        return {"id": i, "file_name": f"{APT_PREFIX}\\v{vid0 + i}\\frame{i}.jpg", "width": W, "height": H,
                "video_id": vid0 + i}  # fmt: skip
    return {"id": i, "file_name": f"{i:012d}.jpg", "width": W, "height": H, "license": 1}


def coco_rel(fmt: str, i: int, vid0: int = 0) -> str:
    """The table's file name of :func:`coco_image` ``i`` (relative to the image root)."""
    return f"29wolf/v{vid0 + i}/frame{i}.jpg" if fmt == "apt36k" else f"{i:012d}.jpg"


def coco_ann(fmt: str, aid: int, image_id: int, vid0: int = 0) -> dict:
    k = BODY_K[fmt]
    a = {"id": aid, "image_id": image_id, "category_id": 1, "bbox": [5.0, 5.0, 500.0, 200.0], "area": 50000.0,
         "iscrowd": 0, "keypoints": _kps(k), "num_keypoints": k, "segmentation": []}  # fmt: skip
    if fmt == "apt36k":
        del a["iscrowd"]
        a.update(is_crowd=0, video_id=vid0 + image_id, track_id=aid)
    if fmt == "coco_wholebody":
        for key, flag, lo, hi in WB_PARTS:
            a[key], a[flag] = _kps(hi - lo, lo=lo), True
        a["face_box"] = [1.0, 2.0, 3.0, 4.0]
    return a


def coco_doc(fmt: str, vid0: int = 0) -> dict:
    """Three good annotations (ids 1, 2, 3) on two images (ids 1, 2)."""
    return {
        "images": [coco_image(fmt, 1, vid0), coco_image(fmt, 2, vid0)],
        "annotations": [coco_ann(fmt, i, 1 + (i - 1) % 2, vid0) for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "wolf" if fmt == "apt36k" else "person"}],
    }


GOOD3 = [1, 2, 3]
CASE_NO = iter(range(10**6))  # distinct APT-36K video ids per case (one validation per format)


def _set_kp(i: int, value: float) -> Callable[[dict], None]:
    def f(a: dict) -> None:
        a["keypoints"][i] = value

    return f


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda a: a.__setitem__(key, value)


def _del(key: str) -> Callable[[dict], None]:
    return lambda a: a.pop(key)


def _expected_k(fmt: str) -> int:
    return 3 * BODY_K[fmt]


#: (name, mutation of annotation 100 on image 1, phrase; a callable phrase gets the format)
ANNOTATION_DEFECTS: list[tuple[str, Callable[[dict], None], Any]] = [
    ("keypoints_short", lambda a: a.__setitem__("keypoints", a["keypoints"][:-3]),
     lambda f: f"keypoints has {_expected_k(f) - 3} values, expected {_expected_k(f)}"),
    ("keypoints_long", lambda a: a["keypoints"].extend([1.0, 1.0, 2]),
     lambda f: f"keypoints has {_expected_k(f) + 3} values, expected {_expected_k(f)}"),
    ("keypoints_nested", lambda a: a.__setitem__("keypoints", np.reshape(a["keypoints"], (-1, 3)).tolist()),
     lambda f: f"keypoints has {BODY_K[f]} values"),
    ("keypoints_nan", _set_kp(0, math.nan), "keypoints has non-numeric values"),
    ("keypoints_inf", _set_kp(1, math.inf), "keypoints has non-numeric values"),
    ("keypoints_minus_inf", _set_kp(3, -math.inf), "keypoints has non-numeric values"),
    ("keypoints_string_value", _set_kp(4, "abc"), "keypoints has non-numeric values"),
    ("keypoints_null_value", _set_kp(4, None), "keypoints has non-numeric values"),
    ("keypoints_not_a_list", _set("keypoints", "10 20 2"), "keypoints is not a list"),
    ("keypoints_missing", _del("keypoints"), "keypoints is not a list"),
    ("keypoints_outside_image", _set_kp(0, 5000.0), "lies outside the 640x480 image"),
    ("visibility_3", _set_kp(2, 3), "visibility 3 at keypoint 0"),
    ("visibility_negative", _set_kp(5, -1), "visibility -1 at keypoint 1"),
    ("visibility_fraction", _set_kp(2, 0.5), "visibility 0.5 at keypoint 0"),
    ("bbox_nan", lambda a: a["bbox"].__setitem__(2, math.nan), "bbox is not 4 numbers"),
    ("bbox_inf", lambda a: a["bbox"].__setitem__(3, math.inf), "bbox is not 4 numbers"),
    ("bbox_short", _set("bbox", [1.0, 2.0, 3.0]), "bbox is not 4 numbers"),
    ("bbox_not_a_list", _set("bbox", {"x": 1}), "bbox is not 4 numbers"),
    ("bbox_missing", _del("bbox"), "bbox is not 4 numbers"),
    ("bbox_zero_width", _set("bbox", [5.0, 5.0, 0.0, 200.0]), "bbox width 0 / height 200: both must be > 0"),
    ("bbox_zero_size", _set("bbox", [5.0, 5.0, 0.0, 0.0]), "both must be > 0"),
    ("bbox_negative_height", _set("bbox", [5.0, 5.0, 500.0, -20.0]), "bbox width 500 / height -20: both must be > 0"),
    ("duplicate_instance_id", _set("id", 2), "instance_id 2 repeats"),
    ("id_string", _set("id", "100"), "id is not an integer"),
    ("id_float", _set("id", 100.5), "id is not an integer"),
    ("id_huge", _set("id", 2**70), "id is not an integer"),
    ("id_missing", _del("id"), "id is not an integer"),
    ("image_id_unknown", _set("image_id", 999), "image_id 999 not in images"),
    ("image_id_missing", _del("image_id"), "image_id is not an integer"),
    ("image_id_string", _set("image_id", "1"), "image_id is not an integer"),
    ("category_unknown", _set("category_id", 7), "category_id 7 not in categories"),
    ("category_string", _set("category_id", "person"), "category_id is not an integer"),
    ("iscrowd_2", None, "iscrowd 2 not in {0, 1}"),  # the crowd key differs per format
    ("area_string", _set("area", "big"), "area is not a number"),
    ("area_negative", _set("area", -5.0), "area -5 is negative"),
    ("annotation_not_an_object", None, "annotation is not a JSON object"),
]


def _ids_after(a_id: Any) -> list[int]:
    return [a_id if type(a_id) is int and abs(a_id) < 2**63 else -1]


def coco_annotation_case(fmt: str, name: str, mutate, phrase) -> Case:
    def build(base: Path) -> Built:
        vid0 = 10 * next(CASE_NO)
        doc = coco_doc(fmt, vid0)
        bad = coco_ann(fmt, 100, 1, vid0)
        if name == "iscrowd_2":
            bad["is_crowd" if fmt == "apt36k" else "iscrowd"] = 2
        elif mutate is not None:
            mutate(bad)
        doc["annotations"].append("not an annotation" if name == "annotation_not_an_object" else bad)
        path = write_json(base / "ann.json", doc)
        text = phrase(fmt) if callable(phrase) else phrase
        bad_ids = [-1] if name == "annotation_not_an_object" else _ids_after(bad.get("id"))
        if name == "area_negative" and fmt == "aic":
            # AIC's OKS area is 0.53 w h of the box (skeleton area_rule): the release value is kept
            # in extra, so the row is good
            return Built({"annotations": path}, GOOD3 + [100], [], "", check=_release_area_noted)
        if name == "keypoints_nested" and fmt == "coco_wholebody":
            text = "keypoints has 17 values, expected 51"
        return Built({"annotations": path}, GOOD3, bad_ids, text)

    return Case(fmt, name, build)


def _release_area_noted(df: pd.DataFrame) -> None:
    row = df[df["instance_id"] == 100].iloc[0]
    assert json.loads(row["extra"])["release_area"] == -5.0 and row["area"] > 0


#: (name, changes to the new image 3 (annotation 100 lies on it), phrase)
IMAGE_ENTRY_DEFECTS: list[tuple[str, dict, str]] = [
    ("file_name_absolute", {"file_name": "/etc/passwd"}, "absolute path"),
    ("file_name_dotdot", {"file_name": "../../secret/x.jpg"}, "path escapes the image root"),
    ("file_name_drive", {"file_name": "C:\\Windows\\win.ini"}, "absolute path"),
    ("file_name_nul", {"file_name": "a\x00b.jpg"}, "NUL byte"),
    ("file_name_not_a_string", {"file_name": 12345}, "file_name is not a string"),
    ("file_name_missing", {"file_name": None}, "file_name is not a string"),
    ("width_zero", {"width": 0}, "image width 0 is not positive"),
    ("height_negative", {"height": -480}, "image height -480 is not positive"),
    ("size_string_no_image_root", {"width": "640"}, "image width/height missing and not readable from the image"),
    ("image_entry_id_string", {"id": "3"}, "image_id 3 not in images"),
]
APT_NAME_DEFECTS: list[tuple[str, dict, str]] = [
    ("file_name_dotdot", {"file_name": "D:\\x\\..\\..\\..\\frame1.jpg"}, "path escapes the image root"),
    ("file_name_dot_component", {"file_name": "D:\\a\\b\\.\\frame1.jpg"}, "do not normalise"),
    ("file_name_drive", {"file_name": "C:\\Windows\\win.ini"}, "absolute path"),
    ("file_name_too_short", {"file_name": "/etc/passwd"}, "fewer than 3 components"),
    ("file_name_not_a_string", {"file_name": 12345}, "file_name is not a string"),
    ("width_zero", {"width": 0}, "image width 0 is not positive"),
    ("height_negative", {"height": -480}, "image height -480 is not positive"),
    ("video_id_string", {"video_id": "v1"}, "image video_id is not an integer"),
]


def coco_image_case(fmt: str, name: str, changes: dict, phrase: str) -> Case:
    def build(base: Path) -> Built:
        vid0 = 10 * next(CASE_NO)
        doc = coco_doc(fmt, vid0)
        im = coco_image(fmt, 3, vid0)
        im.update(changes)
        if changes.get("file_name", "") is None:
            del im["file_name"]
        doc["images"].append(im)
        doc["annotations"].append(coco_ann(fmt, 100, 3, vid0))
        return Built({"annotations": write_json(base / "ann.json", doc)}, GOOD3, [100], phrase)

    return Case(fmt, name, build)


def coco_duplicate_image_case(fmt: str) -> Case:
    """Two images share id 1: annotations on image 1 cannot be attributed, so none is clean."""

    def build(base: Path) -> Built:
        vid0 = 10 * next(CASE_NO)
        doc = coco_doc(fmt, vid0)
        twin = coco_image(fmt, 3, vid0)
        twin["id"] = 1
        doc["images"].append(twin)
        return Built({"annotations": write_json(base / "ann.json", doc)}, [2], [1, 3], "image id 1 appears 2 times")

    return Case(fmt, "duplicate_image_id", build)


def coco_header_case(fmt: str, defect: str | None) -> Case:
    """Image 3 has no width/height, so the reader reads its header under ``image_root``."""

    def build(base: Path) -> Built:
        vid0 = 10 * next(CASE_NO)
        doc = coco_doc(fmt, vid0)
        im = coco_image(fmt, 3, vid0)
        del im["width"], im["height"]
        doc["images"].append(im)
        doc["annotations"].append(coco_ann(fmt, 100, 3, vid0))
        root = base / "images"
        rel = coco_rel(fmt, 3, vid0)
        kwargs = {"annotations": write_json(base / "ann.json", doc), "image_root": root}
        if defect is None:
            write_image(root / rel)
            return Built(kwargs, GOOD3 + [100], [], check=_size_from_header(100))
        break_image(root, rel, defect)
        phrase = "resolves outside the image root" if defect == "symlink_outside_root" else \
            "image width/height missing and not readable from the image"
        return Built(kwargs, GOOD3, [100], phrase)

    return Case(fmt, f"image_header_{defect or 'ok'}", build)


def _size_from_header(instance_id: int, key: str = "instance_id"):
    def check(df: pd.DataFrame) -> None:
        row = df[df[key] == instance_id].iloc[0]
        assert (row["width"], row["height"]) == (W, H)

    return check


def apt_video_case(name: str, change: Callable[[dict, dict], None], phrase: str) -> Case:
    def build(base: Path) -> Built:
        vid0 = 10 * next(CASE_NO)
        doc = coco_doc("apt36k", vid0)
        im, a = coco_image("apt36k", 3, vid0), coco_ann("apt36k", 100, 3, vid0)
        change(im, a)
        doc["images"].append(im)
        doc["annotations"].append(a)
        return Built({"annotations": write_json(base / "ann.json", doc)}, GOOD3, [100], phrase)

    return Case("apt36k", name, build)


def _no_video(im: dict, a: dict) -> None:
    im.pop("video_id")
    a.pop("video_id")


def _video_mismatch(im: dict, a: dict) -> None:
    a["video_id"] = im["video_id"] + 5


def wholebody_case(name: str, mutate: Callable[[dict], None], phrase: str | None) -> Case:
    def build(base: Path) -> Built:
        doc = coco_doc("coco_wholebody")
        a = coco_ann("coco_wholebody", 100, 1)
        mutate(a)
        doc["annotations"].append(a)
        path = write_json(base / "ann.json", doc)
        if phrase is None:  # a documented conversion: the row is good
            return Built({"annotations": path}, GOOD3 + [100], [])
        return Built({"annotations": path}, GOOD3, [100], phrase)

    return Case("coco_wholebody", name, build)


def _part(key: str, i: int, value: Any) -> Callable[[dict], None]:
    def f(a: dict) -> None:
        a[key][i] = value

    return f


WHOLEBODY_DEFECTS = [
    ("face_short", lambda a: a.__setitem__("face_kpts", a["face_kpts"][:-9]), "face_kpts has 195 values, expected 204"),
    ("lefthand_nan", _part("lefthand_kpts", 0, math.nan), "lefthand_kpts has non-numeric values"),
    ("righthand_not_a_list", lambda a: a.__setitem__("righthand_kpts", None), "righthand_kpts is not a list"),
    ("foot_visibility_3", _part("foot_kpts", 2, 3), "visibility 3 at keypoint 17"),
    ("foot_visibility_negative", _part("foot_kpts", 5, -2), "visibility -2 at keypoint 18"),
    ("face_visibility_above_2", _part("face_kpts", 2, 2.5), "visibility 2.5 at keypoint 23"),
    # documented conversions, good rows: an invalid part is zeros whatever it holds; a fractional
    # confidence in (0, 2) is "labelled" (1)
    ("invalid_part_with_garbage", lambda a: a.update(face_valid=False, face_kpts="garbage"), None),
    ("fractional_hand_confidence", _part("lefthand_kpts", 2, 0.37), None),
]


def images_table_case(name: str, changes: dict | None, phrase: str, defect: str | None = None) -> Case:
    """coco_image_info: the images table has no validation step; its ``issue`` column is the reason."""

    def build(base: Path) -> Built:
        doc = {"images": [coco_image("coco", 1), coco_image("coco", 2)]}
        im = coco_image("coco", 3)
        kwargs: dict[str, Any] = {}
        if changes is not None:
            im.update(changes)
        if defect is not None:
            del im["width"], im["height"]
            root = base / "images"
            kwargs["image_root"] = root
            if defect == "ok":
                write_image(root / coco_rel("coco", 3))
            else:
                break_image(root, coco_rel("coco", 3), defect)
        doc["images"].append("not an image" if name == "entry_not_an_object" else im)
        kwargs["annotations"] = write_json(base / "info.json", doc)
        if defect == "ok":
            return Built(kwargs, [1, 2, 3], [], check=_size_from_header(3, "image_id"))
        bad = [-1] if name in ("entry_not_an_object", "id_string") else [3]
        return Built(kwargs, [1, 2], bad, phrase)

    return Case("coco_image_info", name, build)


def images_duplicate_case() -> Case:
    def build(base: Path) -> Built:
        twin = coco_image("coco", 3)
        twin["id"] = 1
        doc = {"images": [coco_image("coco", 1), coco_image("coco", 2), twin]}
        return Built({"annotations": write_json(base / "info.json", doc)}, [2], [1, 1], "image id 1 appears 2 times")

    return Case("coco_image_info", "duplicate_image_id", build)


# --- AIC raw release ----------------------------------------------------------------------------

AIC_HASHES = ("a" * 40, "b" * 40, "c" * 40)


def aic_kps(v: float = 1) -> list[float]:
    return _kps(14, v=v)


def aic_record(h: str, humans: int) -> dict:
    return {
        "image_id": h,
        "url": f"http://example.invalid/{h}.jpg",
        "keypoint_annotations": {f"human{i}": aic_kps() for i in range(1, humans + 1)},
        "human_annotations": {f"human{i}": [5.0, 5.0, 505.0, 205.0] for i in range(1, humans + 1)},
    }


def aic_raw_case(name: str, mutate: Callable[[dict], Any] | None, phrase: str, defect: str | None = None,
                 bad_rows: int = 1) -> Case:  # fmt: skip
    """Good: human1, human2 of image a and human1 of image b (instances 1-3); the bad record c
    comes last, so its rows are instances 4 (and 5)."""

    def build(base: Path) -> Built:
        root = base / "images"
        records = [aic_record(AIC_HASHES[0], 2), aic_record(AIC_HASHES[1], 1)]
        for h in AIC_HASHES:
            write_image(root / f"{h}.jpg")
        bad = aic_record(AIC_HASHES[2], 1)
        if mutate is not None:
            bad = replaced(bad, mutate(bad))
        if defect is not None:
            (root / f"{AIC_HASHES[2]}.jpg").unlink()
            break_image(root, f"{AIC_HASHES[2]}.jpg", defect)
        records.append(bad)
        path = write_json(base / "aic_raw.json", records)
        return Built({"annotations": path, "image_root": root}, [1, 2, 3], list(range(4, 4 + bad_rows)), phrase)

    return Case("aic_raw", name, build)


def _aic_human(fn: Callable[[list], Any], key: str = "keypoint_annotations") -> Callable[[dict], None]:
    def f(rec: dict) -> None:
        fn(rec[key]["human1"])

    return f


def _aic_setitem(i: int, value: Any) -> Callable[[dict], None]:
    return _aic_human(lambda kp: kp.__setitem__(i, value))


AIC_RAW_DEFECTS: list[tuple[str, Callable[[dict], Any] | None, str]] = [
    ("raw_visibility_4", _aic_setitem(2, 4), "raw visibility [4.0] not in [1, 2, 3]"),
    ("raw_visibility_0", _aic_setitem(5, 0), "raw visibility [0.0] not in [1, 2, 3]"),
    ("keypoints_short", _aic_human(lambda kp: kp.pop()), "keypoints has 41 values, expected 42"),
    ("keypoints_nan", _aic_setitem(0, math.nan), "keypoints has non-numeric values"),
    ("keypoints_inf", _aic_setitem(1, math.inf), "keypoints has non-numeric values"),
    ("keypoints_not_a_list", lambda r: r["keypoint_annotations"].__setitem__("human1", "x"), "keypoints is not a list"),
    ("keypoints_outside_image", _aic_setitem(0, 9000.0), "lies outside the 640x480 image"),
    ("human_without_box", lambda r: r["human_annotations"].clear(), "human has no box"),
    ("human_without_keypoints", lambda r: r["keypoint_annotations"].clear(), "human has no keypoint annotation"),
    ("box_corners_reversed", lambda r: r["human_annotations"].__setitem__("human1", [505.0, 205.0, 5.0, 5.0]),
     "bbox width -500 / height -200: both must be > 0"),
    ("box_zero", lambda r: r["human_annotations"].__setitem__("human1", [5.0, 5.0, 5.0, 205.0]), "bbox width 0"),
    ("box_nan", _aic_human(lambda b: b.__setitem__(0, math.nan), "human_annotations"), "bbox is not 4 numbers"),
    ("box_short", lambda r: r["human_annotations"].__setitem__("human1", [1, 2, 3]), "bbox is not 4 numbers"),
    ("hash_dotdot", lambda r: r.__setitem__("image_id", "../../etc/secret"), "path escapes the image root"),
    ("hash_absolute", lambda r: r.__setitem__("image_id", "/etc/secret"), "absolute path"),
    ("hash_not_a_string", lambda r: r.__setitem__("image_id", 123), "image_id is not a string"),
    ("record_not_an_object", lambda r: New("not a record"), "image record is not a JSON object"),
    ("keypoint_map_not_an_object", lambda r: r.__setitem__("keypoint_annotations", [aic_kps()]),
     "keypoint_annotations is not a JSON object"),
    ("box_map_not_an_object", lambda r: r.__setitem__("human_annotations", "boxes"),
     "human_annotations is not a JSON object"),
    ("both_maps_not_objects", lambda r: r.update(keypoint_annotations=[aic_kps()], human_annotations=None),
     "keypoint_annotations is not a JSON object"),
]


# --- MPII ---------------------------------------------------------------------------------------


def mpii_person(i: int) -> dict:
    joints = [[11.0 + (j % 8) * 30, 11.0 + (j // 8) * 30] for j in range(16)]  # 1-based
    return {"image": f"{i:09d}.jpg", "center": [200.0, 150.0], "scale": 1.2, "joints": joints, "joints_vis": [1] * 16}


def mpii_case(name: str, mutate: Callable[[dict], Any] | None, phrase: str, defect: str | None = None) -> Case:
    """Persons 1-3 are good (instance ids are positions); person 4 is the bad one."""

    def build(base: Path) -> Built:
        root = base / "images"
        people = [mpii_person(i) for i in (1, 2, 3, 4)]
        for i in (1, 2, 3, 4):
            write_image(root / f"{i:09d}.jpg")
        if mutate is not None:
            people[3] = replaced(people[3], mutate(people[3]))
        if defect is not None:
            (root / "000000004.jpg").unlink()
            break_image(root, "000000004.jpg", defect)
        path = write_json(base / "mpii.json", people)
        return Built({"annotations": path, "image_root": root}, [1, 2, 3], [4], phrase)

    return Case("mpii", name, build)


def _mpii_joint(j: int, value: list) -> Callable[[dict], None]:
    return lambda p: p["joints"].__setitem__(j, value)


def _mpii_vis(j: int, value: Any) -> Callable[[dict], None]:
    return lambda p: p["joints_vis"].__setitem__(j, value)


MPII_DEFECTS: list[tuple[str, Callable[[dict], Any] | None, str]] = [
    ("joints_short", lambda p: p["joints"].pop(), "joints/joints_vis have shapes (15, 2)/(16,)"),
    ("joints_3d", lambda p: p.__setitem__("joints", [[1.0, 2.0, 3.0]] * 16), "have shapes (16, 3)"),
    ("joints_nan", _mpii_joint(3, [math.nan, 20.0]), "non-finite joint coordinates"),
    ("joints_inf", _mpii_joint(3, [20.0, math.inf]), "non-finite joint coordinates"),
    ("joints_string", _mpii_joint(3, ["a", "b"]), "malformed person entry"),
    ("joints_vis_short", lambda p: p["joints_vis"].pop(), "have shapes (16, 2)/(15,)"),
    ("joints_vis_3", _mpii_vis(2, 3), "joints_vis values [3.0] not in {0, 1}"),
    ("joints_vis_negative", _mpii_vis(2, -1), "joints_vis values [-1.0] not in {0, 1}"),
    ("joints_outside_image", _mpii_joint(0, [6000.0, 10.0]), "lies outside the 640x480 image"),
    ("center_missing", lambda p: p.pop("center"), "missing key(s) ['center']"),
    ("center_string", lambda p: p.__setitem__("center", "middle"), "malformed person entry"),
    ("center_nan", lambda p: p.__setitem__("center", [math.nan, 1.0]), "center/scale malformed"),
    ("no_center", lambda p: p.__setitem__("center", [-1.0, -1.0]), "no person centre"),
    ("scale_zero", lambda p: p.__setitem__("scale", 0), "center/scale malformed"),
    ("scale_negative", lambda p: p.__setitem__("scale", -1.2), "center/scale malformed"),
    ("scale_nan", lambda p: p.__setitem__("scale", math.nan), "center/scale malformed"),
    ("entry_not_an_object", lambda p: New([1, 2, 3]), "entry is a list, not an object"),
    ("image_absolute", lambda p: p.__setitem__("image", "/etc/passwd"), "unsafe file name: absolute path"),
    ("image_dotdot", lambda p: p.__setitem__("image", "../x/000000004.jpg"), "unsafe file name: path escapes"),
]


# --- InterHand2.6M --------------------------------------------------------------------------------

IH_CAM = "400002"


def ih_world(z: float = 1000.0) -> list[list[float]]:
    return [[-100.0 + (j % 7) * 30, -60.0 + (j // 7) * 20, z] for j in range(42)]


def ih_image(i: int) -> dict:
    return {"id": i, "file_name": f"Capture0/seq/cam{IH_CAM}/image{i}.jpg", "width": W, "height": H, "capture": 0,
            "camera": IH_CAM, "frame_idx": i, "subject": 0, "seq_name": "seq"}  # fmt: skip


def ih_ann(aid: int, image_id: int, hand: str = "right") -> dict:
    return {"id": aid, "image_id": image_id, "bbox": [100.0, 80.0, 120.0, 90.0], "joint_valid": [[1]] * 42,
            "hand_type": hand, "hand_type_valid": 1}  # fmt: skip


def interhand_files(base: Path, bad_ann: dict | None, bad_image: dict | None = None, *, world3=None,
                    camera_extra: dict | None = None) -> dict[str, Path]:  # fmt: skip
    """Good: annotations 1 (right, image 1), 2 (left, image 2), 3 (right, image 1) -> instances 2, 5, 6."""
    images = [ih_image(1), ih_image(2), bad_image if bad_image is not None else ih_image(3)]
    anns = [ih_ann(1, 1), ih_ann(2, 2, "left"), ih_ann(3, 1)]
    if bad_ann is not None:
        anns.append(bad_ann)
    cam = {"campos": {IH_CAM: [0.0, 0.0, 0.0]}, "camrot": {IH_CAM: np.eye(3).tolist()},
           "focal": {IH_CAM: [500.0, 500.0]}, "princpt": {IH_CAM: [W / 2, H / 2]}}  # fmt: skip
    joints = {"0": {str(i): {"world_coord": ih_world()} for i in (1, 2)}}
    if world3 is not False:
        joints["0"]["3"] = {"world_coord": ih_world() if world3 is None else world3}
    return {
        "data": write_json(base / "ih_data.json", {"images": images, "annotations": anns}),
        "camera": write_json(base / "ih_camera.json", {"0": cam, **(camera_extra or {})}),
        "joint_3d": write_json(base / "ih_joint_3d.json", joints),
    }


def interhand_case(name: str, *, ann=None, image=None, world3=None, phrase: str, bad: list[int] | None = None,
                   good: list[int] | None = None, defect: str | None = None) -> Case:  # fmt: skip
    def build(base: Path) -> Built:
        a = ih_ann(100, 3) if ann is None else ann()
        im = ih_image(3) if image is None else image()
        kwargs: dict[str, Any] = interhand_files(base, a, im, world3=world3)
        if defect is not None:
            root = base / "images"
            kwargs["image_root"] = root
            rel = im["file_name"]
            if defect == "ok":
                write_image(root / rel)
                return Built(kwargs, [2, 5, 6, 200], [], check=_size_from_header(200))
            break_image(root, rel, defect)
        return Built(kwargs, [2, 5, 6] if good is None else good, [200] if bad is None else bad, phrase)

    return Case("interhand", name, build)


def _ih_image_without_size() -> dict:
    im = ih_image(3)
    del im["width"], im["height"]
    return im


def _with(fn: Callable[[], dict], **changes) -> Callable[[], dict]:
    def f() -> dict:
        d = fn()
        d.update(changes)
        return d

    return f


def _ih_world_with(j: int, value: list) -> list:
    w = ih_world()
    w[j] = value
    return w


INTERHAND_CASES = [
    interhand_case("world_coord_short", world3=ih_world()[:41], phrase="world_coord is not 42 x 3 numbers"),
    interhand_case("world_coord_not_a_list", world3="x", phrase="world_coord is not 42 x 3 numbers"),
    interhand_case("world_coord_nan", world3=_ih_world_with(5, [math.nan, 0.0, 1000.0]),
                   phrase="valid joint behind the camera or not finite"),
    interhand_case("world_coord_inf", world3=_ih_world_with(5, [0.0, math.inf, 1000.0]),
                   phrase="valid joint behind the camera or not finite"),
    interhand_case("behind_the_camera", world3=ih_world(z=-1000.0), phrase="valid joint behind the camera"),
    interhand_case("no_world_joints_for_frame", world3=False, phrase="no world joints for capture 0 frame 3"),
    interhand_case("joint_valid_short", ann=_with(lambda: ih_ann(100, 3), joint_valid=[[1]] * 41),
                   phrase="joint_valid is not 42 numbers"),
    interhand_case("no_camera", image=_with(lambda: ih_image(3), camera="999"), phrase="no camera 999 for capture 0"),
    interhand_case("hand_type_unknown", ann=_with(lambda: ih_ann(100, 3), hand_type="both"),
                   phrase="unknown hand_type 'both'", bad=[200, 201]),
    interhand_case("image_id_unknown", ann=_with(lambda: ih_ann(100, 3), image_id=999), phrase="image 999 not in images"),
    interhand_case("image_id_a_list", ann=_with(lambda: ih_ann(100, 3), image_id=[3]), phrase="image [3] not in images"),
    interhand_case("image_entry_id_a_list", image=_with(lambda: ih_image(3), id=[3]), phrase="image 3 not in images"),
    interhand_case("annotation_not_an_object", ann=lambda: "junk", phrase="malformed annotation entry", bad=[-1, -1]),
    interhand_case("annotation_id_string", ann=_with(lambda: ih_ann(100, 3), id="100"),
                   phrase="annotation has no integer id", bad=[-1]),
    interhand_case("duplicate_annotation_id", ann=_with(lambda: ih_ann(100, 3), id=1), phrase="instance_id 2 repeats",
                   bad=[2]),
    interhand_case("duplicate_image_id", image=_with(lambda: ih_image(3), id=1), ann=lambda: ih_ann(100, 1),
                   phrase="image id 1 appears 2 times", good=[5], bad=[2, 6, 200]),
    interhand_case("file_name_absolute", image=_with(lambda: ih_image(3), file_name="/etc/passwd"),
                   phrase="unsafe file name: absolute path"),
    interhand_case("file_name_dotdot", image=_with(lambda: ih_image(3), file_name="../../x.jpg"),
                   phrase="unsafe file name: path escapes"),
    interhand_case("width_zero_no_image_root", image=_with(lambda: ih_image(3), width=0), phrase="image size unknown"),
    *[interhand_case(f"image_header_{d}", image=_ih_image_without_size, phrase="image size unknown", defect=d)
      for d in ("ok", *IMAGE_DEFECTS)],
]


# --- 3DPW -------------------------------------------------------------------------------------------

SEQ = "courtyard_test_00"
K3D = np.array([[500.0, 0, W / 2], [0, 500.0, H / 2], [0, 0, 1]])


def pw3d_joints(z: float = 3.0) -> np.ndarray:
    return np.array([[-0.3 + (j % 6) * 0.1, -0.4 + (j // 6) * 0.2, z] for j in range(24)])


def pw3d_sequence(frames: int = 4, name: str = SEQ) -> dict:
    pos = np.stack([pw3d_joints().reshape(-1)] * frames)
    return {
        "sequence": name,
        "jointPositions": [pos],
        "cam_poses": np.stack([np.eye(4)] * frames),
        "cam_intrinsics": K3D.copy(),
        "campose_valid": [np.ones(frames)],
        "genders": ["m"],
        "poses": [np.zeros((frames, 72))],
    }


def pw3d_write(base: Path, seq: dict, *, first_frame: str | None = "ok") -> dict[str, Any]:
    root = base / "imageFiles"
    rel = f"{seq['sequence']}/image_00000.jpg"
    if first_frame == "ok":
        write_image(root / rel)
    elif first_frame is not None:
        root_images = base / "images"  # break_image expects an "images" folder in the path
        break_image(root_images, rel, first_frame)
        root = root_images
    path = base / "sequenceFiles" / "test" / f"{seq['sequence'].replace('/', '_')}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(seq, protocol=2))
    return {"sequences": path, "image_root": root}


def pw3d_row_case(name: str, mutate: Callable[[dict], None] | None, phrase: str, *, good=(0, 10, 20), bad=(30,),
                  first_frame: str = "ok", check=None) -> Case:  # fmt: skip
    """Frames 0-3 of one actor (instance ids 0, 10, 20, 30); frame 3 is the bad one."""

    def build(base: Path) -> Built:
        seq = pw3d_sequence()
        if mutate is not None:
            mutate(seq)
        return Built(pw3d_write(base, seq, first_frame=first_frame), list(good), list(bad), phrase, check=check)

    return Case("3dpw_sequences", name, build)


def _frame3(value: np.ndarray) -> Callable[[dict], None]:
    def f(seq: dict) -> None:
        seq["jointPositions"][0][3] = value.reshape(-1)

    return f


def _nan_joint() -> np.ndarray:
    j = pw3d_joints()
    j[7] = np.nan
    return j


def _invalid_campose_counted(df: pd.DataFrame) -> None:
    assert df.attrs["invalid_campose_frames"] == 1
    assert df.attrs["invalid_campose_frames_by_sequence"] == {SEQ: 1}


PW3D_ROW_CASES = [
    pw3d_row_case("joints_nan", _frame3(_nan_joint()), "camera-frame joints missing or not finite"),
    pw3d_row_case("joints_inf", _frame3(np.full((24, 3), np.inf)), "camera-frame joints missing or not finite"),
    pw3d_row_case("behind_the_camera", _frame3(pw3d_joints(z=-3.0)), "no joint projects inside the image"),
    pw3d_row_case("outside_the_image", _frame3(pw3d_joints() + [50.0, 0, 0]), "no joint projects inside the image"),
    # a frame whose camera pose is invalid is not an instance; it is counted, not lost
    pw3d_row_case("campose_invalid", lambda s: s["campose_valid"][0].__setitem__(3, 0), "", bad=(),
                  check=_invalid_campose_counted),
    pw3d_row_case("sequence_name_dotdot", lambda s: s.__setitem__("sequence", "../evil"), "unsafe sequence name",
                  good=(), bad=(0, 10, 20, 30)),
    pw3d_row_case("sequence_name_with_separator", lambda s: s.__setitem__("sequence", "a/b"),
                  "sequence name contains a path separator", good=(), bad=(0, 10, 20, 30)),
    *[pw3d_row_case(f"first_frame_{d}", None, "first frame image missing or unreadable", good=(), bad=(0, 10, 20, 30),
                    first_frame=d) for d in IMAGE_DEFECTS],
]


def scorehypo_doc() -> dict:
    images = [{"id": i, "file_name": f"image_{i:05d}.jpg", "sequence": SEQ, "width": W, "height": H,
               "cam_param": {"focal": [500.0, 500.0], "princpt": [W / 2, H / 2]}} for i in (1, 2, 3)]  # fmt: skip
    anns = [{"id": i, "image_id": 1 + (i - 1) % 2, "bbox": [200.0, 100.0, 200.0, 250.0],
             "smpl_joint_cam": (pw3d_joints() * 1000).tolist()} for i in (1, 2, 3)]  # fmt: skip
    return {"images": images, "annotations": anns}


def scorehypo_case(name: str, mutate: Callable[[dict, dict, dict], Any] | None, phrase: str, *, good=None, bad=None,
                   defect: str | None = None, check=None) -> Case:  # fmt: skip
    """Annotations 1-3 are good; annotation 100 on image 3 is the bad one."""

    def build(base: Path) -> Built:
        doc = scorehypo_doc()
        a = {"id": 100, "image_id": 3, "bbox": [200.0, 100.0, 200.0, 250.0],
             "smpl_joint_cam": (pw3d_joints() * 1000).tolist()}  # fmt: skip
        im = doc["images"][2]
        if mutate is not None:
            a = replaced(a, mutate(a, im, doc))
        doc["annotations"].append(a)
        kwargs: dict[str, Any] = {"annotations": write_json(base / "3DPW_test.json", doc)}
        if defect is not None:
            del im["width"], im["height"]
            root = base / "images"
            kwargs["annotations"] = write_json(base / "3DPW_test.json", doc)
            kwargs["image_root"] = root
            rel = f"{SEQ}/{im['file_name']}"
            if defect == "ok":
                write_image(root / rel)
                return Built(kwargs, [1, 2, 3, 100], [], check=_size_from_header(100))
            break_image(root, rel, defect)
        return Built(kwargs, [1, 2, 3] if good is None else good, [100] if bad is None else bad, phrase, check=check)

    return Case("3dpw_scorehypo", name, build)


def _joint_box_used(df: pd.DataFrame) -> None:
    row = df[df["instance_id"] == 100].iloc[0]
    assert json.loads(row["extra"])["bbox_source"] == "joints"
    assert row["bbox"][2] > 0 and row["bbox"][3] > 0


SCOREHYPO_CASES = [
    scorehypo_case("joint_cam_short", lambda a, im, d: a["smpl_joint_cam"].pop(), "smpl_joint_cam unusable"),
    scorehypo_case("joint_cam_missing", lambda a, im, d: a.pop("smpl_joint_cam"), "smpl_joint_cam unusable"),
    scorehypo_case("joint_cam_nan", lambda a, im, d: a["smpl_joint_cam"][4].__setitem__(0, math.nan),
                   "camera-frame joints missing or not finite"),
    scorehypo_case("joint_cam_inf", lambda a, im, d: a["smpl_joint_cam"][4].__setitem__(2, math.inf),
                   "camera-frame joints missing or not finite"),
    scorehypo_case("behind_the_camera", lambda a, im, d: a.__setitem__("smpl_joint_cam", (pw3d_joints(-3) * 1000).tolist()),
                   "no joint projects inside the image"),
    scorehypo_case("cam_param_missing", lambda a, im, d: im.pop("cam_param"), "camera or smpl_joint_cam unusable"),
    scorehypo_case("focal_nan", lambda a, im, d: im["cam_param"].__setitem__("focal", [math.nan, 500.0]),
                   "camera-frame joints missing or not finite"),
    scorehypo_case("image_id_unknown", lambda a, im, d: a.__setitem__("image_id", 999), "image 999 not in images",
                   bad=[-1]),
    scorehypo_case("image_id_a_list", lambda a, im, d: a.__setitem__("image_id", [3]), "image [3] not in images",
                   bad=[-1]),
    scorehypo_case("image_entry_id_a_list", lambda a, im, d: im.__setitem__("id", {"id": 3}), "image 3 not in images",
                   bad=[-1]),
    scorehypo_case("annotation_not_an_object", lambda a, im, d: New("junk"), "malformed annotation entry", bad=[-1]),
    scorehypo_case("duplicate_annotation_id", lambda a, im, d: a.__setitem__("id", 2), "instance_id 2 repeats", bad=[2]),
    scorehypo_case("duplicate_image_id", lambda a, im, d: (im.__setitem__("id", 1), a.__setitem__("image_id", 1)),
                   "image id 1 appears 2 times", good=[2], bad=[1, 3, 100]),
    scorehypo_case("file_name_dotdot", lambda a, im, d: im.__setitem__("file_name", "../../../etc/x.jpg"),
                   "unsafe file name: path escapes"),
    scorehypo_case("sequence_dotdot", lambda a, im, d: im.__setitem__("sequence", "../.."), "unsafe file name"),
    # the release box is only a hint: a zero, negative or NaN box falls back to the joint box
    *[scorehypo_case(f"bbox_{k}", lambda a, im, d, b=b: a.__setitem__("bbox", b), "", good=[1, 2, 3, 100], bad=[],
                     check=_joint_box_used)
      for k, b in (("zero", [200.0, 100.0, 0.0, 0.0]), ("negative", [200.0, 100.0, -20.0, 50.0]),
                   ("nan", [math.nan, 1.0, 2.0, 3.0]))],
    *[scorehypo_case(f"image_header_{d}", None, "image size unknown", defect=d) for d in ("ok", *IMAGE_DEFECTS)],
]


# --- Detections ------------------------------------------------------------------------------------------


def detection(i: int) -> dict:
    return {"image_id": i, "category_id": 1, "bbox": [10.0, 20.0, 100.0, 200.0], "score": 0.9}


DETECTION_DEFECTS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("bbox_nan", lambda d: d["bbox"].__setitem__(0, math.nan), "bbox is not 4 finite numbers"),
    ("bbox_inf", lambda d: d["bbox"].__setitem__(2, math.inf), "bbox is not 4 finite numbers"),
    ("bbox_minus_inf", lambda d: d["bbox"].__setitem__(3, -math.inf), "bbox is not 4 finite numbers"),
    ("bbox_short", lambda d: d.__setitem__("bbox", [1, 2, 3]), "bbox is not 4 finite numbers"),
    ("bbox_long", lambda d: d["bbox"].append(5.0), "bbox is not 4 finite numbers"),
    ("bbox_empty", lambda d: d.__setitem__("bbox", []), "bbox is not 4 finite numbers"),
    ("bbox_nested", lambda d: d.__setitem__("bbox", [[10, 20], [100, 200]]), "bbox is not 4 finite numbers"),
    ("bbox_string_value", lambda d: d["bbox"].__setitem__(1, "twenty"), "bbox is not 4 finite numbers"),
    ("bbox_not_a_list", lambda d: d.__setitem__("bbox", "10 20 100 200"), "bbox is not 4 finite numbers"),
    ("bbox_missing", lambda d: d.pop("bbox"), "bbox is not 4 finite numbers"),
    ("bbox_zero_width", lambda d: d["bbox"].__setitem__(2, 0.0), "bbox width or height is not positive"),
    ("bbox_zero_height", lambda d: d["bbox"].__setitem__(3, 0), "bbox width or height is not positive"),
    ("bbox_zero_size", lambda d: d.__setitem__("bbox", [10.0, 20.0, 0.0, 0.0]), "bbox width or height is not positive"),
    ("bbox_negative_width", lambda d: d["bbox"].__setitem__(2, -100.0), "bbox width or height is not positive"),
    ("bbox_negative_height", lambda d: d["bbox"].__setitem__(3, -0.5), "bbox width or height is not positive"),
    ("score_nan", lambda d: d.__setitem__("score", math.nan), "score is not a finite number"),
    ("score_inf", lambda d: d.__setitem__("score", math.inf), "score is not a finite number"),
    ("score_minus_inf", lambda d: d.__setitem__("score", -math.inf), "score is not a finite number"),
    ("score_string", lambda d: d.__setitem__("score", "high"), "score is not a finite number"),
    ("score_bool", lambda d: d.__setitem__("score", True), "score is not a finite number"),
    ("score_huge_int", lambda d: d.__setitem__("score", 10**400), "score is not a finite number"),
    ("score_missing", lambda d: d.pop("score"), "score is not a finite number"),
    ("image_id_string", lambda d: d.__setitem__("image_id", "7"), "image_id is not an integer"),
    ("category_id_missing", lambda d: d.pop("category_id"), "category_id is not an integer"),
    ("entry_not_an_object", lambda d: New([1, 2]), "not a JSON object"),
]


# ----------------------------------------------------------------------------------------------
# The row corpus
# ----------------------------------------------------------------------------------------------


def _row_cases() -> list[Case]:
    cases: list[Case] = []
    for fmt in COCO_FAMILY:
        cases += [coco_annotation_case(fmt, n, m, p) for n, m, p in ANNOTATION_DEFECTS]
        defects = APT_NAME_DEFECTS if fmt == "apt36k" else IMAGE_ENTRY_DEFECTS
        cases += [coco_image_case(fmt, n, c, p) for n, c, p in defects]
        cases.append(coco_duplicate_image_case(fmt))
        cases += [coco_header_case(fmt, d) for d in (None, *IMAGE_DEFECTS)]
    cases += [
        apt_video_case("video_id_missing", _no_video, "apt36k row has no video_id"),
        apt_video_case("video_id_differs_from_image", _video_mismatch, "differs from its image's"),
        apt_video_case("track_id_string", lambda im, a: a.__setitem__("track_id", "t1"), "track_id is not an integer"),
    ]
    cases += [wholebody_case(n, m, p) for n, m, p in WHOLEBODY_DEFECTS]
    cases += [images_table_case(n, c, p) for n, c, p in IMAGE_ENTRY_DEFECTS[:6]]
    cases += [
        images_table_case("width_zero", {"width": 0}, "image width/height 0x480 not positive"),
        images_table_case("height_negative", {"height": -1}, "image width/height 640x-1 not positive"),
        images_table_case("id_string", {"id": "3"}, "image id is not an integer"),
        images_table_case("entry_not_an_object", None, "image entry is not a JSON object"),
        images_duplicate_case(),
        *[images_table_case(f"image_header_{d}", None,
                            "resolves outside the image root" if d == "symlink_outside_root"
                            else "image width/height missing and not readable", defect=d)
          for d in ("ok", *IMAGE_DEFECTS)],
    ]
    cases += [aic_raw_case(n, m, p) for n, m, p in AIC_RAW_DEFECTS]
    cases += [aic_raw_case(f"image_{d}", None, "image not found or unreadable", defect=d) for d in IMAGE_DEFECTS
              if d != "symlink_outside_root"]
    cases.append(aic_raw_case("image_symlink_outside_root", None, "resolves outside the image root",
                              defect="symlink_outside_root"))
    cases += [mpii_case(n, m, p) for n, m, p in MPII_DEFECTS]
    cases += [mpii_case(f"image_{d}", None, "image missing or unreadable", defect=d) for d in IMAGE_DEFECTS]
    cases += INTERHAND_CASES + PW3D_ROW_CASES + SCOREHYPO_CASES
    return cases


ROW_CASES = _row_cases()
assert len({c.id for c in ROW_CASES}) == len(ROW_CASES), "case names must be unique"


@dataclass
class Outcome:
    built: Built
    table: pd.DataFrame | None = None
    error: BaseException | None = None
    clean: pd.DataFrame | None = None
    quarantine: pd.DataFrame | None = None


@pytest.fixture(scope="module")
def row_outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every row case read, then one validation per format (each case is its own split)."""
    out: dict[str, Outcome] = {}
    base = tmp_path_factory.mktemp("rows")
    for i, case in enumerate(ROW_CASES):
        built = case.build(base / f"{i:03d}_{case.fmt}_{case.name}")
        o = Outcome(built)
        try:
            with np.errstate(invalid="ignore"):  # NaN joints in the 3DPW cases
                o.table = data.read(case.fmt, split=case.id, **built.kwargs)
        except Exception as e:  # noqa: BLE001 - reported by the case's own test
            o.error = e
        out[case.id] = o
    by_fmt: dict[str, list[pd.DataFrame]] = {}
    for case in ROW_CASES:
        o = out[case.id]
        if o.table is not None and data.READER_TABLES[case.fmt] == "instances":
            by_fmt.setdefault(case.fmt, []).append(o.table)
    for fmt, tables in by_fmt.items():
        v = validate(pd.concat(tables, ignore_index=True), name=f"corpus_{fmt}")
        for case in ROW_CASES:
            if case.fmt == fmt and out[case.id].table is not None:
                out[case.id].clean = v.clean[v.clean["split"] == case.id]
                out[case.id].quarantine = v.quarantine[v.quarantine["split"] == case.id]
    return out


def _ids(df: pd.DataFrame, key: str = "instance_id") -> list[int]:
    return sorted(int(x) for x in df[key])


@pytest.mark.parametrize("case", [c for c in ROW_CASES if c.fmt != "coco_image_info"], ids=lambda c: c.id)
def test_bad_rows_are_quarantined_and_good_rows_kept(case, row_outcomes):
    o = row_outcomes[case.id]
    b = o.built
    SUMMARY["bad_cases"] += 1
    SUMMARY["row_cases"] += 1
    if o.error is not None:
        raise AssertionError(f"{case.id}: the reader crashed instead of keeping the row: {o.error!r}") from o.error
    SUMMARY["good_rows_in"] += len(b.good)
    SUMMARY["bad_rows_in"] += len(b.bad)
    assert len(o.table) == len(b.good) + len(b.bad), "the reader dropped or invented rows"
    assert len(o.clean) + len(o.quarantine) == len(o.table)
    assert _ids(o.clean) == sorted(b.good), "good rows lost (or bad rows let through)"
    assert _ids(o.quarantine) == sorted(b.bad)
    SUMMARY["good_rows_kept"] += len(o.clean)
    SUMMARY["rows_quarantined"] += len(o.quarantine)
    for reason in o.quarantine["reason"]:
        assert b.phrase in reason, f"{case.id}: reason {reason!r} lacks {b.phrase!r}"
    # a clean row is the reader's row, untouched; a clean row never carries an issue
    assert o.clean["issue"].isna().all()
    if b.check is not None:
        b.check(o.table)


@pytest.mark.parametrize("case", [c for c in ROW_CASES if c.fmt == "coco_image_info"], ids=lambda c: c.id)
def test_bad_image_entries_carry_an_issue(case, row_outcomes):
    """The images table (COCO test-dev) is not validated row by row: its ``issue`` is the reason."""
    o = row_outcomes[case.id]
    b = o.built
    SUMMARY["bad_cases"] += 1
    SUMMARY["row_cases"] += 1
    if o.error is not None:
        raise AssertionError(f"{case.id}: the reader crashed: {o.error!r}") from o.error
    flagged = o.table[o.table["issue"].notna()]
    kept = o.table[o.table["issue"].isna()]
    SUMMARY["good_rows_in"] += len(b.good)
    SUMMARY["bad_rows_in"] += len(b.bad)
    assert len(o.table) == len(b.good) + len(b.bad)
    assert _ids(kept, "image_id") == sorted(b.good) and _ids(flagged, "image_id") == sorted(b.bad)
    SUMMARY["good_rows_kept"] += len(kept)
    SUMMARY["rows_quarantined"] += len(flagged)
    assert all(b.phrase in s for s in flagged["issue"]), list(flagged["issue"])
    if b.check is not None:
        b.check(o.table)


def test_validation_reports_are_byte_identical(row_outcomes, tmp_path):
    """Two validations of the whole corpus give the same report files, byte for byte."""
    from posebh.data.validation import render_report_markdown
    from posebh.pipelines.io import JSONDataset, TextDataset

    tables = [o.table for c in ROW_CASES if (o := row_outcomes[c.id]).table is not None
              and data.READER_TABLES[c.fmt] == "instances"]  # fmt: skip
    table = pd.concat(tables, ignore_index=True)
    files = []
    for run in ("a", "b"):
        v = validate(table.copy(), name="corpus")
        JSONDataset(filepath=str(tmp_path / run / "report.json")).save(v.report)
        TextDataset(filepath=str(tmp_path / run / "report.md")).save(render_report_markdown(v.report))
        files.append(((tmp_path / run / "report.json").read_bytes(), (tmp_path / run / "report.md").read_bytes(), v))
    (ja, ma, a), (jb, mb, b) = files
    assert ja == jb and ma == mb
    assert a.report["quarantined"] > 300 and a.report["rows_in"] == len(table)
    pd.testing.assert_frame_equal(a.quarantine, b.quarantine)
    pd.testing.assert_frame_equal(a.clean, b.clean)


# ----------------------------------------------------------------------------------------------
# Detections: a malformed box is kept with an ``issue`` and never attached; ``strict`` refuses the file
# ----------------------------------------------------------------------------------------------


def detection_images(base: Path, ids: Sequence[int], split: str = "val") -> pd.DataFrame:
    doc = {"images": [coco_image("coco", i) for i in ids]}
    return data.read("coco_image_info", annotations=write_json(base / "info.json", doc), split=split)


def check_accounting(attrs: dict) -> None:
    """Every detection in is attached or counted under one reason; the report is JSON."""
    json.dumps(attrs, allow_nan=False)
    reasons = ("attached", "other_dataset_or_split", "malformed", "below_min_score", "on_unknown_images",
               "on_flagged_images")  # fmt: skip
    assert attrs["detections_in"] == sum(attrs[r] for r in reasons), attrs
    assert sum(attrs["quarantine_reasons"].values()) == attrs["malformed"] + attrs["on_flagged_images"], attrs


@pytest.mark.parametrize("name, mutate, phrase", DETECTION_DEFECTS, ids=[d[0] for d in DETECTION_DEFECTS])
def test_malformed_detections(tmp_path, name, mutate, phrase):
    from posebh.data.prepare import attach_detections

    SUMMARY["bad_cases"] += 1
    SUMMARY["row_cases"] += 1
    dets = [detection(i) for i in (1, 2, 3)]
    bad = detection(4)
    bad = replaced(bad, mutate(bad))
    dets.insert(1, bad)
    path = write_json(tmp_path / "dets.json", dets)
    with pytest.raises(DataFileError) as e:
        data.read("detections", annotations=path, split="val", strict=True)
    msg = str(e.value)
    assert path.name in msg and "1 of 4 detections are malformed (first at index 1" in msg and phrase in msg

    df = data.read("detections", annotations=path, split="val")
    SUMMARY["good_rows_in"] += 3
    SUMMARY["bad_rows_in"] += 1
    assert len(df) == 4, "the reader dropped a detection"
    assert df["issue"].notna().tolist() == [False, True, False, False]
    assert phrase in df["issue"].iat[1], df["issue"].iat[1]
    good = df[df["issue"].isna()]
    assert good["image_id"].tolist() == [1, 2, 3] and good["score"].tolist() == [0.9] * 3
    assert all(b.tolist() == [10.0, 20.0, 100.0, 200.0] for b in good["bbox"])

    out = attach_detections(detection_images(tmp_path, [1, 2, 3, 4]), df, dataset="coco", split="val")
    a = out.attrs
    check_accounting(a)
    assert sorted(out["image_id"]) == [1, 2, 3] and a["attached"] == 3 and a["malformed"] == 1
    (reason,) = a["quarantine_reasons"]
    assert phrase in reason and reason.startswith("detection issue: ")
    assert a["quarantine_examples"][0].startswith("row 1 ") and phrase in a["quarantine_examples"][0]
    SUMMARY["good_rows_kept"] += a["attached"]
    SUMMARY["rows_quarantined"] += a["malformed"]


@pytest.mark.parametrize("case", [c for c in ROW_CASES if c.fmt == "coco_image_info"], ids=lambda c: c.id)
def test_detections_on_flagged_images_are_not_attached(case, row_outcomes):
    """A box on an image whose row carries an ``issue`` (missing, empty or corrupt image file, bad
    size or name, repeated id) is counted under that reason, never attached."""
    from posebh.data.prepare import attach_detections
    from posebh.data.schema import DETECTION_COLUMNS, make_table

    o = row_outcomes[case.id]
    b = o.built
    SUMMARY["bad_cases"] += 1
    SUMMARY["row_cases"] += 1
    ids = [1, 1, 2, 3, 3, 3]
    dets = make_table({"dataset": "coco", "split": case.id, "image_id": ids, "category_id": 1,
                       "bbox": np.tile([10.0, 20.0, 100.0, 200.0], (len(ids), 1)), "score": 0.9},
                      len(ids), DETECTION_COLUMNS)  # fmt: skip
    out = attach_detections(o.table, dets, dataset="coco", split=case.id)
    a = out.attrs
    check_accounting(a)
    on_good = [i for i in ids if i in b.good and i not in b.bad]
    on_bad = [i for i in ids if i in b.bad]
    SUMMARY["good_rows_in"] += len(on_good)
    SUMMARY["bad_rows_in"] += len(ids) - len(on_good)
    assert sorted(out["image_id"]) == on_good
    assert a["on_flagged_images"] == len(on_bad) and a["flagged_images"] == len(set(b.bad))
    assert a["on_unknown_images"] == len(ids) - len(on_good) - len(on_bad) and a["malformed"] == 0
    for reason in a["quarantine_reasons"]:
        assert reason.startswith("image issue: ") and b.phrase in reason, reason
    assert len(a["quarantine_examples"]) == len(on_bad)
    SUMMARY["good_rows_kept"] += a["attached"]
    SUMMARY["rows_quarantined"] += a["on_flagged_images"] + a["on_unknown_images"]


# ----------------------------------------------------------------------------------------------
# Whole files that are unusable: a DataFileError naming the file and the problem
# ----------------------------------------------------------------------------------------------


def _good_json(fmt: str, base: Path) -> tuple[dict[str, Any], Path]:
    """Reader arguments for a good file of ``fmt`` and the path of its (main) annotation file."""
    if fmt in COCO_FAMILY:
        p = write_json(base / "ann.json", coco_doc(fmt))
    elif fmt == "coco_image_info":
        p = write_json(base / "info.json", {"images": [coco_image("coco", 1)]})
    elif fmt == "aic_raw":
        root = base / "images"
        write_image(root / f"{AIC_HASHES[0]}.jpg")
        return {"annotations": write_json(base / "aic.json", [aic_record(AIC_HASHES[0], 1)]), "image_root": root}, \
            base / "aic.json"
    elif fmt == "mpii":
        p = write_json(base / "mpii.json", [mpii_person(1)])
    elif fmt == "3dpw_scorehypo":
        p = write_json(base / "3DPW_test.json", scorehypo_doc())
    elif fmt == "detections":
        p = write_json(base / "dets.json", [detection(1)])
    else:
        raise KeyError(fmt)
    return {"annotations": p}, p


JSON_FORMATS = (*COCO_FAMILY, "coco_image_info", "aic_raw", "mpii", "3dpw_scorehypo", "detections")
LIST_FORMATS = {"aic_raw": "expected a JSON list of image records", "mpii": "expected a JSON list of persons",
                "detections": "expected a JSON list of detections"}  # fmt: skip


def _corrupt_bytes(kind: str, good: bytes) -> bytes | None:
    return {
        "truncated": good[: len(good) // 2],
        "non_utf8": good.replace(b'"', b'"\xff\xfe', 1),
        "latin1_text": good[:-1] + b', "caf\xe9": 1' + good[-1:] if good.endswith(b"}") else b'["caf\xe9"]',
        "utf16": good.decode().encode("utf-16"),
        "empty": b"",
        "whitespace_only": b" \n\t ",
        "nested_too_deep": b"[" * 200_000 + b"]" * 200_000,
        "binary_garbage": bytes(range(256)) * 8,
        "pickle_instead_of_json": pickle.dumps({"images": []}),
    }.get(kind)


BYTE_DEFECTS = {
    "truncated": "invalid JSON at line",
    "non_utf8": "not UTF-8 text",
    "latin1_text": "not UTF-8 text",
    "utf16": "not UTF-8 text",
    "empty": "file is empty",
    "whitespace_only": "file is empty",
    "nested_too_deep": "nested too deeply",
    "binary_garbage": "not UTF-8 text",
    "pickle_instead_of_json": "not UTF-8 text",
}


@pytest.mark.parametrize("kind", list(BYTE_DEFECTS))
@pytest.mark.parametrize("fmt", JSON_FORMATS)
def test_unreadable_json_files(tmp_path, fmt, kind):
    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    kwargs, path = _good_json(fmt, tmp_path)
    good = path.read_bytes()
    data.read(fmt, split="val", **kwargs)  # the untouched file reads
    path.write_bytes(_corrupt_bytes(kind, good))
    with pytest.raises(DataFileError) as e:
        data.read(fmt, split="val", **kwargs)
    assert str(path) in str(e.value) and BYTE_DEFECTS[kind] in str(e.value), str(e.value)


@pytest.mark.parametrize("fmt", JSON_FORMATS)
def test_missing_file_and_folder_in_its_place(tmp_path, fmt):
    SUMMARY["bad_cases"] += 2
    SUMMARY["file_cases"] += 2
    kwargs, path = _good_json(fmt, tmp_path)
    path.unlink()
    with pytest.raises(DataFileError, match="file not found") as e:
        data.read(fmt, split="val", **kwargs)
    assert str(path) in str(e.value)
    path.mkdir()
    with pytest.raises(DataFileError, match="not a regular file") as e:
        data.read(fmt, split="val", **kwargs)
    assert str(path) in str(e.value)


def _structure_defects(fmt: str) -> dict[str, tuple[Any, str]]:
    """Documents of the wrong shape for ``fmt``: {name: (document, phrase)}."""
    if fmt in LIST_FORMATS:
        return {"object_instead_of_list": ({"images": []}, LIST_FORMATS[fmt]),
                "number_instead_of_list": (42, LIST_FORMATS[fmt]),
                "null_document": (None, LIST_FORMATS[fmt])}  # fmt: skip
    out = {
        "list_instead_of_object": ([], "expected a JSON object at the top level, found list"),
        "string_document": ("images", "expected a JSON object at the top level, found str"),
        "missing_images": ({"annotations": []}, "missing key(s) ['images']"),
    }
    if fmt != "coco_image_info":
        out["missing_annotations"] = ({"images": []}, "missing key(s) ['annotations']")
        must_be_lists = "'images' and 'annotations' must be lists" if fmt == "3dpw_scorehypo" else None
        out["annotations_not_a_list"] = ({"images": [], "annotations": {"1": {}}},
                                         must_be_lists or "'annotations' must be a list, found dict")
        out["images_not_a_list"] = ({"images": "x", "annotations": []}, must_be_lists or "'images' must be a list, found str")
        if fmt != "3dpw_scorehypo":
            out["categories_not_a_list"] = ({"images": [], "annotations": [], "categories": {}},
                                            "'categories' must be a list, found dict")
    return out


STRUCTURE_CASES = [(fmt, name) for fmt in JSON_FORMATS for name in _structure_defects(fmt)]


@pytest.mark.parametrize("fmt, name", STRUCTURE_CASES, ids=[f"{f}:{n}" for f, n in STRUCTURE_CASES])
def test_wrong_document_structure(tmp_path, fmt, name):
    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    kwargs, path = _good_json(fmt, tmp_path)
    doc, phrase = _structure_defects(fmt)[name]
    write_json(path, doc)
    with pytest.raises(DataFileError) as e:
        data.read(fmt, split="val", **kwargs)
    assert str(path) in str(e.value) and phrase in str(e.value), str(e.value)


# --- InterHand: three files, each can be broken ----------------------------------------------------

IH_FILE_DEFECTS = [
    ("data", "truncated", "invalid JSON"),
    ("camera", "truncated", "invalid JSON"),
    ("joint_3d", "truncated", "invalid JSON"),
    ("data", "non_utf8", "not UTF-8"),
    ("camera", "non_utf8", "not UTF-8"),
    ("joint_3d", "non_utf8", "not UTF-8"),
    ("camera", "empty", "file is empty"),
    ("joint_3d", "nested_too_deep", "nested too deeply"),
    ("data", "list", "expected a JSON object at the top level, found list"),
    ("camera", "list", "expected a JSON object keyed by capture, found list"),
    ("joint_3d", "list", "expected a JSON object keyed by capture, found list"),
    ("data", "missing_annotations", "missing key(s) ['annotations']"),
    ("data", "images_not_a_list", "'images' and 'annotations' must be lists"),
    ("camera", "missing", "file not found"),
]


@pytest.mark.parametrize("which, kind, phrase", IH_FILE_DEFECTS, ids=[f"{w}:{k}" for w, k, _ in IH_FILE_DEFECTS])
def test_interhand_unusable_files(tmp_path, which, kind, phrase):
    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    files = interhand_files(tmp_path, None)
    data.read("interhand", split="val", **files)
    path = files[which]
    if kind == "list":
        write_json(path, [])
    elif kind == "missing_annotations":
        write_json(path, {"images": []})
    elif kind == "images_not_a_list":
        write_json(path, {"images": {}, "annotations": []})
    elif kind == "missing":
        path.unlink()
    else:
        path.write_bytes(_corrupt_bytes(kind, path.read_bytes()))
    with pytest.raises(DataFileError) as e:
        data.read("interhand", split="val", **files)
    assert str(path) in str(e.value) and phrase in str(e.value), str(e.value)


# --- MPII PCKh ground truth (.mat) ----------------------------------------------------------------


def _gt_mat(path: Path, persons: int, **over) -> Path:
    import scipy.io

    gt = {
        "dataset_joints": np.array([[np.array([f"j{i}"])] for i in range(16)], dtype=object),
        "jnt_missing": np.zeros((16, persons)),
        "pos_gt_src": np.ones((16, 2, persons)),
        "headboxes_src": np.tile(np.array([[1.0, 1.0], [30.0, 30.0]])[..., None], (1, 1, persons)),
    }
    gt.update(over)
    scipy.io.savemat(str(path), {k: v for k, v in gt.items() if v is not None})
    return path


MAT_DEFECTS = {
    "corrupt": ("not a readable .mat file", lambda p: p.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)),
    "truncated": ("not a readable .mat file", lambda p: p.write_bytes(_gt_mat(p, 1).read_bytes()[:150])),
    "missing_variable": ("missing variable(s) ['headboxes_src']", lambda p: _gt_mat(p, 1, headboxes_src=None)),
    "wrong_person_count": ("has 2 persons but mpii.json has 1", lambda p: _gt_mat(p, 2)),
    "wrong_shape": ("jnt_missing has shape (15, 1)", lambda p: _gt_mat(p, 1, jnt_missing=np.zeros((15, 1)))),
    "missing": ("file not found", lambda p: None),
}


@pytest.mark.parametrize("kind", list(MAT_DEFECTS))
def test_mpii_ground_truth_mat(tmp_path, kind):
    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    ann = write_json(tmp_path / "mpii.json", [mpii_person(1)])
    good = _gt_mat(tmp_path / "good.mat", 1)
    assert "head_size" in json.loads(data.read("mpii", annotations=ann, split="val", gt_mat=good)["extra"][0])
    phrase, make = MAT_DEFECTS[kind]
    bad = tmp_path / "gt.mat"
    make(bad)
    with pytest.raises(DataFileError) as e:
        data.read("mpii", annotations=ann, split="val", gt_mat=bad)
    assert str(bad) in str(e.value) and phrase in str(e.value), str(e.value)


# --- 3DPW sequence pickles ----------------------------------------------------------------------------


def _seq_with(**changes) -> Callable[[], dict]:
    def f() -> dict:
        s = pw3d_sequence()
        for k, v in changes.items():
            if v is None:
                s.pop(k)
            else:
                s[k] = v
        return s

    return f


PICKLE_DEFECTS: dict[str, tuple[Callable[[], Any], str]] = {
    "not_a_dict": (lambda: [pw3d_sequence()], "expected a dict, found list"),
    "missing_cam_poses": (_seq_with(cam_poses=None), "missing key(s) ['cam_poses']"),
    "cam_poses_wrong_shape": (_seq_with(cam_poses=np.zeros((4, 3, 4))), "'cam_poses' has shape (4, 3, 4)"),
    "cam_poses_strings": (_seq_with(cam_poses=np.full((4, 4, 4), "x")), "'cam_poses' is not numeric"),
    "cam_poses_ragged": (_seq_with(cam_poses=[np.eye(4), np.eye(3)]), "'cam_poses' is not numeric"),
    "intrinsics_wrong_shape": (_seq_with(cam_intrinsics=np.eye(4)), "'cam_intrinsics' has shape (4, 4)"),
    "intrinsics_strings": (_seq_with(cam_intrinsics="K"), "'cam_intrinsics' is not numeric"),
    "joints_wrong_shape": (_seq_with(jointPositions=[np.zeros((4, 69))]), "'jointPositions'[0] has shape (4, 69)"),
    "joints_not_a_list": (_seq_with(jointPositions=np.zeros((4, 72))), "'jointPositions' must be a non-empty list"),
    "joints_empty": (_seq_with(jointPositions=[]), "'jointPositions' must be a non-empty list"),
    "joints_strings": (_seq_with(jointPositions=[np.full((4, 72), "a")]), "'jointPositions' is not numeric"),
    "campose_valid_per_actor_mismatch": (_seq_with(campose_valid=[np.ones(4), np.ones(4)]),
                                         "2 campose_valid entries for 1 actors"),
    "campose_valid_wrong_length": (_seq_with(campose_valid=[np.ones(3)]), "'campose_valid'[0] has shape (3,)"),
}


def _write_pickle_file(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


@pytest.mark.parametrize("kind", list(PICKLE_DEFECTS))
def test_unusable_sequence_pickles(tmp_path, kind):
    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    make, phrase = PICKLE_DEFECTS[kind]
    path = _write_pickle_file(tmp_path / "seq" / f"{SEQ}.pkl", make())
    with pytest.raises(DataFileError) as e:
        data.read("3dpw_sequences", sequences=path, split="test")
    assert str(path) in str(e.value) and phrase in str(e.value), str(e.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "missing", "json_instead", "garbage", "folder_without_pkl",
                                  "one_bad_file_in_a_folder"])  # fmt: skip
def test_unreadable_sequence_pickles(tmp_path, kind):
    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    folder = tmp_path / "seq"
    good = pickle.dumps(pw3d_sequence(), protocol=2)
    path = folder / f"{SEQ}.pkl"
    folder.mkdir()
    phrase = {"truncated": "not a readable pickle", "empty": "not a readable pickle", "missing": "file not found",
              "json_instead": "not a readable pickle", "garbage": "not a readable pickle",
              "folder_without_pkl": "no .pkl sequence files", "one_bad_file_in_a_folder": "not a readable pickle"}[kind]  # fmt: skip
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "json_instead":
        path.write_bytes(b'{"sequence": "x"}')
    elif kind == "garbage":
        path.write_bytes(b"\xde\xad\xbe\xef" * 32)
    elif kind == "one_bad_file_in_a_folder":
        (folder / "a_good_00.pkl").write_bytes(pickle.dumps(pw3d_sequence(name="a_good_00"), protocol=2))
        path.write_bytes(good[:100])
    sources = folder if kind in ("folder_without_pkl", "one_bad_file_in_a_folder") else path
    with pytest.raises(DataFileError) as e:
        data.read("3dpw_sequences", sequences=sources, split="test")
    named = folder if kind == "folder_without_pkl" else path
    assert str(named) in str(e.value) and phrase in str(e.value), str(e.value)


# ----------------------------------------------------------------------------------------------
# Code-execution payloads: pickles and checkpoints
# ----------------------------------------------------------------------------------------------


class _Reduce:
    """Unpickles as ``fn(*args)``: any callable a pickle may name."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(marker: Path) -> dict[str, Any]:
    """Objects whose unpickling creates ``marker``."""
    return {
        "os.system": _Reduce(os.system, (f"touch '{marker}'",)),
        "builtins.exec": _Reduce(exec, (f"open({str(marker)!r}, 'w').close()",)),
        "builtins.eval": _Reduce(eval, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.check_call": _Reduce(subprocess.check_call, (["touch", str(marker)],)),
        "builtins.open": _Reduce(open, (str(marker), "w")),
        "pathlib.Path.touch": _Reduce(Path.touch, (Path(marker),)),
        "object_array": np.array([_Reduce(os.system, (f"touch '{marker}'",))], dtype=object),
    }


PAYLOADS = list(_payloads(Path("x")))
PROTOCOL0_SYSTEM = b"cposix\nsystem\n(S'touch %s'\ntR."  # a hand-written protocol-0 payload


def _marker(tmp_path: Path, what: str) -> Path:
    m = tmp_path / f"PWNED_{what}"
    MARKERS.append(m)
    return m


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_are_live(tmp_path, payload):
    """Control: a plain unpickler runs each payload (so the refusals below are what protect us)."""
    marker = tmp_path / "control"
    obj = pickle.loads(pickle.dumps(_payloads(marker)[payload], protocol=2))
    if hasattr(obj, "close"):
        obj.close()
    assert marker.exists()


@pytest.mark.parametrize("where", ["top_level", "nested_in_sequence", "genders"])
@pytest.mark.parametrize("payload", [*PAYLOADS, "protocol0_system"])
def test_sequence_pickle_payload_never_runs(tmp_path, payload, where):
    SUMMARY["bad_cases"] += 1
    SUMMARY["payloads_tried"] += 1
    marker = _marker(tmp_path, f"{payload}_{where}")
    path = tmp_path / "sequenceFiles" / f"{SEQ}.pkl"
    path.parent.mkdir()
    if payload == "protocol0_system":
        path.write_bytes(PROTOCOL0_SYSTEM % str(marker).encode())
    else:
        evil = _payloads(marker)[payload]
        seq = pw3d_sequence()
        obj = {"top_level": evil, "nested_in_sequence": {**seq, "poses": [seq["poses"][0], {"x": [evil]}]},
               "genders": {**seq, "genders": ["m", evil]}}[where]  # fmt: skip
        path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataFileError) as e:
        data.read("3dpw_sequences", sequences=path, split="test")
    assert str(path) in str(e.value) and "forbidden global" in str(e.value)
    assert not marker.exists()


@functools.cache
def _tiny_model():
    from posebh.models.posebh import ModelConfig, build_model

    return build_model(ModelConfig(size="tiny", datasets=("coco",)))


def _checkpoint_loaders() -> dict[str, Callable[[Path], Any]]:
    from posebh.engine.checkpoint import load_checkpoint
    from posebh.models.checkpoints import load_mae_vit, load_model, load_posebh, read_checkpoint
    from posebh.models.export import load_prototype_query, load_split
    from posebh.pipelines.io import TorchDataset

    def mae(p):
        return load_mae_vit(p, _tiny_model())

    return {
        "engine.load_checkpoint": load_checkpoint,
        "models.read_checkpoint": read_checkpoint,
        "models.load_model": load_model,
        "models.load_posebh": load_posebh,
        "models.load_mae_vit": mae,
        "export.load_split": load_split,
        "export.load_prototype_query": load_prototype_query,
        "catalog.TorchDataset": lambda p: TorchDataset(str(p)).load(),
    }


CHECKPOINT_LOADERS = list(_checkpoint_loaders())
CHECKPOINT_WRITERS = ("torch_zip", "torch_legacy", "raw_pickle")


def _write_checkpoint(path: Path, obj: Any, how: str) -> None:
    if how == "torch_zip":
        torch.save(obj, path)
    elif how == "torch_legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))


def _assert_checkpoint_error(e: BaseException, path: Path) -> None:
    from kedro.io import DatasetError

    from posebh.engine.checkpoint import CheckpointError as EngineError
    from posebh.models.checkpoints import CheckpointError as ModelError

    assert isinstance(e, (EngineError, ModelError, DatasetError)), repr(e)
    msg = str(e)
    assert str(path) in msg, msg
    assert "refused" in msg or "weights-only" in msg, msg


@pytest.mark.parametrize("how", CHECKPOINT_WRITERS)
@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("loader", CHECKPOINT_LOADERS)
def test_checkpoint_payload_never_runs(tmp_path, loader, payload, how):
    SUMMARY["bad_cases"] += 1
    SUMMARY["payloads_tried"] += 1
    marker = _marker(tmp_path, f"{loader}_{payload}_{how}")
    path = tmp_path / "evil.pt"
    evil = _payloads(marker)[payload]
    state = {"format": "posebh", "format_version": 1, "config": {"size": "tiny"},
             "state_dict": {"w": torch.zeros(2)}, "meta": [evil]}  # fmt: skip
    _write_checkpoint(path, state, how)
    assert not marker.exists()
    with pytest.raises(Exception) as e:
        _checkpoint_loaders()[loader](path)
    _assert_checkpoint_error(e.value, path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "json"])
@pytest.mark.parametrize("loader", CHECKPOINT_LOADERS)
def test_unreadable_checkpoints(tmp_path, loader, kind):
    from kedro.io import DatasetError

    from posebh.engine.checkpoint import CheckpointError as EngineError
    from posebh.models.checkpoints import CheckpointError as ModelError

    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, good)
    path = tmp_path / "bad.pt"
    path.write_bytes({"empty": b"", "truncated": good.read_bytes()[: good.stat().st_size // 2],
                      "garbage": b"\xde\xad\xbe\xef" * 75, "json": b'{"state_dict": {}}'}[kind])  # fmt: skip
    with pytest.raises((EngineError, ModelError, DatasetError)) as e:
        _checkpoint_loaders()[loader](path)
    assert str(path) in str(e.value)
    assert any(p in str(e.value) for p in ("empty", "truncated", "not a readable", "unreadable", "not a loadable")), \
        str(e.value)


# ----------------------------------------------------------------------------------------------
# Images in the top-down loader
# ----------------------------------------------------------------------------------------------

TOPDOWN_DEFECTS = {
    **{d: None for d in IMAGE_DEFECTS if d != "bomb"},
    "truncated_png": None,
    "file_name_dotdot": "path escapes the image root",
    "file_name_absolute": "absolute path",
}
TOPDOWN_PHRASES = {
    "missing": "image not found",
    "directory": "image not found",
    "zero_byte": "cannot decode image",
    "corrupt": "cannot decode image",
    "truncated_png": "cannot decode image",
    "symlink_outside_root": "resolves outside the image root",
}


@pytest.mark.parametrize("defect", list(TOPDOWN_DEFECTS))
def test_topdown_images(tmp_path, defect):
    """A sample with a broken image fails naming the file; the other samples still load."""
    from posebh.data.schema import make_table
    from posebh.data.topdown import TopDownDataset

    SUMMARY["bad_cases"] += 1
    SUMMARY["file_cases"] += 1
    root = tmp_path / "images"
    names = ["good_0.png", "bad.png", "good_1.png"]
    for n in names:
        write_image(root / n)
    if defect == "file_name_dotdot":
        names[1] = "../bad.png"
    elif defect == "file_name_absolute":
        names[1] = str(root / "bad.png")
    else:
        (root / "bad.png").unlink()
        if defect == "truncated_png":
            full = png_bytes()
            (root / "bad.png").write_bytes(full[: len(full) // 2])
        else:
            break_image(root, "bad.png", defect)
    n = len(names)
    table = make_table({"dataset": "coco", "split": "train", "image_id": np.arange(n), "file_name": names, "width": W,
                        "height": H, "instance_id": np.arange(n), "bbox": np.tile([50.0, 50.0, 200.0, 300.0], (n, 1)),
                        "area": 1.0, "iscrowd": 0, "keypoints": np.tile(_kps(17), (n, 1)), "num_keypoints": 17,
                        "category_id": 1, "category": "person"}, n)  # fmt: skip
    ds = TopDownDataset(table, image_roots={"coco": root}, datasets=["coco"], input_size=(48, 64))
    assert ds[0]["image"].shape == (3, 64, 48) and ds[2]["image"].shape == (3, 64, 48)
    with pytest.raises(DataFileError) as e:
        ds[1]
    msg = str(e.value)
    assert "bad.png" in msg and (TOPDOWN_DEFECTS[defect] or TOPDOWN_PHRASES[defect]) in msg, msg


# ----------------------------------------------------------------------------------------------
# The summary the issue's closing note needs
# ----------------------------------------------------------------------------------------------


def test_zz_summary(capsys):
    """Prints the counts; no payload ran, no good row was lost."""
    ran = [m for m in MARKERS if m.exists()]
    SUMMARY["payloads_run"] = len(ran)
    lost = SUMMARY["good_rows_in"] - SUMMARY["good_rows_kept"]
    lines = [
        "reliability corpus summary",
        f"  bad cases tried:        {SUMMARY['bad_cases']} ({SUMMARY['row_cases']} row-level, "
        f"{SUMMARY['file_cases']} whole-file, {SUMMARY['payloads_tried']} code-execution payloads)",
        f"  good rows in / kept:    {SUMMARY['good_rows_in']} / {SUMMARY['good_rows_kept']} (lost: {lost})",
        f"  bad rows in / quarantined (or flagged, dropped and counted): "
        f"{SUMMARY['bad_rows_in']} / {SUMMARY['rows_quarantined']}",
        f"  payloads run:           {SUMMARY['payloads_run']}",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not ran, f"payloads ran: {ran}"
    assert lost == 0 and SUMMARY["bad_rows_in"] == SUMMARY["rows_quarantined"]
