"""The per-dataset evaluation protocol table and the one evaluation entry point.

Inference (boxes, decoding, flip) and reports (metric names, headline) both read
:data:`PROTOCOLS`, so a protocol fact lives in one place. Sources: reference posebh-method.md
4.1 (test-time settings of the reported numbers) and 6.5 (metrics), datasets.md 13.

Test-time settings of every dataset: flip test with the flipped heatmap averaged 0.5/0.5.
COCO and MPII use the UDP affine and UDP decoding with DARK refinement (``post_dark_udp``,
blur kernel 11) and no heatmap shift on flip; every other dataset uses the standard affine,
argmax plus the quarter-pixel shift toward the higher neighbour, and shifts the flipped
heatmap by one pixel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from posebh import skeletons
from posebh.data.schema import bbox_array, extra_dicts, keypoints_array
from posebh.evaluation import coco_eval, pck
from posebh.evaluation.postprocess import apply_topdown_postprocess

if TYPE_CHECKING:
    from posebh.data.readers.mpii import MPIIGroundTruth

Metric = Literal["oks", "wholebody", "crowdpose", "pckh", "pck"]
BoxSource = Literal["gt", "detections"]
Decoding = Literal["udp_dark", "default"]

#: DARK's Gaussian blur kernel (mmpose ``modulate_kernel``) in the reference's test configs.
DARK_KERNEL = 11
#: The HRNet person detections the reference evaluates COCO and COCO-WholeBody with.
COCO_VAL_DETECTIONS = "COCO_val2017_detections_AP_H_56_person.json"
COCO_TESTDEV_DETECTIONS = "COCO_test-dev2017_detections_AP_H_609_person.json"
CROWDPOSE_DETECTIONS = "det_for_crowd_test_0.1_0.5.json"
#: Extra metric set computed next to the standard one (prefix ``occ_``).
OCCLUDED = "occluded"
OCCLUDED_PREFIX = "occ_"
PIXEL_ERROR = "pixel_error"


@dataclass(frozen=True)
class Protocol:
    """How one dataset is evaluated, from the boxes it is run on to the metric it reports."""

    dataset: str
    metric: Metric
    boxes: BoxSource
    #: UDP affine and UDP heatmap targets/decoding
    udp: bool
    #: "udp_dark": UDP argmax + DARK (kernel DARK_KERNEL); "default": argmax + quarter offset
    decoding: Decoding
    #: shift the flipped heatmap by one pixel before averaging (non-UDP datasets)
    shift_heatmap: bool
    flip_test: bool = True
    #: rescoring + OKS-NMS (postprocess.py) before OKS evaluation
    postprocess: bool = True
    #: the number a paper table reports
    headline: str = "AP"
    #: detector results per split, for ``boxes == "detections"``
    detections: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    variants: tuple[str, ...] = ()
    note: str = ""

    @property
    def use_area(self) -> bool:
        """xtcocotools' use_area: False where the OKS scale is 0.53*w*h of the GT box."""
        return skeletons.get(self.dataset).area_rule != "0.53wh"

    @property
    def sigmas(self) -> tuple[float, ...] | None:
        return skeletons.get(self.dataset).sigmas


def _udp(dataset: str, metric: Metric, boxes: BoxSource, **kw) -> Protocol:
    return Protocol(dataset, metric, boxes, udp=True, decoding="udp_dark", shift_heatmap=False, **kw)


def _default(dataset: str, metric: Metric, boxes: BoxSource, **kw) -> Protocol:
    return Protocol(dataset, metric, boxes, udp=False, decoding="default", shift_heatmap=True, **kw)


_TABLE = (
    _udp("coco", "oks", "detections",
         detections=MappingProxyType({"val": COCO_VAL_DETECTIONS, "test-dev": COCO_TESTDEV_DETECTIONS})),
    _udp("mpii", "pckh", "gt", postprocess=False, headline="PCKh@0.5"),
    _default("aic", "oks", "gt"),
    _default("ap10k", "oks", "gt", note="AP averaged over species (one COCO category each)"),
    _default("apt36k", "oks", "gt", note="AP averaged over species; the eval script uses the val file"),
    _default("ochuman", "oks", "gt", variants=(OCCLUDED,), note="occluded-joint AP is a protocol reconstruction"),
    _default("coco_wholebody", "wholebody", "detections", headline="wholebody_AP",
             detections=MappingProxyType({"val": COCO_VAL_DETECTIONS})),
    _default("crowdpose", "crowdpose", "gt", detections=MappingProxyType({"test": CROWDPOSE_DETECTIONS}),
             note="ViTPose base config: GT boxes; large/huge configs: the listed detections. "
                  "Decoding not in the reference's table; assumed non-UDP like the other secondary sets"),
    _default("interhand", "pck", "gt", postprocess=False, headline="PCK@0.2",
             note="transfer: keypoint-head output, box = tight hand box with padding 1.5"),
    _default("3dpw", "oks", "gt", note="transfer: keypoint-head output"),
)  # fmt: skip
PROTOCOLS: Mapping[str, Protocol] = MappingProxyType({p.dataset: p for p in _TABLE})


def get_protocol(dataset: str) -> Protocol:
    try:
        return PROTOCOLS[skeletons.get(dataset).name]
    except KeyError:
        raise KeyError(f"no evaluation protocol for {dataset!r}; known: {sorted(PROTOCOLS)}") from None


# ----------------------------------------------------------------------------------------------
# Pairing GT rows with GT-box predictions
# ----------------------------------------------------------------------------------------------


def paired(gt: pd.DataFrame, predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row positions in ``gt``, GT keypoints (n, K, 3), predicted keypoints (n, K, 3)) of the GT
    rows that have a prediction with their ``instance_id`` (GT-box runs: one per row)."""
    ids = predictions["instance_id"].to_numpy(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("several predictions share an instance_id; a GT-box run predicts each GT row once")
    pos_of = {int(i): p for p, i in enumerate(ids)}
    rows = np.asarray([r for r, i in enumerate(gt["instance_id"].to_numpy(np.int64)) if int(i) in pos_of], np.int64)
    if rows.size == 0:
        k = skeletons.get(gt["dataset"].iloc[0]).num_keypoints if len(gt) else 0
        return rows, np.zeros((0, k, 3)), np.zeros((0, k, 3))
    gt_kps = keypoints_array(gt.iloc[rows]).astype(np.float64)
    pred_pos = [pos_of[int(i)] for i in gt["instance_id"].to_numpy(np.int64)[rows]]
    pred_kps = coco_eval.prediction_keypoints(predictions.iloc[pred_pos])
    return rows, gt_kps, pred_kps


def _require_all(gt: pd.DataFrame, rows: np.ndarray, dataset: str) -> None:
    if len(rows) != len(gt):
        missing = sorted(set(gt["instance_id"].tolist()) - set(gt["instance_id"].iloc[rows].tolist()))
        raise ValueError(f"{dataset}: {len(missing)} GT instance(s) have no prediction, e.g. {missing[:5]}")


def mpii_ground_truth_from_table(gt_table: pd.DataFrame) -> MPIIGroundTruth:
    """PCKh ground truth from an MPII table read with ``gt_mat`` (head boxes in ``extra``).

    Joints annotated in the json stand in for the .mat's ``jnt_missing``; prefer the .mat
    (``load_mpii_gt``) where it is available, since the official numbers use it.
    """
    from posebh.data.readers.mpii import MPIIGroundTruth

    gt = gt_table.sort_values("instance_id")
    extras = extra_dicts(gt)
    if not all("head_box" in e and "head_size" in e for e in extras):
        raise ValueError("MPII rows lack head_box/head_size in extra: read them with gt_mat, or pass mpii_gt")
    kps = keypoints_array(gt).astype(np.float64)
    return MPIIGroundTruth(
        joint_names=skeletons.get("mpii").keypoints,
        missing=kps[..., 2] <= 0,
        positions=kps[..., :2],
        head_boxes=np.asarray([e["head_box"] for e in extras], np.float64).reshape(-1, 2, 2),
        head_sizes=np.asarray([e["head_size"] for e in extras], np.float64),
    )


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------


def _pckh(gt: pd.DataFrame, pred: pd.DataFrame, mpii_gt: MPIIGroundTruth | None) -> dict[str, float]:
    """PCKh over the table's persons. With an external ground truth (the split's .mat), a person is
    its column ``instance_id - 1``; otherwise the truth is built from the table itself, so persons
    quarantined at ingest are simply absent (and counted in the validation report)."""
    rows, _, pred_kps = paired(gt, pred)
    _require_all(gt, rows, "mpii")
    if mpii_gt is None:
        gt = gt.sort_values("instance_id")
        rows, _, pred_kps = paired(gt, pred)
        truth = mpii_ground_truth_from_table(gt)
        order = rows
    else:
        truth = mpii_gt
        order = gt["instance_id"].to_numpy(np.int64)[rows] - 1  # instance_id = 1-based json position
    if order.min() < 0 or order.max() >= truth.num_persons:
        raise ValueError(f"MPII table has persons outside the PCKh ground truth ({truth.num_persons} persons)")
    arr = np.full((truth.num_persons, skeletons.get("mpii").num_keypoints, 2), np.nan)
    arr[order] = pred_kps[..., :2]
    return pck.mpii_pckh(arr, truth)


def _pck(gt: pd.DataFrame, pred: pd.DataFrame, dataset: str) -> dict[str, float]:
    rows, gt_kps, pred_kps = paired(gt, pred)
    _require_all(gt, rows, dataset)
    wh = bbox_array(gt.iloc[rows])[:, 2:4]
    return pck.pck_auc_epe(pred_kps[..., :2], gt_kps[..., :2], gt_kps[..., 2] > 0, wh)


def evaluate_dataset(
    dataset: str,
    gt_table: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    mpii_gt: MPIIGroundTruth | None = None,
    split: str | None = None,
    postprocess: bool | None = None,
) -> dict[str, float | int]:
    """Every metric of ``dataset``'s protocol as one flat ``{name: number}`` dict.

    OKS datasets get rescoring + OKS-NMS first (``postprocess=None`` follows the protocol;
    both steps are idempotent, so already post-processed predictions are fine). Names: the
    COCO stats (``AP``, ``AP50``, ... ``ARl``) and counts; ``{part}_AP``... for COCO-WholeBody;
    ``AP_easy``/``AP_medium``/``AP_hard`` for CrowdPose; ``occ_AP``... for OCHuman's occluded
    joints; ``PCKh@0.5``, ``PCKh@0.1`` and the part names for MPII; ``PCK@0.2``, ``AUC``,
    ``EPE`` for InterHand. GT-box protocols also get ``pixel_error`` (mean px error over
    labelled joints of the GT rows that have a prediction, before NMS).
    """
    proto = get_protocol(dataset)
    name = proto.dataset
    gt = coco_eval.select(gt_table, name, split)
    pred = coco_eval.select(predictions, name, split)
    out: dict[str, float | int] = {}
    if proto.metric == "pckh":
        out.update(_pckh(gt, pred, mpii_gt))
    elif proto.metric == "pck":
        out.update(_pck(gt, pred, name))
    else:
        post = pred
        if proto.postprocess if postprocess is None else postprocess:
            post = apply_topdown_postprocess(pred, dataset=name)
        if proto.metric == "wholebody":
            out.update(coco_eval.wholebody_ap(gt, post, dataset=name))
        elif proto.metric == "crowdpose":
            out.update(coco_eval.crowdpose_ap(gt, post, dataset=name))
        else:
            out.update(coco_eval.oks_ap(gt, post, dataset=name))
        if OCCLUDED in proto.variants:
            occ = coco_eval.occluded_keypoint_ap(gt, post, dataset=name)
            out.update({f"{OCCLUDED_PREFIX}{k}": v for k, v in occ.items()})
    if proto.boxes == "gt" and len(pred):
        _, gt_kps, pred_kps = paired(gt, pred)
        out[PIXEL_ERROR] = pck.mean_pixel_error(pred_kps[..., :2], gt_kps[..., :2], gt_kps[..., 2] > 0)
    return out


__all__ = [
    "Protocol",
    "PROTOCOLS",
    "get_protocol",
    "evaluate_dataset",
    "paired",
    "mpii_ground_truth_from_table",
    "DARK_KERNEL",
    "PIXEL_ERROR",
]
