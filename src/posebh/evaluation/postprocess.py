"""mmpose's top-down post-processing before OKS evaluation: rescoring, then OKS-NMS per image.

The reference models' reported AP depends on it (reference datasets.md section 1 item 6 and
posebh-method.md 4.1): every OKS-evaluated dataset, with detector boxes or GT boxes, is
rescored and NMS-ed the same way.

* Rescoring: instance score = box score x mean of the keypoint scores above ``vis_thr``.
  When no keypoint score exceeds ``vis_thr`` the mean is taken as 0, so the instance scores 0
  (it stays in the results and ranks last). This is what mmpose 0.x's top-down datasets and
  1.x's ``CocoMetric`` both do (``kpt_score`` starts at 0 and is only divided when
  ``valid_num != 0``).
* OKS-NMS: greedy, highest score first; every remaining instance whose OKS with the kept one
  exceeds ``oks_thr`` is dropped. The OKS here is symmetric: the scale is the mean of the two
  instances' areas, and (as mmpose calls it, without ``vis_thr``) every joint counts. Ties in
  score keep the earlier row first (a stable sort), where mmpose's ``argsort()[::-1]`` is
  unspecified.
* NMS area: mmpose uses the area of the padded, aspect-fixed crop box (``prod(scale * 200)``).
  A predictions frame may carry it as an ``area`` column; otherwise it is recomputed from
  ``bbox`` with the model input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.evaluation.coco_eval import prediction_keypoints

#: mmpose's defaults (ViTPose / PoseBH configs): keypoint score threshold and NMS OKS threshold.
VIS_THR = 0.2
OKS_THR = 0.9
#: (w, h) input of the paper's 256x192 models, for the crop area when ``area`` is absent.
INPUT_SIZE = (192, 256)
_EPS = np.spacing(1)


def rescore(keypoint_scores: np.ndarray, box_scores: np.ndarray, vis_thr: float = VIS_THR) -> np.ndarray:
    """(N,) instance scores: box score x mean keypoint score above ``vis_thr`` (0 if none)."""
    s = np.asarray(keypoint_scores, np.float64)
    if s.ndim != 2:
        raise ValueError(f"keypoint_scores must be (N, K), got {s.shape}")
    above = s > vis_thr
    n = above.sum(axis=1)
    mean = np.where(n > 0, np.where(above, s, 0.0).sum(axis=1) / np.maximum(n, 1), 0.0)
    return np.asarray(box_scores, np.float64) * mean


def oks_iou(
    a: np.ndarray,
    others: np.ndarray,
    area_a: float,
    areas: np.ndarray,
    sigmas: Sequence[float],
    vis_thr: float | None = None,
) -> np.ndarray:
    """(M,) OKS between one pose ``a`` (K, 3) and ``others`` (M, K, 3) for NMS.

    Scale: the mean of the two areas. With ``vis_thr`` only joints scored above it in both
    poses count (an instance pair without such a joint has OKS 0); without, all joints count.
    """
    a = np.asarray(a, np.float64)
    others = np.asarray(others, np.float64).reshape(-1, *a.shape)
    var = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    d2 = ((others[..., :2] - a[None, :, :2]) ** 2).sum(axis=-1)
    scale = (float(area_a) + np.asarray(areas, np.float64)) / 2.0 + _EPS
    e = d2 / var[None] / scale[:, None] / 2.0
    if vis_thr is None:
        return np.exp(-e).mean(axis=1)
    use = (a[None, :, 2] > vis_thr) & (others[..., 2] > vis_thr)
    n = use.sum(axis=1)
    return np.where(n > 0, np.where(use, np.exp(-e), 0.0).sum(axis=1) / np.maximum(n, 1), 0.0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float],
    thr: float = OKS_THR,
    vis_thr: float | None = None,
) -> np.ndarray:
    """Indices kept by greedy OKS-NMS over one image's poses, highest score first."""
    kps = np.asarray(keypoints, np.float64)
    areas = np.asarray(areas, np.float64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        if rest.size == 0:
            break
        overlap = oks_iou(kps[i], kps[rest], areas[i], areas[rest], sigmas, vis_thr)
        order = rest[overlap <= thr]
    return np.asarray(keep, np.int64)


def crop_areas(bbox_xywh: np.ndarray, input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Area of mmpose's padded, aspect-fixed crop box of each (N, 4) box (its NMS area)."""
    from posebh.data.transforms import box_to_center_scale

    _, scale = box_to_center_scale(np.asarray(bbox_xywh, np.float64), input_size[0] / input_size[1])
    return scale[..., 0] * scale[..., 1]


def apply_topdown_postprocess(
    predictions: pd.DataFrame,
    *,
    dataset: str,
    vis_thr: float = VIS_THR,
    oks_thr: float = OKS_THR,
    use_nms: bool = True,
    input_size: tuple[int, int] = INPUT_SIZE,
) -> pd.DataFrame:
    """Rescore every prediction from its ``box_score`` and keypoint scores, then OKS-NMS per image.

    Returns a new frame (surviving rows in their original order, fresh index) whose ``score`` is
    the rescored one. Rescoring reads ``box_score``, never ``score``, so applying it twice
    changes nothing; NMS output is NMS-stable for the symmetric OKS used here.
    """
    out = predictions.copy()
    if len(out) == 0:
        return out.reset_index(drop=True)
    kps = prediction_keypoints(out)
    out["score"] = rescore(kps[..., 2], out["box_score"].to_numpy(np.float64), vis_thr)
    if not use_nms:
        return out.reset_index(drop=True)
    sigmas = skeletons.get(dataset).sigmas
    if sigmas is None:
        raise ValueError(f"{dataset} has no OKS sigmas, so OKS-NMS is undefined for it")
    if "area" in out.columns:
        areas = out["area"].to_numpy(np.float64)
    else:
        areas = crop_areas(np.stack(out["bbox"].to_numpy()), input_size)
    scores = out["score"].to_numpy(np.float64)
    group_cols = [c for c in ("dataset", "split", "image_id") if c in out.columns]
    kept: list[np.ndarray] = []
    for rows in out.groupby(group_cols, sort=False).indices.values():
        rows = np.asarray(rows)
        kept.append(rows[oks_nms(kps[rows], scores[rows], areas[rows], sigmas, oks_thr)])
    return out.iloc[np.sort(np.concatenate(kept))].reset_index(drop=True)


__all__ = [
    "VIS_THR",
    "OKS_THR",
    "INPUT_SIZE",
    "rescore",
    "oks_iou",
    "oks_nms",
    "crop_areas",
    "apply_topdown_postprocess",
]
