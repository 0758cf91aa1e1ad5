"""3DPW instances from camera-frame SMPL joints: shared by both 3DPW readers and the prepare step.

PoseBH trains on 24 SMPL joints projected into the image. Whichever release a row comes from
(the official sequence pickles or the ScoreHypo json), the readers store the camera-frame joints
and the intrinsics in ``extra`` (``joints_cam``, ``intrinsics`` = [fx, fy, cx, cy]) and build the
2D instance here, so :func:`reproject_3dpw` can rebuild it later with other parameters.

Visibility: a joint is labelled (v = 2) when it projects inside the image (0 <= u < W,
0 <= v < H) and lies in front of the camera (depth > ``min_depth``); otherwise v = 0 with
x = y = 0. PoseBH's json stores 1 for such joints, but its training treats every v > 0 alike and
OKS counts v > 0, so 2 is equivalent and keeps the table's "labelled" meaning (occlusion is not
known for projected joints). The box is not in the release: it is the box around the labelled
joints, grown by ``box_padding`` about its centre and clipped to the image; the OKS area follows
the registry's area_rule (0.53 w h).
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data.schema import ISSUE_SEPARATOR
from posebh.data.projection import intrinsics_from_K, project_pinhole, tight_boxes

DATASET = "3dpw"
DEFAULT_BOX_PADDING = 1.2
DEFAULT_MIN_DEPTH = 0.0
#: ``issue`` of a row none of whose joints is labelled (no box can be built).
NO_VISIBLE_JOINT = "no joint projects inside the image"
#: ``issue`` of a row whose camera-frame joints are missing or not finite.
BAD_JOINTS = "camera-frame joints missing or not finite"
#: the ``extra`` keys the 3DPW readers write and :func:`reproject_3dpw` reads
JOINTS_CAM_KEY = "joints_cam"
INTRINSICS_KEY = "intrinsics"
#: the release's own box (ScoreHypo json); when present it is the row's box, as in PoseBH
RELEASE_BBOX_KEY = "annotation_bbox"
_REPROJECT_ISSUES = (NO_VISIBLE_JOINT, BAD_JOINTS)


class SMPLInstances(NamedTuple):
    keypoints: np.ndarray  # (N, 3K) float32
    bbox: np.ndarray  # (N, 4) float64 xywh
    num_keypoints: np.ndarray  # (N,) int64
    area: np.ndarray  # (N,) float64
    depth: np.ndarray  # (N, K) float64, the camera-frame Z of each joint


def _intrinsics(intrinsics, n: int) -> np.ndarray:
    """(N, 4) [fx, fy, cx, cy] from one K, N Ks, one 4-vector or N 4-vectors."""
    a = np.asarray(intrinsics, np.float64)
    if a.shape[-2:] == (3, 3):
        a = np.stack(intrinsics_from_K(a), axis=-1)
    if a.shape[-1] != 4:
        raise ValueError(f"intrinsics must be K (3x3) or [fx, fy, cx, cy], got shape {a.shape}")
    return np.broadcast_to(a.reshape(-1, 4) if a.ndim > 1 else a, (n, 4))


def smpl_instances(
    joints_cam: np.ndarray,
    intrinsics,
    width,
    height,
    *,
    box_padding: float = DEFAULT_BOX_PADDING,
    min_depth: float = DEFAULT_MIN_DEPTH,
) -> SMPLInstances:
    """Project (N, K, 3) camera-frame joints and build keypoints, boxes and counts.

    ``intrinsics`` is a K matrix or [fx, fy, cx, cy], shared or one per instance; ``width`` and
    ``height`` are scalars or (N,) arrays (``np.inf`` when unknown: only depth is then checked).
    """
    X = np.asarray(joints_cam, np.float64)
    if X.ndim != 3 or X.shape[-1] != 3:
        raise ValueError(f"joints_cam must have shape (N, K, 3), got {X.shape}")
    n, k = X.shape[:2]
    f = _intrinsics(intrinsics, n)
    uv, depth = project_pinhole(X, *(f[:, i, None] for i in range(4)))
    W = np.broadcast_to(np.asarray(width, np.float64), (n,))[:, None]
    H = np.broadcast_to(np.asarray(height, np.float64), (n,))[:, None]
    vis = (
        (depth > min_depth)
        & np.isfinite(uv).all(axis=-1)
        & (uv[..., 0] >= 0) & (uv[..., 0] < W)
        & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    )  # fmt: skip
    kps = np.zeros((n, k, 3), np.float32)
    kps[..., :2] = np.where(vis[..., None], uv, 0.0)
    kps[..., 2] = np.where(vis, 2, 0)
    box = tight_boxes(uv, vis)
    centre = box[:, :2] + box[:, 2:] / 2
    half = box[:, 2:] * box_padding / 2
    lo = np.maximum(centre - half, 0.0)
    hi = np.minimum(centre + half, np.concatenate([W, H], axis=1))
    box = np.where(vis.any(axis=1)[:, None], np.concatenate([lo, hi - lo], axis=1), 0.0)
    area = skeletons.oks_area(box, skeletons.get(DATASET).area_rule)
    return SMPLInstances(kps.reshape(n, 3 * k), box, vis.sum(axis=1).astype(np.int64), area, depth)


def reproject_3dpw(
    table: pd.DataFrame,
    *,
    box_padding: float = DEFAULT_BOX_PADDING,
    min_depth: float = DEFAULT_MIN_DEPTH,
) -> pd.DataFrame:
    """A copy of a 3DPW table with keypoints, bbox, area and num_keypoints rebuilt from ``extra``.

    A row whose ``extra`` has the release's own box (``annotation_bbox``) keeps that box.
    Unknown image sizes (0) leave the image bounds unchecked, as the readers do. Only the issues
    this step itself sets are recomputed; any other issue a row carries is kept.
    """
    out = table.copy()
    n = len(out)
    if n == 0:
        return out
    k = skeletons.get(DATASET).num_keypoints
    joints = np.full((n, k, 3), np.nan)
    intr = np.full((n, 4), np.nan)
    release_box = np.full((n, 4), np.nan)
    for i, e in enumerate(out["extra"]):
        d = json.loads(e)
        rb = np.asarray(d.get(RELEASE_BBOX_KEY, []), np.float64)
        if rb.shape == (4,):
            release_box[i] = rb
        jc = np.asarray(d.get(JOINTS_CAM_KEY, []), np.float64)
        it = np.asarray(d.get(INTRINSICS_KEY, []), np.float64)
        if jc.shape == (k, 3) and it.shape == (4,):
            joints[i], intr[i] = jc, it
    ok = np.isfinite(joints).all(axis=(1, 2)) & np.isfinite(intr).all(axis=1)
    W = out["width"].to_numpy(np.float64)
    H = out["height"].to_numpy(np.float64)
    inst = smpl_instances(
        np.where(ok[:, None, None], joints, 0.0),
        np.where(ok[:, None], intr, 1.0),
        np.where(W > 0, W, np.inf),
        np.where(H > 0, H, np.inf),
        box_padding=box_padding,
        min_depth=min_depth,
    )
    kps = np.where(ok[:, None], inst.keypoints, np.nan).astype(np.float32)
    has_release = np.isfinite(release_box).all(axis=1)
    box = np.where(has_release[:, None], release_box, np.where(ok[:, None], inst.bbox, 0.0))
    out["keypoints"] = list(kps)
    out["bbox"] = list(box)
    out["area"] = skeletons.oks_area(box, skeletons.get(DATASET).area_rule)
    out["num_keypoints"] = pd.array(np.where(ok, inst.num_keypoints, 0), dtype="int64")
    out["issue"] = pd.array(issues_for(out["issue"], ok, inst.num_keypoints), dtype="string")
    return out


def issues_for(previous, joints_ok: np.ndarray, num_keypoints: np.ndarray) -> list[str | None]:
    """Per-row issue after a (re)projection: the reasons other steps gave are kept, this step's
    own (:data:`BAD_JOINTS`, :data:`NO_VISIBLE_JOINT`) are recomputed."""
    result = []
    for prev, good, nk in zip(previous, joints_ok, num_keypoints):
        parts = [] if pd.isna(prev) else [p for p in str(prev).split(ISSUE_SEPARATOR) if p not in _REPROJECT_ISSUES]
        if not good:
            parts.append(BAD_JOINTS)
        elif nk == 0:
            parts.append(NO_VISIBLE_JOINT)
        result.append(ISSUE_SEPARATOR.join(parts) or None)
    return result

