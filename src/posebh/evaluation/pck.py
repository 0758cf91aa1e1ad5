"""Distance metrics: MPII PCKh, mmpose's PCK/AUC/EPE (InterHand2.6M) and mean pixel error.

All in plain numpy; the protocols are reference datasets.md 13.4 and 13.5.

Threshold comparison differs between the two protocols on purpose: MPII's evaluation counts a
joint correct at ``err <= thr``, mmpose's PCK at ``err < thr`` (so PCK at threshold 0 is 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from posebh import skeletons

if TYPE_CHECKING:
    from posebh.data.readers.mpii import MPIIGroundTruth

#: MPII's summary leaves these joints out (their counts get weight 0).
PCKH_EXCLUDED = ("pelvis", "thorax")
#: The MPII report's parts: each the mean of its joints' PCKh.
PCKH_PARTS: dict[str, tuple[str, ...]] = {
    "Head": ("head_top",),
    "Shoulder": ("left_shoulder", "right_shoulder"),
    "Elbow": ("left_elbow", "right_elbow"),
    "Wrist": ("left_wrist", "right_wrist"),
    "Hip": ("left_hip", "right_hip"),
    "Knee": ("left_knee", "right_knee"),
    "Ankle": ("left_ankle", "right_ankle"),
}
PCKH_THRESHOLDS = (0.5, 0.1)
#: mmpose 0.x InterHand defaults: PCK threshold (x max box side), AUC range in px and steps.
PCK_THR = 0.2
AUC_NORM = 30.0
AUC_STEPS = 20
PERCENT = 100.0


def _name(thr: float) -> str:
    return f"{thr:g}"


def pckh_per_joint(pred: np.ndarray, gt: MPIIGroundTruth, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """(16,) PCKh in percent at ``thr`` and (16,) counts of annotated joints."""
    pred = np.asarray(pred, np.float64)
    if pred.shape != gt.positions.shape:
        raise ValueError(f"predictions have shape {pred.shape}, the ground truth {gt.positions.shape}")
    visible = ~gt.missing
    dist = np.linalg.norm(pred - gt.positions, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = dist / gt.head_sizes[:, None]
        hit = (err <= thr) & visible
        count = visible.sum(axis=0)
        return PERCENT * hit.sum(axis=0) / count, count


def mpii_pckh(
    pred: np.ndarray, gt: MPIIGroundTruth, thresholds: tuple[float, ...] = PCKH_THRESHOLDS
) -> dict[str, float]:
    """MPII PCKh as the official evaluation reports it.

    ``pred`` is (P, 16, 2) in 0-based pixels, persons in the ground truth's (json) order. The
    official code adds 1 to 0-based predictions and compares with 1-based GT; ``gt`` is
    0-based already, and the head size (0.6 x head-box diagonal) is shift-invariant, so the
    comparison here is the same. Per joint j: PCKh_j = 100 * #(||pred - gt|| / headsize <= thr)
    / #annotated. Summary ``PCKh@thr``: sum_j PCKh_j * n_j / sum n_j with pelvis and thorax
    weighted 0. Parts (at ``thresholds[0]``): the mean of the L/R joints of each part.
    """
    skel = skeletons.get("mpii")
    excluded = [skel.index(n) for n in PCKH_EXCLUDED]
    out: dict[str, float] = {}
    for i, thr in enumerate(thresholds):
        pck, count = pckh_per_joint(pred, gt, thr)
        weight = count.astype(np.float64)
        weight[excluded] = 0.0
        out[f"PCKh@{_name(thr)}"] = float(np.sum(np.where(weight > 0, pck, 0.0) * weight) / weight.sum())
        if i == 0:
            for part, joints in PCKH_PARTS.items():
                out[part] = float(np.mean([pck[skel.index(j)] for j in joints]))
    return out


def _normalised_distances(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """(N, K) distances divided per instance by ``norm``; NaN where not counted.

    An instance with a non-positive normaliser is not counted at all (mmpose's rule).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    mask = np.asarray(mask, bool) & (np.asarray(norm, np.float64) > 0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.linalg.norm(pred - gt, axis=-1) / np.asarray(norm, np.float64)[:, None]
    return np.where(mask, d, np.nan)


def pck(dist: np.ndarray, thr: float) -> float:
    """Mean over joints (with any counted sample) of the per-joint fraction with dist < thr."""
    valid = ~np.isnan(dist)
    n = valid.sum(axis=0)
    with np.errstate(invalid="ignore"):
        per_joint = np.where(valid, dist < thr, False).sum(axis=0) / n
    per_joint = per_joint[n > 0]
    return float(per_joint.mean()) if per_joint.size else 0.0


def pck_auc_epe(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    bbox_wh: np.ndarray,
    *,
    pck_thr: float = PCK_THR,
    auc_norm: float = AUC_NORM,
    auc_steps: int = AUC_STEPS,
) -> dict[str, float]:
    """mmpose 0.x's InterHand2.6M 2D metrics (fractions in [0, 1], EPE in px).

    * ``PCK@thr``: error / max(w, h) of the instance's GT box < ``pck_thr``, per joint, then
      averaged over joints with any valid sample;
    * ``AUC``: mean PCK at thresholds 0, 1/steps, ..., (steps-1)/steps of ``auc_norm`` pixels
      (0, 1.5, ..., 28.5 px by default);
    * ``EPE``: mean pixel error over all valid joints.
    """
    n = len(np.asarray(pred))
    wh = np.asarray(bbox_wh, np.float64).reshape(n, 2)
    out = {f"PCK@{_name(pck_thr)}": pck(_normalised_distances(pred, gt, mask, wh.max(axis=1)), pck_thr)}
    px = _normalised_distances(pred, gt, mask, np.full(n, auc_norm))
    out["AUC"] = float(np.mean([pck(px, i / auc_steps) for i in range(auc_steps)]))
    out["EPE"] = mean_pixel_error(pred, gt, mask)
    return out


def mean_pixel_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Mean Euclidean keypoint error in pixels of the original image, over all valid joints.

    The SAR paper's "mean keypoint pixel error": no normalisation by box or head size, every
    valid joint weighs the same (not averaged per instance first). NaN when nothing is valid.
    """
    d = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    m = np.asarray(mask, bool)
    return float(d[m].mean()) if m.any() else float("nan")


__all__ = [
    "PCKH_PARTS",
    "PCKH_EXCLUDED",
    "PCKH_THRESHOLDS",
    "mpii_pckh",
    "pckh_per_joint",
    "pck",
    "pck_auc_epe",
    "mean_pixel_error",
]
