"""Evaluation: every protocol of the paper as plain functions over the unified tables.

Predictions are a DataFrame with ``dataset, split, image_id, instance_id, keypoints`` (flat 3K
x, y, score), ``score``, ``box_score`` and ``bbox`` (xywh); ground truth is the unified instance
table of the same dataset and split. :func:`evaluate_dataset` applies the dataset's protocol
from :data:`PROTOCOLS`; the metric functions are usable on their own:

* OKS AP through pycocotools: :func:`oks_ap`, :func:`wholebody_ap`, :func:`crowdpose_ap`,
  :func:`occluded_keypoint_ap`; result files :func:`to_coco_results`,
  :func:`write_results_json`, :func:`write_submission_zip`;
* mmpose's post-processing: :func:`rescore`, :func:`oks_nms`, :func:`apply_topdown_postprocess`;
* distances: :func:`mpii_pckh`, :func:`pck_auc_epe`, :func:`mean_pixel_error`.
"""

from __future__ import annotations

from posebh.evaluation.coco_eval import (
    STAT_NAMES,
    crowdpose_ap,
    occluded_keypoint_ap,
    oks_ap,
    to_coco_results,
    wholebody_ap,
    write_results_json,
    write_submission_zip,
)
from posebh.evaluation.pck import mean_pixel_error, mpii_pckh, pck_auc_epe
from posebh.evaluation.postprocess import apply_topdown_postprocess, oks_iou, oks_nms, rescore
from posebh.evaluation.protocols import PROTOCOLS, Protocol, evaluate_dataset, get_protocol

__all__ = [
    "STAT_NAMES",
    "PROTOCOLS",
    "Protocol",
    "get_protocol",
    "evaluate_dataset",
    "oks_ap",
    "wholebody_ap",
    "crowdpose_ap",
    "occluded_keypoint_ap",
    "to_coco_results",
    "write_results_json",
    "write_submission_zip",
    "rescore",
    "oks_iou",
    "oks_nms",
    "apply_topdown_postprocess",
    "mpii_pckh",
    "pck_auc_epe",
    "mean_pixel_error",
]
