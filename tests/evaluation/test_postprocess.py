"""Rescoring and OKS-NMS against hand calculations on constructed poses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from posebh import skeletons
from posebh.evaluation.postprocess import apply_topdown_postprocess, crop_areas, oks_iou, oks_nms, rescore

COCO_SIGMAS = np.asarray(skeletons.get("coco").sigmas)


def test_rescore_arithmetic():
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.05], [0.3, 0.3, 0.3]])
    boxes = np.array([0.8, 1.0, 0.5])
    got = rescore(scores, boxes, vis_thr=0.2)
    # row 0: mean(0.9, 0.5) * 0.8; row 1: nothing strictly above 0.2 -> 0; row 2: 0.3 * 0.5
    np.testing.assert_allclose(got, [0.7 * 0.8, 0.0, 0.15])


def test_oks_iou_hand_calculation():
    a = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]])
    other = a.copy()
    other[:, :2] += [3.0, 4.0]  # 5 px
    sigmas = [0.1, 0.2]
    # e = d^2 / (2 sigma)^2 / mean area / 2, mean area = (100 + 300) / 2
    e = 25.0 / np.array([0.04, 0.16]) / 200.0 / 2.0
    got = oks_iou(a, other[None], 100.0, np.array([300.0]), sigmas)
    np.testing.assert_allclose(got, [np.exp(-e).mean()])
    # with vis_thr only the joints scored above it in both poses count
    other[1, 2] = 0.1
    np.testing.assert_allclose(oks_iou(a, other[None], 100.0, np.array([300.0]), sigmas, vis_thr=0.2), [np.exp(-e[0])])


def _pose(x0: float, y0: float) -> np.ndarray:
    k = len(COCO_SIGMAS)
    return np.column_stack([x0 + np.linspace(0, 60, k), y0 + np.linspace(0, 160, k), np.full(k, 0.9)])


def test_oks_nms_suppresses_the_lower_scored_duplicate():
    p = _pose(100, 100)
    near = p.copy()
    near[:, :2] += 0.5
    far = _pose(400, 100)
    kps = np.stack([p, near, far])
    areas = np.full(3, 60.0 * 160.0)
    assert oks_iou(p, near[None], areas[0], areas[1:2], COCO_SIGMAS)[0] > 0.9
    assert oks_iou(p, far[None], areas[0], areas[2:], COCO_SIGMAS)[0] < 0.01
    np.testing.assert_array_equal(oks_nms(kps, np.array([0.9, 0.8, 0.7]), areas, COCO_SIGMAS), [0, 2])
    # the higher-scored one survives whichever row it is
    np.testing.assert_array_equal(oks_nms(kps, np.array([0.8, 0.9, 0.7]), areas, COCO_SIGMAS), [1, 2])
    # thr above the duplicate's OKS keeps everything
    assert len(oks_nms(kps, np.array([0.9, 0.8, 0.7]), areas, COCO_SIGMAS, thr=1.0)) == 3


def test_crop_area_is_the_padded_aspect_fixed_box():
    # 100 x 100 box, aspect 192/256 = 0.75: width stays, height grows to 133.33, both x 1.25
    np.testing.assert_allclose(crop_areas(np.array([[0.0, 0.0, 100.0, 100.0]])), [125.0 * 125.0 / 0.75])


def test_apply_topdown_postprocess_per_image():
    p, far = _pose(100, 100), _pose(400, 100)
    near = p.copy()
    near[:, :2] += 0.5
    low = p.copy()
    low[:, 2] = 0.1  # no keypoint above vis_thr
    kps = [p, near, far, p, low]
    pred = pd.DataFrame(
        {
            "dataset": "coco",
            "split": "val",
            "image_id": [1, 1, 1, 2, 3],
            "instance_id": [10, 11, 12, 13, 14],
            "keypoints": [k.ravel() for k in kps],
            "score": 0.0,
            "box_score": [0.9, 0.8, 0.7, 0.6, 0.5],
            "bbox": [np.array([90.0, 90.0, 80.0, 180.0])] * 5,
        }
    )
    out = apply_topdown_postprocess(pred, dataset="coco")
    # image 1 loses the duplicate; the same pose on image 2 is not compared with image 1
    assert out["instance_id"].tolist() == [10, 12, 13, 14]
    np.testing.assert_allclose(out["score"], [0.9 * 0.9, 0.7 * 0.9, 0.6 * 0.9, 0.0])
    again = apply_topdown_postprocess(out, dataset="coco")
    pd.testing.assert_frame_equal(again, out)
    no_nms = apply_topdown_postprocess(pred, dataset="coco", use_nms=False)
    assert len(no_nms) == 5


def test_postprocess_refuses_a_skeleton_without_sigmas():
    pred = pd.DataFrame(
        {"image_id": [1], "keypoints": [np.zeros(63)], "score": 1.0, "box_score": 1.0, "bbox": [np.ones(4)]}
    )
    with pytest.raises(ValueError, match="sigmas"):
        apply_topdown_postprocess(pred, dataset="interhand")
