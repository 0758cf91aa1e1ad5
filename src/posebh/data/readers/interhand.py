"""InterHand2.6M (v1.0, 5 fps layout) as single-hand 2D instances, the way PoseBH builds them.

The release keeps 3D joints and cameras apart from the images: ``*_data.json`` (COCO-style images
and annotations), ``*_camera.json`` and ``*_joint_3d.json``. For each annotation the 42 world
joints (mm) of its capture and frame go to the camera of its image (X_c = R (X_w - campos)) and
then to pixels (u = fx X/Z + cx, v = fy Y/Z + cy).

Validity follows the official loader: each hand's ``joint_valid`` is multiplied by its root's
(the wrist: 20 right, 41 left). Each hand the annotation's ``hand_type`` names becomes one row
with 21 keypoints in InterHand's own order (right = joints 0-20, left = 21-41); a valid joint
gets v = 2 (the release does not encode occlusion, so "valid" is the only visibility there is)
and an invalid one v = 0 with x = y = 0. The box is the tightest box around the hand's valid
projected joints (PoseBH's rule; the metric normalises by its longer side); the annotation's own
box (both hands) is kept in ``extra``.

Every named hand is emitted, whatever its number of valid joints: PoseBH trains only on hands
with more than 11 valid joints, a selection left to the training data step
(:func:`trainable_hands`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError, UnsafePathError
from posebh.data.io import image_size_under, index_by_id, load_json, lookup_image, require_keys
from posebh.data.paths import relative_file_name
from posebh.data.projection import camera_from_center, project_pinhole, tight_boxes
from posebh.data.schema import ISSUE_SEPARATOR, make_table

DATASET = "interhand"
#: the two hands in the release's 42-joint layout, in order (right joints first)
HAND_SIDES = ("right", "left")
#: which sides each ``hand_type`` value names
HAND_TYPE_SIDES = {"right": (0,), "left": (1,), "interacting": (0, 1)}
#: PoseBH trains on hands with more than this many valid joints
POSEBH_MIN_VALID_JOINTS = 11
#: decimals kept for the camera-frame joints in ``extra`` (mm; 1 micrometre)
JOINTS_CAM_DECIMALS = 3
NO_VALID_JOINT = "hand has no valid joint"
#: annotations projected per numpy pass
CHUNK = 65536


def trainable_hands(table: pd.DataFrame, min_valid: int = POSEBH_MIN_VALID_JOINTS) -> pd.Series:
    """Mask of the rows PoseBH trains on: more than ``min_valid`` valid joints."""
    return table["num_keypoints"] > min_valid


def _stack(values: list, shape: tuple[int, ...], missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, *shape) float64 from per-row nested lists, plus a mask of the rows that fit.

    Rows flagged in ``missing`` are not read. One conversion does a well-formed chunk; only a
    chunk with a bad row falls back to row by row.
    """
    n, size = len(values), int(np.prod(shape))
    out = np.full((n, *shape), np.nan)
    ok = ~missing
    idx = np.flatnonzero(ok)
    try:
        arr = np.asarray([values[i] for i in idx], np.float64)
        if arr.size == len(idx) * size:
            out[idx] = arr.reshape(len(idx), *shape)
            return out, ok
    except (ValueError, TypeError):
        pass
    for i in idx:
        try:
            a = np.asarray(values[i], np.float64)
            out[i] = a.reshape(shape) if a.size == size else np.nan
            ok[i] = a.size == size
        except (ValueError, TypeError):
            ok[i] = False
    return out, ok


class _Camera(NamedTuple):
    rot: np.ndarray  # (3, 3)
    campos: np.ndarray  # (3,)
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy


def _camera(cams: dict, capture: str, cam: str) -> _Camera | str:
    """The camera of an image, or the reason it cannot be had."""
    try:
        c = cams[capture]
        cam_obj = _Camera(
            np.asarray(c["camrot"][cam], np.float64).reshape(3, 3),
            np.asarray(c["campos"][cam], np.float64).reshape(3),
            np.concatenate([np.asarray(c["focal"][cam], np.float64).reshape(2),
                            np.asarray(c["princpt"][cam], np.float64).reshape(2)]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        return f"no camera {cam} for capture {capture} ({type(e).__name__}: {e})"
    return cam_obj


@register_reader(DATASET)
def read_interhand(
    *,
    data: str | Path,
    camera: str | Path,
    joint_3d: str | Path,
    split: str,
    dataset: str = DATASET,
    image_root: str | Path | None = None,
    keep_joints_cam: bool = True,
) -> pd.DataFrame:
    """Read the three InterHand2.6M jsons of one split: one row per annotated hand.

    ``image_root`` is only read for images whose entry lacks width/height. ``keep_joints_cam``
    writes each hand's camera-frame joints (mm) into ``extra``; at the full training split that
    is the bulk of the table, so it can be turned off.
    """
    data_path, cam_path, j3d_path = Path(data), Path(camera), Path(joint_3d)
    d = load_json(data_path)
    require_keys(d, ("images", "annotations"), data_path)
    cams = load_json(cam_path)
    if not isinstance(cams, dict):
        raise DataFileError(cam_path, f"expected a JSON object keyed by capture, found {type(cams).__name__}")
    joints = load_json(j3d_path)
    if not isinstance(joints, dict):
        raise DataFileError(j3d_path, f"expected a JSON object keyed by capture, found {type(joints).__name__}")
    anns = d["annotations"]
    if not isinstance(d["images"], list) or not isinstance(anns, list):
        raise DataFileError(data_path, "'images' and 'annotations' must be lists")
    images, repeated = index_by_id(d["images"])

    skel = skeletons.get(DATASET)
    k = skel.num_keypoints
    nj = k * len(HAND_SIDES)
    roots = np.repeat([s * k + skel.index("wrist") for s in range(len(HAND_SIDES))], k)
    na = len(anns)

    # pass 1, plain Python: resolve each annotation's image, frame and camera
    metas: list[tuple[dict, dict]] = []
    world_src: list = [None] * na
    valid_src: list = [None] * na
    cam_index = np.full(na, -1, np.int64)
    cameras: list[_Camera] = []
    cam_lookup: dict[tuple[str, str], int | str] = {}
    ann_issues: list[list[str]] = [[] for _ in range(na)]
    for i, ann in enumerate(anns):
        ann = ann if isinstance(ann, dict) else {}
        img, ambiguous = lookup_image(images, repeated, ann.get("image_id"))
        metas.append((ann, img))
        if not ann or not img:
            problem = f"image {ann.get('image_id')!r} not in images" if ann else "malformed annotation entry"
            ann_issues[i].append(problem)
            continue
        if ambiguous:
            ann_issues[i].append(ambiguous)
        capture, cam, frame = str(img.get("capture")), str(img.get("camera")), str(img.get("frame_idx"))
        valid_src[i] = ann.get("joint_valid")
        try:
            world_src[i] = joints[capture][frame]["world_coord"]
        except (KeyError, TypeError) as e:
            ann_issues[i].append(f"no world joints for capture {capture} frame {frame} ({type(e).__name__}: {e})")
        key = (capture, cam)
        if key not in cam_lookup:
            c = _camera(cams, capture, cam)
            if isinstance(c, str):
                cam_lookup[key] = c
            else:
                cam_lookup[key] = len(cameras)
                cameras.append(c)
        found = cam_lookup[key]
        if isinstance(found, str):
            ann_issues[i].append(found)
        else:
            cam_index[i] = found
    rot = np.stack([c.rot for c in cameras] + [np.eye(3)])  # the last entry stands in for "none"
    campos = np.stack([c.campos for c in cameras] + [np.zeros(3)])
    intr = np.stack([c.intrinsics for c in cameras] + [np.ones(4)])

    # rows: one per named hand
    ann_idx, sides = [], []
    for i, (ann, _) in enumerate(metas):
        hand_type = ann.get("hand_type")
        hand_sides = HAND_TYPE_SIDES.get(hand_type)
        if hand_sides is None and ann:
            ann_issues[i].append(f"unknown hand_type {hand_type!r}")
        for side in hand_sides or range(len(HAND_SIDES)):
            ann_idx.append(i)
            sides.append(side)
    ann_idx = np.asarray(ann_idx, np.int64)
    sides = np.asarray(sides, np.int64)
    n = len(ann_idx)

    # pass 2, numpy in chunks (the full training split does not fit as float64 at once)
    kps = np.zeros((n, k, 3), np.float32)
    bbox = np.zeros((n, 4))
    num_kp = np.zeros(n, np.int64)
    hand_cam = np.zeros((n, k, 3), np.float32) if keep_joints_cam else None
    failed = np.zeros(na, bool)
    for lo in range(0, na, CHUNK):
        hi = min(lo + CHUNK, na)
        chunk = slice(lo, hi)
        no_world = np.asarray([w is None for w in world_src[chunk]])
        world, world_ok = _stack(world_src[chunk], (nj, 3), no_world)
        valid_f, valid_ok = _stack(valid_src[chunk], (nj,), np.asarray([v is None for v in valid_src[chunk]]))
        cidx = cam_index[chunk]
        bad = ~world_ok | ~valid_ok | (cidx < 0)
        for i in np.flatnonzero(~world_ok & ~no_world):
            ann_issues[lo + i].append("world_coord is not 42 x 3 numbers")
        for i in np.flatnonzero(~valid_ok & world_ok):
            ann_issues[lo + i].append("joint_valid is not 42 numbers")
        failed[chunk] = bad
        cam_xyz = camera_from_center(world, rot[cidx][:, None], campos[cidx][:, None])
        uv, depth = project_pinhole(cam_xyz, *(intr[cidx][:, j, None] for j in range(4)))
        valid = np.nan_to_num(valid_f) > 0
        valid &= valid[:, roots]
        projectable = np.isfinite(uv).all(axis=-1) & (depth > 0)
        for i in np.flatnonzero((valid & ~projectable).any(axis=1) & ~bad):
            ann_issues[lo + i].append("valid joint behind the camera or not finite")
        valid &= projectable

        rows = np.flatnonzero((ann_idx >= lo) & (ann_idx < hi))
        local = ann_idx[rows] - lo
        cols = sides[rows, None] * k + np.arange(k)
        h_uv = uv[local[:, None], cols]
        h_valid = valid[local[:, None], cols]
        kps[rows, :, :2] = np.where(h_valid[..., None], h_uv, 0.0)
        kps[rows, :, 2] = np.where(h_valid, 2, 0)
        bbox[rows] = tight_boxes(h_uv, h_valid)
        num_kp[rows] = h_valid.sum(axis=1)
        if hand_cam is not None:
            hand_cam[rows] = cam_xyz[local[:, None], cols]
    kps[failed[ann_idx]] = np.nan
    joints_cam_lists = None
    if hand_cam is not None:
        joints_cam_lists = np.round(hand_cam.astype(np.float64), JOINTS_CAM_DECIMALS).tolist()

    row_issues = [list(ann_issues[i]) for i in ann_idx]
    for r in np.flatnonzero(num_kp == 0):
        if not row_issues[r]:
            row_issues[r] = [NO_VALID_JOINT]
    image_ids, file_names, width, height, extra, inst_ids = [], [], [], [], [], []
    size_cache: dict[str, tuple[int, int] | None] = {}
    for r, (i, side) in enumerate(zip(ann_idx, sides)):
        ann, img = metas[i]
        raw_name = str(img.get("file_name", ""))
        try:
            name = relative_file_name(raw_name)
        except UnsafePathError as e:
            name = raw_name
            row_issues[r] = row_issues[r] + [f"unsafe file name: {e.problem}"]
        w, h = img.get("width"), img.get("height")
        if _positive(w) and _positive(h):
            w, h = int(w), int(h)
        else:
            if name not in size_cache:
                size_cache[name] = image_size_under(image_root, name)[0]
            w, h = size_cache[name] or (0, 0)
            if not w:
                row_issues[r] = row_issues[r] + ["image size unknown"]
        ann_id = int(ann.get("id", -1)) if isinstance(ann.get("id"), int) else -1
        image_ids.append(int(img["id"]) if isinstance(img.get("id"), int) else -1)
        file_names.append(name)
        width.append(w)
        height.append(h)
        inst_ids.append(ann_id * len(HAND_SIDES) + int(side) if ann_id >= 0 else -1)
        e = {
            "annotation_id": ann_id,
            "hand": HAND_SIDES[side],
            "hand_type": ann.get("hand_type"),
            "hand_type_valid": ann.get("hand_type_valid"),
            "annotation_bbox": ann.get("bbox"),
            "capture": img.get("capture"),
            "subject": img.get("subject"),
            "seq_name": img.get("seq_name"),
            "camera": img.get("camera"),
            "frame_idx": img.get("frame_idx"),
        }
        if joints_cam_lists is not None and not failed[i]:
            e["joints_cam"] = joints_cam_lists[r]
        extra.append(e)
    inst = np.asarray(inst_ids, np.int64)
    for r in np.flatnonzero(inst < 0):
        row_issues[r] = row_issues[r] + ["annotation has no integer id"]

    return make_table(
        {
            "dataset": dataset,
            "split": split,
            "image_id": np.asarray(image_ids, np.int64),
            "file_name": file_names,
            "width": np.asarray(width, np.int64),
            "height": np.asarray(height, np.int64),
            "instance_id": inst,
            "bbox": bbox,
            "area": skeletons.oks_area(bbox, skel.area_rule),
            "iscrowd": 0,
            "keypoints": kps.reshape(n, 3 * k),
            "num_keypoints": num_kp,
            "category_id": 1,
            "category": skel.category,
            "extra": extra,
            "issue": [(ISSUE_SEPARATOR.join(m) or None) for m in row_issues],
        },
        n,
    )


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0
