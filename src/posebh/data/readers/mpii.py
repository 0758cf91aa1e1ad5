"""MPII Human Pose in the mmpose / HRNet json layout, plus the PCKh ground-truth .mat.

The json is a list of persons {image, center, scale, joints (16 x [x, y], 1-based, missing =
[-1, -1]), joints_vis}. The reader reproduces mmpose's MPII loader so crops and metrics match:

* coordinates become 0-based (minus 1), and PCKh adds the 1 back;
* when center_x != -1, center_y += 15 * scale and scale *= 1.25 (the raw and the adjusted
  values are both kept in ``extra``);
* ``joints_vis`` means "annotated" (MPII's json does not encode occlusion), so an annotated joint
  gets v = 2 and a missing one v = 0 with x = y = 0;
* the row order is the file order, and ``instance_id`` is the 1-based position, because the
  PCKh ground truth's columns follow the json order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data import register_reader
from posebh.data.errors import DataFileError, UnsafePathError
from posebh.data.io import NO_IMAGE_ROOT, image_size_under, load_json
from posebh.data.paths import relative_file_name
from posebh.data.schema import ISSUE_SEPARATOR, make_table

DATASET = "mpii"
#: mmpose's "pixel std": scale s means a person box side of 200 s pixels
PIXEL_STD = 200.0
#: mmpose's MPII adjustments of the release's rough person centre and scale
CENTER_Y_SHIFT = 15.0
SCALE_PADDING = 1.25
#: the release's marker of an absent centre (center_x == -1 skips the adjustments)
NO_CENTER = -1.0
#: MPII coordinates are Matlab (1-based)
ONE_BASED = 1.0
#: PCKh head-size factor: 0.6 times the head-box diagonal
SC_BIAS = 0.6
#: ``issue`` of rows whose image size could not be read because no image root was given
_REQUIRED = ("image", "center", "scale")
_GT_KEYS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")


@dataclass(frozen=True)
class MPIIGroundTruth:
    """The PCKh ground truth, persons in json order, coordinates 0-based."""

    joint_names: tuple[str, ...]
    missing: np.ndarray  # (P, 16) bool
    positions: np.ndarray  # (P, 16, 2)
    head_boxes: np.ndarray  # (P, 2, 2): [[x1, y1], [x2, y2]]
    head_sizes: np.ndarray  # (P,)

    @property
    def num_persons(self) -> int:
        return len(self.head_sizes)


def load_mpii_gt(path: str | Path) -> MPIIGroundTruth:
    """Read ``mpii_gt_val.mat`` (or the same variables in another .mat); pos_pred_src is ignored."""
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise DataFileError(p, "file not found" if not p.exists() else "not a regular file")
    try:
        m = scipy.io.loadmat(str(p))
    except Exception as e:  # scipy raises several unrelated types for a bad .mat
        raise DataFileError(p, f"not a readable .mat file: {e}") from e
    missing_keys = [k for k in _GT_KEYS if k not in m]
    if missing_keys:
        raise DataFileError(p, f"missing variable(s) {missing_keys}")
    k = skeletons.get(DATASET).num_keypoints
    names = tuple(str(np.asarray(n).reshape(-1)[0]) for n in np.asarray(m["dataset_joints"]).reshape(-1))
    jm, pos, hb = (np.asarray(m[key]) for key in ("jnt_missing", "pos_gt_src", "headboxes_src"))
    if jm.ndim != 2 or jm.shape[0] != k:
        raise DataFileError(p, f"jnt_missing has shape {jm.shape}, expected ({k}, P)")
    n = jm.shape[1]
    if pos.shape != (k, 2, n) or hb.shape != (2, 2, n) or len(names) != k:
        raise DataFileError(
            p,
            f"inconsistent shapes: pos_gt_src {pos.shape}, headboxes_src {hb.shape}, "
            f"{len(names)} joint names, for {n} persons of {k} joints",
        )
    boxes = hb.transpose(2, 0, 1).astype(np.float64) - ONE_BASED
    return MPIIGroundTruth(
        joint_names=names,
        missing=jm.T.astype(bool),
        positions=pos.transpose(2, 0, 1).astype(np.float64) - ONE_BASED,
        head_boxes=boxes,
        head_sizes=SC_BIAS * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1),
    )


def _parse_entry(entry, k: int):
    """(joints (k,2), vis (k,), center (2,), scale) of one json person; raises on a bad entry."""
    if not isinstance(entry, dict):
        raise ValueError(f"entry is a {type(entry).__name__}, not an object")
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    center = np.asarray(entry["center"], np.float64).reshape(-1)
    scale = float(entry["scale"])
    if center.shape != (2,) or not np.isfinite(center).all() or not np.isfinite(scale) or scale <= 0:
        raise ValueError("center/scale malformed")
    if "joints" in entry or "joints_vis" in entry:
        joints = np.asarray(entry["joints"], np.float64)
        vis = np.asarray(entry["joints_vis"], np.float64).reshape(-1)
        if joints.shape != (k, 2) or vis.shape != (k,):
            raise ValueError(f"joints/joints_vis have shapes {joints.shape}/{vis.shape}, expected ({k}, 2)/({k},)")
        odd = ~np.isin(vis, (0, 1))
        if odd.any():  # the release's flag is 0/1 ("annotated"); anything else is not guessed at
            raise ValueError(f"joints_vis values {sorted(set(vis[odd].tolist()))} not in {{0, 1}}")
    else:  # the test split has no joints: every joint is unlabelled
        joints, vis = np.zeros((k, 2)), np.zeros(k)
    return joints, vis, center, scale


@register_reader(DATASET)
def read_mpii(
    *,
    annotations: str | Path,
    split: str,
    dataset: str = DATASET,
    image_root: str | Path | None = None,
    gt_mat: str | Path | None = None,
) -> pd.DataFrame:
    """Read an mmpose/HRNet MPII json into the unified table (one row per person, file order).

    ``bbox`` is the square of side 200 * raw_scale centred at the adjusted (0-based) centre.
    The generic box -> (center, scale) step (scale = side / 200 * 1.25, then grown to the input
    aspect ratio keeping the width) then gives mmpose's MPII crop exactly: centre = adjusted
    centre, scale = 1.25 * raw_scale in width, and mmpose's affine warp only uses the width.

    With ``gt_mat`` (the PCKh .mat), each row's ``extra`` also gets ``head_box`` (0-based x1, y1,
    x2, y2) and ``head_size``; the .mat must hold exactly the json's persons.
    """
    path = Path(annotations)
    data = load_json(path)
    if not isinstance(data, list):
        raise DataFileError(path, f"expected a JSON list of persons, found {type(data).__name__}")
    skel = skeletons.get(DATASET)
    k, n = skel.num_keypoints, len(data)
    gt = None
    if gt_mat is not None:
        gt = load_mpii_gt(gt_mat)
        if gt.num_persons != n:
            raise DataFileError(gt_mat, f"has {gt.num_persons} persons but {path.name} has {n}")

    joints = np.zeros((n, k, 2))
    vis = np.zeros((n, k), bool)
    center_raw = np.zeros((n, 2))
    scale_raw = np.zeros(n)
    parsed = np.zeros(n, bool)
    issues: list[list[str]] = [[] for _ in range(n)]
    raw_names: list[str] = []
    for i, entry in enumerate(data):
        raw_names.append(str(entry.get("image", "")) if isinstance(entry, dict) else "")
        try:
            j, v, c, s = _parse_entry(entry, k)
        except (ValueError, TypeError) as e:
            issues[i].append(f"malformed person entry: {e}")
            continue
        labelled = v > 0
        if not np.isfinite(j[labelled]).all():
            issues[i].append("non-finite joint coordinates")
            labelled &= np.isfinite(j).all(axis=1)
        joints[i], vis[i], center_raw[i], scale_raw[i], parsed[i] = j, labelled, c, s, True

    has_center = parsed & (center_raw[:, 0] != NO_CENTER)
    center = center_raw.copy()
    center[has_center, 1] += CENTER_Y_SHIFT * scale_raw[has_center]
    center -= ONE_BASED
    scale = np.where(has_center, scale_raw * SCALE_PADDING, scale_raw)
    for i in np.flatnonzero(parsed & ~has_center):
        issues[i].append("no person centre (center_x = -1)")

    kps = np.zeros((n, k, 3), np.float32)
    kps[..., :2] = np.where(vis[..., None], joints - ONE_BASED, 0.0)
    kps[..., 2] = np.where(vis, 2, 0)
    kps[~parsed] = np.nan
    side = PIXEL_STD * scale_raw
    bbox = np.stack([center[:, 0] - side / 2, center[:, 1] - side / 2, side, side], axis=1)
    bbox[~has_center] = 0.0

    file_names = _file_names(raw_names, issues)
    width, height = _image_sizes(image_root, file_names, issues)
    extra = []
    for i in range(n):
        e = {
            "center_raw": center_raw[i].tolist(),
            "scale_raw": float(scale_raw[i]),
            "center": center[i].tolist() if parsed[i] else [0.0, 0.0],
            "scale": float(scale[i]),
        }
        if gt is not None:
            e["head_box"] = gt.head_boxes[i].reshape(4).tolist()
            e["head_size"] = float(gt.head_sizes[i])
        extra.append(e)

    df = make_table(
        {
            "dataset": dataset,
            "split": split,
            "image_id": _image_ids(file_names),
            "file_name": file_names,
            "width": width,
            "height": height,
            "instance_id": np.arange(1, n + 1),
            "bbox": bbox,
            "area": skeletons.oks_area(bbox, skel.area_rule),
            "iscrowd": 0,
            "keypoints": kps.reshape(n, 3 * k),
            "num_keypoints": vis.sum(axis=1),
            "category_id": 1,
            "category": skel.category,
            "extra": extra,
            "issue": [(ISSUE_SEPARATOR.join(m) or None) for m in issues],
        },
        n,
    )
    if gt is not None:
        both = vis & ~gt.missing
        diff = np.abs(kps[..., :2] - gt.positions)[both]
        df.attrs["gt_mat_max_joint_difference"] = float(diff.max()) if diff.size else 0.0
    return df


def _file_names(raw: list[str], issues: list[list[str]]) -> list[str]:
    out = []
    for i, name in enumerate(raw):
        try:
            out.append(relative_file_name(name))
        except UnsafePathError as e:
            out.append(name)
            issues[i].append(f"unsafe file name: {e.problem}")
    return out


def _image_sizes(image_root, file_names: list[str], issues: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Width and height from each distinct image's header (0 and an issue when unreadable)."""
    n = len(file_names)
    width, height = np.zeros(n, np.int64), np.zeros(n, np.int64)
    cache: dict[str, tuple[int, int] | None] = {}
    for i, name in enumerate(file_names):
        if name not in cache:
            cache[name] = image_size_under(image_root, name)[0]
        size = cache[name]
        if size is None:
            issues[i].append(NO_IMAGE_ROOT if image_root is None else "image missing or unreadable")
        else:
            width[i], height[i] = size
    return width, height


def _image_ids(file_names: list[str]) -> np.ndarray:
    """The 9-digit MPII stem as the id; other names get ids after the largest parsed one."""
    parsed = {name: int(Path(name).stem) for name in file_names if _is_number(Path(name).stem)}
    next_id = max(parsed.values(), default=0) + 1
    ids = []
    for name in file_names:
        if name not in parsed:
            parsed[name] = next_id
            next_id += 1
        ids.append(parsed[name])
    return np.asarray(ids, np.int64)


def _is_number(stem: str) -> bool:
    return stem.isascii() and stem.isdigit()
