"""The protocol table and the evaluation entry point on the real samples."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from conftest import sample

from posebh import data, skeletons
from posebh.data.readers.mpii import load_mpii_gt
from posebh.evaluation import PROTOCOLS, evaluate_dataset, get_protocol
from posebh.evaluation.protocols import mpii_ground_truth_from_table


def predictions_from(gt: pd.DataFrame, box_score=1.0) -> pd.DataFrame:
    kps = np.stack(gt["keypoints"].to_numpy()).astype(np.float64).reshape(len(gt), -1, 3)
    kps[..., 2] = kps[..., 2] > 0
    return pd.DataFrame(
        {
            "dataset": gt["dataset"].to_numpy(),
            "split": gt["split"].to_numpy(),
            "image_id": gt["image_id"].to_numpy(),
            "instance_id": gt["instance_id"].to_numpy(),
            "keypoints": list(kps.reshape(len(gt), -1)),
            "score": 0.0,
            "box_score": box_score,
            "bbox": list(gt["bbox"]),
        }
    )


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------


def test_every_registered_skeleton_has_a_protocol():
    assert set(PROTOCOLS) == set(skeletons.SKELETONS)
    assert get_protocol("wholebody").dataset == "coco_wholebody"  # registry aliases work
    with pytest.raises(KeyError):
        get_protocol("nope")


def test_decoding_flags_follow_the_reference():
    """COCO and MPII: UDP + DARK, no flip shift; the rest: default decoding with the shift."""
    for name, p in PROTOCOLS.items():
        assert p.flip_test
        assert p.udp == (name in {"coco", "mpii"}), name
        assert p.decoding == ("udp_dark" if p.udp else "default"), name
        assert p.shift_heatmap == (not p.udp), name


def test_boxes_area_and_metrics():
    detections = {n for n, p in PROTOCOLS.items() if p.boxes == "detections"}
    assert detections == {"coco", "coco_wholebody"}
    assert {n for n, p in PROTOCOLS.items() if not p.use_area} == {"aic", "crowdpose", "3dpw"}
    assert PROTOCOLS["mpii"].metric == "pckh" and PROTOCOLS["interhand"].metric == "pck"
    assert not PROTOCOLS["mpii"].postprocess and not PROTOCOLS["interhand"].postprocess
    for p in PROTOCOLS.values():
        if p.metric in {"oks", "wholebody", "crowdpose"}:
            assert p.sigmas is not None and len(p.sigmas) == skeletons.get(p.dataset).num_keypoints
    assert PROTOCOLS["interhand"].sigmas is None


# ----------------------------------------------------------------------------------------------
# evaluate_dataset
# ----------------------------------------------------------------------------------------------


def test_coco_post_processing_removes_a_ranked_duplicate(samples):
    gt = data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val", dataset="coco")
    gt = gt[gt["num_keypoints"] > 0].reset_index(drop=True)
    pred = predictions_from(gt, box_score=np.linspace(0.9, 0.5, len(gt)))
    dup = pred.iloc[[0]].copy()
    dup["keypoints"] = [dup["keypoints"].iloc[0] + np.tile([0.5, 0.5, 0.0], 17)]
    dup["box_score"] = 0.85  # above every other person's true match
    both = pd.concat([pred, dup], ignore_index=True)
    assert evaluate_dataset("coco", gt, both)["AP"] == pytest.approx(1.0)
    assert evaluate_dataset("coco", gt, both, postprocess=False)["AP"] < 1.0


def test_gt_box_datasets_report_pixel_error(samples):
    gt = data.read("coco", annotations=sample(samples, "ochuman", "test_ochuman.json"), split="val", dataset="ochuman")
    pred = predictions_from(gt)
    kps = np.stack(pred["keypoints"].to_numpy()).reshape(len(pred), -1, 3)
    kps[..., 0] += 3.0
    kps[..., 1] += 4.0
    pred["keypoints"] = list(kps.reshape(len(pred), -1))
    out = evaluate_dataset("ochuman", gt, pred)
    assert out["pixel_error"] == pytest.approx(5.0, abs=1e-3)
    assert "occ_AP" in out and out["occ_num_gt"] <= out["num_gt"]


def test_crowdpose_entry_point(samples):
    path = sample(samples, "crowdpose", "test_crowdpose.json")
    gt = data.read("coco", annotations=path, split="test", dataset="crowdpose")
    out = evaluate_dataset("crowdpose", gt, predictions_from(gt[gt["num_keypoints"] > 0]))
    assert out["AP"] == pytest.approx(1.0) and out["AP_medium"] == pytest.approx(1.0)


def test_split_selection(samples):
    gt = data.read("coco", annotations=sample(samples, "coco", "test_coco.json"), split="val", dataset="coco")
    pred = predictions_from(gt)
    other = pred.copy()
    other["split"] = "train"
    other["keypoints"] = [k + 40.0 for k in other["keypoints"]]  # would ruin AP if it were used
    out = evaluate_dataset("coco", gt, pd.concat([pred, other], ignore_index=True), split="val")
    assert out["AP"] == pytest.approx(1.0) and out["num_predictions"] == 12


@pytest.fixture(scope="module")
def mpii(samples):
    """The 5-person json sample and the matching first 5 columns of the 2958-person .mat."""
    table = data.read("mpii", annotations=sample(samples, "mpii", "test_mpii.json"), split="val")
    full = load_mpii_gt(sample(samples, "mpii", "detections_our_format.mat"))
    five = dataclasses.replace(
        full, missing=full.missing[:5], positions=full.positions[:5], head_boxes=full.head_boxes[:5],
        head_sizes=full.head_sizes[:5],
    )  # fmt: skip
    return table, five


def test_mpii_entry_point(mpii):
    table, truth = mpii
    pred = predictions_from(table)
    assert evaluate_dataset("mpii", table, pred, mpii_gt=truth)["PCKh@0.5"] == pytest.approx(100.0)
    # one annotated right ankle of person 1 off by 0.6 head sizes
    kps = np.stack(pred["keypoints"].to_numpy()).reshape(len(pred), -1, 3)
    kps[0, 0, 0] += 0.6 * truth.head_sizes[0]
    pred["keypoints"] = list(kps.reshape(len(pred), -1))
    out = evaluate_dataset("mpii", table, pred.iloc[::-1].reset_index(drop=True), mpii_gt=truth)
    counted = (~truth.missing).sum() - (~truth.missing[:, [6, 7]]).sum()
    assert out["PCKh@0.5"] == pytest.approx(100.0 * (1 - 1 / counted))
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_dataset("mpii", table, pred.iloc[1:], mpii_gt=truth)


def test_mpii_ground_truth_from_table(mpii):
    table, truth = mpii
    table = table.copy()
    extras = [json.loads(e) for e in table["extra"]]
    for e, box, size in zip(extras, truth.head_boxes, truth.head_sizes):
        e["head_box"], e["head_size"] = box.reshape(-1).tolist(), float(size)
    table["extra"] = pd.array([json.dumps(e) for e in extras], dtype="string")
    derived = mpii_ground_truth_from_table(table)
    np.testing.assert_array_equal(derived.missing, truth.missing)
    np.testing.assert_allclose(derived.positions[~truth.missing], truth.positions[~truth.missing], atol=1e-3)
    assert evaluate_dataset("mpii", table, predictions_from(table))["PCKh@0.5"] == pytest.approx(100.0)


def test_interhand_entry_point(samples):
    folder = "interhand2.6m"
    gt = data.read(
        "interhand",
        data=sample(samples, folder, "test_interhand2.6m_data.json"),
        camera=sample(samples, folder, "test_interhand2.6m_camera.json"),
        joint_3d=sample(samples, folder, "test_interhand2.6m_joint_3d.json"),
        split="test",
    )
    pred = predictions_from(gt)
    out = evaluate_dataset("interhand", gt, pred)
    assert out["PCK@0.2"] == pytest.approx(1.0)
    assert out["AUC"] == pytest.approx(19 / 20)  # threshold 0 never counts (strict <)
    assert out["EPE"] == 0.0 and out["pixel_error"] == 0.0
    kps = np.stack(pred["keypoints"].to_numpy()).reshape(len(pred), -1, 3)
    kps[..., 0] += 12.0
    pred["keypoints"] = list(kps.reshape(len(pred), -1))
    out = evaluate_dataset("interhand", gt, pred)
    assert out["EPE"] == pytest.approx(12.0, abs=1e-3)
    # 12 px clears thresholds from 13.5 px (i = 9): 11 of 20 steps
    assert out["AUC"] == pytest.approx(11 / 20)
